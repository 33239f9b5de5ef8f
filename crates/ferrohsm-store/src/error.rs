//! The store crate's error type.

use std::path::PathBuf;

use crate::{KeyId, KeyName, KeyState};

/// What a key store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key has this id.
    #[error("key {0} not found")]
    NotFound(KeyId),
    /// A key with this id already exists.
    #[error("key {0} already exists")]
    AlreadyExists(KeyId),
    /// Another key already has this name.
    #[error("the name {0} is already taken")]
    NameTaken(KeyName),
    /// The record was changed by someone else since it was read (optimistic concurrency).
    #[error("key {id} was modified concurrently (expected revision {expected}, found {found})")]
    Conflict {
        /// The key.
        id: KeyId,
        /// The revision the writer based its change on plus one.
        expected: u64,
        /// The revision the store holds plus one.
        found: u64,
    },
    /// The state change is not an edge of the key state graph.
    #[error("a key cannot go from {from} to {to}")]
    IllegalTransition {
        /// The stored state.
        from: KeyState,
        /// The requested state.
        to: KeyState,
    },
    /// The new record breaks an invariant: an immutable field or version changed, a version
    /// number is out of sequence, the current version is missing or destroyed, or a state
    /// lacks its details.
    #[error("invalid record for key {id}: {reason}")]
    InvalidRecord {
        /// The key.
        id: KeyId,
        /// Which invariant was broken.
        reason: String,
    },
    /// No approval has this id.
    #[error("approval {0} not found")]
    ApprovalNotFound(uuid::Uuid),
    /// The approval changed since it was read, or already exists.
    #[error("approval {0} was modified concurrently")]
    ApprovalConflict(uuid::Uuid),
    /// A list query is malformed (limit out of range, unreadable cursor).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Another process holds the store (a data directory's lock, a database's lock).
    #[error("the store is in use by another process: {0}")]
    Locked(String),
    /// A stored record cannot be read as what it should be.
    #[error("stored record {record} is corrupt: {reason}")]
    Corrupt {
        /// Which record (a key or approval id, or a backend's own name for it).
        record: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend cannot serve the request now, but may soon: a busy or unreachable
    /// database, a full disk, a lock wait that timed out. Retrying later is reasonable.
    #[error("the store is unavailable: {what}")]
    Unavailable {
        /// What could not be done.
        what: String,
        /// The backend's own error, for logs.
        #[source]
        cause: Option<BoxError>,
    },
    /// The backend failed (an I/O or database error that retrying will not fix).
    #[error("the store failed: {what}")]
    Backend {
        /// What could not be done.
        what: String,
        /// The backend's own error (a file path, an SQL error), for logs.
        #[source]
        cause: BoxError,
    },
}

/// A backend's own error, carried as the cause of a generic one.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An I/O failure on one file of the filesystem backend: the cause of a generic
/// [`Error::Backend`] or [`Error::Unavailable`], so only logs see the path.
#[derive(Debug, thiserror::Error)]
#[error("{path}")]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

impl Error {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) | Error::ApprovalNotFound(_) => "not_found",
            Error::ApprovalConflict(_) => "conflict",
            Error::AlreadyExists(_) | Error::NameTaken(_) | Error::Conflict { .. } => "conflict",
            Error::IllegalTransition { .. } => "invalid_state",
            Error::InvalidRecord { .. } | Error::InvalidQuery(_) => "invalid_request",
            Error::Locked(_) | Error::Unavailable { .. } => "unavailable",
            Error::Corrupt { .. } => "integrity",
            Error::Backend { .. } => "internal",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Locked(_) | Error::Conflict { .. })
    }

    /// A backend failure with its cause.
    pub fn backend(what: impl Into<String>, cause: impl Into<BoxError>) -> Error {
        Error::Backend { what: what.into(), cause: cause.into() }
    }

    /// The filesystem backend's I/O failure on `path`: retryable when the disk is full or
    /// quota is exhausted, a plain backend failure otherwise.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::file(path, source)
    }

    /// See [`Error::io`].
    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        let full = matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        let cause: BoxError = Box::new(FileError { path: path.into(), source });
        if full {
            Error::Unavailable { what: "the disk is full".into(), cause: Some(cause) }
        } else {
            Error::Backend { what: "filesystem I/O failed".into(), cause }
        }
    }

    /// A failure that is neither I/O nor a refusal (a task that panicked, an encoding bug).
    pub(crate) fn internal(what: &str, cause: impl std::fmt::Display) -> Error {
        Error::Backend { what: what.to_owned(), cause: cause.to_string().into() }
    }
}

/// The store crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
