//! The `CryptoProvider` trait and the loaded-key traits it hands out.

use std::fmt::Debug;
use std::sync::Arc;

use crate::{Algorithm, KeyMaterial, Result, SecretBytes, SignInput, SignatureScheme};

/// The length of an AES-GCM nonce in the `nonce || ciphertext || tag` layout.
pub const AEAD_NONCE_LEN: usize = 12;
/// The length of an AES-GCM tag in the `nonce || ciphertext || tag` layout.
pub const AEAD_TAG_LEN: usize = 16;

/// A source of every cryptographic primitive FerroHSM uses.
///
/// Implementations must be constant-time where secrets are involved, must never log or print
/// key material, and must return the opaque [`crate::Error::Crypto`] for primitive failures.
pub trait CryptoProvider: Send + Sync + Debug {
    /// A short name for health output and benchmarks.
    fn name(&self) -> &'static str;

    /// Fills `out` with cryptographically secure random bytes.
    fn fill_random(&self, out: &mut [u8]) -> Result<()>;

    /// Generates new key material for `algorithm`.
    fn generate(&self, algorithm: Algorithm) -> Result<KeyMaterial>;

    /// Validates and imports private material: 32 raw bytes for AES, PKCS#8 DER otherwise.
    /// The result is normalised to the canonical encoding (PKCS#8 v1 for asymmetric keys).
    fn import(&self, algorithm: Algorithm, der_or_raw: &[u8]) -> Result<KeyMaterial>;

    /// Prepares material for repeated use. Loading parses and checks the key once, so the
    /// returned object should be cached by callers that use a key many times.
    fn load(&self, material: &KeyMaterial) -> Result<Arc<dyn SecretKey>>;

    /// Parses a SubjectPublicKeyInfo DER public key of `algorithm` for verification.
    fn load_public(&self, algorithm: Algorithm, spki_der: &[u8]) -> Result<Arc<dyn PublicKey>>;

    /// SHA-256 of `data`.
    fn sha256(&self, data: &[u8]) -> [u8; 32];

    /// HMAC-SHA256 of `data` under `key`.
    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> [u8; 32];

    /// Checks an HMAC-SHA256 tag in constant time.
    fn hmac_sha256_verify(&self, key: &[u8], data: &[u8], tag: &[u8]) -> bool;

    /// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` into `out`.
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()>;

    /// Prepares an HMAC-SHA256 key for many uses (the audit chain tags every record).
    fn hmac_sha256_key(&self, key: &[u8]) -> Arc<dyn HmacKey>;

    /// A deterministic Ed25519 key from a 32-byte seed (for keys derived from the master key).
    fn ed25519_from_seed(&self, seed: &[u8; 32]) -> Result<Arc<dyn SecretKey>>;
}

/// A prepared HMAC-SHA256 key.
pub trait HmacKey: Send + Sync + Debug {
    /// The tag of `data`.
    fn sign(&self, data: &[u8]) -> [u8; 32];

    /// Checks a tag in constant time.
    fn verify(&self, data: &[u8], tag: &[u8]) -> bool;
}

/// A loaded private or secret key, ready for operations.
///
/// Operations a key's algorithm does not define return [`crate::Error::Unsupported`].
pub trait SecretKey: Send + Sync + Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> Algorithm;

    /// The SubjectPublicKeyInfo DER of the public half, for asymmetric keys.
    fn public_key_der(&self) -> Option<&[u8]>;

    /// AES-256-GCM with a fresh random nonce; returns `nonce || ciphertext || tag`.
    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;

    /// Opens `nonce || ciphertext || tag` produced by [`SecretKey::encrypt`].
    fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes>;

    /// AES key wrap with padding (RFC 5649) of `key_material`.
    fn wrap(&self, key_material: &[u8]) -> Result<Vec<u8>>;

    /// Reverses [`SecretKey::wrap`], checking its integrity.
    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes>;

    /// Signs with `scheme`, which must be one the key's algorithm supports.
    fn sign(&self, scheme: SignatureScheme, input: SignInput<'_>) -> Result<Vec<u8>>;

    /// Verifies a signature made by this key's public half. `Ok(false)` means "does not verify".
    fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool>;
}

/// A parsed public key, ready to verify signatures.
pub trait PublicKey: Send + Sync + Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> Algorithm;

    /// The SubjectPublicKeyInfo DER encoding.
    fn der(&self) -> &[u8];

    /// Verifies `signature` over `input`. `Ok(false)` means "does not verify"; an error means
    /// the request itself was unusable (scheme not for this key, digest of the wrong length).
    fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool>;
}
