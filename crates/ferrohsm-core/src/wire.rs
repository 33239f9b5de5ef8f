//! Request and response types shared by the core, the REST server, the CLI and SDKs.
//!
//! Binary fields are standard base64 and times RFC 3339 UTC (SPEC §5). Types that carry
//! secrets ([`Decrypted`], [`Unwrapped`]) do not implement `Serialize`: a frontend encodes
//! them deliberately.

use std::collections::BTreeMap;

use ferrohsm_crypto::{Algorithm, SecretBytes, SignatureScheme, Usage, b64};
use ferrohsm_store::{KeyId, KeyName, KeyRecord, KeyState, Revocation, VersionState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Parameters of a new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// An optional unique name (`[a-z0-9][a-z0-9._-]{0,127}`).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text, up to 1024 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// What the key may do; every usage its algorithm allows when omitted.
    #[serde(default)]
    pub usages: Option<Vec<Usage>>,
    /// Policy tags: keys `[A-Za-z0-9_.-/]{1,64}`, values up to 256 printable characters,
    /// at most 50 tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl CreateKey {
    /// A request for an unnamed key of `algorithm` with default usages and no tags.
    pub fn new(algorithm: Algorithm) -> Self {
        CreateKey { name: None, description: None, algorithm, usages: None, tags: BTreeMap::new() }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the usages.
    pub fn usages(mut self, usages: &[Usage]) -> Self {
        self.usages = Some(usages.to_vec());
        self
    }
}

/// A key's metadata as callers see it: no material, sealed or otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// The id.
    pub id: KeyId,
    /// The name.
    pub name: Option<KeyName>,
    /// The description.
    pub description: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Allowed usages.
    pub usages: Vec<Usage>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The lifecycle state.
    pub state: KeyState,
    /// The revocation, if revoked (kept through later states).
    pub revocation: Option<Revocation>,
    /// When a key pending destruction may be purged.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroy_after: Option<OffsetDateTime>,
    /// When the key was destroyed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroyed_at: Option<OffsetDateTime>,
    /// The version encrypt, sign and wrap use.
    pub current_version: u32,
    /// Every version.
    pub versions: Vec<VersionInfo>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
}

/// One version's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    /// The number.
    pub version: u32,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether its material exists.
    pub state: VersionState,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        KeyInfo {
            id: r.id,
            name: r.name.clone(),
            description: r.description.clone(),
            algorithm: r.algorithm,
            usages: r.usages.iter().copied().collect(),
            tags: r.tags.clone(),
            state: r.state,
            revocation: r.revocation.clone(),
            destroy_after: r.destroy_after,
            destroyed_at: r.destroyed_at,
            current_version: r.current_version,
            versions: r
                .versions
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    created_at: v.created_at,
                    state: v.state,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by.clone(),
        }
    }
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// The keys, oldest first.
    pub keys: Vec<KeyInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The result of an encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encrypted {
    /// The key.
    pub key_id: KeyId,
    /// The version that encrypted.
    pub key_version: u32,
    /// `fhsm:v<version>:<base64(nonce || ciphertext || tag)>`.
    pub ciphertext: String,
}

/// The result of a decryption. Holds the plaintext in a zeroizing buffer.
#[derive(Debug)]
pub struct Decrypted {
    /// The key.
    pub key_id: KeyId,
    /// The version that decrypted.
    pub key_version: u32,
    /// The plaintext.
    pub plaintext: SecretBytes,
}

/// The result of signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The key.
    pub key_id: KeyId,
    /// The version that signed.
    pub key_version: u32,
    /// The scheme used.
    pub algorithm: SignatureScheme,
    /// The signature: DER for ECDSA, raw for RSA, Ed25519 and ML-DSA.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verified {
    /// The key.
    pub key_id: KeyId,
    /// The version checked against.
    pub key_version: u32,
    /// The scheme used.
    pub algorithm: SignatureScheme,
    /// Whether the signature is valid.
    pub valid: bool,
}

/// The result of wrapping key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrapped {
    /// The key.
    pub key_id: KeyId,
    /// The version that wrapped.
    pub key_version: u32,
    /// `fhsm:v<version>:<base64(RFC 5649 wrapping)>`.
    pub wrapped: String,
}

/// The result of unwrapping. Holds the material in a zeroizing buffer.
#[derive(Debug)]
pub struct Unwrapped {
    /// The key.
    pub key_id: KeyId,
    /// The version that unwrapped.
    pub key_version: u32,
    /// The unwrapped key material.
    pub key_material: SecretBytes,
}

/// A version's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// The version.
    pub key_version: u32,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub pem: String,
    /// SubjectPublicKeyInfo DER.
    #[serde(with = "b64")]
    pub der: Vec<u8>,
}
