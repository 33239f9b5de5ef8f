//! Keys held outside FerroHSM: the [`RemoteKeyVault`] trait a PKCS#11 token (or, later, a
//! cloud KMS) implements. FerroHSM keeps a version's metadata, policy and audit; the vault
//! keeps its material, generated inside it and never exported, and performs the operations by
//! handle. A loaded vault key is an ordinary [`SecretKey`], so the core uses it exactly like a
//! sealed one.

use std::fmt::Debug;
use std::sync::Arc;

use crate::{Algorithm, Result, SecretKey};

/// A key a vault generated: its handle, and for asymmetric keys its public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultKey {
    /// What names the key in the vault (stable across restarts; not a secret).
    pub handle: String,
    /// The SubjectPublicKeyInfo DER of the public half, for asymmetric keys.
    pub public_key_der: Option<Vec<u8>>,
}

/// A key vault: generation, use by handle and destruction of keys that never leave it.
///
/// Implementations must never export private or secret key material, and must answer
/// [`crate::Error::Unavailable`] (not a crypto failure) when the vault cannot be reached, so
/// callers can tell "try later" from "this input is wrong".
pub trait RemoteKeyVault: Send + Sync + Debug {
    /// The custody name recorded with every version it holds (`pkcs11`).
    fn custody(&self) -> &'static str;

    /// Whether the vault can hold keys of `algorithm`.
    fn supports(&self, algorithm: Algorithm) -> bool;

    /// Generates a non-extractable key of `algorithm` inside the vault; `label` is a readable
    /// name stored with it (the vault may shorten it).
    fn generate(&self, algorithm: Algorithm, label: &str) -> Result<VaultKey>;

    /// The key behind `handle`, ready for operations (which run in the vault).
    fn load(&self, algorithm: Algorithm, handle: &str) -> Result<Arc<dyn SecretKey>>;

    /// Destroys the key behind `handle`. A handle that names nothing is already destroyed.
    fn destroy(&self, handle: &str) -> Result<()>;

    /// Checks that the vault answers now (for health checks).
    fn check(&self) -> Result<()>;
}
