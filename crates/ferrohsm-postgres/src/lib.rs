//! The PostgreSQL backend: key records, approvals, token revocations and the audit log in one
//! database that several FerroHSM server replicas share (`docs/scaling.md`).
//!
//! Every write of a replica goes through its writer task, which commits many queued writes
//! per transaction (group commit). Each write transaction first locks the single row of
//! `audit_head` (`SELECT … FOR UPDATE`): the writers of all replicas take turns, so the audit
//! chain continues from the head the previous transaction left (it never forks), records get
//! consecutive positions, and every key and approval write checks the stored revision under
//! that lock and again in SQL (`UPDATE … WHERE revision = $old`). Reads use a small pool and
//! see committed data only; a key and its versions are read in one snapshot.
//!
//! This crate must never receive key material in clear or the master key, never acknowledge
//! a write before its transaction committed, never rewrite an audit line, and never put the
//! database password in a log line, an error or `Debug` output.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrohsm_audit::AuditKeys;
use ferrohsm_crypto::CryptoProvider;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

mod approvals;
mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
mod keys;
mod leases;
mod schema;
mod tokens;
mod writer;

pub use approvals::PostgresApprovalStore;
pub use audit::PostgresAuditSink;
pub use keys::PostgresKeyStore;
pub use leases::{PostgresJobLeases, PostgresRateUsage};
pub use tokens::PostgresTokenRevocationStore;

use writer::{Job, Writer};

/// The store crate's result type: PostgreSQL errors become its generic errors.
pub(crate) type Result<T, E = ferrohsm_store::Error> = std::result::Result<T, E>;

/// Read connections in the pool (every operation reads its key: with 64 clients per replica,
/// fewer made the pool the bottleneck).
const READERS: u32 = 16;

/// How long a reader waits for a pooled connection before the request is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Queued writes waiting for the writer; callers beyond it wait for room.
const QUEUE: usize = 16_384;

/// When the audit log writes a signed checkpoint by itself (decided on the shared head row,
/// so replicas do not each write one).
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
pub struct PostgresBackend {
    db: Arc<Db>,
}

#[derive(Debug)]
pub(crate) struct Db {
    /// Where the database is, without credentials (for messages).
    pub(crate) location: String,
    pub(crate) pool: PgPool,
    pub(crate) writer: Mutex<Option<mpsc::Sender<Job>>>,
    pub(crate) shared: Arc<Shared>,
    writer_done: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the writer publishes for readers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) failure: Mutex<Option<String>>,
    /// Rows found unreadable so far (reported by `damaged()`).
    pub(crate) damaged: Mutex<Vec<ferrohsm_store::DamagedRecord>>,
}

/// The connection options of `url` (`postgres://user:password@host:port/database?…`), and
/// where it points without the credentials.
pub fn connect_options(url: &str) -> Result<(PgConnectOptions, String)> {
    let options = PgConnectOptions::from_str(url).map_err(|_| {
        // The parser's message may quote the URL, password included: say only what is wrong.
        ferrohsm_store::Error::InvalidQuery(
            "the database URL is not a postgres:// URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)".into(),
        )
    })?;
    let location = format!(
        "postgres://{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    let options = require_verified_tls(url, options, &location)?;
    // Server-side limits, so that one stalled replica cannot hold the chain head's lock (and
    // with it every replica's writes) for long, and a writer waiting for it answers 503 instead
    // of hanging: a session idle inside a transaction is ended after a minute, a lock is waited
    // for at most 10 s, a statement runs at most 30 s. Read committed whatever the database's
    // default is (the head row lock serialises writers; stricter levels would only add
    // serialisation failures).
    let options = options.application_name("ferrohsm").statement_cache_capacity(256).options([
        ("lock_timeout", "10s"),
        ("statement_timeout", "30s"),
        ("idle_in_transaction_session_timeout", "60s"),
        ("default_transaction_isolation", "read committed"),
    ]);
    Ok((options, location))
}

/// Whether `host` is this machine: a loopback name or address, or a Unix socket directory.
fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A database on another machine is reached only over TLS that verifies its certificate:
/// with no `sslmode` in the URL, `verify-full` (the system's roots, or `sslrootcert=`); an
/// explicit weaker mode (`disable`, `allow`, `prefer`, `require`, which would send key records,
/// audit lines and the password in the clear or to whoever answers) is refused. On this
/// machine the URL decides (the default, `prefer`, uses TLS when the server offers it).
fn require_verified_tls(
    url: &str,
    options: PgConnectOptions,
    location: &str,
) -> Result<PgConnectOptions> {
    use sqlx::postgres::PgSslMode;
    if is_local(options.get_host()) {
        return Ok(options);
    }
    let verified = matches!(options.get_ssl_mode(), PgSslMode::VerifyCa | PgSslMode::VerifyFull);
    let explicit = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("sslmode=")));
    match (verified, explicit) {
        (true, _) => Ok(options),
        (false, false) => Ok(options.ssl_mode(PgSslMode::VerifyFull)),
        (false, true) => Err(ferrohsm_store::Error::InvalidQuery(format!(
            "the database {location} is not on this machine, so its connection must be TLS that \
             verifies the server: use sslmode=verify-full (or verify-ca), with \
             sslrootcert=CA.pem unless the system's roots sign its certificate"
        ))),
    }
}

