//! `ApprovalStore`: where dual-control approvals persist, so they survive a restart.
//!
//! The store keeps opaque documents: the core encodes an approval (with its integrity tag
//! inside) and the store sees only its id, revision, whether it is still open, when it last
//! changed, and the bytes. So no backend depends on the policy model, and a backend that
//! edits the bytes is caught by the tag, not trusted.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::file::{atomic_replace, read_json_dir};
use crate::{Error, Result};

/// One approval as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDocument {
    /// Its id (UUIDv7, so ids sort by creation).
    pub id: Uuid,
    /// 1 when created; each update is the stored revision plus one.
    pub revision: u64,
    /// Whether it may still change (pending or approved). Closed ones (executed, denied,
    /// expired) are what retention may remove; open ones are never removed.
    pub open: bool,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The encoded approval, integrity tag included; never interpreted by the store.
    #[serde(with = "body_b64")]
    pub body: Vec<u8>,
}

impl Debug for ApprovalDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalDocument")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("open", &self.open)
            .field("updated_at", &self.updated_at)
            .field("body_len", &self.body.len())
            .finish()
    }
}

mod body_b64 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ferrohsm_crypto::b64::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        ferrohsm_crypto::b64::decode(&text).map_err(serde::de::Error::custom)
    }
}

/// Persists approvals. Every update must be the stored approval's successor (revision plus
/// one), so two concurrent approvers or executions cannot both win.
#[async_trait]
pub trait ApprovalStore: Send + Sync + Debug {
    /// Stores a new approval (revision 1).
    async fn create(&self, approval: ApprovalDocument) -> Result<()>;

    /// The approval with this id.
    async fn get(&self, id: &Uuid) -> Result<Option<ApprovalDocument>>;

    /// Replaces an approval with its successor.
    async fn update(&self, approval: ApprovalDocument) -> Result<()>;

    /// Stores an approval exactly as it is, at any revision (migration between backends,
    /// restore); its id must be free.
    async fn import(&self, approval: ApprovalDocument) -> Result<()>;

    /// Up to `limit` approvals, newest first.
    async fn list(&self, limit: usize) -> Result<Vec<ApprovalDocument>>;

    /// Removes closed approvals last changed before `before`, at most `limit` of them, and
    /// returns how many went. Open approvals are never removed.
    async fn prune_closed(&self, before: OffsetDateTime, limit: usize) -> Result<u64>;

    /// Stored approvals that could not be read when the store opened (quarantined: reported,
    /// and refused by id with [`Error::Corrupt`]).
    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        Vec::new()
    }
}

/// Checks that `next` may be stored as a new approval.
pub(crate) fn check_new(next: &ApprovalDocument) -> Result<()> {
    if next.revision != 1 {
        return Err(Error::ApprovalConflict(next.id));
    }
    Ok(())
}

/// Checks that `next` may replace what is stored.
pub(crate) fn check_successor(
    stored: Option<&ApprovalDocument>,
    next: &ApprovalDocument,
) -> Result<()> {
    let stored = stored.ok_or(Error::ApprovalNotFound(next.id))?;
    if next.revision != stored.revision + 1 {
        return Err(Error::ApprovalConflict(next.id));
    }
    Ok(())
}

/// Up to `limit` approvals, newest first (ids are UUIDv7, so id order is creation order).
fn newest(
    approvals: &RwLock<BTreeMap<Uuid, ApprovalDocument>>,
    limit: usize,
) -> Vec<ApprovalDocument> {
    approvals
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .rev()
        .take(limit)
        .cloned()
        .collect()
}

/// The ids of up to `limit` closed approvals last changed before `before`.
fn prunable(
    approvals: &RwLock<BTreeMap<Uuid, ApprovalDocument>>,
    before: OffsetDateTime,
    limit: usize,
) -> Vec<Uuid> {
    approvals
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|a| !a.open && a.updated_at < before)
        .take(limit)
        .map(|a| a.id)
        .collect()
}

/// An approval file written before approvals became opaque documents (the approval's own
/// JSON, integrity tag inside): read as a document whose body is those bytes, so an upgrade
/// keeps every pending approval. The next change rewrites it in the current format.
fn legacy_document(path: &std::path::Path, stem: &str) -> Option<ApprovalDocument> {
    let bytes = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id: Uuid = value.get("id")?.as_str()?.parse().ok()?;
    if id.to_string() != stem || value.get("tag").is_none() {
        return None;
    }
    let revision = value.get("revision")?.as_u64()?;
    let open = matches!(value.get("state")?.as_str()?, "pending" | "approved");
    let updated_at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(OffsetDateTime::from)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    Some(ApprovalDocument { id, revision, open, updated_at, body: bytes })
}

