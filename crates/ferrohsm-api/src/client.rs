//! A typed async client of the REST API (feature `client`): one method per route, errors that
//! keep the contract's code, status and request id, dual control as a typed outcome, retries
//! with jittered backoff where a retry cannot repeat a side effect, page iterators, TLS with a
//! private CA and client certificates, and a token source that can rotate.
//!
//! Retried on 429 and 503 (honouring `Retry-After`), at most [`RetryPolicy::max_retries`]
//! times: every GET, and the pure computations (encrypt, decrypt, sign, verify, wrap, unwrap),
//! unless the request carries an approval id (an approval executes once). Never retried:
//! create, rotate, rollback, revoke, destroy, cancel-destroy, votes, token issue and revoke,
//! and writing a checkpoint.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{
    APPROVAL_ID_HEADER, ApprovalInfo, ApprovalList, AuditPage, AuditQuery, AuditVerification,
    CheckpointResponse, CreateKey, DecryptRequest, DestroyRequest, EncryptRequest, Encrypted,
    ErrorBody, ErrorCode, Health, JwkSet, KeyInfo, KeyList, KeyMaterial, ListKeys, Plaintext,
    PublicKeyInfo, REQUEST_ID_HEADER, RevokeRequest, RevokeTokenRequest, RollbackRequest,
    SignRequest, Signed, TokenRequest, TokenResponse, TokenRevocationInfo, UnwrapRequest, Verified,
    VerifyRequest, VoteRequest, WrapRequest, Wrapped,
};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{code} ({status}): {message} [request {request_id}]")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The contract's code (`Unknown` for a newer server's).
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// The request id, for the server's log and audit records.
        request_id: String,
        /// `Retry-After` seconds, on 429 and 503.
        retry_after: Option<u64>,
    },
    /// Dual control: the operation waits for approvals. Once the approval reaches its quorum,
    /// repeat the call with [`Client::with_approval`] and its id.
    #[error("approval {} required: {} of {} approvals ({})", .0.id, .0.approvals, .0.quorum, .0.summary)]
    ApprovalRequired(Box<ApprovalInfo>),
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The answer was not what the contract describes.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The client was configured wrongly (a CA file, a certificate, a URL).
    #[error("client configuration: {0}")]
    Config(String),
    /// The token source failed.
    #[error("token: {0}")]
    Token(String),
}

impl ClientError {
    /// The contract's code: the server's, `ApprovalRequired` for a 202, `Unknown` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Api { code, .. } => *code,
            ClientError::ApprovalRequired(_) => ErrorCode::ApprovalRequired,
            _ => ErrorCode::Unknown,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::ApprovalRequired(_) => Some(202),
            _ => None,
        }
    }

    /// The approval a 202 opened.
    pub fn approval(&self) -> Option<&ApprovalInfo> {
        match self {
            ClientError::ApprovalRequired(a) => Some(a),
            _ => None,
        }
    }
}

/// A call's result.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Where bearer tokens come from: a fixed token, or a function asked before every request
/// (to rotate short-lived tokens).
#[derive(Clone)]
pub enum TokenSource {
    /// No token (public routes only).
    None,
    /// The same token every time.
    Static(Arc<zeroize::Zeroizing<String>>),
    /// A token fetched for each request.
    Dynamic(Arc<dyn Fn() -> std::result::Result<String, String> + Send + Sync>),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenSource::None => "TokenSource::None",
            TokenSource::Static(_) => "TokenSource::Static(..)",
            TokenSource::Dynamic(_) => "TokenSource::Dynamic(..)",
        })
    }
}

impl TokenSource {
    /// A fixed token.
    pub fn fixed(token: impl Into<String>) -> Self {
        TokenSource::Static(Arc::new(zeroize::Zeroizing::new(token.into())))
    }

    fn token(&self) -> Result<Option<zeroize::Zeroizing<String>>> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Static(t) => Ok(Some(zeroize::Zeroizing::new(t.as_str().to_owned()))),
            TokenSource::Dynamic(f) => {
                f().map(|t| Some(zeroize::Zeroizing::new(t))).map_err(ClientError::Token)
            }
        }
    }
}

