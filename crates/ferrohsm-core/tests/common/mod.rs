//! Shared set-up for the core's integration tests.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::sync::Arc;

use ferrohsm_core::{Hsm, KeyStore, ListQuery, MasterKey, RequestContext};
use ferrohsm_store::{FileKeyStore, MemoryKeyStore};

/// A fixed master key per seed.
pub fn master(seed: u8) -> MasterKey {
    MasterKey::from_bytes(&[seed; 32]).unwrap()
}

/// An HSM on `store` with master key `seed`.
pub async fn hsm_on(store: Arc<dyn KeyStore>, seed: u8) -> Hsm {
    Hsm::builder().store(store).master_key(master(seed)).build().await.unwrap()
}

/// An HSM on a new memory store.
pub async fn memory_hsm() -> Hsm {
    hsm_on(Arc::new(MemoryKeyStore::new()), 1).await
}

/// Both built-in stores, so behaviour is checked on each.
pub async fn hsms(dir: &std::path::Path) -> Vec<Hsm> {
    let file = FileKeyStore::open(dir).await.unwrap();
    vec![memory_hsm().await, hsm_on(Arc::new(file), 1).await]
}

/// The caller used by tests.
pub fn ctx() -> RequestContext {
    RequestContext::local("tester")
}

/// Every key as JSON, to prove a refused operation changed nothing.
pub async fn snapshot(hsm: &Hsm) -> String {
    let list =
        hsm.list_keys(&ctx(), &ListQuery { limit: 1000, ..ListQuery::default() }).await.unwrap();
    serde_json::to_string(&list).unwrap()
}
