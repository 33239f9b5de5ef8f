//! Cryptographic algorithms for FerroHSM, behind the [`CryptoProvider`] trait.
//!
//! This crate generates, imports and loads keys and performs every operation of SPEC §3:
//! AES-256-GCM with associated data, AES key wrap with padding (RFC 5649), RSA PKCS#1 v1.5 and
//! PSS, ECDSA P-256/P-384 with DER signatures, Ed25519 and ML-DSA-44/65/87; plus the SHA-256,
//! HMAC-SHA256 and HKDF-SHA256 that sealing and audit need. The default provider,
//! [`AwsLcProvider`], uses aws-lc-rs for everything.
//!
//! It must never do I/O, log, or expose key material except through the `danger_` functions;
//! secrets live in zeroizing types with redacted `Debug`.
//!
//! ```
//! use ferrohsm_crypto::{Algorithm, AwsLcProvider, CryptoProvider, SignInput};
//!
//! # fn main() -> ferrohsm_crypto::Result<()> {
//! let provider = AwsLcProvider;
//! let material = provider.generate(Algorithm::EcP256)?;
//! let key = provider.load(&material)?;
//! let scheme = Algorithm::EcP256.default_scheme().ok_or(ferrohsm_crypto::Error::Crypto)?;
//! let signature = key.sign(scheme, SignInput::Message(b"release.tar.gz"))?;
//! assert!(key.verify(scheme, SignInput::Message(b"release.tar.gz"), &signature)?);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod algorithm;
mod aws_lc;
pub mod b64;
pub mod der;
mod encoding;
mod error;
pub mod hex;
mod provider;
mod secret;
mod vault;

// Public interface:
pub use algorithm::{Algorithm, HashAlgorithm, SignInput, SignatureScheme, Usage};
pub use aws_lc::AwsLcProvider;
pub use encoding::{
    PRIVATE_KEY_LABEL, PUBLIC_KEY_LABEL, danger_private_key_pem, decode_pem, public_key_pem,
};
pub use error::{Error, Result};
pub use provider::{AEAD_NONCE_LEN, AEAD_TAG_LEN, CryptoProvider, HmacKey, PublicKey, SecretKey};
pub use secret::{KeyMaterial, SecretBytes};
pub use vault::{RemoteKeyVault, VaultKey};
