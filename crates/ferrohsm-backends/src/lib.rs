//! The one place where configuration becomes storage: [`BackendConfig`] names a backend kind
//! and where it keeps its data, and [`BackendConfig::open`] opens the key store, approval
//! store, token revocation store and audit sink of that backend together, as one
//! [`Backends`] (one lock, one database file or one PostgreSQL database for all four).
//!
//! [`VaultConfig::open`] likewise turns a server's PKCS#11 settings into the key vault it may
//! keep key material in (`ferrohsm-pkcs11`).
//!
//! Everything above this crate (core, server, CLI) sees only the backend-neutral traits, so
//! an embedding program can also build a [`Backends`] from its own `dyn` implementations.
//!
//! This crate must never hold key material or the master key itself, and must never open a
//! backend partially: either all four stores open, or none stays open.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod vault;
pub use vault::{PinSource, VaultConfig};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use ferrohsm_audit::{
    AuditEntry, AuditKeys, AuditRecord, AuditSink, FileAuditConfig, FileAuditSink, MemoryAuditSink,
};
use ferrohsm_crypto::CryptoProvider;
use ferrohsm_store::{
    ApprovalStore, FileKeyStore, JobLeases, KeyRecord, KeyStore, MemoryApprovalStore,
    MemoryKeyStore, MemoryTokenRevocationStore, RateUsage, TokenRevocationStore,
};

/// The kinds of backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Process memory: nothing survives the process (tests, embedding, demos).
    Memory,
    /// One JSON file per key and approval, and an append-only segmented audit log, in a data
    /// directory (the default).
    Filesystem,
    /// One SQLite database file (WAL, `synchronous=FULL`) for everything.
    Sqlite,
    /// A PostgreSQL database that several server replicas may share (`docs/scaling.md`).
    Postgres,
}

impl BackendKind {
    /// The configuration name (`memory`, `filesystem`, `sqlite`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Filesystem => "filesystem",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }

    /// Every kind, for help texts.
    pub const ALL: [BackendKind; 4] =
        [BackendKind::Filesystem, BackendKind::Sqlite, BackendKind::Postgres, BackendKind::Memory];
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::Config(format!(
                "unknown key store {s:?}: use filesystem, sqlite, postgres or memory"
            ))
        })
    }
}

/// A PostgreSQL URL (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?…]`). Its password
/// never appears in `Debug` output or messages.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL itself, password included (only to connect).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Where it points, without credentials.
    pub fn location(&self) -> String {
        ferrohsm_postgres::connect_options(&self.0)
            .map(|(_, location)| location)
            .unwrap_or_else(|_| "an unreadable postgres:// URL".into())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.location())
    }
}

/// Which backend to open, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The backend.
    pub kind: BackendKind,
    /// The data directory (filesystem: everything lives under it; SQLite: the database is
    /// `DIR/ferrohsm.db` unless [`BackendConfig::database`] names another file).
    pub data_dir: Option<PathBuf>,
    /// The SQLite database file, when not the default in the data directory.
    pub database: Option<PathBuf>,
    /// The PostgreSQL database (the postgres backend only).
    pub database_url: Option<DatabaseUrl>,
    /// The filesystem audit log's segment size (default 64 MiB). Retention removes whole
    /// segments, so it is also the granularity of audit retention there.
    pub audit_segment_bytes: Option<u64>,
}

impl BackendConfig {
    /// The memory backend.
    pub fn memory() -> Self {
        BackendConfig {
            kind: BackendKind::Memory,
            data_dir: None,
            database: None,
            database_url: None,
            audit_segment_bytes: None,
        }
    }

    /// The filesystem backend in `dir`.
    pub fn filesystem(dir: impl Into<PathBuf>) -> Self {
        BackendConfig {
            kind: BackendKind::Filesystem,
            data_dir: Some(dir.into()),
            database: None,
            database_url: None,
            audit_segment_bytes: None,
        }
    }

    /// The SQLite backend with its database in `dir/ferrohsm.db`.
    pub fn sqlite(dir: impl Into<PathBuf>) -> Self {
        BackendConfig {
            kind: BackendKind::Sqlite,
            data_dir: Some(dir.into()),
            database: None,
            database_url: None,
            audit_segment_bytes: None,
        }
    }

