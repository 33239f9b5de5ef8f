//! `TokenRevocationStore`: revoked bearer tokens (by token id or session), persisted so a
//! restart does not bring a revoked token back.
//!
//! A revocation only has to outlive the tokens it can match: every accepted token expires
//! within the server's maximum token lifetime, so a revocation carries `expires_at` and is
//! pruned after it. The table is bounded by [`MAX_TOKEN_REVOCATIONS`] live entries.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::file::{atomic_replace, read_json_dir, sync_dir};
use crate::{Error, Result};

/// The most live revocations a store keeps; adding one more is refused.
pub const MAX_TOKEN_REVOCATIONS: usize = 100_000;

/// What a revocation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMatch {
    /// The token whose `jti` is the value.
    Jti,
    /// Every token whose `sid` is the value.
    Sid,
}

impl TokenMatch {
    /// The wire name (`jti`, `sid`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMatch::Jti => "jti",
            TokenMatch::Sid => "sid",
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRevocation {
    /// Its id (UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// Whether it matches a token id or a session.
    pub matches: TokenMatch,
    /// The `jti` or `sid`.
    pub value: String,
    /// Why, as the revoker said.
    pub reason: Option<String>,
    /// Who revoked it.
    pub revoked_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// When every token it can match has expired, so it can be forgotten.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// An integrity tag set by whoever stores it.
    pub tag: Option<String>,
}

impl TokenRevocation {
    /// Every field but the tag, canonically, for an integrity tag.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.tag = None;
        serde_json::to_vec(&copy).unwrap_or_default()
    }
}

/// Persists token revocations.
#[async_trait]
pub trait TokenRevocationStore: Send + Sync + Debug {
    /// Stores a revocation. Fails when [`MAX_TOKEN_REVOCATIONS`] live ones are kept.
    async fn add(&self, revocation: TokenRevocation, now: OffsetDateTime) -> Result<()>;

    /// Every revocation not yet expired at `now`; expired ones are forgotten.
    async fn live(&self, now: OffsetDateTime) -> Result<Vec<TokenRevocation>>;

    /// Stored revocations that could not be read. The store reports them; the core refuses
    /// to start while any exists (forgetting one could bring a revoked token back).
    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        Vec::new()
    }
}

fn full() -> Error {
    Error::InvalidQuery(format!(
        "{MAX_TOKEN_REVOCATIONS} token revocations are in force; wait for some to expire or lower the maximum token lifetime"
    ))
}

fn live_in(map: &BTreeMap<Uuid, TokenRevocation>, now: OffsetDateTime) -> Vec<TokenRevocation> {
    map.values().filter(|r| r.expires_at > now).cloned().collect()
}

/// Revocations in process memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryTokenRevocationStore {
    map: Arc<RwLock<BTreeMap<Uuid, TokenRevocation>>>,
}

impl MemoryTokenRevocationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenRevocationStore for MemoryTokenRevocationStore {
    async fn add(&self, revocation: TokenRevocation, now: OffsetDateTime) -> Result<()> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TOKEN_REVOCATIONS {
            // Expired ones make room (pruned here and by `live`, not on every add).
            map.retain(|_, r| r.expires_at > now);
            if map.len() >= MAX_TOKEN_REVOCATIONS {
                return Err(full());
            }
        }
        map.insert(revocation.id, revocation);
        Ok(())
    }

    async fn live(&self, now: OffsetDateTime) -> Result<Vec<TokenRevocation>> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, r| r.expires_at > now);
        Ok(live_in(&map, now))
    }
}

/// Revocations as one JSON file each in `<data-dir>/revocations`, written atomically and
/// deleted once expired.
#[derive(Debug, Clone)]
pub struct FileTokenRevocationStore {
    inner: Arc<FileInner>,
}

#[derive(Debug)]
struct FileInner {
    dir: PathBuf,
    map: RwLock<BTreeMap<Uuid, TokenRevocation>>,
    writer: Mutex<()>,
    counter: AtomicU64,
    damaged: Vec<crate::DamagedRecord>,
    /// Keeps the data directory's lock (held by the key store) alive.
    _guard: Box<dyn Debug + Send + Sync>,
}

impl FileTokenRevocationStore {
    pub(crate) fn open_blocking(dir: PathBuf, guard: Box<dyn Debug + Send + Sync>) -> Result<Self> {
        // A damaged revocation is reported (the core then refuses to start: ignoring it would
        // bring a revoked token back; `ferrohsm-server check` names the file).
        let mut map = BTreeMap::new();
        let mut damaged = Vec::new();
        for file in read_json_dir::<TokenRevocation>(&dir, |r| r.id.to_string())? {
            match file.parsed {
                Ok(revocation) => {
                    map.insert(revocation.id, revocation);
                }
                Err(reason) => damaged.push(crate::DamagedRecord {
                    location: file.path.display().to_string(),
                    id: Some(file.stem),
                    reason,
                }),
            }
        }
        Ok(FileTokenRevocationStore {
            inner: Arc::new(FileInner {
                dir,
                map: RwLock::new(map),
                writer: Mutex::new(()),
                counter: AtomicU64::new(0),
                damaged,
                _guard: guard,
            }),
        })
    }

    fn path(&self, id: &Uuid) -> PathBuf {
        self.inner.dir.join(format!("{id}.json"))
    }

    /// Deletes expired revocations (files first, then the map).
    fn prune_blocking(&self, now: OffsetDateTime) -> Result<()> {
        let expired: Vec<Uuid> = {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            map.values().filter(|r| r.expires_at <= now).map(|r| r.id).collect()
        };
        if expired.is_empty() {
            return Ok(());
        }
        for id in &expired {
            let path = self.path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::file(path, e)),
            }
        }
        sync_dir(&self.inner.dir)?;
        let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        for id in expired {
            map.remove(&id);
        }
        Ok(())
    }
}

#[async_trait]
impl TokenRevocationStore for FileTokenRevocationStore {
    async fn add(&self, revocation: TokenRevocation, now: OffsetDateTime) -> Result<()> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = store.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            store.prune_blocking(now)?;
            if store.inner.map.read().unwrap_or_else(|p| p.into_inner()).len()
                >= MAX_TOKEN_REVOCATIONS
            {
                return Err(full());
            }
            let path = store.path(&revocation.id);
            let bytes = serde_json::to_vec_pretty(&revocation)
                .map_err(|e| Error::internal("encoding a record", e))?;
            atomic_replace(&store.inner.dir, &store.inner.counter, &path, &bytes, false)?;
            store
                .inner
                .map
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(revocation.id, revocation);
            Ok(())
        })
        .await
        .map_err(|e| Error::internal("a storage task failed", e))?
    }

    async fn live(&self, now: OffsetDateTime) -> Result<Vec<TokenRevocation>> {
        Ok(live_in(&self.inner.map.read().unwrap_or_else(|p| p.into_inner()), now))
    }

    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        self.inner.damaged.clone()
    }
}
