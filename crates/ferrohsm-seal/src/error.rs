//! The sealing crate's error type.

use std::path::PathBuf;

/// What can go wrong loading the master key or sealing and unsealing.
///
/// Integrity failures are one opaque variant: which check failed is never revealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No master key was configured where one was looked for.
    #[error("no master key: {0}")]
    MissingMasterKey(String),
    /// The master key's source exists but does not hold a usable key.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(&'static str),
    /// The master key file can be read by others, or by its group when that is not allowed
    /// (see `master::permitted`).
    #[error(
        "master key file {path} has mode {mode:o}; only its owner may read it (chmod 600), or, for a server not running as root, a root-owned file's group (chmod 640)"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing the master key file failed.
    #[error("master key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A sealed record or authenticated metadata failed its integrity check.
    #[error("integrity check failed")]
    Integrity,
    /// The crypto provider failed.
    #[error(transparent)]
    Crypto(#[from] ferrohsm_crypto::Error),
}

impl Error {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingMasterKey(_) | Error::InvalidMasterKey(_) => "invalid_master_key",
            Error::InsecurePermissions { .. } => "insecure_permissions",
            Error::Io { .. } => "io",
            Error::Integrity => "integrity",
            Error::Crypto(e) => e.code(),
        }
    }
}

/// The sealing crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
