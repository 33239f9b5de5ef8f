//! The audit keys: an HMAC key for records and an Ed25519 key for checkpoints.

use std::fmt;
use std::sync::Arc;

use ferrohsm_crypto::{
    CryptoProvider, HmacKey, SecretKey, SignInput, SignatureScheme, public_key_pem,
};

use crate::Result;
use crate::record::hex;

/// The keys a sink seals records and signs checkpoints with.
///
/// The checkpoint key's id is derived from its public key, so a verifier holding several
/// public keys picks the right one for each checkpoint, and keys can rotate.
pub struct AuditKeys {
    hmac: Arc<dyn HmacKey>,
    signer: Arc<dyn SecretKey>,
    key_id: String,
    public_der: Vec<u8>,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKeys").field("checkpoint_key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl AuditKeys {
    /// Prepares the keys from a 32-byte HMAC key and a 32-byte Ed25519 seed.
    pub fn new(
        provider: &dyn CryptoProvider,
        hmac_key: &[u8; 32],
        signing_seed: &[u8; 32],
    ) -> Result<Self> {
        let signer = provider.ed25519_from_seed(signing_seed)?;
        let public_der = signer.public_key_der().map(<[u8]>::to_vec).unwrap_or_default();
        Ok(AuditKeys {
            hmac: provider.hmac_sha256_key(hmac_key),
            key_id: key_id_of(provider, &public_der),
            signer,
            public_der,
        })
    }

    /// The checkpoint key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The checkpoint key's public half, SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The checkpoint key's public half as PEM, for auditors.
    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.public_der)
    }

    /// Whether `record` was sealed with this HMAC key (its tag matches its hash). A log whose
    /// records another key sealed belongs to another master key.
    pub fn sealed(&self, record: &crate::AuditRecord) -> bool {
        let tag = self.tag(&record.hash);
        // Constant time: the comparison says nothing about where the tags differ.
        tag.iter().zip(record.hmac.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    pub(crate) fn tag(&self, hash: &[u8; 32]) -> [u8; 32] {
        self.hmac.sign(hash)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(self.signer.sign(SignatureScheme::Ed25519, SignInput::Message(message))?)
    }
}

/// The id of a checkpoint public key: the first 8 bytes of SHA-256 of its SPKI DER, in hex.
pub fn key_id_of(provider: &dyn CryptoProvider, public_der: &[u8]) -> String {
    hex(&provider.sha256(public_der)[..8])
}
