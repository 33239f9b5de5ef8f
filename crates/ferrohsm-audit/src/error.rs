//! The audit crate's error type.

use std::path::PathBuf;

/// What can go wrong writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("audit log I/O on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the audit directory.
    #[error("audit directory {0} is in use by another process")]
    Locked(PathBuf),
    /// The log on disk is damaged in a way a crash cannot explain.
    #[error("audit log {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The sink cannot accept records: it is closed, or a failed write left its state unknown.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A storage backend failed (a database error); the cause is kept for logs.
    #[error("audit storage failed: {what}")]
    Backend {
        /// What could not be done.
        what: String,
        /// The backend's own error.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The crypto provider failed.
    #[error(transparent)]
    Crypto(#[from] ferrohsm_crypto::Error),
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } | Error::Crypto(_) | Error::Backend { .. } => "internal",
            Error::Locked(_) | Error::Unavailable(_) => "unavailable",
            Error::Corrupt { .. } => "integrity",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The audit crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
