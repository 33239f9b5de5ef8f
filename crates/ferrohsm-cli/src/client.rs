//! The one HTTP client of the CLI: the typed client of `ferrohsm-api` on a current-thread
//! runtime. Its errors become `CliError`s with the exit code of their kind.

use ferrohsm_api::ErrorCode;
use ferrohsm_api::client::{ClientError, Result as ApiResult};

use crate::config::Profile;
use crate::error::{CliError, Kind, Result};

/// A connection to one server as one caller.
pub struct Client {
    api: ferrohsm_api::Client,
    runtime: tokio::runtime::Runtime,
    base: String,
}

impl Client {
    /// Builds the client from resolved settings.
    pub fn new(
        settings: &Profile,
        approval_id: Option<String>,
        request_id: Option<String>,
    ) -> Result<Client> {
        let base = settings.server.clone().ok_or_else(|| {
            CliError::input(
                "no server: pass --server, set FERROHSM_SERVER, or run `ferrohsm login`",
            )
        })?;
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| CliError::input(format!("reading {}: {e}", path.display())))
        };
        let mut builder = ferrohsm_api::Client::builder(base.clone())
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(format!("ferrohsm-cli/{}", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_cert {
            builder = builder.ca_pem(read(ca)?);
        }
        match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.extend_from_slice(&read(key)?);
                builder = builder.identity_pem(pem);
            }
            (None, None) => {}
            _ => return Err(CliError::input("give both --client-cert and --client-key")),
        }
        if let Some(token) = &settings.token {
            builder = builder.token(token.clone());
        }
        let mut api = builder.build().map_err(|e| CliError::input(e.to_string()))?;
        if let Some(id) = approval_id {
            let id = id.trim().parse().map_err(|_| {
                CliError::input(format!("--approval-id {id:?} is not an approval id"))
            })?;
            api = api.with_approval(id);
        }
        if let Some(id) = request_id {
            api = api.with_request_id(id);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::new(Kind::Failed, format!("starting the runtime: {e}")))?;
        Ok(Client { api, runtime, base: base.trim_end_matches('/').to_owned() })
    }

    /// Runs one call of the typed client.
    pub fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ferrohsm_api::Client) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        self.runtime.block_on(call(self.api.clone())).map_err(|e| self.error(e))
    }

    /// The CLI's error for a client error: the kind decides the exit code.
    fn error(&self, e: ClientError) -> CliError {
        match e {
            ClientError::ApprovalRequired(approval) => CliError::new(
                Kind::Conflict,
                format!(
                    "approval required: approval {id} ({policy}) needs {quorum} approvals from {roles} for: {summary}; \
                     an approver runs `ferrohsm approvals show {id}` and `ferrohsm approvals approve {id}`, then repeat this command with --approval-id {id}",
                    id = approval.id,
                    policy = approval.policy,
                    quorum = approval.quorum,
                    roles = approval
                        .approver_roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join("/"),
                    summary = approval.summary,
                ),
            ),
            ClientError::Api { status, code, message, request_id, .. } => {
                let kind = match status {
                    401 | 403 => Kind::Auth,
                    404 => Kind::NotFound,
                    409 => Kind::Conflict,
                    429 | 500..=599 => Kind::Server,
                    _ => Kind::Failed,
                };
                let message = match code {
                    ErrorCode::Unauthenticated => "authentication failed: the token is missing, expired or not accepted by this server".to_owned(),
                    ErrorCode::Unknown => format!("http_{status}: {message}"),
                    code => format!("{code}: {message}"),
                };
                let request_id = Some(request_id).filter(|r| !r.is_empty());
                CliError { kind, message, request_id }
            }
            ClientError::Transport(cause) => {
                CliError::new(Kind::Server, format!("cannot reach {}: {cause}", self.base))
            }
            ClientError::Decode(detail) => {
                CliError::new(Kind::Server, format!("unexpected response: {detail}"))
            }
            other => CliError::input(other.to_string()),
        }
    }
}
