//! FerroHSM's REST API contract (SPEC §6): every request and response body, the closed
//! vocabularies they use, and the error body with its stable codes. The server answers with
//! these types and every client reads them: the CLI and the Rust client directly, the Go and
//! Python SDKs through the OpenAPI document generated from them (`sdks/openapi.json`).
//!
//! Compatibility rules: request types refuse unknown fields (a typo is an error, never a
//! silently ignored option); response types accept unknown fields, and every enumeration
//! (and [`ErrorCode`]) reads a value it does not know as `Unknown`, so an older client keeps
//! working against a newer server. The server refuses `Unknown` in a request.
//!
//! This crate must never depend on another FerroHSM crate (clients link it alone), and never
//! decide policy or behaviour: it only describes what travels on the wire. Secrets it carries
//! ([`Secret`]) are zeroized on drop and never printed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod approvals;
mod audit;
mod auth;
mod bytes;
#[cfg(feature = "client")]
pub mod client;
mod crypto;
mod enums;
mod error;
mod health;
mod keys;
mod number;

pub use approvals::{ApprovalInfo, ApprovalList, ParameterInfo, VoteInfo, VoteRequest};
pub use audit::{
    AuditPage, AuditQuery, AuditRecord, AuditVerification, Checkpoint, CheckpointResponse,
};
pub use auth::{RevokeTokenRequest, TokenRequest, TokenResponse, TokenRevocationInfo};
pub use bytes::Secret;
#[cfg(feature = "client")]
pub use client::{Client, ClientBuilder, ClientError, RetryPolicy, TokenSource};
pub use crypto::{
    DecryptRequest, EncryptRequest, Encrypted, Jwk, JwkSet, KeyMaterial, Plaintext, PublicKeyInfo,
    SignRequest, Signed, UnwrapRequest, Verified, VerifyRequest, WrapRequest, Wrapped,
};
pub use enums::{
    Algorithm, ApprovalState, KeyState, Operation, Outcome, RevocationReason, Role,
    SignatureScheme, Usage, VersionState,
};
pub use error::{Error, ErrorBody, ErrorCode, ErrorDetail};
pub use health::{ComponentHealth, Health};
pub use keys::{
    CreateKey, DestroyRequest, KeyInfo, KeyList, ListKeys, Revocation, RevokeRequest,
    RollbackRequest, VersionInfo,
};

/// The header that carries an approval id: on a 202 answer, and on the repeated request.
pub const APPROVAL_ID_HEADER: &str = "x-approval-id";
/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
