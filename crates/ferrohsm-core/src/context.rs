//! Who is asking, which key they mean, and what they want to do.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ferrohsm_policy::{Caller, Principal};
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
    /// The approval that authorizes this request (`X-Approval-Id`), for dual-controlled
    /// operations.
    pub approval_id: Option<uuid::Uuid>,
    /// Whether the caller came over the network: only remote callers are rate limited.
    pub remote: bool,
    /// The issuer that vouches for `actor`: a keyset entry's issuer, or the server's own
    /// issuer for tokens its token key signed.
    pub issuer: String,
    /// Where the identity comes from: a keyset issuer, `bootstrap` (a token minted offline
    /// with the master key) or `minted` (a token issued through the API). Dual control can
    /// demand approvers from named sources.
    pub identity_source: String,
    /// Who minted the caller's token, the root first: everyone here stands behind the
    /// caller, so none of them may also be the requester or another voter of an approval.
    pub minted_by: Vec<Principal>,
    /// Whether the token is bound to the client certificate the caller presented.
    pub certificate_bound: bool,
    /// The token's id (`jti`), when it has one.
    pub token_id: Option<String>,
}

impl RequestContext {
    /// The caller as dual control sees it.
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            actor: &self.actor,
            roles: &self.roles,
            minted_by: &self.minted_by,
            source: &self.identity_source,
            certificate_bound: self.certificate_bound,
        }
    }

    /// The caller's principal: its subject as its issuer vouches for it.
    pub fn principal(&self) -> Principal {
        Principal { iss: self.issuer.clone(), sub: self.actor.clone() }
    }

    /// A context for the in-process program that embeds the HSM (or its scheduler): it holds
    /// the `admin` role, since it holds the master key anyway, and is not rate limited.
    pub fn local(actor: impl Into<String>) -> Self {
        RequestContext {
            actor: actor.into(),
            roles: vec!["admin".into()],
            request_id: uuid::Uuid::now_v7().to_string(),
            issuer: "local".into(),
            identity_source: "local".into(),
            ..RequestContext::default()
        }
    }

    /// A context for a remote caller with these roles (frontends fill in the rest).
    pub fn remote(actor: impl Into<String>, roles: &[&str]) -> Self {
        RequestContext {
            actor: actor.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            request_id: uuid::Uuid::now_v7().to_string(),
            remote: true,
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
