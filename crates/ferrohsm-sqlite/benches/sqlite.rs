//! The SQLite backend against issue 12's targets: the first page (100) of a 100,000-key store
//! with a tag filter, all keys of a 5,000-key store, durable audit appends at 1, 8, 64 and 512
//! writers (group commit), and durable key creation at 32 concurrent callers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrohsm_audit::{AuditEntry, AuditSink, Outcome};
use ferrohsm_crypto::Algorithm;
use ferrohsm_sqlite::{SqliteBackend, SqliteKeyStore};
use ferrohsm_store::conformance::sample;
use ferrohsm_store::{KeyStore, ListQuery, Page};

async fn open(dir: &std::path::Path) -> Option<SqliteBackend> {
    let (provider, keys) = ferrohsm_audit::conformance::keys();
    SqliteBackend::open(&dir.join("ferrohsm.db"), provider, keys).await.ok()
}

/// `n` keys tagged `env` (4 values) and `team` (100 values), created 2,000 at a time (each
/// group commits in a few transactions).
async fn fill(store: &SqliteKeyStore, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let env = ["prod", "staging", "dev", "test"][i % 4];
        let team = format!("team-{}", i % 100);
        let record = sample(None, Algorithm::Aes256Gcm, &[("env", env), ("team", &team)]);
        let store = store.clone();
        pending.push(tokio::spawn(async move { store.create(record).await.is_ok() }));
        if pending.len() == 2000 {
            for p in pending.drain(..) {
                let _ = p.await;
            }
        }
    }
    for p in pending {
        let _ = p.await;
    }
}

async fn list_all(store: &dyn KeyStore) -> usize {
    let mut n = 0;
    let mut cursor = None;
    loop {
        let query = ListQuery { limit: 1000, cursor, ..ListQuery::default() };
        let Ok(Page { keys, next_cursor }) = store.list(&query).await else { return n };
        n += keys.len();
        match next_cursor {
            Some(c) => cursor = Some(c),
            None => return n,
        }
    }
}

/// A record as the server writes it: its request id is a fresh UUIDv7 (what the server
/// assigns when the client sends none), so the request-id index grows at its end. Client-chosen
/// ids land anywhere in that index and cost more (see `docs/storage.md`).
fn entry() -> AuditEntry {
    let mut e =
        AuditEntry::new("svc-ci", "sign", Outcome::Success, uuid::Uuid::now_v7().to_string());
    e.key_id = Some("0190a5c4-1111-7000-8000-000000000001".into());
    e.key_version = Some(3);
    e.source_ip = Some("127.0.0.1".into());
    e
}

fn sqlite(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    else {
        return;
    };
    let (Ok(large_dir), Ok(small_dir), Ok(audit_dir)) =
        (tempfile::tempdir(), tempfile::tempdir(), tempfile::tempdir())
    else {
        return;
    };
    let Some((large, small, audit)) = rt.block_on(async {
        let large = open(large_dir.path()).await?.key_store();
        let small = open(small_dir.path()).await?.key_store();
        fill(&large, 100_000).await;
        fill(&small, 5_000).await;
        Some((large, small, open(audit_dir.path()).await?))
    }) else {
        return;
    };
    let mut group = c.benchmark_group("store");
    let filter = ListQuery { tags: vec![("team".into(), "team-7".into())], ..ListQuery::default() };
    group.bench_function("sqlite/list-100k-first-page-tag-filter", |b| {
        b.iter(|| rt.block_on(large.list(&filter)))
    });
    group.bench_function("sqlite/list-5k-all", |b| b.iter(|| rt.block_on(list_all(&small))));
    // Durable key creation, 32 callers at once (each create is its own acknowledged write).
    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite/create-durable/32-callers", |b| {
        b.iter_custom(|iters| {
            let per_caller = iters.div_ceil(32);
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..32)
                    .map(|_| {
                        let store = large.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_caller {
                                let r = sample(None, Algorithm::Aes256Gcm, &[("env", "bench")]);
                                let _ = store.create(r).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
                start.elapsed().mul_f64(iters as f64 / (per_caller * 32) as f64)
            })
        })
    });
    group.finish();

    let sink: Arc<dyn AuditSink> = Arc::new(audit.audit_sink());
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    for writers in [1u64, 8, 64, 512] {
        group.bench_function(
            BenchmarkId::new("sqlite-append-durable", format!("{writers}-writers")),
            |b| {
                b.iter_custom(|iters| {
                    let per_writer = iters.div_ceil(writers);
                    rt.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|_| {
                                let sink = sink.clone();
                                tokio::spawn(async move {
                                    for _ in 0..per_writer {
                                        let _ = sink.append(entry()).await;
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            let _ = t.await;
                        }
                        start.elapsed().mul_f64(iters as f64 / (per_writer * writers) as f64)
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = sqlite
}
criterion_main!(benches);
