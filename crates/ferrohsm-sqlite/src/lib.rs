//! The SQLite backend: key records, approvals, token revocations and the audit log in one
//! database file, behind the same traits as the memory and filesystem backends.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a write is acknowledged only after its
//! transaction is in the fsynced WAL. Every write goes through one writer task that commits
//! many queued writes per transaction (group commit: one fsync for all of them), keys and
//! audit records alike. Reads use a small pool of connections and see committed data only.
//!
//! Several handles on one file (in one process or several) stay correct: every write runs in
//! a `BEGIN IMMEDIATE` transaction and checks the stored revision inside it, and the audit
//! writer re-reads the chain head inside each transaction, so the chain never forks.
//!
//! This crate must never receive key material in clear or the master key, never acknowledge
//! a write before its transaction committed, and never rewrite an audit line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrohsm_audit::{AuditHead, AuditKeys, Checkpoint};
use ferrohsm_crypto::CryptoProvider;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

mod approvals;
mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
mod keys;
mod schema;
mod tokens;
mod writer;

pub use approvals::SqliteApprovalStore;
pub use audit::SqliteAuditSink;
pub use keys::SqliteKeyStore;
pub use tokens::SqliteTokenRevocationStore;

use writer::{Job, Writer};

/// The store crate's result type: SQLite errors become its generic errors.
pub(crate) type Result<T, E = ferrohsm_store::Error> = std::result::Result<T, E>;

/// How long a writer waits for another handle's transaction before giving up (retryable).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections in the pool.
const READERS: u32 = 4;

/// Queued writes waiting for the writer; callers beyond it wait for room.
const QUEUE: usize = 16_384;

/// When the audit log writes a signed checkpoint by itself.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// After this many records since the last checkpoint.
    pub every_records: u64,
    /// After this long since the last checkpoint, if records were added.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { every_records: 10_000, every: Duration::from_secs(60) }
    }
}

/// One opened database: hands out the four stores, which share its pool and writer.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    db: Arc<Db>,
}

#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) path: PathBuf,
    pub(crate) pool: SqlitePool,
    pub(crate) writer: Mutex<Option<mpsc::Sender<Job>>>,
    pub(crate) shared: Arc<Shared>,
    /// Answered (or dropped) when the writer's thread ends.
    writer_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// What the writer publishes for readers after each commit.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) head: Mutex<AuditHead>,
    pub(crate) latest: Mutex<Option<Checkpoint>>,
    pub(crate) failure: Mutex<Option<String>>,
    /// Rows found unreadable so far (reported by `damaged()`).
    pub(crate) damaged: Mutex<Vec<ferrohsm_store::DamagedRecord>>,
}

impl SqliteBackend {
    /// Opens (creating it 0600 if needed) the database at `path` and migrates it to the
    /// current schema. `audit_keys` seal the audit chain.
    pub async fn open(
        path: &Path,
        provider: Arc<dyn CryptoProvider>,
        audit_keys: Arc<AuditKeys>,
    ) -> Result<Self> {
        Self::open_with(path, provider, audit_keys, CheckpointPolicy::default()).await
    }

