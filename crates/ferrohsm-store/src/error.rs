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
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// A stored file cannot be read as a key record.
    #[error("stored record {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("storage I/O on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
            Error::Locked(_) => "unavailable",
            Error::Corrupt { .. } => "integrity",
            Error::Io { .. } => "internal",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The store crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
