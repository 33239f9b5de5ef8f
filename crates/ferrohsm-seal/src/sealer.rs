//! Sealing key material and authenticating metadata under keys derived from the master key.

use std::fmt;
use std::sync::Arc;

use ferrohsm_crypto::{Algorithm, CryptoProvider, KeyMaterial, SecretBytes, SecretKey, b64};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, MasterKey, Result};

/// HKDF salt for every key derived from the master key; the `v1` names this derivation scheme.
const HKDF_SALT: &[u8] = b"ferrohsm/seal/v1";
/// Domain prefix of a sealed record's associated data.
const SEAL_DOMAIN: &[u8] = b"ferrohsm-seal-v1\0";
/// Domain prefix of authenticated metadata.
const META_DOMAIN: &[u8] = b"ferrohsm-meta-v1\0";
/// The only sealed-record format this version writes and reads.
const FORMAT: u8 = 1;

/// Where a sealed record belongs: it only unseals for the same key id, version and algorithm.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The key's id.
    pub key_id: &'a str,
    /// The key version.
    pub version: u32,
    /// The key's algorithm.
    pub algorithm: Algorithm,
}

impl Binding<'_> {
    /// The canonical associated data: length-prefixed fields after a domain prefix, so no two
    /// bindings encode alike.
    fn aad(&self) -> Vec<u8> {
        let id = self.key_id.as_bytes();
        let alg = self.algorithm.as_str().as_bytes();
        let mut aad = Vec::with_capacity(SEAL_DOMAIN.len() + 12 + id.len() + alg.len());
        aad.extend_from_slice(SEAL_DOMAIN);
        aad.extend_from_slice(&(id.len() as u32).to_be_bytes());
        aad.extend_from_slice(id);
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.extend_from_slice(&(alg.len() as u32).to_be_bytes());
        aad.extend_from_slice(alg);
        aad
    }
}

/// Key material sealed at rest: AES-256-GCM `nonce || ciphertext || tag` with the binding as
/// associated data, and an HMAC-SHA256 over format, binding and ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedMaterial {
    /// The sealed-record format.
    pub format: u8,
    /// `nonce || ciphertext || tag`.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// HMAC-SHA256 under the derived integrity key.
    #[serde(with = "b64")]
    pub hmac: Vec<u8>,
}

impl fmt::Debug for SealedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedMaterial")
            .field("format", &self.format)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// An authentication tag over a key's governing metadata.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetadataTag(#[serde(with = "b64")] pub Vec<u8>);

impl fmt::Debug for MetadataTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetadataTag({})", b64::encode(&self.0))
    }
}

/// Seals and unseals key material and authenticates metadata, with keys derived by HKDF from
/// the master key. It holds no key material of its own beyond those derived keys.
pub struct Sealer {
    provider: Arc<dyn CryptoProvider>,
    aead: Arc<dyn SecretKey>,
    mac_key: Zeroizing<[u8; 32]>,
    meta_key: Zeroizing<[u8; 32]>,
    bind_key: Zeroizing<[u8; 32]>,
    fingerprint: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("master_key", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Sealer {
    /// Derives the sealing, integrity and metadata keys from `master`.
    pub fn new(provider: Arc<dyn CryptoProvider>, master: &MasterKey) -> Result<Self> {
        let derive = |info: &[u8]| -> Result<Zeroizing<[u8; 32]>> {
            let mut out = Zeroizing::new([0u8; 32]);
            provider.hkdf_sha256(master.expose(), HKDF_SALT, info, out.as_mut())?;
            Ok(out)
        };
        let aead_key = derive(b"aead")?;
        let material = KeyMaterial::from_sealed_bytes(
            Algorithm::Aes256Gcm,
            SecretBytes::copy_from(aead_key.as_ref()),
        );
        let aead = provider.load(&material)?;
        let mac_key = derive(b"hmac")?;
        let meta_key = derive(b"metadata")?;
        let bind_key = derive(b"bind")?;
        let check = derive(b"key-check")?;
        let fingerprint = check[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Sealer { provider, aead, mac_key, meta_key, bind_key, fingerprint })
    }

    /// A public fingerprint of the master key (from a separate HKDF output), so a data
    /// directory can detect that it is opened with the wrong master key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `material` for `binding`.
    pub fn seal(&self, binding: &Binding<'_>, material: &KeyMaterial) -> Result<SealedMaterial> {
        if material.algorithm() != binding.algorithm {
            return Err(Error::Integrity);
        }
        let aad = binding.aad();
        let ciphertext = self.aead.encrypt(material.danger_expose(), &aad)?;
        let hmac = self.provider.hmac_sha256(self.mac_key.as_ref(), &mac_input(&aad, &ciphertext));
        Ok(SealedMaterial { format: FORMAT, ciphertext, hmac: hmac.to_vec() })
    }

    /// Checks the HMAC, then opens the ciphertext. Any mismatch — a flipped byte, truncation,
    /// a record moved to another key id, version or algorithm, the wrong master key — is
    /// [`Error::Integrity`].
    pub fn unseal(&self, binding: &Binding<'_>, sealed: &SealedMaterial) -> Result<KeyMaterial> {
        if sealed.format != FORMAT {
            return Err(Error::Integrity);
        }
        let aad = binding.aad();
        let input = mac_input(&aad, &sealed.ciphertext);
        if !self.provider.hmac_sha256_verify(self.mac_key.as_ref(), &input, &sealed.hmac) {
            return Err(Error::Integrity);
        }
        let plain = self.aead.decrypt(&sealed.ciphertext, &aad).map_err(|_| Error::Integrity)?;
        Ok(KeyMaterial::from_sealed_bytes(binding.algorithm, plain))
    }

    /// A keyed digest (HMAC-SHA256 under its own derived key) that binds data without
    /// revealing it: approvals store it for the parameters they cover, which may include
    /// plaintexts, so a plain hash would let anyone who reads the approval guess short secrets.
    pub fn bind(&self, data: &[u8]) -> [u8; 32] {
        self.provider.hmac_sha256(self.bind_key.as_ref(), data)
    }

    /// Authenticates canonical metadata bytes.
    pub fn authenticate(&self, canonical: &[u8]) -> MetadataTag {
        MetadataTag(
            self.provider.hmac_sha256(self.meta_key.as_ref(), &meta_input(canonical)).to_vec(),
        )
    }

    /// Checks a tag from [`Sealer::authenticate`] in constant time.
    pub fn verify(&self, canonical: &[u8], tag: &MetadataTag) -> Result<()> {
        if self.provider.hmac_sha256_verify(self.meta_key.as_ref(), &meta_input(canonical), &tag.0)
        {
            Ok(())
        } else {
            Err(Error::Integrity)
        }
    }
}

fn mac_input(aad: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(1 + aad.len() + ciphertext.len());
    input.push(FORMAT);
    input.extend_from_slice(aad);
    input.extend_from_slice(ciphertext);
    input
}

fn meta_input(canonical: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(META_DOMAIN.len() + canonical.len());
    input.extend_from_slice(META_DOMAIN);
    input.extend_from_slice(canonical);
    input
}
