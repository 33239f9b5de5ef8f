//! `FileKeyStore`: one JSON file per key in a data directory, written atomically, served from
//! an in-memory index.
//!
//! Layout: `<data-dir>/.lock` (held exclusively while open) and `<data-dir>/keys/<id>.json`.
//! A write goes to a temporary file that is fsynced, renamed over the record, and followed by
//! an fsync of the directory; only then is it acknowledged. On open, leftover temporary files
//! (a crash before the rename) are deleted, and interrupted wipes are finished.
//!
//! Purging overwrites the old record's bytes with zeros before unlinking them. On copy-on-write
//! file systems and flash storage the old blocks may survive that; the material in them is
//! still sealed under the master key, which is the real protection.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use crate::index::{Index, WriteKind};
use crate::{Error, KeyId, KeyName, KeyRecord, KeyStore, ListQuery, Page, Result};

const KEYS_DIR: &str = "keys";
const LOCK_FILE: &str = ".lock";
const RECORD_EXT: &str = ".json";
const TEMP_EXT: &str = ".tmp";
const WIPE_EXT: &str = ".wipe";

/// A durable key store in a directory. Only one process may open a directory at a time.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    keys_dir: PathBuf,
    index: RwLock<Index>,
    /// Writes waiting to be committed, and whether a writer is committing (group commit: the
    /// first waiting writer commits everything queued, with one directory fsync for all).
    queue: Mutex<Queue>,
    /// Makes temporary file names unique within the process.
    temp_counter: AtomicU64,
    /// Records that could not be read at open: quarantined, reported, refused by id.
    damaged: Vec<crate::DamagedRecord>,
    /// Holds the directory's exclusive lock for the store's lifetime.
    _lock: File,
}

impl FileKeyStore {
    /// Opens (creating if needed) the store in `data_dir`, loading every record into memory.
    ///
    /// Fails with [`Error::Locked`] if another process has it open, and with
    /// [`Error::Corrupt`] if a record file cannot be read as a valid record.
    pub async fn open(data_dir: impl Into<PathBuf>) -> Result<Self> {
        let data_dir = data_dir.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir))
            .await
            .map_err(|e| Error::internal("a storage task failed", e))?
    }

    /// [`FileKeyStore::open`] for non-async callers.
    pub fn open_blocking(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
        let keys_dir = data_dir.join(KEYS_DIR);
        std::fs::create_dir_all(&keys_dir).map_err(Error::io(&keys_dir))?;
        std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(&keys_dir))?;

        let lock_path = data_dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(format!("the data directory {}", data_dir.display())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
        }

        let mut index = Index::default();
        let mut damaged = Vec::new();
        let mut cleaned = false;
        let entries = std::fs::read_dir(&keys_dir).map_err(Error::io(&keys_dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(&keys_dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TEMP_EXT) {
                // A write that crashed before its rename: never acknowledged, so dropped.
                tracing::warn!(path = %path.display(), "removing an unfinished write");
                std::fs::remove_file(&path).map_err(Error::io(&path))?;
                cleaned = true;
            } else if let Some(record_name) = name.strip_suffix(WIPE_EXT) {
                // A purge keeps the old record reachable as `<id>.json.wipe` (a hard link) until
                // the tombstone is renamed over `<id>.json`. If the crash came before the rename
                // was durable, both names are still the same file: the live record, which must
                // not be wiped. Only a `.wipe` that is a different file holds old material.
                let record = keys_dir.join(record_name);
                if same_file(&path, &record) {
                    tracing::warn!(path = %path.display(), "dropping the link of a purge that never happened");
                    std::fs::remove_file(&path).map_err(Error::io(&path))?;
                } else {
                    tracing::warn!(path = %path.display(), "finishing an interrupted wipe");
                    wipe_file(&path)?;
                }
                cleaned = true;
            } else if let Some(stem) = name.strip_suffix(RECORD_EXT) {
                // One damaged record must not take every other key offline: it is
                // quarantined (left in place, reported, refused by id) and the rest load.
                let loaded = load_record(&path, stem).and_then(|record| {
                    index.check_create_on_load(&record).map_err(|_| Error::Corrupt {
                        record: stem.to_owned(),
                        reason: "duplicate id or name".into(),
                    })?;
                    Ok(record)
                });
                match loaded {
                    Ok(record) => index.apply(Arc::new(record)),
                    Err(Error::Corrupt { reason, .. }) => {
                        tracing::error!(path = %path.display(), %reason, "quarantining a damaged key record");
                        damaged.push(crate::DamagedRecord {
                            location: path.display().to_string(),
                            id: Some(stem.to_owned()),
                            reason,
                        });
                    }
                    Err(e) => return Err(e),
                }
            } else {
                tracing::warn!(path = %path.display(), "ignoring an unexpected file in the key store");
            }
        }
        if cleaned {
            sync_dir(&keys_dir)?;
        }
        Ok(FileKeyStore {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                keys_dir,
                index: RwLock::new(index),
                queue: Mutex::new(Queue::default()),
                temp_counter: AtomicU64::new(0),
                damaged,
                _lock: lock,
            }),
        })
    }

    /// The approvals kept in this store's data directory (`<data-dir>/approvals`), under the
    /// same exclusive lock.
    pub async fn approval_store(&self) -> Result<crate::FileApprovalStore> {
        let dir = self.inner.data_dir.join("approvals");
        let guard = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            crate::approvals::FileApprovalStore::open_blocking(dir, Box::new(guard))
        })
        .await
        .map_err(|e| Error::internal("a storage task failed", e))?
    }

    /// The token revocations kept in this store's data directory
    /// (`<data-dir>/revocations`), under the same exclusive lock.
    pub async fn token_revocation_store(&self) -> Result<crate::FileTokenRevocationStore> {
        let dir = self.inner.data_dir.join("revocations");
        let guard = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            crate::tokens::FileTokenRevocationStore::open_blocking(dir, Box::new(guard))
        })
        .await
        .map_err(|e| Error::internal("a storage task failed", e))?
    }

    async fn write(&self, kind: WriteKind, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write(kind, record))
            .await
            .map_err(|e| Error::internal("a storage task failed", e))?
    }
}

