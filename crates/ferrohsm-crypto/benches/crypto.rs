//! Raw primitive costs: the baseline that core's overhead is measured against.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrohsm_crypto::{Algorithm, AwsLcProvider, CryptoProvider, SignInput};

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (65536, "64KiB")];

fn primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("crypto");
    let Ok(aes) = AwsLcProvider.generate(Algorithm::Aes256Gcm).and_then(|m| AwsLcProvider.load(&m))
    else {
        return;
    };
    for (size, label) in SIZES {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("aes-256-gcm-encrypt", label), |b| {
            b.iter(|| aes.encrypt(black_box(&plaintext), b"aad"))
        });
        let Ok(sealed) = aes.encrypt(&plaintext, b"aad") else { return };
        group.bench_function(BenchmarkId::new("aes-256-gcm-decrypt", label), |b| {
            b.iter(|| aes.decrypt(black_box(&sealed), b"aad"))
        });
    }
    group.throughput(Throughput::Elements(1));
    for algorithm in Algorithm::ALL.iter().filter(|a| !a.is_symmetric()) {
        let Ok(key) = AwsLcProvider.generate(*algorithm).and_then(|m| AwsLcProvider.load(&m))
        else {
            return;
        };
        let Some(scheme) = algorithm.default_scheme() else { continue };
        group.bench_function(BenchmarkId::new("sign", algorithm.as_str()), |b| {
            b.iter(|| key.sign(scheme, SignInput::Message(black_box(b"build artefact digest"))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = primitives
}
criterion_main!(benches);
