//! The embedded core's costs (SPEC §10): encrypt/decrypt at 32 B, 1 KiB and 64 KiB, sign and
//! verify per algorithm, key creation per algorithm, and listing 5,000 keys with integrity
//! checks. Compare `core/encrypt/1KiB` (in-memory audit) with `crypto/aes-256-gcm-encrypt/1KiB`
//! for the overhead; `core/encrypt-durable-audit/1KiB` fsyncs each record to a file log.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrohsm_audit::{FileAuditConfig, FileAuditSink};
use ferrohsm_core::{
    Algorithm, AwsLcProvider, CreateKey, CryptoProvider, Hsm, KeyRef, ListQuery, MasterKey,
    RequestContext, SignInput, derive_audit_keys,
};
use ferrohsm_store::MemoryKeyStore;

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (65536, "64KiB")];

async fn new_hsm() -> Option<Hsm> {
    Hsm::builder()
        .store(Arc::new(MemoryKeyStore::new()))
        .master_key(MasterKey::from_bytes(&[1u8; 32]).ok()?)
        .build()
        .await
        .ok()
}

async fn durable_hsm(dir: &std::path::Path) -> Option<Hsm> {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let master = MasterKey::from_bytes(&[1u8; 32]).ok()?;
    let keys = Arc::new(derive_audit_keys(provider.as_ref(), &master).ok()?);
    let sink = FileAuditSink::open(FileAuditConfig::new(dir), provider, keys).ok()?;
    Hsm::builder()
        .store(Arc::new(MemoryKeyStore::new()))
        .audit(Arc::new(sink))
        .master_key(master)
        .build()
        .await
        .ok()
}

async fn list_all(hsm: &Hsm, ctx: &RequestContext) -> usize {
    let mut n = 0;
    let mut query = ListQuery { limit: 1000, ..ListQuery::default() };
    while let Ok(page) = hsm.list_keys(ctx, &query).await {
        n += page.keys.len();
        match page.next_cursor.and_then(|c| c.parse().ok()) {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    n
}

fn core(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let Some(hsm) = rt.block_on(new_hsm()) else { return };
    let ctx = RequestContext::local("bench");
    let mut group = c.benchmark_group("core");

    let Ok(aes) = rt.block_on(hsm.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm))) else {
        return;
    };
    let aes = KeyRef::Id(aes.id);
    for (size, label) in SIZES {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("encrypt", label), |b| {
            b.iter(|| rt.block_on(hsm.encrypt(&ctx, &aes, black_box(&plaintext), b"aad")))
        });
        let Ok(sealed) = rt.block_on(hsm.encrypt(&ctx, &aes, &plaintext, b"aad")) else { return };
        group.bench_function(BenchmarkId::new("decrypt", label), |b| {
            b.iter(|| rt.block_on(hsm.decrypt(&ctx, &aes, black_box(&sealed.ciphertext), b"aad")))
        });
    }

    group.throughput(Throughput::Elements(1));
    let message = b"build artefact: release-1.0.tar.gz";
    for algorithm in Algorithm::ALL.iter().filter(|a| !a.is_symmetric()) {
        let Ok(key) = rt.block_on(hsm.create_key(&ctx, CreateKey::new(*algorithm))) else { return };
        let key = KeyRef::Id(key.id);
        group.bench_function(BenchmarkId::new("sign", algorithm.as_str()), |b| {
            b.iter(|| {
                rt.block_on(hsm.sign(&ctx, &key, SignInput::Message(black_box(message)), None))
            })
        });
        let Ok(signed) = rt.block_on(hsm.sign(&ctx, &key, SignInput::Message(message), None))
        else {
            return;
        };
        group.bench_function(BenchmarkId::new("verify", algorithm.as_str()), |b| {
            b.iter(|| {
                rt.block_on(hsm.verify(
                    &ctx,
                    &key,
                    SignInput::Message(message),
                    &signed.signature,
                    None,
                    None,
                ))
            })
        });
    }

    for algorithm in Algorithm::ALL {
        // RSA generation takes up to seconds: fewer samples keep the run short.
        if matches!(algorithm, Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096) {
            group.sample_size(10).measurement_time(Duration::from_secs(8));
        } else {
            group.sample_size(50).measurement_time(Duration::from_secs(2));
        }
        group.bench_function(BenchmarkId::new("create", algorithm.as_str()), |b| {
            b.iter(|| rt.block_on(hsm.create_key(&ctx, CreateKey::new(*algorithm))))
        });
    }
    group.sample_size(20).measurement_time(Duration::from_secs(3));

    // The same encryption with every record fsynced to a file audit log before the answer.
    let Ok(dir) = tempfile::tempdir() else { return };
    if let Some(durable) = rt.block_on(durable_hsm(dir.path()))
        && let Ok(key) = rt.block_on(durable.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm)))
    {
        let key = KeyRef::Id(key.id);
        let plaintext = vec![0x5au8; 1024];
        group.sample_size(20).measurement_time(Duration::from_secs(3));
        group.bench_function("encrypt-durable-audit/1KiB", |b| {
            b.iter(|| rt.block_on(durable.encrypt(&ctx, &key, black_box(&plaintext), b"aad")))
        });
    }

    let Some(listing) = rt.block_on(new_hsm()) else { return };
    for _ in 0..5_000 {
        let _ = rt.block_on(
            listing.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm).tag("env", "prod")),
        );
    }
    group.bench_function("list-5k-all", |b| b.iter(|| rt.block_on(list_all(&listing, &ctx))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = core
}
criterion_main!(benches);