/// Where a queued write's answer goes.
type Reply = std::sync::mpsc::Sender<Result<Arc<KeyRecord>>>;

/// One queued write.
struct Job {
    kind: WriteKind,
    record: KeyRecord,
    reply: Reply,
}

/// The writes waiting for a commit.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    leading: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.jobs.len())
            .field("leading", &self.leading)
            .finish()
    }
}

/// Gives the lead back if a commit panics (a normal end hands it back under the queue lock).
struct LeadGuard<'a>(&'a Mutex<Queue>);

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).leading = false;
        }
    }
}

/// The writes of one commit so far: staged records (the newest per key) and the names they
/// claim, and who waits for each, with its file.
#[derive(Default)]
struct Batch {
    records: std::collections::HashMap<KeyId, Arc<KeyRecord>>,
    names: std::collections::HashSet<KeyName>,
    pending: Vec<(Reply, Arc<KeyRecord>, Staged)>,
}

/// A record's new contents under a temporary name, written but not yet synced.
struct Staged {
    temp: PathBuf,
    file: File,
    path: PathBuf,
}

/// Files each syncing thread takes at least (fewer threads for small batches).
const FILES_PER_SYNC_THREAD: usize = 4;

/// Threads that fsync one batch's files at most.
const SYNC_THREADS: usize = 16;

/// Writes staged (each holding its temporary file open) before they are committed, whatever
/// is still queued: bounds the open files of one commit.
const MAX_STAGED: usize = 64;

