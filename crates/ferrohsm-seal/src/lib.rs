//! Sealing for FerroHSM: the master key, and the keys HKDF derives from it to protect key
//! material and metadata at rest (SPEC §4).
//!
//! A sealed record is AES-256-GCM with the key id, version and algorithm bound as associated
//! data, plus an HMAC-SHA256 integrity tag that is checked before every unseal. Metadata that
//! governs a key's use is authenticated with a separate derived HMAC key, so editing it on disk
//! is detected rather than obeyed.
//!
//! This crate must never write key material or the master key anywhere but a new 0600 master
//! key file, never print secrets, and never fall back silently when a check fails.
//!
//! ```
//! use std::sync::Arc;
//! use ferrohsm_crypto::{Algorithm, AwsLcProvider, CryptoProvider};
//! use ferrohsm_seal::{Binding, MasterKey, Sealer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
//! let master = MasterKey::from_bytes(&[42u8; 32])?;
//! let sealer = Sealer::new(provider.clone(), &master)?;
//! let material = provider.generate(Algorithm::Aes256Gcm)?;
//! let binding = Binding { key_id: "0190a5c4-0000-7000-8000-000000000001", version: 1, algorithm: Algorithm::Aes256Gcm };
//! let sealed = sealer.seal(&binding, &material)?;
//! assert_eq!(sealer.unseal(&binding, &sealed)?, material);
//! let moved = Binding { version: 2, ..binding };
//! assert!(sealer.unseal(&moved, &sealed).is_err());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod master;
mod sealer;

// Public interface:
pub use error::{Error, Result};
pub use master::{MASTER_KEY_LEN, MasterKey};
pub use sealer::{Binding, MetadataTag, SealedMaterial, Sealer};
