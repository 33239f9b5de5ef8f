//! The crypto crate's error type.

use crate::Algorithm;

/// What can go wrong in a cryptographic operation.
///
/// Failures of the primitives themselves are deliberately opaque ([`Error::Crypto`] carries no
/// reason), so an error is never an oracle about keys or plaintexts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation is not defined for this algorithm (for example, encrypting with an EC key).
    #[error("{operation} is not supported by {algorithm}")]
    Unsupported {
        /// The operation that was asked for.
        operation: &'static str,
        /// The key's algorithm.
        algorithm: Algorithm,
    },
    /// An argument is malformed (wrong length, unknown name, bad encoding).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Key material could not be parsed or does not match the algorithm.
    #[error("key material rejected for {0}")]
    KeyRejected(Algorithm),
    /// The primitive failed: authentication tag mismatch, unwrap failure, or an internal error.
    #[error("cryptographic operation failed")]
    Crypto,
    /// A key vault holding the key cannot be reached now (retry later).
    #[error("the key vault is unavailable: {0}")]
    Unavailable(String),
    /// The key vault answers but no longer holds the key a record names (deleted behind
    /// FerroHSM's back, or another token): an integrity failure, not bad input.
    #[error("the key vault holds no key {0}")]
    KeyMissing(String),
}

impl Error {
    /// A stable machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unsupported { .. } => "unsupported",
            Error::InvalidInput(_) => "invalid_request",
            Error::KeyRejected(_) => "invalid_request",
            Error::Crypto => "crypto_failed",
            Error::Unavailable(_) => "unavailable",
            Error::KeyMissing(_) => "integrity",
        }
    }
}

/// The crypto crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