/// Fsyncs the staged files, several threads at once: concurrent fsyncs on one filesystem
/// share its journal commits, where one after another each waits for its own. Answers one
/// result per file, in order.
fn sync_files(staged: &[&Staged]) -> Vec<Result<()>> {
    let sync = |s: &Staged| s.file.sync_all().map_err(Error::io(&s.temp));
    if staged.len() <= 1 {
        return staged.iter().map(|s| sync(s)).collect();
    }
    let per_thread = staged.len().div_ceil(SYNC_THREADS).max(FILES_PER_SYNC_THREAD);
    std::thread::scope(|scope| {
        let started: Vec<_> = staged
            .chunks(per_thread)
            .map(|chunk| {
                let spawned = std::thread::Builder::new()
                    .name("ferrohsm-key-sync".into())
                    .spawn_scoped(scope, move || chunk.iter().map(|s| sync(s)).collect::<Vec<_>>());
                (chunk, spawned)
            })
            .collect();
        started
            .into_iter()
            .flat_map(|(chunk, spawned)| match spawned {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|_| Err(Error::internal("syncing a key file", "the thread panicked")))
                        .collect()
                }),
                // No thread to be had (the process is at its limit): sync here instead.
                Err(_) => chunk.iter().map(|s| sync(s)).collect(),
            })
            .collect()
    })
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Every index change is a single `apply` after the file is durable, so a poisoned lock
        // still guards a consistent index.
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a write and waits for its commit. Whoever finds no commit running commits every
    /// queued write (its own included) until the queue is empty.
    fn write(&self, kind: WriteKind, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        let (reply, answer) = std::sync::mpsc::channel();
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.jobs.push(Job { kind, record, reply });
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            // Hands the lead back even if a commit panics, so later writers are not stuck.
            let _lead = LeadGuard(&self.queue);
            loop {
                let jobs = {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if queue.jobs.is_empty() {
                        queue.leading = false;
                        break;
                    }
                    std::mem::take(&mut queue.jobs)
                };
                self.commit(jobs);
            }
        }
        answer.recv().unwrap_or_else(|e| Err(Error::internal("a key store commit was lost", e)))
    }

    /// Commits a batch: each write is checked against the index and the batch's earlier
    /// writes and its file written to a temporary name; the temporary files are fsynced
    /// together (concurrently, so the filesystem's journal commits them at once), renamed into
    /// place, and one directory fsync makes them all durable; only then are they applied to
    /// the index and answered. Purges (which wipe the old file) are committed one at a time.
    fn commit(&self, jobs: Vec<Job>) {
        let mut batch = Batch::default();
        for job in jobs {
            if matches!(job.kind, WriteKind::Purge) {
                self.finish(&mut batch);
                let _ = job.reply.send(self.write_one(job.kind, job.record));
                continue;
            }
            match self.stage(job.kind, job.record, &batch) {
                Ok((record, staged)) => {
                    if let Some(name) = &record.name {
                        batch.names.insert(name.clone());
                    }
                    batch.records.insert(record.id, record.clone());
                    batch.pending.push((job.reply, record, staged));
                    if batch.pending.len() >= MAX_STAGED {
                        self.finish(&mut batch);
                    }
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        self.finish(&mut batch);
    }

    /// Checks one write and writes its file under a temporary name (synced and renamed by
    /// `finish`).
    fn stage(
        &self,
        kind: WriteKind,
        record: KeyRecord,
        batch: &Batch,
    ) -> Result<(Arc<KeyRecord>, Staged)> {
        {
            let index = self.read();
            let current = batch.records.get(&record.id).cloned().or_else(|| index.get(&record.id));
            match kind {
                WriteKind::Create | WriteKind::Import => {
                    if current.is_some() {
                        return Err(Error::AlreadyExists(record.id));
                    }
                    if let Some(name) = &record.name
                        && (batch.names.contains(name) || index.find_by_name(name).is_some())
                    {
                        return Err(Error::NameTaken(name.clone()));
                    }
                    if matches!(kind, WriteKind::Create) {
                        record.check_new()?;
                    } else {
                        record.check_invariants()?;
                    }
                }
                WriteKind::Update => {
                    current.ok_or(Error::NotFound(record.id))?.check_update(&record)?;
                }
                WriteKind::Purge => {
                    return Err(Error::internal("staging a purge", "purges commit alone"));
                }
            }
        }
        let path = self.keys_dir.join(format!("{}{RECORD_EXT}", record.id));
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::internal("encoding a record", e))?;
        let (temp, file) = unsynced_temp_file(&self.keys_dir, &self.temp_counter, &path, &bytes)?;
        Ok((Arc::new(record), Staged { temp, file, path }))
    }

    /// Makes the staged writes durable (their files fsynced together, renamed, then one
    /// directory fsync), applies them and answers. A write whose own file fails is refused
    /// alone (its temporary file removed); a failed directory fsync refuses them all.
    fn finish(&self, batch: &mut Batch) {
        if batch.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut batch.pending);
        batch.records.clear();
        batch.names.clear();
        let staged: Vec<&Staged> = pending.iter().map(|(_, _, staged)| staged).collect();
        let synced = sync_files(&staged);
        drop(staged);
        let mut placed = Vec::with_capacity(pending.len());
        for ((reply, record, staged), synced) in pending.into_iter().zip(synced) {
            let renamed = synced.and_then(|()| {
                std::fs::rename(&staged.temp, &staged.path).map_err(Error::io(&staged.path))
            });
            match renamed {
                Ok(()) => placed.push((reply, record)),
                Err(e) => {
                    let _ = std::fs::remove_file(&staged.temp);
                    let _ = reply.send(Err(e));
                }
            }
        }
        if placed.is_empty() {
            return;
        }
        match sync_dir(&self.keys_dir) {
            Ok(()) => {
                let mut index = self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                for (_, record) in &placed {
                    index.apply(record.clone());
                }
                drop(index);
                for (reply, record) in placed {
                    let _ = reply.send(Ok(record));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for (reply, _) in placed {
                    let _ = reply.send(Err(Error::internal("syncing the key directory", &reason)));
                }
            }
        }
    }

    /// One write on its own (purges): check, replace the file durably, apply.
    fn write_one(&self, kind: WriteKind, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.read().check(kind, &record)?;
        let path = self.keys_dir.join(format!("{}{RECORD_EXT}", record.id));
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::internal("encoding a record", e))?;
        self.write_atomic(&path, &bytes, matches!(kind, WriteKind::Purge))?;
        let record = Arc::new(record);
        self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner()).apply(record.clone());
        Ok(record)
    }

    /// Replaces `path` with `bytes` atomically and durably; with `wipe`, the old contents are
    /// overwritten with zeros once the new file is in place.
    fn write_atomic(&self, path: &Path, bytes: &[u8], wipe: bool) -> Result<()> {
        atomic_replace(&self.keys_dir, &self.temp_counter, path, bytes, wipe)
    }
}

