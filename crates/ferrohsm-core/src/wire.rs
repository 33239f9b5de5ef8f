//! The core's request and result types (the domain side of the REST contract, which lives in
//! `ferrohsm-api`; the server converts between the two, and the CLI still reads some of them).
//!
//! Binary fields are standard base64 and times RFC 3339 UTC (SPEC §5). Types that carry
//! secrets ([`Decrypted`], [`Unwrapped`]) do not implement `Serialize`: a frontend encodes
//! them deliberately.

use std::collections::BTreeMap;

use ferrohsm_crypto::{Algorithm, SecretBytes, SignInput, SignatureScheme, Usage, b64};
use ferrohsm_policy::Approval;
use ferrohsm_store::{
    KeyId, KeyName, KeyRecord, KeyState, Revocation, RevocationReason, VersionState,
};
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
    /// The key as a JSON Web Key (RFC 7517), for algorithms JOSE defines (RSA, EC, Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
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

/// A JSON Web Key Set (`/.well-known/jwks.json`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

// ----- Request bodies ------------------------------------------------------------------------

/// `POST /v1/keys/{key}/encrypt`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The plaintext, base64.
    #[serde(with = "b64::secret")]
    pub plaintext: SecretBytes,
    /// Associated data bound to the ciphertext, base64.
    #[serde(default, with = "b64::option")]
    pub aad: Option<Vec<u8>>,
}

/// `POST /v1/keys/{key}/decrypt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// `fhsm:v<N>:…` as returned by encrypt.
    pub ciphertext: String,
    /// The associated data given to encrypt, base64.
    #[serde(default, with = "b64::option")]
    pub aad: Option<Vec<u8>>,
}

/// The response of decrypt. It carries the plaintext, so it is built deliberately by a frontend
/// from [`Decrypted`] and dropped (zeroized) after it is written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plaintext {
    /// The key.
    pub key_id: KeyId,
    /// The version that decrypted.
    pub key_version: u32,
    /// The plaintext, base64.
    #[serde(with = "b64::secret")]
    pub plaintext: SecretBytes,
}

impl From<Decrypted> for Plaintext {
    fn from(d: Decrypted) -> Self {
        Plaintext { key_id: d.key_id, key_version: d.key_version, plaintext: d.plaintext }
    }
}

/// `POST /v1/keys/{key}/sign`: exactly one of `message` and `digest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The message, base64 (hashed by the server).
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub message: Option<Vec<u8>>,
    /// A pre-computed digest, base64 (not for Ed25519 or ML-DSA).
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub digest: Option<Vec<u8>>,
    /// The scheme (`ecdsa-p256-sha256`, `rsa-pss-sha256`, `ed25519`, …); the key's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SignatureScheme>,
}

impl SignRequest {
    /// The input to sign or verify, refusing both or neither of `message` and `digest`.
    pub fn input(&self) -> Result<SignInput<'_>, crate::Error> {
        sign_input(self.message.as_deref(), self.digest.as_deref())
    }
}

/// `POST /v1/keys/{key}/verify`: exactly one of `message` and `digest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The message, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub message: Option<Vec<u8>>,
    /// A pre-computed digest, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub digest: Option<Vec<u8>>,
    /// The signature, base64.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The scheme; the key's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SignatureScheme>,
    /// The version to verify with; the current version when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
}

impl VerifyRequest {
    /// The input to verify, refusing both or neither of `message` and `digest`.
    pub fn input(&self) -> Result<SignInput<'_>, crate::Error> {
        sign_input(self.message.as_deref(), self.digest.as_deref())
    }
}

fn sign_input<'a>(
    message: Option<&'a [u8]>,
    digest: Option<&'a [u8]>,
) -> Result<SignInput<'a>, crate::Error> {
    match (message, digest) {
        (Some(m), None) => Ok(SignInput::Message(m)),
        (None, Some(d)) => Ok(SignInput::Digest(d)),
        _ => Err(crate::Error::InvalidRequest("give exactly one of message and digest".into())),
    }
}

/// `POST /v1/keys/{key}/wrap`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    /// The key material to wrap, base64.
    #[serde(with = "b64::secret")]
    pub key_material: SecretBytes,
}

/// `POST /v1/keys/{key}/unwrap`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// `fhsm:v<N>:…` as returned by wrap.
    pub wrapped: String,
}

/// The response of unwrap; like [`Plaintext`], built deliberately from [`Unwrapped`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMaterialResponse {
    /// The key.
    pub key_id: KeyId,
    /// The version that unwrapped.
    pub key_version: u32,
    /// The key material, base64.
    #[serde(with = "b64::secret")]
    pub key_material: SecretBytes,
}

impl From<Unwrapped> for KeyMaterialResponse {
    fn from(u: Unwrapped) -> Self {
        KeyMaterialResponse {
            key_id: u.key_id,
            key_version: u.key_version,
            key_material: u.key_material,
        }
    }
}

/// `POST /v1/keys/{key}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make current.
    pub version: u32,
}

/// `POST /v1/keys/{key}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// `superseded`, `cessation_of_operation`, `compromised` or `unspecified`.
    pub reason: RevocationReason,
    /// A free-text note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /v1/keys/{key}/destroy` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyRequest {
    /// The grace period in seconds before the key may be purged; the policy's or the server's
    /// default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<i64>,
}

