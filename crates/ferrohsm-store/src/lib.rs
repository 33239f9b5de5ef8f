//! Key storage for FerroHSM: the [`KeyStore`] trait, the in-memory and filesystem backends,
//! [`RemoteKeyStore`] (any store paired with the key vault holding its vault-held material),
//! and (feature `conformance`) the suite every backend must pass.
//!
//! A store keeps [`KeyRecord`]s: metadata plus immutable versions whose material is already
//! sealed. It enforces the structural rules — unique ids and names, versions that never
//! change or disappear, the key state graph, optimistic concurrency by revision — so that no
//! caller can corrupt a key by mistake. Listing is in id (creation) order with opaque cursors.
//!
//! A store must never receive key material in clear or the master key, and must never
//! acknowledge a write that is not durable (for durable backends).
//!
//! ```
//! use ferrohsm_store::{KeyStore, ListQuery, MemoryKeyStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ferrohsm_store::Result<()> {
//! let store = MemoryKeyStore::new();
//! let page = store.list(&ListQuery::default()).await?;
//! assert!(page.keys.is_empty() && page.next_cursor.is_none());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

mod approvals;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod file;
mod index;
mod leases;
mod memory;
mod query;
mod record;
mod remote;
mod tokens;
mod types;

// Public interface:
pub use approvals::{ApprovalDocument, ApprovalStore, FileApprovalStore, MemoryApprovalStore};
pub use error::{BoxError, Error, FileError, Result};
pub use file::FileKeyStore;
pub use leases::{JobLeases, RateUsage};
pub use memory::MemoryKeyStore;
pub use query::{Cursor, DEFAULT_LIST_LIMIT, ListQuery, MAX_LIST_LIMIT, Page};
pub use record::{ExternalMaterial, KeyRecord, KeyVersion, Revocation, transition_allowed};
pub use remote::{Material, PurgedMaterial, RemoteKeyStore};
pub use tokens::{
    FileTokenRevocationStore, MAX_TOKEN_REVOCATIONS, MemoryTokenRevocationStore, TokenMatch,
    TokenRevocation, TokenRevocationStore,
};
pub use types::{InvalidName, KeyId, KeyName, KeyState, RevocationReason, VersionState};

/// Persists key records. Implementations never receive plaintext key material or the master
/// key: versions arrive sealed.
///
/// Every write is checked against the stored record before it is applied, and is durable
/// before it returns. A refused write leaves the store exactly as it was.
#[async_trait]
pub trait KeyStore: Send + Sync + Debug {
    /// A short name of the backend ("memory", "filesystem", …).
    fn kind(&self) -> &'static str;

    /// Stores a new key: revision 1, active, exactly version 1.
    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>>;

    /// The key with this id, if any.
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>>;

    /// The key with this name, if any.
    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>>;

    /// Replaces a key with its successor: the revision must be the stored one plus one,
    /// existing versions unchanged, new versions appended in sequence, and the state change an
    /// edge of the state graph other than destruction.
    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>>;

    /// Replaces a key pending destruction with its destroyed tombstone and securely wipes the
    /// stored copy of its sealed material.
    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>>;

    /// Stores a record exactly as it is, history and revision included (migration between
    /// backends, restore): its id and name must be free and it must hold every invariant.
    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>>;

    /// One page of keys matching the query.
    async fn list(&self, query: &ListQuery) -> Result<Page>;

    /// How many keys (tombstones included) the store holds.
    async fn count(&self) -> Result<usize>;

    /// Stored records that could not be read when the store opened. They are quarantined:
    /// left where they are for inspection, reported here, and their keys answer
    /// [`Error::Corrupt`], while every other key keeps working.
    fn damaged(&self) -> Vec<DamagedRecord> {
        Vec::new()
    }
}

/// A stored record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// Where it is, in the backend's terms (a file path, a table and row).
    pub location: String,
    /// The key or approval it belongs to, when its name says so.
    pub id: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

#[async_trait]
impl<S: KeyStore + ?Sized> KeyStore for Arc<S> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn damaged(&self) -> Vec<DamagedRecord> {
        (**self).damaged()
    }
    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        (**self).create(record).await
    }
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        (**self).get(id).await
    }
    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        (**self).find_by_name(name).await
    }
    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        (**self).update(record).await
    }
    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        (**self).purge(record).await
    }
    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        (**self).import(record).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page> {
        (**self).list(query).await
    }
    async fn count(&self) -> Result<usize> {
        (**self).count().await
    }
}