    /// [`SqliteBackend::open`] with an explicit checkpoint policy.
    pub async fn open_with(
        path: &Path,
        provider: Arc<dyn CryptoProvider>,
        audit_keys: Arc<AuditKeys>,
        checkpoints: CheckpointPolicy,
    ) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        }
        if !path.exists() {
            // Created 0600 before SQLite opens it; the WAL and shared-memory files copy it.
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode_0600()
                .open(path)
                .map_err(|e| file_error(path, e))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("secure_delete", "ON")
            .pragma("wal_autocheckpoint", "8192")
            .statement_cache_capacity(256);
        let mut conn = options.connect().await.map_err(db_error("opening the database"))?;
        schema::migrate(&mut conn).await?;
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = Writer::open(conn, provider, audit_keys, checkpoints, shared.clone()).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(db_error("opening the read pool"))?;
        let task = spawn_writer(writer, receiver, pool.clone())?;
        Ok(SqliteBackend {
            db: Arc::new(Db {
                path: path.to_path_buf(),
                pool,
                writer: Mutex::new(Some(sender)),
                shared,
                writer_done: Mutex::new(Some(task)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// The key store.
    pub fn key_store(&self) -> SqliteKeyStore {
        SqliteKeyStore::new(self.db.clone())
    }

    /// The approval store.
    pub fn approval_store(&self) -> SqliteApprovalStore {
        SqliteApprovalStore::new(self.db.clone())
    }

    /// The token revocation store.
    pub fn token_revocation_store(&self) -> SqliteTokenRevocationStore {
        SqliteTokenRevocationStore::new(self.db.clone())
    }

    /// The audit sink.
    pub fn audit_sink(&self) -> SqliteAuditSink {
        SqliteAuditSink::new(self.db.clone())
    }

    /// Writes a consistent copy of the whole database to `target` (SQLite `VACUUM INTO`),
    /// while the backend keeps serving: the online backup `docs/storage.md` describes.
    pub async fn backup(&self, target: &Path) -> Result<()> {
        let target = target.to_str().ok_or_else(|| {
            ferrohsm_store::Error::InvalidQuery("the backup path is not valid UTF-8".into())
        })?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.db.pool)
            .await
            .map_err(db_error("writing a backup"))?;
        Ok(())
    }
}

impl Db {
    /// Queues a write for the writer and waits for its commit.
    pub(crate) async fn submit<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Job,
    ) -> std::result::Result<T, Closed> {
        let sender = self.writer.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        sender.send(make(reply)).await.map_err(|_| Closed)?;
        answer.await.map_err(|_| Closed)
    }

    /// Stops the writer after what is queued (the audit log checkpoints on the way out).
    pub(crate) async fn close(&self) {
        let sender = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(sender);
        let task = self.writer_done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    pub(crate) fn note_damaged(&self, record: ferrohsm_store::DamagedRecord) {
        let mut damaged = self.shared.damaged.lock().unwrap_or_else(|p| p.into_inner());
        if damaged.len() < 1000 && !damaged.contains(&record) {
            tracing::error!(location = %record.location, reason = %record.reason, "an unreadable row is quarantined");
            damaged.push(record);
        }
    }
}

/// Runs the writer on a thread of its own (with a single-threaded runtime): each of its
/// statements is a round trip to SQLite's worker thread, and on the shared runtime every one of
/// them would also wait behind the request tasks queued there, which stretched each group
/// commit to several milliseconds under load.
///
/// Beside it runs the WAL checkpointer: it copies committed pages from the WAL into the
/// database file in the background, so that when the writer's own automatic checkpoint falls
/// due (at `wal_autocheckpoint` pages, inside a commit) almost nothing is left for it to copy.
fn spawn_writer(
    writer: Writer,
    receiver: mpsc::Receiver<Job>,
    pool: SqlitePool,
) -> Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| ferrohsm_store::Error::backend("starting the database writer", e))?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ferrohsm-sqlite-writer".into())
        .spawn(move || {
            runtime.block_on(async {
                let checkpointer = tokio::spawn(checkpoint_wal(pool));
                writer.run(receiver).await;
                checkpointer.abort();
            });
            let _ = done.send(());
        })
        .map_err(|e| ferrohsm_store::Error::backend("starting the database writer", e))?;
    Ok(ended)
}

/// How often the background checkpointer copies the WAL into the database file.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies what the WAL holds into the database file (a `PASSIVE` checkpoint: it never waits
/// for the writer or readers, and skips what they still use), again and again.
async fn checkpoint_wal(pool: SqlitePool) {
    let mut tick = tokio::time::interval(WAL_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::debug!(error = %e, "a background WAL checkpoint failed (the writer's own will run)");
        }
    }
}

/// The writer has stopped (the backend was closed, or its task ended).
#[derive(Debug)]
pub(crate) struct Closed;

impl From<Closed> for ferrohsm_store::Error {
    fn from(_: Closed) -> Self {
        ferrohsm_store::Error::Unavailable {
            what: "the database writer stopped".into(),
            cause: None,
        }
    }
}

impl From<Closed> for ferrohsm_audit::Error {
    fn from(_: Closed) -> Self {
        ferrohsm_audit::Error::Unavailable("the audit log is closed".into())
    }
}

/// Maps an SQLite error to the store's generic errors: busy, locked, full and I/O errors are
/// retryable (`Unavailable`); the rest are backend failures.
pub(crate) fn db_error(what: &'static str) -> impl Fn(sqlx::Error) -> ferrohsm_store::Error {
    move |e| {
        let retryable = match &e {
            sqlx::Error::Database(db) => {
                // SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_IOERR 10, SQLITE_FULL 13 (and their
                // extended codes, whose low byte is the primary code).
                let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff;
                matches!(code, 5 | 6 | 10 | 13)
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            _ => false,
        };
        if retryable {
            ferrohsm_store::Error::Unavailable { what: what.into(), cause: Some(Box::new(e)) }
        } else {
            ferrohsm_store::Error::Backend { what: what.into(), cause: Box::new(e) }
        }
    }
}

pub(crate) use ferrohsm_sql::{audit_error, millis, nanos};

fn file_error(path: &Path, source: std::io::Error) -> ferrohsm_store::Error {
    ferrohsm_store::Error::Backend {
        what: "creating the database file".into(),
        cause: Box::new(ferrohsm_store::FileError { path: path.to_path_buf(), source }),
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
