//! The FerroHSM REST server: every route of SPEC §6 over TLS (optionally mutual), with JWT
//! authentication, dual control over HTTP, rate limiting, Prometheus metrics, health checks, a
//! generated OpenAPI document, and the operators' web dashboard under `/ui` (server-rendered,
//! on the same listener, through the same core calls).
//!
//! Handlers are thin: each turns a request into one `ferrohsm_core::Hsm` call. Authorization,
//! dual control, rate limiting and audit happen in the core; this crate authenticates callers
//! (tokens and client certificates) and speaks HTTP.
//!
//! It must never touch a key store, audit sink or key material directly, never trust a token's
//! `alg` header, never let a dashboard form change state without its session's CSRF token, never answer an operation before the core has made its audit record durable,
//! and never leak internal error detail to clients (it is logged with the request id instead).
//!
//! ```no_run
//! # async fn run(config: ferrohsm_server::ServerConfig, master: ferrohsm_core::MasterKey) -> Result<(), ferrohsm_server::Error> {
//! let server = ferrohsm_server::Server::start(config, master).await?;
//! println!("listening on https://{}", server.local_addr());
//! server.run_until_signal().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod app;
mod auth;
mod contract;
mod convert;
mod error;
mod metrics;
mod serve;
mod tls;
mod ui;

// Public interface:
pub use app::{AppConfig, AppState, ConnInfo, openapi_document, openapi_json, router};
pub use auth::{
    Audience, AuthFailure, Authenticator, CLOCK_SKEW_SECONDS, Claims, KeysetError, MAX_MINT_CHAIN,
    MAX_TOKEN_TTL_SECONDS, RESERVED_ISSUERS, TokenSpec, UnsignedToken, VerifiedToken, check_keyset,
    finish_token, unsigned_token,
};
pub use error::ApiError;
pub use serve::{ConnectionLimits, Jobs, Server, ServerConfig, ShutdownSignal};
pub use tls::acme::{AcmeConfig, directory_url as acme_directory_url};
pub use tls::{
    CertificateSource, ClientAuth, DevCertificates, TlsConfig, TlsError, TlsState,
    dev_certificates, ocsp, write_private,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HSM could not be opened.
    #[error("opening the HSM")]
    Core(#[from] ferrohsm_core::Error),
    /// TLS files are missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The JWT keyset file is invalid.
    #[error(transparent)]
    Keyset(#[from] KeysetError),
    /// A socket or file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Core(e) => e.code(),
            Error::Tls(_) => "tls",
            Error::Keyset(_) => "keyset",
            Error::Io { .. } => "io",
        }
    }
}

/// The server's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
