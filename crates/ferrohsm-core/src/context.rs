//! Who is asking, which key they mean, and what they want to do.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ferrohsm_store::{KeyId, KeyName};

use crate::{Error, Result};

/// The caller of an operation, as the frontend authenticated it. It flows into policy
/// decisions and audit records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestContext {
    /// The authenticated actor (a JWT `sub`, a service name, or `system:…`).
    pub actor: String,
    /// The actor's roles.
    pub roles: Vec<String>,
    /// The session id, if the credential carries one.
    pub session: Option<String>,
    /// The SHA-256 fingerprint of the client certificate, for mutual TLS.
    pub client_fingerprint: Option<String>,
    /// The peer address.
    pub source_ip: Option<IpAddr>,
    /// The correlation id (from `X-Request-Id`, or generated).
    pub request_id: String,
}

impl RequestContext {
    /// A context for an in-process caller, such as an embedding program or a scheduler.
    pub fn local(actor: impl Into<String>) -> Self {
        RequestContext {
            actor: actor.into(),
            request_id: uuid::Uuid::now_v7().to_string(),
            ..RequestContext::default()
        }
    }
}

/// A key named in a request: by id (a canonical UUID) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// By server-assigned id.
    Id(KeyId),
    /// By unique name.
    Name(KeyName),
}

impl FromStr for KeyRef {
    type Err = Error;

    /// A canonical UUID is an id; anything else must be a valid name (names can never read as
    /// UUIDs, so this is unambiguous).
    fn from_str(s: &str) -> Result<Self> {
        if let Ok(id) = s.parse::<KeyId>() {
            return Ok(KeyRef::Id(id));
        }
        KeyName::parse(s).map(KeyRef::Name).map_err(|e| Error::InvalidRequest(e.0))
    }
}

impl From<KeyId> for KeyRef {
    fn from(id: KeyId) -> Self {
        KeyRef::Id(id)
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => id.fmt(f),
            KeyRef::Name(name) => name.fmt(f),
        }
    }
}

/// Every operation the core performs; policy and audit records name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Create a key.
    CreateKey,
    /// List keys.
    ListKeys,
    /// Read a key's metadata.
    DescribeKey,
    /// Add a version and make it current.
    RotateKey,
    /// Make an older version current.
    RollbackKey,
    /// Revoke a key.
    RevokeKey,
    /// Schedule destruction after a grace period.
    ScheduleDestruction,
    /// Cancel a scheduled destruction.
    CancelDestruction,
    /// Wipe a key whose grace period has passed.
    PurgeKey,
    /// Encrypt data.
    Encrypt,
    /// Decrypt data.
    Decrypt,
    /// Sign a message or digest.
    Sign,
    /// Verify a signature.
    Verify,
    /// Wrap key material.
    Wrap,
    /// Unwrap key material.
    Unwrap,
    /// Export a public key.
    ExportPublicKey,
    /// Write a signed audit checkpoint now.
    CheckpointAudit,
    /// Export the audit log.
    ExportAudit,
}

impl Operation {
    /// The stable name used in policy files and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateKey => "create_key",
            Operation::ListKeys => "list_keys",
            Operation::DescribeKey => "describe_key",
            Operation::RotateKey => "rotate_key",
            Operation::RollbackKey => "rollback_key",
            Operation::RevokeKey => "revoke_key",
            Operation::ScheduleDestruction => "schedule_destruction",
            Operation::CancelDestruction => "cancel_destruction",
            Operation::PurgeKey => "purge_key",
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Sign => "sign",
            Operation::Verify => "verify",
            Operation::Wrap => "wrap",
            Operation::Unwrap => "unwrap",
            Operation::ExportPublicKey => "export_public_key",
            Operation::CheckpointAudit => "checkpoint_audit",
            Operation::ExportAudit => "export_audit",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