/// A temporary file in `dir` holding `bytes`, named after `path`, written but not synced.
fn unsynced_temp_file(
    dir: &Path,
    counter: &AtomicU64,
    path: &Path,
    bytes: &[u8],
) -> Result<(PathBuf, File)> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{file_name}.{}.{n}{TEMP_EXT}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(Error::io(&temp))?;
    if let Err(e) = file.write_all(bytes) {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io(&temp)(e));
    }
    Ok((temp, file))
}

/// A fsynced temporary file in `dir` holding `bytes`, named after `path`.
fn temp_file(dir: &Path, counter: &AtomicU64, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let (temp, file) = unsynced_temp_file(dir, counter, path, bytes)?;
    if let Err(e) = file.sync_all() {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io(&temp)(e));
    }
    Ok(temp)
}

/// Replaces `path` (in `dir`) with `bytes`: a fsynced temporary file renamed over it, then a
/// directory fsync. With `wipe`, the old contents are overwritten with zeros afterwards.
pub(crate) fn atomic_replace(
    dir: &Path,
    counter: &AtomicU64,
    path: &Path,
    bytes: &[u8],
    wipe: bool,
) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = temp_file(dir, counter, path, bytes)?;
    let wipe_path = dir.join(format!("{file_name}{WIPE_EXT}"));
    if wipe && path.exists() {
        // Keep the old inode reachable so it can be wiped after the rename, and so a crash
        // in between leaves a `.wipe` file that the next open finishes.
        let _ = std::fs::remove_file(&wipe_path);
        std::fs::hard_link(path, &wipe_path).map_err(Error::io(&wipe_path))?;
    }
    std::fs::rename(&temp, path).map_err(Error::io(path))?;
    sync_dir(dir)?;
    if wipe && wipe_path.exists() {
        wipe_file(&wipe_path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

impl Index {
    /// On load, records come with any revision and state; only uniqueness is checked here
    /// (each record's own invariants were checked by `load_record`).
    fn check_create_on_load(&self, record: &KeyRecord) -> Result<()> {
        if self.get(&record.id).is_some() {
            return Err(Error::AlreadyExists(record.id));
        }
        if let Some(name) = &record.name
            && self.find_by_name(name).is_some()
        {
            return Err(Error::NameTaken(name.clone()));
        }
        Ok(())
    }
}

fn load_record(path: &Path, stem: &str) -> Result<KeyRecord> {
    let corrupt = |reason: String| Error::Corrupt { record: stem.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let record: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if stem.parse::<KeyId>().ok() != Some(record.id) {
        return Err(corrupt(format!("file name does not match key id {}", record.id)));
    }
    record.check_invariants().map_err(|e| corrupt(e.to_string()))?;
    Ok(record)
}

/// Whether two paths name the same file (same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Overwrites a file's bytes with zeros, flushes them, and unlinks it.
fn wipe_file(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
    let mut file = OpenOptions::new().write(true).open(path).map_err(Error::io(path))?;
    let zeros = vec![0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..n]).map_err(Error::io(path))?;
        left -= n as u64;
    }
    file.sync_all().map_err(Error::io(path))?;
    drop(file);
    std::fs::remove_file(path).map_err(Error::io(path))
}

/// One `<id>.json` file of a directory of records, parsed (or why it could not be).
pub(crate) struct JsonFile<T> {
    pub(crate) path: PathBuf,
    pub(crate) stem: String,
    pub(crate) parsed: std::result::Result<T, String>,
}

/// Opens (creating it 0700) a directory of `<id>.json` records: removes unfinished writes
/// (`.tmp`, never acknowledged) and parses each record, checking that its file name is its
/// id. The caller decides what a damaged file means.
pub(crate) fn read_json_dir<T: serde::de::DeserializeOwned>(
    dir: &Path,
    id_of: impl Fn(&T) -> String,
) -> Result<Vec<JsonFile<T>>> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io(dir))?;
    let mut files = Vec::new();
    let mut cleaned = false;
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let path = entry.map_err(Error::io(dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(TEMP_EXT) {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
            cleaned = true;
        } else if let Some(stem) = name.strip_suffix(RECORD_EXT) {
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            let parsed =
                serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()).and_then(|record| {
                    if id_of(&record) == stem {
                        Ok(record)
                    } else {
                        Err("the file name does not match the record's id".to_owned())
                    }
                });
            files.push(JsonFile { stem: stem.to_owned(), path, parsed });
        }
    }
    if cleaned {
        sync_dir(dir)?;
    }
    Ok(files)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