    /// The PostgreSQL backend on the database at `url`.
    pub fn postgres(url: impl Into<String>) -> Self {
        BackendConfig {
            kind: BackendKind::Postgres,
            data_dir: None,
            database: None,
            database_url: Some(DatabaseUrl::new(url)),
            audit_segment_bytes: None,
        }
    }

    /// The backend `kind` in `dir` (ignored for memory; postgres also needs
    /// [`BackendConfig::database_url`]).
    pub fn new(kind: BackendKind, dir: impl Into<PathBuf>) -> Self {
        match kind {
            BackendKind::Memory => Self::memory(),
            BackendKind::Filesystem => Self::filesystem(dir),
            BackendKind::Sqlite => Self::sqlite(dir),
            BackendKind::Postgres => BackendConfig {
                kind,
                data_dir: Some(dir.into()),
                database: None,
                database_url: None,
                audit_segment_bytes: None,
            },
        }
    }

    /// Where this backend keeps its data, for start-up lines and errors.
    pub fn location(&self) -> String {
        match self.kind {
            BackendKind::Memory => "process memory".into(),
            BackendKind::Filesystem => {
                self.dir().map(|d| d.display().to_string()).unwrap_or_default()
            }
            BackendKind::Sqlite => {
                self.sqlite_file().map(|d| d.display().to_string()).unwrap_or_default()
            }
            BackendKind::Postgres => {
                self.database_url.as_ref().map(DatabaseUrl::location).unwrap_or_default()
            }
        }
    }

    fn dir(&self) -> Result<&PathBuf> {
        self.data_dir.as_ref().ok_or_else(|| {
            Error::Config(format!("the {} backend needs a data directory", self.kind))
        })
    }

    /// The SQLite database file this configuration opens.
    pub fn sqlite_file(&self) -> Result<PathBuf> {
        match &self.database {
            Some(file) => Ok(file.clone()),
            None => Ok(self.dir()?.join("ferrohsm.db")),
        }
    }

    /// Opens all four stores of the backend. `audit_keys` seal the audit chain (derive them
    /// from the master key, so auditors can verify); a durable audit sink that recovered from
    /// a crash records the recovery before this returns.
    pub async fn open(
        &self,
        provider: Arc<dyn CryptoProvider>,
        audit_keys: Arc<AuditKeys>,
    ) -> Result<Backends> {
        match self.kind {
            BackendKind::Memory => Ok(Backends {
                keys: Arc::new(MemoryKeyStore::new()),
                approvals: Arc::new(MemoryApprovalStore::new()),
                revocations: Arc::new(MemoryTokenRevocationStore::new()),
                audit: Arc::new(MemoryAuditSink::new(provider, audit_keys)),
                joint: None,
                leases: None,
                rate_usage: None,
            }),
            BackendKind::Filesystem => {
                let dir = self.dir()?.clone();
                let keys = FileKeyStore::open(dir.join("keys")).await?;
                let approvals = keys.approval_store().await?;
                let revocations = keys.token_revocation_store().await?;
                let mut config = FileAuditConfig::new(dir.join("audit"));
                if let Some(bytes) = self.audit_segment_bytes {
                    config = config.segment_max_bytes(bytes);
                }
                let audit = tokio::task::spawn_blocking(move || {
                    FileAuditSink::open(config, provider, audit_keys)
                })
                .await
                .map_err(|e| Error::Config(format!("opening the audit log: {e}")))??;
                audit.record_recovery().await?;
                Ok(Backends {
                    keys: Arc::new(keys),
                    approvals: Arc::new(approvals),
                    revocations: Arc::new(revocations),
                    audit: Arc::new(audit),
                    joint: None,
                    leases: None,
                    rate_usage: None,
                })
            }
            BackendKind::Sqlite => {
                let file = self.sqlite_file()?;
                let db = ferrohsm_sqlite::SqliteBackend::open(&file, provider, audit_keys).await?;
                Ok(Backends {
                    keys: Arc::new(db.key_store()),
                    approvals: Arc::new(db.approval_store()),
                    revocations: Arc::new(db.token_revocation_store()),
                    audit: Arc::new(db.audit_sink()),
                    joint: Some(Arc::new(db.key_store())),
                    leases: None,
                    rate_usage: None,
                })
            }
            BackendKind::Postgres => {
                let url = self.database_url.as_ref().ok_or_else(|| {
                    Error::Config(
                        "the postgres backend needs a database URL (--database-url)".into(),
                    )
                })?;
                let db =
                    ferrohsm_postgres::PostgresBackend::open(url.expose(), provider, audit_keys)
                        .await?;
                Ok(Backends {
                    keys: Arc::new(db.key_store()),
                    approvals: Arc::new(db.approval_store()),
                    revocations: Arc::new(db.token_revocation_store()),
                    audit: Arc::new(db.audit_sink()),
                    joint: Some(Arc::new(db.key_store())),
                    leases: Some(Arc::new(db.job_leases())),
                    rate_usage: Some(Arc::new(db.rate_usage())),
                })
            }
        }
    }
}

