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
    Algorithm, ApprovalState, Custody, KeyState, Operation, Outcome, RevocationReason, Role,
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

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A newer server may add fields and values: a response still reads. A request with a field
    /// this contract does not know is refused (a typo never passes as an ignored option).
    #[test]
    fn responses_tolerate_what_is_new_and_requests_refuse_it() -> TestResult {
        let key = r#"{"id":"01a2330c-116e-720a-a081-52d0b5cf9847","name":"orders","description":"",
            "algorithm":"aes-512-gcm","usages":["encrypt","teleport"],"tags":{},"state":"archived",
            "current_version":1,"versions":[{"version":1,"created_at":"2026-12-01T00:00:00Z",
            "state":"active","encryptions":0,"shredded":false}],"created_at":"2026-12-01T00:00:00Z",
            "updated_at":"2026-12-01T00:00:00Z","created_by":"ada","quota":7}"#;
        let info: KeyInfo = serde_json::from_str(key)?;
        assert_eq!((info.algorithm, info.state), (Algorithm::Unknown, KeyState::Unknown));
        assert_eq!(info.usages, [Usage::Encrypt, Usage::Unknown]);
        let create = r#"{"algorithm":"aes-256-gcm","nmae":"typo"}"#;
        assert!(serde_json::from_str::<CreateKey>(create).is_err());
        let encrypt = r#"{"plaintext":"aGk=","aad":null,"extra":1}"#;
        assert!(serde_json::from_str::<EncryptRequest>(encrypt).is_err());
        Ok(())
    }
}
