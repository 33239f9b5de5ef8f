//! The one HTTP client of the CLI, built on `core::wire` types.

use std::time::Duration;

use ferrohsm_api::ErrorBody;
use ferrohsm_core::wire::ApprovalInfo;
use reqwest::blocking::{RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Profile;
use crate::error::{CliError, Kind, Result};

/// A connection to one server as one caller.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    approval_id: Option<String>,
    request_id: Option<String>,
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
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &settings.ca_cert {
            let cert = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| CliError::input(format!("{}: {e}", ca.display())))?;
            builder = builder.tls_certs_only([cert]);
        }
        match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.extend_from_slice(&read(key)?);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| CliError::input(format!("client certificate: {e}")))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(CliError::input("give both --client-cert and --client-key")),
        }
        let http = builder.build().map_err(|e| CliError::input(format!("TLS setup: {e}")))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: settings.token.clone(),
            approval_id,
            request_id,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = &self.approval_id {
            req = req.header("x-approval-id", id);
        }
        if let Some(id) = &self.request_id {
            req = req.header("x-request-id", id);
        }
        req
    }

    /// GET a JSON resource.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        json(self.send(self.request(reqwest::Method::GET, path))?)
    }

    /// GET a text resource.
    pub fn get_text(&self, path: &str) -> Result<String> {
        let response = self.send(self.request(reqwest::Method::GET, path))?;
        response
            .text()
            .map_err(|e| CliError::new(Kind::Server, format!("reading the response: {e}")))
    }

    /// POST a JSON body.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        json(self.send(self.request(reqwest::Method::POST, path).json(body))?)
    }

    fn send(&self, req: RequestBuilder) -> Result<Response> {
        let response = req.send().map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            CliError::new(Kind::Server, format!("cannot reach {}: {cause}", self.base))
        })?;
        let status = response.status().as_u16();
        let request_id =
            response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status == 202 {
            let approval: ApprovalInfo = json(response)?;
            return Err(CliError {
                kind: Kind::Conflict,
                message: format!(
                    "approval required: approval {id} ({policy}) needs {quorum} approvals from {roles} for: {summary}; \
                     an approver runs `ferrohsm approvals show {id}` and `ferrohsm approvals approve {id}`, then repeat this command with --approval-id {id}",
                    id = approval.id,
                    policy = approval.policy,
                    quorum = approval.quorum,
                    roles = approval.approver_roles.join("/"),
                    summary = approval.summary,
                ),
                request_id,
            });
        }
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = response.text().unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code.to_string(), body.error.message),
            Err(_) => (format!("http_{status}"), text.trim().chars().take(200).collect()),
        };
        let kind = match status {
            401 | 403 => Kind::Auth,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            429 | 500..=599 => Kind::Server,
            _ => Kind::Failed,
        };
        let message = if code == "unauthenticated" {
            "authentication failed: the token is missing, expired or not accepted by this server"
                .to_owned()
        } else {
            format!("{code}: {message}")
        };
        Err(CliError { kind, message, request_id })
    }
}

fn json<T: DeserializeOwned>(response: Response) -> Result<T> {
    response.json().map_err(|e| CliError::new(Kind::Server, format!("unexpected response: {e}")))
}
