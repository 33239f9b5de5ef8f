//! The audit log as the API serves it (SPEC §8).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Outcome;
use crate::bytes::b64;

/// The query of `GET /v1/audit` (every filter must match).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many records (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[0-9]{1,19}$"))]
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
    /// Only this outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Only records of this request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Only records written at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub since: Option<String>,
    /// Only records written before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    pub until: Option<String>,
}

/// One sealed audit record, exactly as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Always `record`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The format version.
    pub v: u8,
    /// The position in the log, from 1, without gaps.
    pub seq: u64,
    /// A unique id.
    pub id: Uuid,
    /// When, RFC 3339 UTC, exactly as hashed.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub ts: String,
    /// Who.
    pub actor: String,
    /// What (an operation name, or an event such as `authenticate`).
    pub action: String,
    /// The key concerned.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The key version concerned.
    #[serde(default)]
    pub key_version: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// The correlation id.
    pub request_id: String,
    /// The caller's session.
    #[serde(default)]
    pub session: Option<String>,
    /// The caller's client certificate fingerprint.
    #[serde(default)]
    pub client_fingerprint: Option<String>,
    /// The caller's address.
    #[serde(default)]
    pub source_ip: Option<String>,
    /// A short description.
    #[serde(default)]
    pub message: Option<String>,
    /// The previous record's hash, hex (zeros before the first).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub prev_hash: String,
    /// SHA-256 of the canonical encoding, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub hash: String,
    /// HMAC-SHA256 of `hash` under the audit key, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub hmac: String,
}

/// A page of audit records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` to get the next page; absent when no more records matched.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The result of verifying the server's own audit log (`GET /v1/audit/verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerification {
    /// Whether every record and checkpoint checked out.
    pub valid: bool,
    /// Records checked.
    pub records: u64,
    /// Checkpoint signatures checked.
    pub signatures_checked: u64,
    /// The first sequence number seen.
    #[serde(default)]
    pub first_seq: Option<u64>,
    /// The last sequence number seen.
    #[serde(default)]
    pub last_seq: Option<u64>,
    /// Whether the log is an excerpt (a memory sink keeps only recent records).
    #[serde(default)]
    pub partial: bool,
    /// The first problem found, naming its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A signed checkpoint: the Ed25519 signature over the log's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// Always `checkpoint`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The format version.
    pub v: u8,
    /// The sequence number of the last record covered.
    pub seq: u64,
    /// That record's hash, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub hash: String,
    /// When the checkpoint was made, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub ts: String,
    /// The id of the Ed25519 key that signed it.
    pub key_id: String,
    /// The Ed25519 signature, base64.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Vec<u8>,
}

/// The latest signed checkpoint and the key that verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointResponse {
    /// The checkpoint (`null` before the first one).
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    /// The Ed25519 public key that signs checkpoints, PEM.
    pub public_key_pem: String,
}
