//! Tokens: issuing and revoking (SPEC §7).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Role;

/// `POST /v1/auth/token`: a token for another actor, signed by the server's token key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The subject (actor): 1 to 128 characters of letters, digits and `._@:+/=~-`, starting
    /// with a letter or digit.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._@:+/=~-]{0,127}$"))]
    pub sub: String,
    /// Its roles (at least one).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub roles: Vec<Role>,
    /// Lifetime in seconds (default 3600, at most the server's maximum token lifetime).
    #[serde(
        default,
        deserialize_with = "crate::number::whole_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub ttl_seconds: Option<u64>,
    /// Binds the token to a client certificate: its SHA-256 fingerprint, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub cert_sha256: Option<String>,
}

/// An issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// Revoke the token with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._@:+/=~-]{0,127}$"))]
    pub jti: Option<String>,
    /// Revoke every token of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._@:+/=~-]{0,127}$"))]
    pub sid: Option<String>,
    /// Why (kept in the revocation and the audit log): at most 1024 characters, no control
    /// characters but newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub reason: Option<String>,
}

/// A token revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
