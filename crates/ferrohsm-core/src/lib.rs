//! The FerroHSM core: the [`Hsm`] facade that Rust programs embed and every frontend calls.
//!
//! It composes a [`CryptoProvider`], the sealer (from a [`MasterKey`]) and a [`KeyStore`], and
//! performs the whole key lifecycle — create, list, describe, rotate, roll back, revoke,
//! schedule and cancel destruction, purge — and every cryptographic operation with the state
//! rules of SPEC §3 and the `fhsm:v<N>:` formats of SPEC §5. Each stored record's metadata is
//! authenticated and checked before use; key material is unsealed only inside this crate.
//!
//! It must never return or log key material (only [`Decrypted`] and [`Unwrapped`] carry
//! plaintext, in zeroizing buffers), never act on a record that failed its integrity check,
//! and never let a frontend bypass it to reach the store.
//!
//! ```
//! use ferrohsm_core::{Algorithm, BackendConfig, CreateKey, Hsm, MasterKey, RequestContext, SignInput};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hsm = Hsm::builder()
//!     .backend(BackendConfig::memory())
//!     .master_key(MasterKey::from_bytes(&[7u8; 32])?)
//!     .build()
//!     .await?;
//! let me = RequestContext::local("example");
//! let key = hsm.create_key(&me, CreateKey::new(Algorithm::Aes256Gcm).name("demo")).await?;
//! let sealed = hsm.encrypt(&me, &key.id.into(), b"hello", b"").await?;
//! let opened = hsm.decrypt(&me, &"demo".parse()?, &sealed.ciphertext, b"").await?;
//! assert_eq!(opened.plaintext.expose(), b"hello");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod audit_read;
mod cache;
mod check;
mod context;
mod error;
mod format;
mod hsm;
mod jwk;
mod migrate;
mod params;
mod policy;
mod refusals;
mod retention;
mod token;
mod validate;
pub mod wire;

// Public interface:
pub use audit::{danger_derive_audit_hmac_key, derive_audit_keys};
pub use check::{CheckReport, check_backend};
pub use context::{KeyRef, RequestContext};
pub use error::{Error, Result};
pub use ferrohsm_audit::AuditRecord;
pub use ferrohsm_audit::{AuditFilter, AuditHead, AuditSink, Checkpoint, Outcome as AuditOutcome};
pub use ferrohsm_audit::{
    Failure, OfflineOptions, Report, summary as audit_summary, verify_files as verify_audit_files,
};
pub use ferrohsm_backends::{
    AuditedKeyWrites, BackendConfig, BackendKind, Backends, PinSource, VaultConfig,
};
pub use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, HashAlgorithm, RemoteKeyVault, SecretBytes,
    SignInput, SignatureScheme, Usage, VaultKey,
};
pub use ferrohsm_crypto::{b64, der, hex};
pub use ferrohsm_policy::{
    Approval, ApprovalState, Operation, Parameter, Policy, Principal, Role, parse_duration,
};
pub use ferrohsm_seal::MasterKey;
pub use ferrohsm_store::{ApprovalDocument, ApprovalStore};
pub use ferrohsm_store::{
    Cursor, KeyId, KeyName, KeyState, KeyStore, ListQuery, RevocationReason, VersionState,
};
pub use ferrohsm_store::{TokenMatch, TokenRevocation, TokenRevocationStore};
pub use hsm::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_DESTRUCTION_GRACE, DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TOKEN_LIFETIME, Hsm, HsmBuilder, MAX_TOKEN_LIFETIME, NonceBudget, TokenGrant,
};
pub use migrate::{MigrateMode, MigrateReport, migrate};
pub use retention::{Retention, RetentionReport};
pub use token::TokenKey;
pub use validate::{
    MAX_DESCRIPTION_CHARS, MAX_TAG_KEY_LEN, MAX_TAG_VALUE_CHARS, MAX_TAGS, MAX_TOKEN_FIELD_LEN,
    token_field as validate_token_field,
};
pub use wire::{
    CreateKey, Decrypted, Encrypted, KeyInfo, KeyList, PublicKeyInfo, SEALED, Signed, Unwrapped,
    Verified, VersionInfo, Wrapped,
};

/// Parses a `fhsm:v<N>:<base64>` ciphertext or wrapped key into its version and body (for
/// tools and fuzzing; decryption parses the same way).
pub fn parse_ciphertext(text: &str) -> Result<(u32, Vec<u8>)> {
    format::parse(text)
}

/// The default crypto provider (aws-lc-rs), for frontends that verify audit logs offline or
/// derive keys from a master key without opening an HSM.
pub fn default_provider() -> std::sync::Arc<dyn CryptoProvider> {
    std::sync::Arc::new(AwsLcProvider)
}
