//! Audit throughput (SPEC §10): durable appends per record at 1, 8 and 64 concurrent writers on
//! the file sink (group commit), and verification of a 100,000-record export.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrohsm_audit::{
    AuditEntry, AuditKeys, AuditSink, FileAuditConfig, FileAuditSink, MemoryAuditSink, Outcome,
    Verifier,
};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};

fn entry(i: u64) -> AuditEntry {
    let mut e = AuditEntry::new("svc-ci", "sign", Outcome::Success, format!("req-{i}"));
    e.key_id = Some("0190a5c4-1111-7000-8000-000000000001".into());
    e.key_version = Some(3);
    e.source_ip = Some("127.0.0.1".into());
    e
}

fn audit(c: &mut Criterion) {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let Ok(keys) = AuditKeys::new(provider.as_ref(), &[1; 32], &[2; 32]) else { return };
    let keys = Arc::new(keys);
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(sink) =
        FileAuditSink::open(FileAuditConfig::new(dir.path()), provider.clone(), keys.clone())
    else {
        return;
    };
    let sink = Arc::new(sink);

    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    // The in-memory sink: the cost an embedded HSM pays per operation.
    let memory = MemoryAuditSink::new(provider.clone(), keys.clone());
    group.bench_function("append-memory", |b| b.iter(|| rt.block_on(memory.append(entry(1)))));
    drop(memory);
    for writers in [1u64, 8, 64] {
        group.bench_function(
            BenchmarkId::new("append-durable", format!("{writers}-writers")),
            |b| {
                b.iter_custom(|iters| {
                    let per_writer = iters.div_ceil(writers);
                    rt.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let sink = sink.clone();
                                tokio::spawn(async move {
                                    for i in 0..per_writer {
                                        let _ = sink.append(entry(w * 1_000_000 + i)).await;
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            let _ = task.await;
                        }
                        // Time per record actually written.
                        start.elapsed().mul_f64(iters as f64 / (per_writer * writers) as f64)
                    })
                })
            },
        );
    }

    const RECORDS: u64 = 100_000;
    let export = rt.block_on(async {
        // Large enough to keep every line: the export must be the whole chain.
        let memory =
            MemoryAuditSink::with_capacity(provider.clone(), keys.clone(), 2 * RECORDS as usize);
        for i in 0..RECORDS {
            let _ = memory.append(entry(i)).await;
            if i % 10_000 == 9_999 {
                let _ = memory.checkpoint().await;
            }
        }
        let mut out = Vec::new();
        let _ = memory.export(&mut out).await;
        out
    });
    let Ok(verifier) =
        Verifier::new(provider.clone()).hmac_key(&[1; 32]).public_key(keys.public_key_der())
    else {
        return;
    };
    // Time only a verification that succeeds.
    match verifier.verify_reader("bench", export.as_slice()) {
        Ok(report) if report.records == RECORDS => {}
        other => {
            eprintln!("the benchmark export does not verify: {other:?}");
            return;
        }
    }
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.bench_function("verify-100k-records", |b| {
        b.iter(|| verifier.verify_reader("bench", export.as_slice()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = audit
}
criterion_main!(benches);
