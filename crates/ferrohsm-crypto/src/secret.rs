//! Secret byte buffers that zeroize on drop and never print.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Algorithm;

/// Bytes that must stay secret: zeroized on drop, redacted in `Debug`, never `Display`ed.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies `bytes` into a new secret buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
    }

    /// The secret bytes. Callers must not copy them into non-zeroizing storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// The private material of one key version, in its canonical encoding.
///
/// For `aes-256-gcm` it is the 32 raw key bytes; for every asymmetric algorithm it is an
/// unencrypted PKCS#8 v1 `PrivateKeyInfo` DER document.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    algorithm: Algorithm,
    bytes: SecretBytes,
}

impl KeyMaterial {
    /// Wraps material that a provider has already validated for `algorithm`.
    pub(crate) fn new(algorithm: Algorithm, bytes: SecretBytes) -> Self {
        KeyMaterial { algorithm, bytes }
    }

    /// Re-creates material from bytes that were produced by [`KeyMaterial::danger_expose`] and
    /// kept sealed. It is checked again when a provider loads it.
    pub fn from_sealed_bytes(algorithm: Algorithm, bytes: SecretBytes) -> Self {
        KeyMaterial { algorithm, bytes }
    }

    /// The algorithm the material belongs to.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw private material. Only sealing and export code may call this.
    pub fn danger_expose(&self) -> &[u8] {
        self.bytes.expose()
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("algorithm", &self.algorithm)
            .field("bytes", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = SecretBytes::copy_from(b"top secret value");
        let shown = format!("{secret:?}");
        assert!(!shown.contains("top"), "{shown}");
        assert!(shown.contains("REDACTED"));
        let material = KeyMaterial::new(Algorithm::Aes256Gcm, secret);
        let shown = format!("{material:?}");
        assert!(!shown.contains("116"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