/// Approvals in process memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryApprovalStore {
    approvals: Arc<RwLock<BTreeMap<Uuid, ApprovalDocument>>>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ApprovalStore for MemoryApprovalStore {
    async fn create(&self, approval: ApprovalDocument) -> Result<()> {
        check_new(&approval)?;
        self.import(approval).await
    }

    async fn import(&self, approval: ApprovalDocument) -> Result<()> {
        let mut map = self.approvals.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&approval.id) {
            return Err(Error::ApprovalConflict(approval.id));
        }
        map.insert(approval.id, approval);
        Ok(())
    }

    async fn get(&self, id: &Uuid) -> Result<Option<ApprovalDocument>> {
        Ok(self.approvals.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
    }

    async fn update(&self, approval: ApprovalDocument) -> Result<()> {
        let mut map = self.approvals.write().unwrap_or_else(|p| p.into_inner());
        check_successor(map.get(&approval.id), &approval)?;
        map.insert(approval.id, approval);
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<ApprovalDocument>> {
        Ok(newest(&self.approvals, limit))
    }

    async fn prune_closed(&self, before: OffsetDateTime, limit: usize) -> Result<u64> {
        let ids = prunable(&self.approvals, before, limit);
        let mut map = self.approvals.write().unwrap_or_else(|p| p.into_inner());
        Ok(ids.iter().filter(|id| map.remove(id).is_some()).count() as u64)
    }
}

/// Approvals as one JSON file each in `<data-dir>/approvals`, written atomically.
#[derive(Debug, Clone)]
pub struct FileApprovalStore {
    inner: Arc<FileInner>,
}

#[derive(Debug)]
struct FileInner {
    dir: PathBuf,
    approvals: RwLock<BTreeMap<Uuid, ApprovalDocument>>,
    writer: Mutex<()>,
    counter: AtomicU64,
    damaged: Vec<crate::DamagedRecord>,
    /// Keeps the data directory's lock (held by the key store) alive.
    _guard: Box<dyn Debug + Send + Sync>,
}

impl FileApprovalStore {
    pub(crate) fn open_blocking(dir: PathBuf, guard: Box<dyn Debug + Send + Sync>) -> Result<Self> {
        let mut approvals = BTreeMap::new();
        let mut damaged = Vec::new();
        for mut file in read_json_dir::<ApprovalDocument>(&dir, |a| a.id.to_string())? {
            if file.parsed.is_err()
                && let Some(doc) = legacy_document(&file.path, &file.stem)
            {
                file.parsed = Ok(doc);
            }
            match file.parsed {
                Ok(approval) => {
                    approvals.insert(approval.id, approval);
                }
                Err(reason) => {
                    tracing::error!(path = %file.path.display(), %reason, "quarantining a damaged approval");
                    damaged.push(crate::DamagedRecord {
                        location: file.path.display().to_string(),
                        id: Some(file.stem),
                        reason,
                    });
                }
            }
        }
        Ok(FileApprovalStore {
            inner: Arc::new(FileInner {
                dir,
                approvals: RwLock::new(approvals),
                writer: Mutex::new(()),
                counter: AtomicU64::new(0),
                damaged,
                _guard: guard,
            }),
        })
    }

    /// Writes `approval`: a new one (`create`, at revision 1 unless `import`) or a successor.
    async fn write(&self, approval: ApprovalDocument, create: bool, import: bool) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            {
                let map = inner.approvals.read().unwrap_or_else(|p| p.into_inner());
                if create {
                    if !import {
                        check_new(&approval)?;
                    }
                    if map.contains_key(&approval.id) {
                        return Err(Error::ApprovalConflict(approval.id));
                    }
                } else {
                    check_successor(map.get(&approval.id), &approval)?;
                }
            }
            let path = inner.dir.join(format!("{}.json", approval.id));
            let bytes = serde_json::to_vec_pretty(&approval)
                .map_err(|e| Error::internal("encoding a record", e))?;
            atomic_replace(&inner.dir, &inner.counter, &path, &bytes, false)?;
            inner
                .approvals
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(approval.id, approval);
            Ok(())
        })
        .await
        .map_err(|e| Error::internal("a storage task failed", e))?
    }
}

#[async_trait]
impl ApprovalStore for FileApprovalStore {
    async fn create(&self, approval: ApprovalDocument) -> Result<()> {
        self.write(approval, true, false).await
    }

    async fn import(&self, approval: ApprovalDocument) -> Result<()> {
        self.write(approval, true, true).await
    }

    async fn get(&self, id: &Uuid) -> Result<Option<ApprovalDocument>> {
        let name = id.to_string();
        if let Some(d) = self.inner.damaged.iter().find(|d| d.id.as_deref() == Some(&name)) {
            return Err(Error::Corrupt { record: name, reason: d.reason.clone() });
        }
        Ok(self.inner.approvals.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
    }

    async fn update(&self, approval: ApprovalDocument) -> Result<()> {
        self.write(approval, false, false).await
    }

    async fn list(&self, limit: usize) -> Result<Vec<ApprovalDocument>> {
        Ok(newest(&self.inner.approvals, limit))
    }

    async fn prune_closed(&self, before: OffsetDateTime, limit: usize) -> Result<u64> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let ids = prunable(&inner.approvals, before, limit);
            let mut removed = 0;
            for id in &ids {
                let path = inner.dir.join(format!("{id}.json"));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::file(path, e)),
                }
                inner.approvals.write().unwrap_or_else(|p| p.into_inner()).remove(id);
                removed += 1;
            }
            if removed > 0 {
                crate::file::sync_dir(&inner.dir)?;
            }
            Ok(removed)
        })
        .await
        .map_err(|e| Error::internal("a storage task failed", e))?
    }

    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        self.inner.damaged.clone()
    }
}
