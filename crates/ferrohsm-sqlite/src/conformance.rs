//! Harnesses that run the store and audit conformance suites against SQLite.
#![allow(clippy::expect_used, reason = "test support: failures must stop the test")]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{SqliteBackend, SqliteKeyStore};

/// An SQLite database in a fresh temporary directory.
#[derive(Debug)]
pub struct SqliteHarness(tempfile::TempDir);

impl SqliteHarness {
    /// A harness around a new temporary directory.
    pub fn new() -> Self {
        SqliteHarness(tempfile::tempdir().expect("creating a temporary directory"))
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.0.path().join("ferrohsm.db")
    }

    /// Opens a backend on the harness's database (a second call opens a second handle).
    pub async fn backend(&self) -> SqliteBackend {
        let (provider, keys) = ferrohsm_audit::conformance::keys();
        SqliteBackend::open(&self.path(), provider, keys).await.expect("opening the database")
    }
}

impl Default for SqliteHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ferrohsm_store::conformance::Harness for SqliteHarness {
    type Store = SqliteKeyStore;

    async fn open(&self) -> SqliteKeyStore {
        self.backend().await.key_store()
    }

    async fn approvals(&self) -> Arc<dyn ferrohsm_store::ApprovalStore> {
        Arc::new(self.backend().await.approval_store())
    }

    async fn second_handle(&self, _first: &SqliteKeyStore) -> Option<SqliteKeyStore> {
        Some(self.backend().await.key_store())
    }
}

#[async_trait]
impl ferrohsm_audit::conformance::SinkHarness for SqliteHarness {
    async fn open(&self) -> Arc<dyn ferrohsm_audit::AuditSink> {
        Arc::new(self.backend().await.audit_sink())
    }

    async fn second(&self) -> Option<Arc<dyn ferrohsm_audit::AuditSink>> {
        Some(Arc::new(self.backend().await.audit_sink()))
    }
}
