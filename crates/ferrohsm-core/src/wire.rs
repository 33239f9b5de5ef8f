//! The core's own request and result types: what `Hsm` takes and returns. The REST contract is
//! `ferrohsm-api`; the server converts between the two (its `convert.rs`).
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
    /// The algorithm (`aes-256-gcm`, `ec-p256`, `rsa-2048`, `ed25519`, `ml-dsa-65`, …).
    pub algorithm: Algorithm,
    /// What the key may do; every usage its algorithm allows when omitted.
    #[serde(default)]
    pub usages: Option<Vec<Usage>>,
    /// Policy tags: keys `[A-Za-z0-9_.-/]{1,64}`, values up to 256 printable characters,
    /// at most 50 tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where the material is kept: [`SEALED`] (in the store, sealed under the master key) or
    /// the configured key vault's custody name (`pkcs11`); the server's default when omitted.
    #[serde(default)]
    pub custody: Option<String>,
}

/// The custody of material sealed under the master key in FerroHSM's own store.
pub const SEALED: &str = "sealed";

impl CreateKey {
    /// A request for an unnamed key of `algorithm` with default usages and no tags.
    pub fn new(algorithm: Algorithm) -> Self {
        CreateKey {
            name: None,
            description: None,
            algorithm,
            usages: None,
            tags: BTreeMap::new(),
            custody: None,
        }
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

    /// Sets the custody ([`SEALED`] or a key vault's name).
    pub fn custody(mut self, custody: impl Into<String>) -> Self {
        self.custody = Some(custody.into());
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
    /// Where the material is kept: `sealed`, or the key vault holding it (`pkcs11`).
    pub custody: String,
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
    /// AES-GCM encryptions this version has used or reserved (at most 2^32; the key rotates
    /// automatically before that).
    #[serde(default)]
    pub encryptions: u64,
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
                    encryptions: v.encryptions_reserved,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by.clone(),
            custody: r.custody.clone().unwrap_or_else(|| SEALED.to_owned()),
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
    /// The vault that performed it, for a vault-held key (named in the audit record; not
    /// part of the response).
    #[serde(skip)]
    pub custody: Option<String>,
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
    /// The vault that performed it, for a vault-held key (named in the audit record).
    pub custody: Option<String>,
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
    /// The vault that performed it, for a vault-held key (named in the audit record; not
    /// part of the response).
    #[serde(skip)]
    pub custody: Option<String>,
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
    /// The vault that performed it, for a vault-held key (named in the audit record; not
    /// part of the response).
    #[serde(skip)]
    pub custody: Option<String>,
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
    /// The vault that performed it, for a vault-held key (named in the audit record).
    pub custody: Option<String>,
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
    /// The key as a JSON Web Key (RFC 7517), for algorithms JOSE defines (RSA, EC, Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    /// Where the key's private half is held, for a vault-held key (named in the audit
    /// record; not part of the response).
    #[serde(skip)]
    pub custody: Option<String>,
}

/// A public key as a JSON Web Key (RFC 7517/7518/8037): base64url members without padding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// The key id, when the key is published in a key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The JOSE algorithm the key is used with, when fixed (`EdDSA` for token keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` for signing keys.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The curve (`P-256`, `P-384`, `Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, or the Ed25519 public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

// ----- Audit and health ----------------------------------------------------------------------

/// Filters for reading audit records (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many records (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Records after this sequence number (the `next_cursor` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Only this actor's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Only this action (`encrypt`, `create_key`, `authenticate`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only records about this key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Only this outcome (`success`, `denied`, `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Only records of this request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Only records written at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only records written before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A page of audit records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// The records, as they appear in the log (SPEC §8 fields).
    pub records: Vec<ferrohsm_audit::AuditRecord>,
    /// Pass as `cursor` to get the next page; absent when no more records matched.
    pub next_cursor: Option<String>,
}

/// The result of verifying the server's own audit log (`GET /v1/audit/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerification {
    /// Whether every record and checkpoint checked out.
    pub valid: bool,
    /// Records checked.
    pub records: u64,
    /// Checkpoint signatures checked.
    pub signatures_checked: u64,
    /// The first and last sequence numbers seen.
    pub first_seq: Option<u64>,
    /// The last sequence number seen.
    pub last_seq: Option<u64>,
    /// Whether the log is an excerpt (a memory sink keeps only recent records).
    pub partial: bool,
    /// The first problem found, naming its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// The server version.
    pub version: String,
    /// The key store backend and whether it answers.
    pub store: ComponentHealth,
    /// The audit sink and whether it accepts records.
    pub audit: ComponentHealth,
    /// The master key: `ok` with its fingerprint.
    pub seal: ComponentHealth,
    /// The policy: `ok`, or the error that keeps the previous policy in force.
    pub policy: ComponentHealth,
    /// The JWT keyset file, when one is configured: `ok`, or the error that keeps the
    /// previous keyset in force (frontends fill it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyset: Option<ComponentHealth>,
    /// Background jobs (reloads, scheduler): `ok`, or which failed last and why (frontends
    /// fill it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<ComponentHealth>,
    /// The key vault, when one is configured: `ok` while it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<ComponentHealth>,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentHealth {
    /// `ok` or `error`.
    pub status: String,
    /// The backend or a short detail.
    pub detail: String,
}