#[async_trait]
impl KeyStore for FileKeyStore {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(WriteKind::Create, record).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        let name = id.to_string();
        if let Some(d) = self.inner.damaged.iter().find(|d| d.id.as_deref() == Some(&name)) {
            return Err(Error::Corrupt { record: name, reason: d.reason.clone() });
        }
        Ok(self.inner.read().get(id))
    }

    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        Ok(self.inner.read().find_by_name(name))
    }

    fn damaged(&self) -> Vec<crate::DamagedRecord> {
        self.inner.damaged.clone()
    }

    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(WriteKind::Update, record).await
    }

    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(WriteKind::Purge, record).await
    }

    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.write(WriteKind::Import, record).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.inner.read().list(query)
    }

    async fn count(&self) -> Result<usize> {
        Ok(self.inner.read().len())
    }
}

/// Test support for the conformance harness: leave what a crash mid-write would leave.
#[cfg(feature = "conformance")]
pub(crate) fn leave_crash_debris(data_dir: &Path) -> std::io::Result<()> {
    let keys = data_dir.join(KEYS_DIR);
    // A temp file cut off mid-write, as if the process died before fsync and rename.
    std::fs::write(
        keys.join(format!(".{}{RECORD_EXT}.1.0{TEMP_EXT}", KeyId::generate())),
        br#"{"id":"01"#,
    )?;
    // An old record kept for wiping after a purge's rename.
    std::fs::write(
        keys.join(format!("{}{RECORD_EXT}{WIPE_EXT}", KeyId::generate())),
        b"old sealed bytes",
    )?;
    Ok(())
}
