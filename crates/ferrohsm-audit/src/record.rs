//! Audit records and checkpoints, their JSON line form, and their canonical binary encoding.
//!
//! Format version 1. A log is a sequence of lines, each one JSON object whose first member is
//! `"type"`: `"record"` or `"checkpoint"`.
//!
//! `hash` = SHA-256 of the canonical encoding: the domain string `ferrohsm-audit-v1\0`, then
//! every field but `hash` and `hmac` in declaration order — integers big-endian, strings with a
//! u32 length prefix, optional values behind a 0/1 byte, `prev_hash` as 32 raw bytes.
//! `hmac` = HMAC-SHA256 of `hash` under the audit key. A checkpoint signs, with Ed25519, the
//! domain string `ferrohsm-audit-checkpoint-v1\0`, `seq`, `hash`, `ts` and `key_id`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The hash before the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

const RECORD_DOMAIN: &[u8] = b"ferrohsm-audit-v1\0";
const CHECKPOINT_DOMAIN: &[u8] = b"ferrohsm-audit-checkpoint-v1\0";

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was performed.
    Success,
    /// Policy refused it.
    Denied,
    /// It failed (bad input, wrong state, internal error).
    Error,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// What a caller asks the log to record; the sink adds sequence, id, time and the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who.
    pub actor: String,
    /// What (an operation name such as `encrypt`).
    pub action: String,
    /// The key concerned, if any.
    pub key_id: Option<String>,
    /// The key version concerned, if any.
    pub key_version: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// The correlation id.
    pub request_id: String,
    /// The caller's session.
    pub session: Option<String>,
    /// The caller's client certificate fingerprint.
    pub client_fingerprint: Option<String>,
    /// The caller's address.
    pub source_ip: Option<String>,
    /// A short description: an error code and message, never secrets.
    pub message: Option<String>,
}

impl AuditEntry {
    /// An entry with only actor, action, outcome and request id set.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        outcome: Outcome,
        request_id: impl Into<String>,
    ) -> Self {
        AuditEntry {
            actor: actor.into(),
            action: action.into(),
            key_id: None,
            key_version: None,
            outcome,
            request_id: request_id.into(),
            session: None,
            client_fingerprint: None,
            source_ip: None,
            message: None,
        }
    }
}

/// The literal `"record"` type tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordTag;

/// The literal `"checkpoint"` type tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointTag;

macro_rules! literal_tag {
    ($ty:ident, $text:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($text)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                if text == $text {
                    Ok($ty)
                } else {
                    Err(serde::de::Error::custom(concat!("expected type ", $text)))
                }
            }
        }
    };
}
literal_tag!(RecordTag, "record");
literal_tag!(CheckpointTag, "checkpoint");

/// One sealed audit record (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Always `"record"`.
    #[serde(rename = "type")]
    pub kind: RecordTag,
    /// The format version.
    pub v: u8,
    /// The position in the log, from 1, without gaps.
    pub seq: u64,
    /// A unique id.
    pub id: Uuid,
    /// When, RFC 3339 UTC, exactly as hashed.
    pub ts: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The key concerned.
    pub key_id: Option<String>,
    /// The key version concerned.
    pub key_version: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// The correlation id.
    pub request_id: String,
    /// The caller's session.
    pub session: Option<String>,
    /// The caller's client certificate fingerprint.
    pub client_fingerprint: Option<String>,
    /// The caller's address.
    pub source_ip: Option<String>,
    /// A short description.
    pub message: Option<String>,
    /// The previous record's hash (zeros before the first).
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// SHA-256 of the canonical encoding.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
    /// HMAC-SHA256 of `hash` under the audit key.
    #[serde(with = "hex32")]
    pub hmac: [u8; 32],
}

impl AuditRecord {
    /// Writes the canonical encoding that `hash` covers into `out` (cleared first).
    pub fn canonical_into(&self, out: &mut Vec<u8>) {
        fields!(self).encode(out);
    }
}

/// A record parsed without copying its strings (they borrow from the line unless escaped),
/// for fast verification.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordView<'a> {
    #[serde(rename = "type")]
    _kind: RecordTag,
    pub(crate) v: u8,
    pub(crate) seq: u64,
    id: Uuid,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    key_version: Option<u32>,
    outcome: Outcome,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_fingerprint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source_ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(with = "hex32")]
    pub(crate) prev_hash: [u8; 32],
    #[serde(with = "hex32")]
    pub(crate) hash: [u8; 32],
    #[serde(with = "hex32")]
    pub(crate) hmac: [u8; 32],
}

