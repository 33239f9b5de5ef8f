//! Listing cost on each built-in store (SPEC §10): the first page of a 100,000-key store with
//! a tag filter, and all keys of a 5,000-key store.

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrohsm_crypto::Algorithm;
use ferrohsm_store::conformance::sample;
use ferrohsm_store::{FileKeyStore, KeyRecord, KeyStore, ListQuery, MemoryKeyStore, Page};

/// Each backend with its 100,000-key and 5,000-key stores.
type Stores = Vec<(&'static str, Box<dyn KeyStore>, Box<dyn KeyStore>)>;

/// `n` keys tagged `env` (4 values) and `team` (100 values).
fn records(n: usize) -> impl Iterator<Item = KeyRecord> {
    (0..n).map(|i| {
        let env = ["prod", "staging", "dev", "test"][i % 4];
        let team = format!("team-{}", i % 100);
        sample(None, Algorithm::Aes256Gcm, &[("env", env), ("team", &team)])
    })
}

async fn fill_memory(n: usize) -> MemoryKeyStore {
    let store = MemoryKeyStore::new();
    for r in records(n) {
        let _ = store.create(r).await;
    }
    store
}

/// Writes record files in the store's documented layout (`keys/<id>.json`) without a fsync
/// each, then opens the store, which loads and checks them: 100,000 durable creates would
/// measure the disk for minutes, not listing.
fn fill_file(dir: &Path, n: usize) -> Option<FileKeyStore> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).ok()?;
    for r in records(n) {
        std::fs::write(keys.join(format!("{}.json", r.id)), serde_json::to_vec(&r).ok()?).ok()?;
    }
    FileKeyStore::open_blocking(dir).ok()
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

fn listing(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    else {
        return;
    };
    let (Ok(dir_large), Ok(dir_small)) = (tempfile::tempdir(), tempfile::tempdir()) else { return };
    let mut stores: Stores = Vec::new();
    let (large, small) =
        rt.block_on(async { (fill_memory(100_000).await, fill_memory(5_000).await) });
    stores.push(("memory", Box::new(large), Box::new(small)));
    if let (Some(large), Some(small)) =
        (fill_file(dir_large.path(), 100_000), fill_file(dir_small.path(), 5_000))
    {
        stores.push(("file", Box::new(large), Box::new(small)));
    }
    let mut group = c.benchmark_group("store");
    for (kind, large, small) in &stores {
        let filter =
            ListQuery { tags: vec![("team".into(), "team-7".into())], ..ListQuery::default() };
        group.bench_function(format!("{kind}/list-100k-first-page-tag-filter"), |b| {
            b.iter(|| rt.block_on(large.list(&filter)))
        });
        group.bench_function(format!("{kind}/list-5k-all"), |b| {
            b.iter(|| rt.block_on(list_all(small.as_ref())))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = listing
}
criterion_main!(benches);
