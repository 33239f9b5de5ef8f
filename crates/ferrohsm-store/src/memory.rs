//! `MemoryKeyStore`: everything in process memory; for tests, examples and embedding.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::index::{Index, WriteKind};
use crate::{KeyId, KeyName, KeyRecord, KeyStore, ListQuery, Page, Result};

/// A key store held entirely in memory. Clones share the same keys. Nothing survives the
/// process, and sealed material is simply dropped on purge.
#[derive(Debug, Clone, Default)]
pub struct MemoryKeyStore {
    index: Arc<RwLock<Index>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated (every write is
        // one `apply`), so a poisoned lock is still consistent.
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks and applies one write under the write lock.
    fn apply(&self, kind: WriteKind, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        let mut index = self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        index.check(kind, &record)?;
        let record = Arc::new(record);
        index.apply(record.clone());
        Ok(record)
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.apply(WriteKind::Create, record)
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        Ok(self.read().get(id))
    }

    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        Ok(self.read().find_by_name(name))
    }

    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.apply(WriteKind::Update, record)
    }

    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.apply(WriteKind::Purge, record)
    }

    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.apply(WriteKind::Import, record)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.read().list(query)
    }

    async fn count(&self) -> Result<usize> {
        Ok(self.read().len())
    }
}