impl RecordView<'_> {
    pub(crate) fn canonical_into(&self, out: &mut Vec<u8>) {
        fields!(self).encode(out);
    }
}

/// Borrows the hashed fields of either record form (they share field names).
macro_rules! fields {
    ($r:expr) => {
        Fields {
            v: $r.v,
            seq: $r.seq,
            id: &$r.id,
            ts: &$r.ts,
            actor: &$r.actor,
            action: &$r.action,
            key_id: $r.key_id.as_deref(),
            key_version: $r.key_version,
            outcome: $r.outcome,
            request_id: &$r.request_id,
            session: $r.session.as_deref(),
            client_fingerprint: $r.client_fingerprint.as_deref(),
            source_ip: $r.source_ip.as_deref(),
            message: $r.message.as_deref(),
            prev_hash: &$r.prev_hash,
        }
    };
}
use fields;

/// The hashed fields of a record, borrowed: the one place the canonical encoding is written.
struct Fields<'a> {
    v: u8,
    seq: u64,
    id: &'a Uuid,
    ts: &'a str,
    actor: &'a str,
    action: &'a str,
    key_id: Option<&'a str>,
    key_version: Option<u32>,
    outcome: Outcome,
    request_id: &'a str,
    session: Option<&'a str>,
    client_fingerprint: Option<&'a str>,
    source_ip: Option<&'a str>,
    message: Option<&'a str>,
    prev_hash: &'a [u8; 32],
}

impl Fields<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(RECORD_DOMAIN);
        out.push(self.v);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
        put_str(out, self.ts);
        put_str(out, self.actor);
        put_str(out, self.action);
        put_opt_str(out, self.key_id);
        match self.key_version {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        put_str(out, self.outcome.as_str());
        put_str(out, self.request_id);
        put_opt_str(out, self.session);
        put_opt_str(out, self.client_fingerprint);
        put_opt_str(out, self.source_ip);
        put_opt_str(out, self.message);
        out.extend_from_slice(self.prev_hash);
    }
}

/// A signed statement that the log held `seq` records ending in `hash` at time `ts`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always `"checkpoint"`.
    #[serde(rename = "type")]
    pub kind: CheckpointTag,
    /// The format version.
    pub v: u8,
    /// The sequence number of the last record covered.
    pub seq: u64,
    /// That record's hash.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
    /// When the checkpoint was made, RFC 3339 UTC.
    pub ts: String,
    /// The id of the Ed25519 key that signed it.
    pub key_id: String,
    /// The Ed25519 signature, base64.
    #[serde(with = "ferrohsm_crypto::b64")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("seq", &self.seq)
            .field("hash", &hex(&self.hash))
            .field("ts", &self.ts)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            CHECKPOINT_DOMAIN.len() + 40 + self.ts.len() + self.key_id.len() + 8,
        );
        out.extend_from_slice(CHECKPOINT_DOMAIN);
        out.push(self.v);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        put_str(&mut out, &self.ts);
        put_str(&mut out, &self.key_id);
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    ferrohsm_crypto::hex::encode(bytes)
}

/// Parses 64 lowercase hex digits.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    /// The value of each lowercase hex digit; 0xff for every other byte.
    const VALUE: [u8; 256] = {
        let mut table = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let (hi, lo) = (VALUE[usize::from(pair[0])], VALUE[usize::from(pair[1])]);
        bad |= (hi | lo) & 0xf0;
        out[i] = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_hex32(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(parse_hex32(&hex(&bytes)), Some(bytes));
        assert_eq!(parse_hex32(&hex(&bytes).to_uppercase()), None);
        assert_eq!(parse_hex32("00"), None);
    }

    #[test]
    fn optional_fields_cannot_collide() {
        // Moving text between adjacent optional fields changes the encoding.
        let mut a = sample();
        a.session = Some("ab".into());
        a.client_fingerprint = None;
        let mut b = sample();
        b.session = None;
        b.client_fingerprint = Some("ab".into());
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.canonical_into(&mut ea);
        b.canonical_into(&mut eb);
        assert_ne!(ea, eb);
    }

    fn sample() -> AuditRecord {
        AuditRecord {
            kind: RecordTag,
            v: FORMAT_VERSION,
            seq: 1,
            id: Uuid::nil(),
            ts: "2026-11-23T00:00:00Z".into(),
            actor: "a".into(),
            action: "encrypt".into(),
            key_id: None,
            key_version: None,
            outcome: Outcome::Success,
            request_id: "r".into(),
            session: None,
            client_fingerprint: None,
            source_ip: None,
            message: None,
            prev_hash: GENESIS_HASH,
            hash: [0; 32],
            hmac: [0; 32],
        }
    }
}