/// The opened stores of one backend. Clones share them.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Key records.
    pub keys: Arc<dyn KeyStore>,
    /// Dual-control approvals.
    pub approvals: Arc<dyn ApprovalStore>,
    /// Revoked bearer tokens.
    pub revocations: Arc<dyn TokenRevocationStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
    /// Key writes committed together with their audit record, when `keys` and `audit` live
    /// in one database (SQLite, PostgreSQL); `None` otherwise (the core then writes the key and appends
    /// its record one after the other). Set it only for a key store and audit sink that are
    /// this pair.
    pub joint: Option<Arc<dyn AuditedKeyWrites>>,
    /// Leases on scheduled jobs when several processes share the backend (PostgreSQL);
    /// `None` when one process owns it (it then runs every job itself).
    pub leases: Option<Arc<dyn JobLeases>>,
    /// Rate-limit usage the processes sharing the backend exchange (PostgreSQL), so a
    /// caller's limit holds across them; `None` when one process owns it.
    pub rate_usage: Option<Arc<dyn RateUsage>>,
}

/// Key writes whose audit record commits in the same transaction: a backend whose keys and
/// audit log share one database offers this, so a request waits for one commit, not two.
#[async_trait::async_trait]
pub trait AuditedKeyWrites: Send + Sync + fmt::Debug {
    /// Creates `record` and appends `entry` (the audit record of that creation) in one
    /// commit: both or neither. A refused create appends nothing and answers the refusal as
    /// [`KeyStore::create`] does.
    async fn create_audited(
        &self,
        record: KeyRecord,
        entry: AuditEntry,
    ) -> std::result::Result<(Arc<KeyRecord>, AuditRecord), ferrohsm_store::Error>;
}

#[async_trait::async_trait]
impl AuditedKeyWrites for ferrohsm_sqlite::SqliteKeyStore {
    async fn create_audited(
        &self,
        record: KeyRecord,
        entry: AuditEntry,
    ) -> std::result::Result<(Arc<KeyRecord>, AuditRecord), ferrohsm_store::Error> {
        ferrohsm_sqlite::SqliteKeyStore::create_audited(self, record, entry).await
    }
}

#[async_trait::async_trait]
impl AuditedKeyWrites for ferrohsm_postgres::PostgresKeyStore {
    async fn create_audited(
        &self,
        record: KeyRecord,
        entry: AuditEntry,
    ) -> std::result::Result<(Arc<KeyRecord>, AuditRecord), ferrohsm_store::Error> {
        ferrohsm_postgres::PostgresKeyStore::create_audited(self, record, entry).await
    }
}

/// What opening a backend can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is incomplete or names an unknown backend.
    #[error("backend configuration: {0}")]
    Config(String),
    /// A store failed to open.
    #[error(transparent)]
    Store(#[from] ferrohsm_store::Error),
    /// The audit log failed to open.
    #[error(transparent)]
    Audit(#[from] ferrohsm_audit::Error),
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "invalid_config",
            Error::Store(e) => e.code(),
            Error::Audit(e) => e.code(),
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