/// Retries of calls that cannot repeat a side effect, on 429 and 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 turns retrying off).
    pub max_retries: u32,
    /// The first backoff; each retry doubles it, up to `max_delay`, and a random share of it
    /// is waited (full jitter), never less than `Retry-After`.
    pub base_delay: Duration,
    /// The longest wait between attempts; a `Retry-After` beyond it ends the retries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `attempt` (from 1), or `None` when retries are over.
    pub fn delay(&self, attempt: u32, retry_after: Option<u64>) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        let floor = Duration::from_secs(retry_after.unwrap_or(0));
        if floor > self.max_delay {
            return None;
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter = ceiling.mul_f64(random_fraction());
        Some(jitter.max(floor))
    }
}

/// A number in [0, 1) from the standard library's per-process random hash keys.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Builds a [`Client`].
#[derive(Debug, Default)]
pub struct ClientBuilder {
    base: String,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    token: Option<TokenSource>,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    user_agent: Option<String>,
}

impl ClientBuilder {
    /// Trusts only this CA (PEM) for the server's certificate, instead of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM, concatenated) for mutual TLS.
    pub fn identity_pem(mut self, certificate_and_key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some(certificate_and_key.into());
        self
    }

    /// Sends this bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::fixed(token));
        self
    }

    /// Asks `source` for the token before each request.
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.token = Some(source);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Gives up on a request after `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends this `User-Agent` (default `ferrohsm-rust/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        let config = |what: &str, e: reqwest::Error| ClientError::Config(format!("{what}: {e}"));
        let base = self.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ClientError::Config(format!("{base:?} is not an http(s) URL")));
        }
        let agent = self
            .user_agent
            .unwrap_or_else(|| format!("ferrohsm-rust/{}", env!("CARGO_PKG_VERSION")));
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout.unwrap_or(Duration::from_secs(60)))
            .user_agent(agent);
        if let Some(pem) = &self.ca_pem {
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| config("CA certificate", e))?;
            builder = builder.tls_certs_only([cert]);
        }
        if let Some(pem) = &self.identity_pem {
            let identity =
                reqwest::Identity::from_pem(pem).map_err(|e| config("client certificate", e))?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| config("TLS setup", e))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                token: self.token.unwrap_or(TokenSource::None),
                retry: self.retry,
            }),
            options: CallOptions::default(),
        })
    }
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    token: TokenSource,
    retry: RetryPolicy,
}

/// Per-call headers.
#[derive(Debug, Clone, Default)]
struct CallOptions {
    request_id: Option<String>,
    approval_id: Option<Uuid>,
}

/// A client of one server as one caller. Cloning is cheap; [`Client::with_request_id`] and
/// [`Client::with_approval`] return clones that send those headers.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    options: CallOptions,
}

/// Whether a retry can repeat a side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read or a pure computation: retried.
    Safe,
    /// A change: never retried.
    Never,
}

impl Client {
    /// Starts building a client of the server at `base` (`https://host:port`).
    pub fn builder(base: impl Into<String>) -> ClientBuilder {
        ClientBuilder { base: base.into(), ..ClientBuilder::default() }
    }