impl PostgresBackend {
    /// Connects to the database at `url`, migrates it to the current schema (replicas starting
    /// together take turns) and starts the writer. `audit_keys` seal the audit chain.
    pub async fn open(
        url: &str,
        provider: Arc<dyn CryptoProvider>,
        audit_keys: Arc<AuditKeys>,
    ) -> Result<Self> {
        Self::open_with(url, provider, audit_keys, CheckpointPolicy::default()).await
    }

    /// [`PostgresBackend::open`] with an explicit checkpoint policy.
    pub async fn open_with(
        url: &str,
        provider: Arc<dyn CryptoProvider>,
        audit_keys: Arc<AuditKeys>,
        checkpoints: CheckpointPolicy,
    ) -> Result<Self> {
        let (options, location) = connect_options(url)?;
        let mut conn = options.connect().await.map_err(db_error("connecting to the database"))?;
        schema::migrate(&mut conn).await?;
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer =
            Writer::new(conn, options.clone(), provider, audit_keys, checkpoints, shared.clone());
        let pool = PgPoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let task = tokio::spawn(writer.run(receiver));
        Ok(PostgresBackend {
            db: Arc::new(Db {
                location,
                pool,
                writer: Mutex::new(Some(sender)),
                shared,
                writer_done: Mutex::new(Some(task)),
            }),
        })
    }

    /// Where the database is (no credentials).
    pub fn location(&self) -> &str {
        &self.db.location
    }

    /// The key store.
    pub fn key_store(&self) -> PostgresKeyStore {
        PostgresKeyStore::new(self.db.clone())
    }

    /// The approval store.
    pub fn approval_store(&self) -> PostgresApprovalStore {
        PostgresApprovalStore::new(self.db.clone())
    }

    /// The token revocation store.
    pub fn token_revocation_store(&self) -> PostgresTokenRevocationStore {
        PostgresTokenRevocationStore::new(self.db.clone())
    }

    /// The audit sink.
    pub fn audit_sink(&self) -> PostgresAuditSink {
        PostgresAuditSink::new(self.db.clone())
    }

    /// The leases that let one replica at a time run each scheduled job.
    pub fn job_leases(&self) -> PostgresJobLeases {
        PostgresJobLeases::new(self.db.clone())
    }

    /// The rate-limit usage the replicas share.
    pub fn rate_usage(&self) -> PostgresRateUsage {
        PostgresRateUsage::new(self.db.clone())
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
        self.pool.close().await;
    }

    pub(crate) fn note_damaged(&self, record: ferrohsm_store::DamagedRecord) {
        let mut damaged = self.shared.damaged.lock().unwrap_or_else(|p| p.into_inner());
        if damaged.len() < 1000 && !damaged.contains(&record) {
            tracing::error!(location = %record.location, reason = %record.reason, "an unreadable row is quarantined");
            damaged.push(record);
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

/// Whether a PostgreSQL error is worth retrying: the connection or the server is gone or
/// starting, resources ran out (disk full), the transaction lost a serialisation race or
/// waited too long (lock or statement timeout), or the server is a read-only standby (a
/// failover in progress).
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || ["40001", "40P01", "55P03", "57014", "25006"].contains(&code.as_ref())
        }),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Maps a PostgreSQL error to the store's generic errors: lost connections, a restarting
/// server, full disks and serialisation failures are retryable (`Unavailable`, 503); the rest
/// are backend failures.
pub(crate) fn db_error(what: &'static str) -> impl Fn(sqlx::Error) -> ferrohsm_store::Error {
    move |e| {
        if retryable(&e) {
            ferrohsm_store::Error::Unavailable { what: what.into(), cause: Some(Box::new(e)) }
        } else {
            ferrohsm_store::Error::Backend { what: what.into(), cause: Box::new(e) }
        }
    }
}

pub(crate) use ferrohsm_sql::{audit_error, millis, nanos};

/// A `u64` as PostgreSQL's `BIGINT` (saturating).
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS mode `url` connects with (its `Debug` name: the type has no `PartialEq`).
    fn mode(url: &str) -> Result<String> {
        connect_options(url).map(|(options, _)| format!("{:?}", options.get_ssl_mode()))
    }

    #[test]
    fn a_remote_database_needs_verified_tls() {
        // Remote, no sslmode: verified TLS by default.
        assert_eq!(mode("postgres://u:p@db.example:5432/f").ok().as_deref(), Some("VerifyFull"));
        assert_eq!(
            mode("postgres://u@10.0.0.5/f?sslmode=verify-ca").ok().as_deref(),
            Some("VerifyCa")
        );
        // Remote and explicitly unverified: refused, naming the fix and not the password.
        for weak in ["disable", "allow", "prefer", "require"] {
            let url = format!("postgres://u:secret@db.example/f?sslmode={weak}");
            let err = mode(&url).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("sslmode=verify-full"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        // This machine: the URL decides.
        for local in ["127.0.0.1", "localhost", "[::1]", "%2Frun%2Fpostgresql"] {
            let url = format!("postgres://u@{local}/f?sslmode=disable");
            assert_eq!(mode(&url).ok().as_deref(), Some("Disable"), "{url}");
        }
    }
}
