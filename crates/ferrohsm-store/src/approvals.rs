//! `ApprovalStore`: where dual-control approvals persist, so they survive a restart.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use ferrohsm_policy::Approval;
use uuid::Uuid;

use crate::file::{atomic_replace, read_json_dir};
use crate::{Error, Result};

/// Persists approvals. Every update must be the stored approval's successor (revision plus
/// one), so two concurrent approvers or executions cannot both win.
#[async_trait]
pub trait ApprovalStore: Send + Sync + Debug {
    /// Stores a new approval.
    async fn create(&self, approval: Approval) -> Result<()>;

    /// The approval with this id.
    async fn get(&self, id: &Uuid) -> Result<Option<Approval>>;

    /// Replaces an approval with its successor.
    async fn update(&self, approval: Approval) -> Result<()>;

    /// Up to `limit` approvals, newest first.
    async fn list(&self, limit: usize) -> Result<Vec<Approval>>;

    /// Stored approvals that could not be read when the store opened (quarantined: reported,
    /// and refused by id with [`Error::Corrupt`]).
    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        Vec::new()
    }
}

/// Checks that `next` may replace what is stored.
fn check_successor(stored: Option<&Approval>, next: &Approval) -> Result<()> {
    let stored = stored.ok_or(Error::ApprovalNotFound(next.id))?;
    if next.revision != stored.revision + 1 {
        return Err(Error::ApprovalConflict(next.id));
    }
    Ok(())
}

/// Up to `limit` approvals, newest first (ids are UUIDv7, so id order is creation order).
fn newest(approvals: &RwLock<BTreeMap<Uuid, Approval>>, limit: usize) -> Vec<Approval> {
    approvals
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .rev()
        .take(limit)
        .cloned()
        .collect()
}

/// Approvals in process memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryApprovalStore {
    approvals: Arc<RwLock<BTreeMap<Uuid, Approval>>>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ApprovalStore for MemoryApprovalStore {
    async fn create(&self, approval: Approval) -> Result<()> {
        let mut map = self.approvals.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&approval.id) {
            return Err(Error::ApprovalConflict(approval.id));
        }
        map.insert(approval.id, approval);
        Ok(())
    }

    async fn get(&self, id: &Uuid) -> Result<Option<Approval>> {
        Ok(self.approvals.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
    }

    async fn update(&self, approval: Approval) -> Result<()> {
        let mut map = self.approvals.write().unwrap_or_else(|p| p.into_inner());
        check_successor(map.get(&approval.id), &approval)?;
        map.insert(approval.id, approval);
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<Approval>> {
        Ok(newest(&self.approvals, limit))
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
    approvals: RwLock<BTreeMap<Uuid, Approval>>,
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
        for file in read_json_dir::<Approval>(&dir, |a| a.id.to_string())? {
            match file.parsed {
                Ok(approval) => {
                    approvals.insert(approval.id, approval);
                }
                Err(reason) => {
                    tracing::error!(path = %file.path.display(), %reason, "quarantining a damaged approval");
                    damaged.push(crate::DamagedRecord {
                        path: file.path,
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

    async fn write(&self, approval: Approval, create: bool) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            {
                let map = inner.approvals.read().unwrap_or_else(|p| p.into_inner());
                if create {
                    if map.contains_key(&approval.id) {
                        return Err(Error::ApprovalConflict(approval.id));
                    }
                } else {
                    check_successor(map.get(&approval.id), &approval)?;
                }
            }
            let path = inner.dir.join(format!("{}.json", approval.id));
            let bytes = serde_json::to_vec_pretty(&approval)
                .map_err(|e| Error::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            atomic_replace(&inner.dir, &inner.counter, &path, &bytes, false)?;
            inner
                .approvals
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(approval.id, approval);
            Ok(())
        })
        .await
        .map_err(|e| Error::Io { path: PathBuf::new(), source: std::io::Error::other(e) })?
    }
}

#[async_trait]
impl ApprovalStore for FileApprovalStore {
    async fn create(&self, approval: Approval) -> Result<()> {
        self.write(approval, true).await
    }

    async fn get(&self, id: &Uuid) -> Result<Option<Approval>> {
        let name = id.to_string();
        if let Some(d) = self.inner.damaged.iter().find(|d| d.id.as_deref() == Some(&name)) {
            return Err(Error::Corrupt { path: d.path.clone(), reason: d.reason.clone() });
        }
        Ok(self.inner.approvals.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned())
    }

    async fn update(&self, approval: Approval) -> Result<()> {
        self.write(approval, false).await
    }

    async fn list(&self, limit: usize) -> Result<Vec<Approval>> {
        Ok(newest(&self.inner.approvals, limit))
    }

    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        self.inner.damaged.clone()
    }
}