/// `POST /v1/approvals/{id}/approve` and `…/deny` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// A note recorded with the vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

// ----- Approvals, audit, tokens, health, errors ----------------------------------------------

/// An approval request as callers see it (SPEC §6 dual control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalInfo {
    /// The id (`X-Approval-Id`).
    pub id: uuid::Uuid,
    /// The operation it authorizes (`schedule_destruction`, `rollback_key`, …).
    pub operation: String,
    /// The key it authorizes the operation on (empty for operations on no key).
    pub key_id: String,
    /// Who asked; only they may execute it.
    pub requester: String,
    /// The subjects behind the requester's credential (the requester, then who minted it).
    #[serde(default)]
    pub requester_identity: Vec<String>,
    /// Exactly what will run, in order: operation, key, every parameter. The approval binds
    /// a keyed digest of this list.
    #[serde(default)]
    pub parameters: Vec<ParameterInfo>,
    /// The parameters on one line (`name=value; …`).
    #[serde(default)]
    pub summary: String,
    /// The policy that required it.
    pub policy: String,
    /// How many approvals it needs.
    pub quorum: u32,
    /// How many it has.
    pub approvals: u32,
    /// Roles whose holders may approve.
    pub approver_roles: Vec<String>,
    /// When not empty, only approvers whose identity comes from these sources count.
    #[serde(default)]
    pub approver_issuers: Vec<String>,
    /// Whether approvers need certificate-bound tokens.
    #[serde(default)]
    pub require_certificate: bool,
    /// `pending`, `approved`, `denied`, `expired` or `executed`.
    pub state: String,
    /// The votes so far.
    pub votes: Vec<VoteInfo>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires unless executed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was executed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub executed_at: Option<OffsetDateTime>,
}

/// One vote on an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteInfo {
    /// The approver.
    pub actor: String,
    /// Where the approver's identity comes from (`bootstrap`, `minted` or a keyset issuer).
    #[serde(default)]
    pub source: String,
    /// The subjects behind the approver's credential.
    #[serde(default)]
    pub identity: Vec<String>,
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Their note.
    #[serde(default)]
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl From<&Approval> for ApprovalInfo {
    fn from(a: &Approval) -> Self {
        ApprovalInfo {
            id: a.id,
            operation: a.operation.as_str().to_owned(),
            key_id: a.key_id.clone(),
            requester: a.requester.clone(),
            requester_identity: a.requester_identity.clone(),
            parameters: a
                .parameters
                .iter()
                .map(|p| ParameterInfo { name: p.name.clone(), value: p.value.clone() })
                .collect(),
            summary: a.summary(),
            policy: a.policy.clone(),
            quorum: a.quorum,
            approvals: u32::try_from(a.approvals()).unwrap_or(u32::MAX),
            approver_roles: a.approver_roles.iter().map(|r| r.as_str().to_owned()).collect(),
            approver_issuers: a.approver_issuers.clone(),
            require_certificate: a.require_certificate,
            state: a.state.as_str().to_owned(),
            votes: a
                .votes
                .iter()
                .map(|v| VoteInfo {
                    actor: v.actor.clone(),
                    source: v.source.clone(),
                    identity: v.identity.clone(),
                    approve: v.approve,
                    comment: v.comment.clone(),
                    at: v.at,
                })
                .collect(),
            created_at: a.created_at,
            expires_at: a.expires_at,
            executed_at: a.executed_at,
        }
    }
}

/// One named parameter of an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterInfo {
    /// The name (`operation`, `key_id`, `grace_seconds`…).
    pub name: String,
    /// The value.
    pub value: String,
}

/// A page of approvals, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalList {
    /// The approvals.
    pub approvals: Vec<ApprovalInfo>,
}

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

/// `POST /v1/auth/token`: a token for another actor, signed by the server's token key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The subject (actor).
    pub sub: String,
    /// Its roles (`admin`, `operator`, `auditor`, `service`).
    pub roles: Vec<String>,
    /// Lifetime in seconds (default 3600, at most the server's maximum token lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Binds the token to a client certificate: its SHA-256 fingerprint, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// An issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    /// The bearer token (a JWT).
    pub token: String,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The signing key's id.
    pub kid: String,
    /// The token's id (`jti`), for revoking it.
    pub jti: String,
    /// The token's session id (`sid`), for revoking it.
    pub sid: String,
}

/// `POST /v1/auth/revoke`: name exactly one of `jti` and `sid`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// Revoke the token with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Revoke every token of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Why (kept in the revocation and the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A token revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRevocationInfo {
    /// `jti` or `sid`.
    pub matches: String,
    /// The revoked token id or session id.
    pub value: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who revoked it.
    pub revoked_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// When it lapses (every token it can match has expired by then).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<&ferrohsm_store::TokenRevocation> for TokenRevocationInfo {
    fn from(r: &ferrohsm_store::TokenRevocation) -> Self {
        TokenRevocationInfo {
            matches: r.matches.as_str().to_owned(),
            value: r.value.clone(),
            reason: r.reason.clone(),
            revoked_by: r.revoked_by.clone(),
            revoked_at: r.revoked_at,
            expires_at: r.expires_at,
        }
    }
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