    /// A client from `FERROHSM_SERVER`, `FERROHSM_CA_CERT` (a PEM file, optional) and
    /// `FERROHSM_TOKEN`, the variables `ferrohsm-server dev` prints and the CLI reads.
    pub fn from_env() -> Result<Client> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let base = var("FERROHSM_SERVER")
            .ok_or_else(|| ClientError::Config("FERROHSM_SERVER is not set".into()))?;
        let mut builder = Client::builder(base);
        if let Some(path) = var("FERROHSM_CA_CERT") {
            let pem =
                std::fs::read(&path).map_err(|e| ClientError::Config(format!("{path}: {e}")))?;
            builder = builder.ca_pem(pem);
        }
        if let Some(token) = var("FERROHSM_TOKEN") {
            builder = builder.token(token);
        }
        builder.build()
    }

    /// This client, sending `X-Request-Id: id` (correlates the call with its audit records).
    pub fn with_request_id(&self, id: impl Into<String>) -> Client {
        let mut c = self.clone();
        c.options.request_id = Some(id.into());
        c
    }

    /// This client, sending `X-Approval-Id: id`: the repeat of a request an approval
    /// authorized (never retried).
    pub fn with_approval(&self, id: Uuid) -> Client {
        let mut c = self.clone();
        c.options.approval_id = Some(id);
        c
    }

    /// Runs `call`; when it needs an approval, hands the approval to `approve` (which returns
    /// once it has reached its quorum, e.g. after asking people and polling
    /// [`Client::describe_approval`]) and repeats the call with its id.
    pub async fn with_dual_control<T, C, Fut, A, AFut>(&self, call: C, approve: A) -> Result<T>
    where
        C: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
        A: FnOnce(ApprovalInfo) -> AFut,
        AFut: std::future::Future<Output = Result<()>>,
    {
        match call(self.clone()).await {
            Err(ClientError::ApprovalRequired(approval)) => {
                let id = approval.id;
                approve(*approval).await?;
                call(self.with_approval(id)).await
            }
            other => other,
        }
    }

    // ----- Keys ---------------------------------------------------------------------------

    /// `POST /v1/keys`.
    pub async fn create_key(&self, request: &CreateKey) -> Result<KeyInfo> {
        self.send(Method::POST, "/v1/keys", &[], Some(request), Retry::Never).await
    }

    /// `GET /v1/keys`: one page.
    pub async fn list_keys(&self, query: &ListKeys) -> Result<KeyList> {
        let pairs = query.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send(Method::GET, "/v1/keys", &pairs, None::<&()>, Retry::Safe).await
    }

    /// Every page of `GET /v1/keys`, following `next_cursor`.
    pub fn key_pages(&self, query: ListKeys) -> KeyPages {
        KeyPages { client: self.clone(), query, done: false }
    }

    /// `GET /v1/keys/{key}`.
    pub async fn describe_key(&self, key: &str) -> Result<KeyInfo> {
        self.send(Method::GET, &key_path(key, ""), &[], None::<&()>, Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/rotate`.
    pub async fn rotate_key(&self, key: &str) -> Result<KeyInfo> {
        self.send(Method::POST, &key_path(key, "/rotate"), &[], None::<&()>, Retry::Never).await
    }

    /// `POST /v1/keys/{key}/rollback`.
    pub async fn rollback_key(&self, key: &str, version: u32) -> Result<KeyInfo> {
        let body = RollbackRequest { version };
        self.send(Method::POST, &key_path(key, "/rollback"), &[], Some(&body), Retry::Never).await
    }

    /// `POST /v1/keys/{key}/revoke`.
    pub async fn revoke_key(&self, key: &str, request: &RevokeRequest) -> Result<KeyInfo> {
        self.send(Method::POST, &key_path(key, "/revoke"), &[], Some(request), Retry::Never).await
    }

    /// `POST /v1/keys/{key}/destroy`.
    pub async fn destroy_key(&self, key: &str, request: &DestroyRequest) -> Result<KeyInfo> {
        self.send(Method::POST, &key_path(key, "/destroy"), &[], Some(request), Retry::Never).await
    }

    /// `POST /v1/keys/{key}/cancel-destroy`.
    pub async fn cancel_destroy(&self, key: &str) -> Result<KeyInfo> {
        let path = key_path(key, "/cancel-destroy");
        self.send(Method::POST, &path, &[], None::<&()>, Retry::Never).await
    }

    // ----- Cryptographic operations ---------------------------------------------------------

    /// `POST /v1/keys/{key}/encrypt`.
    pub async fn encrypt(&self, key: &str, request: &EncryptRequest) -> Result<Encrypted> {
        self.send(Method::POST, &key_path(key, "/encrypt"), &[], Some(request), Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/decrypt`.
    pub async fn decrypt(&self, key: &str, request: &DecryptRequest) -> Result<Plaintext> {
        self.send(Method::POST, &key_path(key, "/decrypt"), &[], Some(request), Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/sign`.
    pub async fn sign(&self, key: &str, request: &SignRequest) -> Result<Signed> {
        self.send(Method::POST, &key_path(key, "/sign"), &[], Some(request), Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/verify`.
    pub async fn verify(&self, key: &str, request: &VerifyRequest) -> Result<Verified> {
        self.send(Method::POST, &key_path(key, "/verify"), &[], Some(request), Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/wrap`.
    pub async fn wrap(&self, key: &str, request: &WrapRequest) -> Result<Wrapped> {
        self.send(Method::POST, &key_path(key, "/wrap"), &[], Some(request), Retry::Safe).await
    }

    /// `POST /v1/keys/{key}/unwrap`.
    pub async fn unwrap(&self, key: &str, request: &UnwrapRequest) -> Result<KeyMaterial> {
        self.send(Method::POST, &key_path(key, "/unwrap"), &[], Some(request), Retry::Safe).await
    }

    /// `GET /v1/keys/{key}/public`, of the current version or `version`.
    pub async fn public_key(&self, key: &str, version: Option<u32>) -> Result<PublicKeyInfo> {
        let version = version.map(|v| v.to_string());
        let query: Vec<(&str, &str)> = version.iter().map(|v| ("version", v.as_str())).collect();
        self.send(Method::GET, &key_path(key, "/public"), &query, None::<&()>, Retry::Safe).await
    }

    // ----- Approvals -------------------------------------------------------------------------

    /// `GET /v1/approvals`: the newest `limit` (1 to 1000; the server's default when `None`).
    pub async fn list_approvals(&self, limit: Option<u32>) -> Result<ApprovalList> {
        let limit = limit.map(|l| l.to_string());
        let query: Vec<(&str, &str)> = limit.iter().map(|l| ("limit", l.as_str())).collect();
        self.send(Method::GET, "/v1/approvals", &query, None::<&()>, Retry::Safe).await
    }

    /// `GET /v1/approvals/{id}`.
    pub async fn describe_approval(&self, id: Uuid) -> Result<ApprovalInfo> {
        let path = format!("/v1/approvals/{id}");
        self.send(Method::GET, &path, &[], None::<&()>, Retry::Safe).await
    }

    /// `POST /v1/approvals/{id}/approve`.
    pub async fn approve(&self, id: Uuid, request: &VoteRequest) -> Result<ApprovalInfo> {
        let path = format!("/v1/approvals/{id}/approve");
        self.send(Method::POST, &path, &[], Some(request), Retry::Never).await
    }

    /// `POST /v1/approvals/{id}/deny`.
    pub async fn deny(&self, id: Uuid, request: &VoteRequest) -> Result<ApprovalInfo> {
        let path = format!("/v1/approvals/{id}/deny");
        self.send(Method::POST, &path, &[], Some(request), Retry::Never).await
    }

    // ----- Audit ------------------------------------------------------------------------------

    /// `GET /v1/audit`: one page.
    pub async fn audit_records(&self, query: &AuditQuery) -> Result<AuditPage> {
        let text = serde_urlencoded_pairs(query)?;
        let pairs: Vec<(&str, &str)> = text.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.send(Method::GET, "/v1/audit", &pairs, None::<&()>, Retry::Safe).await
    }

    /// Every page of `GET /v1/audit`, following `next_cursor`.
    pub fn audit_pages(&self, query: AuditQuery) -> AuditPages {
        AuditPages { client: self.clone(), query, done: false }
    }

    /// `GET /v1/audit/verify`.
    pub async fn audit_verify(&self) -> Result<AuditVerification> {
        self.send(Method::GET, "/v1/audit/verify", &[], None::<&()>, Retry::Safe).await
    }

    /// `GET /v1/audit/checkpoint`.
    pub async fn audit_checkpoint(&self) -> Result<CheckpointResponse> {
        self.send(Method::GET, "/v1/audit/checkpoint", &[], None::<&()>, Retry::Safe).await
    }

    /// `POST /v1/audit/checkpoint`: writes a signed checkpoint now.
    pub async fn audit_checkpoint_now(&self) -> Result<CheckpointResponse> {
        self.send(Method::POST, "/v1/audit/checkpoint", &[], None::<&()>, Retry::Never).await
    }

    /// `GET /v1/audit/export`: the whole log as NDJSON.
    pub async fn audit_export(&self) -> Result<Vec<u8>> {
        let response =
            self.execute(Method::GET, "/v1/audit/export", &[], None::<&()>, Retry::Safe).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    // ----- Tokens and operations ----------------------------------------------------------------

    /// `POST /v1/auth/token`.
    pub async fn issue_token(&self, request: &TokenRequest) -> Result<TokenResponse> {
        self.send(Method::POST, "/v1/auth/token", &[], Some(request), Retry::Never).await
    }

    /// `POST /v1/auth/revoke`.
    pub async fn revoke_token(&self, request: &RevokeTokenRequest) -> Result<TokenRevocationInfo> {
        self.send(Method::POST, "/v1/auth/revoke", &[], Some(request), Retry::Never).await
    }

    /// `GET /healthz` (a degraded server answers 503 with the same body, returned here as an
    /// error whose message is the body).
    pub async fn health(&self) -> Result<Health> {
        self.send(Method::GET, "/healthz", &[], None::<&()>, Retry::Never).await
    }

    /// `GET /.well-known/jwks.json`.
    pub async fn jwks(&self) -> Result<JwkSet> {
        self.send(Method::GET, "/.well-known/jwks.json", &[], None::<&()>, Retry::Safe).await
    }

    // ----- Transport ----------------------------------------------------------------------------

    async fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
        retry: Retry,
    ) -> Result<T> {
        let response = self.execute(method, path, query, body, retry).await?;
        let bytes = response.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends the request, retrying as the policy and `retry` allow, and turns every
    /// non-success answer into a [`ClientError`].
    async fn execute<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
        retry: Retry,
    ) -> Result<reqwest::Response> {
        let retry = if self.options.approval_id.is_some() { Retry::Never } else { retry };
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(format!("encoding the request: {e}")))?
            .map(zeroize::Zeroizing::new);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut url = format!("{}{path}", self.inner.base);
            for (i, (name, value)) in query.iter().enumerate() {
                url.push(if i == 0 { '?' } else { '&' });
                url.push_str(&percent(name));
                url.push('=');
                url.push_str(&percent(value));
            }
            let mut request = self.inner.http.request(method.clone(), url);
            if let Some(token) = self.inner.token.token()? {
                request = request.bearer_auth(token.as_str());
            }
            if let Some(id) = &self.options.request_id {
                request = request.header(REQUEST_ID_HEADER, id);
            }
            if let Some(id) = self.options.approval_id {
                request = request.header(APPROVAL_ID_HEADER, id.to_string());
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let response = request.send().await.map_err(|e| ClientError::Transport(chain(&e)))?;
            let status = response.status();
            if status == StatusCode::ACCEPTED {
                let bytes =
                    response.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
                let approval: ApprovalInfo = serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                return Err(ClientError::ApprovalRequired(Box::new(approval)));
            }
            if status.is_success() {
                return Ok(response);
            }
            let error = error_of(response).await;
            let retryable = matches!(status.as_u16(), 429 | 503) && retry == Retry::Safe;
            let retry_after = match &error {
                ClientError::Api { retry_after, .. } => *retry_after,
                _ => None,
            };
            match self.inner.retry.delay(attempt, retry_after).filter(|_| retryable) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(error),
            }
        }
    }
}

/// The error a non-success answer carries.
async fn error_of(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
    let request_id = header(REQUEST_ID_HEADER).unwrap_or_default();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api {
            status,
            code: body.error.code,
            message: body.error.message,
            request_id: body.error.request_id,
            retry_after,
        },
        Err(_) => ClientError::Api {
            status,
            code: ErrorCode::Unknown,
            message: text.trim().chars().take(200).collect(),
            request_id,
            retry_after,
        },
    }
}

/// An error and its causes on one line (the innermost names the real problem).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `/v1/keys/{key}{rest}`, the key percent-encoded (a valid id or name needs none, but an
/// invalid one must reach the server intact to be refused there).
fn key_path(key: &str, rest: &str) -> String {
    format!("/v1/keys/{}{rest}", percent(key))
}

/// `text` with every byte but the unreserved ones (RFC 3986) percent-encoded.
fn percent(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// The audit query as name-value pairs.
fn serde_urlencoded_pairs(query: &AuditQuery) -> Result<Vec<(String, String)>> {
    let value = serde_json::to_value(query).map_err(|e| ClientError::Decode(e.to_string()))?;
    let mut pairs = Vec::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => pairs.push((k, s)),
                serde_json::Value::Null => {}
                other => pairs.push((k, other.to_string())),
            }
        }
    }
    Ok(pairs)
}

/// A query that pages through `next_cursor` ([`ListKeys`], [`AuditQuery`]).
pub trait PagedQuery: Sized {
    /// One page of the answer.
    type Page;

    /// Fetches the page this query names.
    fn fetch(
        &self,
        client: &Client,
    ) -> impl std::future::Future<Output = Result<Self::Page>> + Send;

    /// Where the next page starts, if there is one.
    fn next_cursor(page: &Self::Page) -> Option<&String>;

    /// Sets where the next fetch starts.
    fn set_cursor(&mut self, cursor: String);
}

impl PagedQuery for ListKeys {
    type Page = KeyList;

    async fn fetch(&self, client: &Client) -> Result<KeyList> {
        client.list_keys(self).await
    }

    fn next_cursor(page: &KeyList) -> Option<&String> {
        page.next_cursor.as_ref()
    }

    fn set_cursor(&mut self, cursor: String) {
        self.cursor = Some(cursor);
    }
}

impl PagedQuery for AuditQuery {
    type Page = AuditPage;

    async fn fetch(&self, client: &Client) -> Result<AuditPage> {
        client.audit_records(self).await
    }

    fn next_cursor(page: &AuditPage) -> Option<&String> {
        page.next_cursor.as_ref()
    }

    fn set_cursor(&mut self, cursor: String) {
        self.cursor = Some(cursor);
    }
}

/// The pages of a listing ([`Client::key_pages`], [`Client::audit_pages`]), following
/// `next_cursor` until the last page or the first error.
#[derive(Debug)]
pub struct Pages<Q> {
    client: Client,
    query: Q,
    done: bool,
}

/// The pages of a key listing.
pub type KeyPages = Pages<ListKeys>;
/// The pages of an audit query.
pub type AuditPages = Pages<AuditQuery>;

impl<Q: PagedQuery> Pages<Q> {
    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Option<Result<Q::Page>> {
        if self.done {
            return None;
        }
        let page = self.query.fetch(&self.client).await;
        match page.as_ref().map(Q::next_cursor) {
            Ok(Some(cursor)) => {
                let cursor = cursor.clone();
                self.query.set_cursor(cursor);
            }
            Ok(None) | Err(_) => self.done = true,
        }
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_bounded_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        for attempt in 1..=3 {
            let wait = policy.delay(attempt, None);
            let ceiling = Duration::from_millis(100 << (attempt - 1));
            assert!(wait.is_some_and(|w| w <= ceiling), "{attempt}: {wait:?}");
        }
        assert_eq!(policy.delay(4, None), None, "at most max_retries");
        assert!(policy.delay(1, Some(1)).is_some_and(|w| w >= Duration::from_secs(1)));
        assert_eq!(policy.delay(1, Some(3)), None, "a Retry-After beyond max_delay ends retries");
    }

    #[test]
    fn keys_are_percent_encoded_in_paths() {
        assert_eq!(key_path("orders", "/encrypt"), "/v1/keys/orders/encrypt");
        assert_eq!(key_path("a/b c", ""), "/v1/keys/a%2Fb%20c");
    }
}
