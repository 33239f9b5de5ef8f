//! The core's error type, with the stable codes frontends map to HTTP statuses.

use ferrohsm_crypto::{Algorithm, Usage};
use ferrohsm_store::{KeyId, KeyState};

use ferrohsm_policy::{Approval, ApprovalError, Operation, PolicyError};

/// Everything an [`crate::Hsm`] operation can refuse or fail with.
///
/// Every variant has a stable machine code ([`Error::code`]). Messages name keys, versions and
/// states, never key material, plaintexts or ciphertexts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key has this id or name.
    #[error("key {0} not found")]
    NotFound(String),
    /// The key exists but has no such version.
    #[error("key {key} has no version {version}")]
    VersionNotFound {
        /// The key.
        key: KeyId,
        /// The missing version.
        version: u32,
    },
    /// The request is malformed: a bad name, tag, argument or combination.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The key's state (or the version's) does not allow the operation.
    #[error("key {key} is {state}{detail}; {operation} is not allowed")]
    InvalidState {
        /// The key.
        key: KeyId,
        /// Its state.
        state: KeyState,
        /// Extra detail (a revocation reason, a destroyed version).
        detail: String,
        /// What was attempted.
        operation: Operation,
    },
    /// The key's usages do not include what the operation needs.
    #[error("key {key} does not allow {usage}")]
    UsageNotAllowed {
        /// The key.
        key: KeyId,
        /// The usage the operation needs.
        usage: Usage,
    },
    /// The key's algorithm cannot perform the operation at all.
    #[error("{operation} is not supported by {algorithm} keys")]
    Unsupported {
        /// What was attempted.
        operation: Operation,
        /// The key's algorithm.
        algorithm: Algorithm,
    },
    /// A ciphertext or wrapped key is malformed, names a version that does not exist, or does
    /// not decrypt under this key and associated data.
    #[error("invalid ciphertext: {0}")]
    InvalidCiphertext(&'static str),
    /// An input is larger than the configured limit.
    #[error("{what} is {actual} bytes; the limit is {limit}")]
    PayloadTooLarge {
        /// Which input.
        what: &'static str,
        /// Its size.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The change conflicts with the store: a taken name, or a concurrent modification that
    /// persisted through retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored record failed its integrity check: it was edited outside FerroHSM, or the
    /// master key does not belong to this store.
    #[error("stored key {0} failed its integrity check")]
    Integrity(KeyId),
    /// None of the stored keys checked at start-up verify: the master key is not the one this
    /// store was created with.
    #[error("the master key does not match this key store")]
    MasterKeyMismatch,
    /// Policy refuses the operation to this caller.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The operation is under dual control: an approval was opened and must reach its quorum
    /// before the requester repeats the request with its id.
    #[error("approval {} required: {} of {} approvals (policy {}) for {}", .0.id, .0.approvals(), .0.quorum, .0.policy, .0.summary())]
    ApprovalRequired(Box<Approval>),
    /// An approval step was refused.
    #[error("{0}")]
    Approval(ApprovalError),
    /// No approval has this id.
    #[error("approval {0} not found")]
    ApprovalNotFound(uuid::Uuid),
    /// The caller exceeded its rate limit.
    #[error("rate limited; retry after {} ms", .retry_after.as_millis())]
    RateLimited {
        /// How long until the request would be accepted.
        retry_after: std::time::Duration,
    },
    /// A policy file did not load (the previous policy stays in force).
    #[error("invalid policy: {0}")]
    InvalidPolicy(PolicyError),
    /// The audit record of the operation could not be written, so its result is withheld.
    #[error("the audit log is unavailable")]
    AuditUnavailable(#[source] ferrohsm_audit::Error),
    /// The storage backend failed.
    #[error("key store error")]
    Store(#[source] ferrohsm_store::Error),
    /// The crypto provider failed unexpectedly.
    #[error("cryptographic provider error")]
    Crypto(#[source] ferrohsm_crypto::Error),
    /// Setting up the HSM failed (master key, configuration).
    #[error("setup: {0}")]
    Setup(#[source] ferrohsm_seal::Error),
    /// The configured storage backend could not be opened.
    #[error("opening the storage backend: {0}")]
    Backend(#[source] ferrohsm_backends::Error),
    /// The key vault holding the key's material cannot be reached now (retry later).
    #[error("the key vault is unavailable")]
    VaultUnavailable(String),
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) | Error::VersionNotFound { .. } => "not_found",
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidState { .. } => "invalid_state",
            Error::UsageNotAllowed { .. } => "invalid_usage",
            Error::Unsupported { .. } => "unsupported",
            Error::InvalidCiphertext(_) => "invalid_ciphertext",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Conflict(_) => "conflict",
            Error::Integrity(_) | Error::MasterKeyMismatch => "integrity",
            Error::Store(e) => match e.code() {
                // Client-caused store refusals surface under the store's own code.
                code @ ("not_found" | "conflict" | "invalid_state" | "invalid_request"
                | "unavailable" | "integrity") => code,
                _ => "internal",
            },
            Error::AuditUnavailable(_) | Error::VaultUnavailable(_) => "unavailable",
            Error::Forbidden(_) => "forbidden",
            Error::ApprovalRequired(_) => "approval_required",
            Error::Approval(e) => e.code(),
            Error::ApprovalNotFound(_) => "not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::InvalidPolicy(_) => "invalid_request",
            Error::Crypto(_) | Error::Setup(_) => "internal",
            Error::Backend(e) => match e.code() {
                code @ ("unavailable" | "integrity" | "invalid_config") => code,
                _ => "internal",
            },
        }
    }

    /// How an audit record classifies the error: a policy refusal is `denied`, anything else
    /// an `error`.
    pub fn outcome(&self) -> ferrohsm_audit::Outcome {
        match self {
            Error::Forbidden(_)
            | Error::ApprovalRequired(_)
            | Error::Approval(_)
            | Error::RateLimited { .. } => ferrohsm_audit::Outcome::Denied,
            _ => ferrohsm_audit::Outcome::Error,
        }
    }

    /// The key (and version) the error concerns, when known: for audit records.
    pub fn key(&self) -> Option<(KeyId, Option<u32>)> {
        match self {
            Error::VersionNotFound { key, version } => Some((*key, Some(*version))),
            Error::InvalidState { key, .. }
            | Error::UsageNotAllowed { key, .. }
            | Error::Integrity(key) => Some((*key, None)),
            _ => None,
        }
    }
}

impl From<ferrohsm_store::Error> for Error {
    fn from(e: ferrohsm_store::Error) -> Self {
        match e {
            ferrohsm_store::Error::NameTaken(name) => {
                Error::Conflict(format!("the name {name} is already taken"))
            }
            other => Error::Store(other),
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
