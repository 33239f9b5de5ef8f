//! `GET /healthz`.

use serde::{Deserialize, Serialize};

/// The server's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The JWT keyset file, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyset: Option<ComponentHealth>,
    /// Background jobs (reloads, scheduler): `ok`, or which failed last and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<ComponentHealth>,
    /// The key vault (a PKCS#11 token), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<ComponentHealth>,
    /// The served TLS certificate (its expiry) and, in ACME mode, its renewal: `error` while
    /// renewals fail or no unexpired certificate is served (only the latter degrades the
    /// server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ComponentHealth>,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ComponentHealth {
    /// `ok` or `error`.
    pub status: String,
    /// The backend or a short detail.
    pub detail: String,
}
