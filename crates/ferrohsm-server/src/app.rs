//! The router: middleware (request id, tracing, metrics, timeout, body limit, authentication)
//! and one thin handler per route of SPEC §6. Every handler extracts what it needs and calls
//! one `Hsm` method; authorization, dual control and rate limiting happen in the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use ferrohsm_api::{
    ApprovalInfo, ApprovalList, AuditPage, AuditQuery, AuditVerification, CheckpointResponse,
    CreateKey, DecryptRequest, DestroyRequest, EncryptRequest, Encrypted, ErrorBody, Health,
    JwkSet, KeyInfo, KeyList, KeyMaterial, Plaintext, PublicKeyInfo, RevokeRequest,
    RevokeTokenRequest, RollbackRequest, SignRequest, Signed, TokenRequest, TokenResponse,
    TokenRevocationInfo, UnwrapRequest, Verified, VerifyRequest, VoteRequest, WrapRequest, Wrapped,
};
use ferrohsm_core::{Checkpoint, Hsm, KeyRef, ListQuery, RequestContext, TokenGrant, TokenMatch};
use serde::Deserialize;
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthFailure, Authenticator, TokenSpec};
use crate::convert;
use crate::error::{ApiError, PendingError, render};
use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    hsm: Hsm,
    auth: Arc<Authenticator>,
    jobs: Arc<crate::serve::Jobs>,
    tls: Arc<crate::tls::TlsState>,
    metrics: Metrics,
    issuer: String,
    timeout: Duration,
    draining: AtomicBool,
    counters: Counters,
    ui: crate::ui::UiState,
}

/// Counts the dashboard's health page shows (Prometheus has the same, labelled).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    rate_limited: std::sync::atomic::AtomicU64,
    auth_failures: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// Requests answered 429 since start.
    pub(crate) fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Refused credentials since start.
    pub(crate) fn auth_failures(&self) -> u64 {
        self.auth_failures.load(Ordering::Relaxed)
    }
}

/// Settings of the router that are not the HSM's.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The `iss` of tokens the server issues.
    pub issuer: String,
    /// The largest request body in bytes.
    pub max_body: usize,
    /// How long a request may take before it is answered 503.
    pub timeout: Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig { issuer: "ferrohsm".into(), max_body: 2 << 20, timeout: Duration::from_secs(30) }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("hsm", &self.inner.hsm).finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the shared state.
    pub fn new(
        hsm: Hsm,
        auth: Arc<Authenticator>,
        jobs: Arc<crate::serve::Jobs>,
        tls: Arc<crate::tls::TlsState>,
        config: &AppConfig,
    ) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                hsm,
                auth,
                jobs,
                tls,
                metrics: Metrics::global(),
                issuer: config.issuer.clone(),
                timeout: config.timeout,
                draining: AtomicBool::new(false),
                counters: Counters::default(),
                ui: crate::ui::UiState::default(),
            }),
        }
    }

    /// The HSM.
    pub fn hsm(&self) -> &Hsm {
        &self.inner.hsm
    }

    /// The authenticator.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The dashboard's sessions and reports.
    pub(crate) fn ui(&self) -> &crate::ui::UiState {
        &self.inner.ui
    }

    /// The counters of the dashboard's health page.
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Marks the server as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }
}

/// What the connection layer knows about the peer, attached to every request.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: Option<SocketAddr>,
    /// The client certificate's SHA-256, hex (for audit records).
    pub cert_sha256_hex: Option<String>,
    /// The same, base64url (for `cnf.x5t#S256`).
    pub cert_sha256_b64url: Option<String>,
}

/// The request id of a request.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// The authenticated caller, as the core sees it.
pub struct Ctx(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut ctx = parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(ApiError::unauthenticated)?;
        if let Some(value) = parts.headers.get("x-approval-id") {
            let id = value
                .to_str()
                .ok()
                .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
                .ok_or_else(|| ApiError::invalid("X-Approval-Id is not a UUID"))?;
            ctx.approval_id = Some(id);
        }
        Ok(Ctx(ctx))
    }
}

/// A JSON body whose rejections are `ApiError`s (unknown fields, bad base64, too large…).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(body_rejection)?;
        let json = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::invalid(
                "Expected request with `Content-Type: application/json`",
            ));
        }
        object_body(&bytes)?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// An optional JSON body: an empty body is the default value.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !bytes.trim_ascii_start().starts_with(b"null") {
            object_body(&bytes)?;
        }
        // `null` is no body too (the document allows it).
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|body| OptionalJson(body.unwrap_or_default()))
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// The input to sign or verify, refusing both or neither of `message` and `digest`.
fn sign_input<'a>(
    message: Option<&'a [u8]>,
    digest: Option<&'a [u8]>,
) -> Result<ferrohsm_core::SignInput<'a>, ApiError> {
    match (message, digest) {
        (Some(m), None) => Ok(ferrohsm_core::SignInput::Message(m)),
        (None, Some(d)) => Ok(ferrohsm_core::SignInput::Digest(d)),
        _ => Err(ApiError::invalid("give exactly one of message and digest")),
    }
}

/// A body that could not be read: too large, or cut.
fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::invalid(e.body_text())
    }
}

/// Every request body is a JSON object: serde would also read a struct from an array of its
/// fields (`[1]` as `{"version": 1}`), which the contract does not allow.
fn object_body(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.trim_ascii_start().starts_with(b"{") {
        Ok(())
    } else {
        Err(ApiError::invalid("the request body must be a JSON object"))
    }
}

fn key_ref(key: &str) -> Result<KeyRef, ApiError> {
    key.parse::<KeyRef>().map_err(ApiError::from)
}

fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}

// ----- Router --------------------------------------------------------------------------------

/// The OpenAPI document's top level: title, version, bearer security.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "FerroHSM", description = "Keys, cryptographic operations, dual control and a tamper-evident audit log (SPEC §6)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ApprovalInfo))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document that describes them, before state and middleware.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_key, list_keys))
        .routes(routes!(describe_key))
        .routes(routes!(rotate_key))
        .routes(routes!(rollback_key))
        .routes(routes!(revoke_key))
        .routes(routes!(destroy_key))
        .routes(routes!(cancel_destroy))
        .routes(routes!(encrypt))
        .routes(routes!(decrypt))
        .routes(routes!(sign))
        .routes(routes!(verify))
        .routes(routes!(wrap))
        .routes(routes!(unwrap))
        .routes(routes!(public_key))
        .routes(routes!(list_approvals))
        .routes(routes!(describe_approval))
        .routes(routes!(approve))
        .routes(routes!(deny))
        .routes(routes!(audit_records))
        .routes(routes!(audit_verify))
        .routes(routes!(audit_checkpoint, audit_checkpoint_now))
        .routes(routes!(audit_export))
        .routes(routes!(issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .routes(routes!(jwks))
}

/// The OpenAPI document of every route.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut doc = api().into_openapi();
    utoipa::Modify::modify(&crate::contract::Statuses, &mut doc);
    utoipa::Modify::modify(&crate::contract::ExactlyOne, &mut doc);
    utoipa::Modify::modify(&crate::contract::Links, &mut doc);
    doc
}

/// The OpenAPI document as pretty JSON, as `sdks/openapi.json` holds it.
pub fn openapi_json() -> String {
    openapi_document().to_pretty_json().unwrap_or_default()
}

/// The whole application: routes, middleware and state. `oneshot` tests call it directly.
pub fn router(state: AppState, max_body: usize) -> Router {
    let (routes, _) = api().split_for_parts();
    routes
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

// ----- Middleware ----------------------------------------------------------------------------

const PUBLIC_PATHS: &[&str] =
    &["/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json"];

/// Request id in and out, a span, metrics, the timeout, and rendering of error bodies.
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    // A dashboard page that times out is answered as a page, with the dashboard's headers.
    let ui_host = (route.starts_with("/ui")).then(|| crate::ui::public_host(&req));
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let start = Instant::now();
    let mut response =
        match tokio::time::timeout(state.inner.timeout, next.run(req).instrument(span.clone()))
            .await
        {
            Ok(r) => r,
            Err(_) => match ui_host {
                Some(public) => crate::ui::timed_out(&request_id, public),
                None => ApiError::unavailable("the request timed out").into_response(),
            },
        };
    if let Some(pending) = response.extensions_mut().remove::<PendingError>() {
        if let Some(detail) = &pending.detail {
            tracing::error!(parent: &span, code = pending.code.as_str(), detail = %detail, "request failed");
        }
        *response.body_mut() = Body::from(render(&pending, &request_id));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        state.inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    state.inner.metrics.request(&route, method.as_str(), response.status(), start.elapsed());
    response
}

/// Turns a bearer token into a `RequestContext`; refuses (401, audited) anything else. The
/// dashboard's pages (`/ui`) authenticate with their session instead, through the same
/// [`verify_bearer`].
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if PUBLIC_PATHS.contains(&path) || path == "/ui" || path.starts_with("/ui/") {
        return next.run(req).await;
    }
    let conn = req.extensions().get::<ConnInfo>().cloned().unwrap_or_default();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match verify_bearer(&state, token, &conn, request_id).await {
        Ok((ctx, _)) => {
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(TokenRefusal::Failed(e)) => e.into_response(),
        Err(TokenRefusal::Refused(_)) => {
            let mut response = ApiError::unauthenticated().into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Why a bearer token gave no caller.
pub(crate) enum TokenRefusal {
    /// The token was refused (counted, logged and audited already).
    Refused(AuthFailure),
    /// Recording the refusal failed (the audit log is not writable).
    Failed(ApiError),
}

/// Verifies a bearer token as every authenticated request needs it (signature, claims,
/// certificate binding against the connection, revocation) and builds the caller's context;
/// returns it with the token's `exp`. A refusal is counted, logged and audited.
pub(crate) async fn verify_bearer(
    state: &AppState,
    token: Option<&str>,
    conn: &ConnInfo,
    request_id: String,
) -> Result<(RequestContext, u64), TokenRefusal> {
    let verified = match token {
        None => Err(AuthFailure::Missing),
        Some(t) => state.inner.auth.verify(t, conn.cert_sha256_b64url.as_deref()),
    }
    .and_then(|v| {
        // Checked on every request, after the cache: a revocation takes effect at once.
        let c = &v.claims;
        if state.inner.hsm.is_token_revoked(c.jti.as_deref(), c.sid.as_deref()) {
            Err(AuthFailure::Revoked)
        } else {
            Ok(v)
        }
    });
    let base = RequestContext {
        request_id,
        client_fingerprint: conn.cert_sha256_hex.clone(),
        source_ip: conn.peer.map(|p| p.ip()),
        remote: true,
        ..RequestContext::default()
    };
    match verified {
        Ok(verified) => {
            let claims = &verified.claims;
            let ctx = RequestContext {
                actor: claims.sub.clone(),
                roles: claims.roles.clone(),
                session: claims.sid.clone(),
                issuer: claims.iss.clone(),
                identity_source: verified.identity_source().to_owned(),
                minted_by: claims.minted_by.clone(),
                certificate_bound: claims.cnf.is_some(),
                token_id: claims.jti.clone(),
                ..base
            };
            Ok((ctx, claims.exp))
        }
        Err(failure) => {
            state.inner.metrics.auth_failure(failure.as_str());
            state.inner.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(reason = failure.as_str(), "authentication failed");
            if let Err(e) =
                state.inner.hsm.record_authentication_failure(&base, failure.as_str()).await
            {
                return Err(TokenRefusal::Failed(ApiError::from(e)));
            }
            Err(TokenRefusal::Refused(failure))
        }
    }
}

// ----- Keys ----------------------------------------------------------------------------------

/// Create a key.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, description = "Created", body = KeyInfo)))]
async fn create_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, HeaderMap, Json<KeyInfo>), ApiError> {
    let key = convert::key_info(s.hsm().create_key(&ctx, convert::create_key(body)?).await?);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/keys/{}", key.id)) {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, Json(key)))
}

/// List keys, oldest first, with filters and an opaque cursor.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(
        ("limit" = Option<u32>, Query, description = "Page size (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "The next_cursor of the previous page", pattern = "^k1[0-9a-f]{32}$"),
        ("algorithm" = Option<ferrohsm_api::Algorithm>, Query, description = "Only keys of this algorithm"),
        ("state" = Option<ferrohsm_api::KeyState>, Query, description = "Only keys in this state"),
        ("tag" = Option<Vec<String>>, Query, description = "`key:value`, repeatable; all must match", pattern = r"^[A-Za-z0-9_./-]{1,64}:[^\x00-\x1F\x7F-\x9F]{0,256}$"),
        ("name_prefix" = Option<String>, Query, description = "Only names starting with this", max_length = 128),
    ),
    responses((status = 200, description = "OK", body = KeyList, headers(("ETag" = String))), (status = 304, description = "Not modified (ETag matches)")))]
async fn list_keys(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = ListQuery::default();
    for (name, value) in query_pairs(uri.query())? {
        let bad = |what: &str| ApiError::invalid(format!("bad {what}: {value:?}"));
        match name.as_str() {
            "limit" => query.limit = value.parse().map_err(|_| bad("limit"))?,
            "cursor" => query.cursor = Some(value.parse().map_err(|_| bad("cursor"))?),
            "algorithm" => {
                query.algorithm =
                    Some(convert::algorithm(ferrohsm_api::Algorithm::from_wire(&value))?);
            }
            "state" => {
                query.state = Some(convert::key_state(ferrohsm_api::KeyState::from_wire(&value))?);
            }
            "tag" => {
                let (k, v) = value.split_once(':').ok_or_else(|| bad("tag (want k:v)"))?;
                query.tags.push((k.to_owned(), v.to_owned()));
            }
            "name_prefix" if value.chars().count() > 128 => {
                return Err(ApiError::invalid("name_prefix has at most 128 characters"));
            }
            "name_prefix" => query.name_prefix = Some(value),
            other => return Err(ApiError::invalid(format!("unknown query parameter {other:?}"))),
        }
    }
    let list = convert::key_list(s.hsm().list_keys(&ctx, &query).await?);
    let body = serde_json::to_vec(&list).map_err(|e| ApiError::internal(e.to_string()))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let etag = format!("\"{}\"", ferrohsm_core::hex::encode(&digest.as_ref()[..16]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let status = if matches { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let mut response = if matches {
        status.into_response()
    } else {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Describe a key (by id or name).
#[utoipa::path(get, path = "/v1/keys/{key}", tag = "keys", params(("key" = String, Path)),
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn describe_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(convert::key_info(s.hsm().describe_key(&ctx, &key_ref(&key)?).await?)))
}

/// Add a version and make it current.
#[utoipa::path(post, path = "/v1/keys/{key}/rotate", tag = "keys", params(("key" = String, Path)),
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn rotate_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(convert::key_info(s.hsm().rotate_key(&ctx, &key_ref(&key)?).await?)))
}

/// Make an earlier version current.
#[utoipa::path(post, path = "/v1/keys/{key}/rollback", tag = "keys", params(("key" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn rollback_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<RollbackRequest>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(convert::key_info(s.hsm().rollback_key(&ctx, &key_ref(&key)?, body.version).await?)))
}

/// Revoke a key.
#[utoipa::path(post, path = "/v1/keys/{key}/revoke", tag = "keys", params(("key" = String, Path)), request_body = RevokeRequest,
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn revoke_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<RevokeRequest>,
) -> Result<Json<KeyInfo>, ApiError> {
    let reason = convert::revocation_reason(body.reason)?;
    let key = s.hsm().revoke_key(&ctx, &key_ref(&key)?, reason, body.comment).await?;
    Ok(Json(convert::key_info(key)))
}

/// Schedule destruction after a grace period.
#[utoipa::path(post, path = "/v1/keys/{key}/destroy", tag = "keys", params(("key" = String, Path)), request_body(content = Option<DestroyRequest>),
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn destroy_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    OptionalJson(body): OptionalJson<DestroyRequest>,
) -> Result<Json<KeyInfo>, ApiError> {
    let grace = body.grace_seconds.map(time::Duration::seconds);
    Ok(Json(convert::key_info(s.hsm().schedule_destruction(&ctx, &key_ref(&key)?, grace).await?)))
}

/// Cancel a scheduled destruction.
#[utoipa::path(post, path = "/v1/keys/{key}/cancel-destroy", tag = "keys", params(("key" = String, Path)),
    responses((status = 200, description = "OK", body = KeyInfo)))]
async fn cancel_destroy(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(convert::key_info(s.hsm().cancel_destruction(&ctx, &key_ref(&key)?).await?)))
}

// ----- Cryptographic operations -------------------------------------------------------------

/// Encrypt with the current version (AES-256-GCM).
#[utoipa::path(post, path = "/v1/keys/{key}/encrypt", tag = "crypto", params(("key" = String, Path)), request_body = EncryptRequest,
    responses((status = 200, description = "OK", body = Encrypted)))]
async fn encrypt(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<EncryptRequest>,
) -> Result<Json<Encrypted>, ApiError> {
    let aad = body.aad.unwrap_or_default();
    let out = s.hsm().encrypt(&ctx, &key_ref(&key)?, body.plaintext.expose(), &aad).await?;
    Ok(Json(convert::encrypted(out)))
}

/// Decrypt a `fhsm:v<N>:` ciphertext.
#[utoipa::path(post, path = "/v1/keys/{key}/decrypt", tag = "crypto", params(("key" = String, Path)), request_body = DecryptRequest,
    responses((status = 200, description = "OK", body = Plaintext)))]
async fn decrypt(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<DecryptRequest>,
) -> Result<Json<Plaintext>, ApiError> {
    let aad = body.aad.unwrap_or_default();
    let out = s.hsm().decrypt(&ctx, &key_ref(&key)?, &body.ciphertext, &aad).await?;
    Ok(Json(convert::plaintext(out)))
}

/// Sign a message or a digest with the current version.
#[utoipa::path(post, path = "/v1/keys/{key}/sign", tag = "crypto", params(("key" = String, Path)), request_body = SignRequest,
    responses((status = 200, description = "OK", body = Signed)))]
async fn sign(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<SignRequest>,
) -> Result<Json<Signed>, ApiError> {
    let input = sign_input(body.message.as_deref(), body.digest.as_deref())?;
    let scheme = body.algorithm.map(convert::scheme).transpose()?;
    Ok(Json(convert::signed(s.hsm().sign(&ctx, &key_ref(&key)?, input, scheme).await?)))
}

/// Verify a signature.
#[utoipa::path(post, path = "/v1/keys/{key}/verify", tag = "crypto", params(("key" = String, Path)), request_body = VerifyRequest,
    responses((status = 200, description = "OK", body = Verified)))]
async fn verify(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<Verified>, ApiError> {
    let input = sign_input(body.message.as_deref(), body.digest.as_deref())?;
    let scheme = body.algorithm.map(convert::scheme).transpose()?;
    let out = s
        .hsm()
        .verify(&ctx, &key_ref(&key)?, input, &body.signature, scheme, body.key_version)
        .await?;
    Ok(Json(convert::verified(out)))
}

/// Wrap key material (RFC 5649).
#[utoipa::path(post, path = "/v1/keys/{key}/wrap", tag = "crypto", params(("key" = String, Path)), request_body = WrapRequest,
    responses((status = 200, description = "OK", body = Wrapped)))]
async fn wrap(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<WrapRequest>,
) -> Result<Json<Wrapped>, ApiError> {
    let out = s.hsm().wrap(&ctx, &key_ref(&key)?, body.key_material.expose()).await?;
    Ok(Json(convert::wrapped(out)))
}

/// Unwrap a `fhsm:v<N>:` wrapped key.
#[utoipa::path(post, path = "/v1/keys/{key}/unwrap", tag = "crypto", params(("key" = String, Path)), request_body = UnwrapRequest,
    responses((status = 200, description = "OK", body = KeyMaterial)))]
async fn unwrap(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<UnwrapRequest>,
) -> Result<Json<KeyMaterial>, ApiError> {
    let out = s.hsm().unwrap(&ctx, &key_ref(&key)?, &body.wrapped).await?;
    Ok(Json(convert::key_material(out)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    /// The version (the current one when omitted).
    #[param(minimum = 1)]
    version: Option<u32>,
}

/// The public key of the current (or `?version=`) version, as PEM, DER and JWK.
#[utoipa::path(get, path = "/v1/keys/{key}/public", tag = "keys", params(("key" = String, Path), VersionQuery),
    responses((status = 200, description = "OK", body = PublicKeyInfo)))]
async fn public_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(key): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<PublicKeyInfo>, ApiError> {
    let q: VersionQuery = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    Ok(Json(convert::public_key(s.hsm().public_key(&ctx, &key_ref(&key)?, q.version).await?)))
}

// ----- Approvals -----------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Approvals, newest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(LimitQuery),
    responses((status = 200, description = "OK", body = ApprovalList)))]
async fn list_approvals(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    uri: axum::http::Uri,
) -> Result<Json<ApprovalList>, ApiError> {
    let q: LimitQuery = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let list = s.hsm().list_approvals(&ctx, limit as usize).await?;
    Ok(Json(ApprovalList { approvals: list.iter().map(convert::approval).collect() }))
}

fn approval_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| ApiError::invalid("the approval id is not a UUID"))
}

/// One approval.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    responses((status = 200, description = "OK", body = ApprovalInfo)))]
async fn describe_approval(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
) -> Result<Json<ApprovalInfo>, ApiError> {
    Ok(Json(convert::approval(&s.hsm().describe_approval(&ctx, approval_id(&id)?).await?)))
}

/// Approve a pending request (not the requester; once per approver).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = uuid::Uuid, Path, description = "The approval's id")), request_body(content = Option<VoteRequest>),
    responses((status = 200, description = "OK", body = ApprovalInfo)))]
async fn approve(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<VoteRequest>,
) -> Result<Json<ApprovalInfo>, ApiError> {
    Ok(Json(convert::approval(&s.hsm().approve(&ctx, approval_id(&id)?, body.comment).await?)))
}

/// Deny a pending request.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", params(("id" = uuid::Uuid, Path, description = "The approval's id")), request_body(content = Option<VoteRequest>),
    responses((status = 200, description = "OK", body = ApprovalInfo)))]
async fn deny(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<VoteRequest>,
) -> Result<Json<ApprovalInfo>, ApiError> {
    Ok(Json(convert::approval(&s.hsm().deny(&ctx, approval_id(&id)?, body.comment).await?)))
}

// ----- Audit ---------------------------------------------------------------------------------

/// Audit records, oldest first, with filters and a cursor.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "OK", body = AuditPage)))]
async fn audit_records(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    uri: axum::http::Uri,
) -> Result<Json<AuditPage>, ApiError> {
    let q: AuditQuery = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let q = convert::audit_query(q)?;
    let page = off_runtime(s.hsm(), async move |hsm| hsm.audit_records(&ctx, q).await).await?;
    Ok(Json(convert::audit_page(page)))
}

/// Verify the server's audit log: chain, HMACs and checkpoint signatures.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "OK", body = AuditVerification)))]
async fn audit_verify(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
) -> Result<Json<AuditVerification>, ApiError> {
    let report = off_runtime(s.hsm(), async move |hsm| hsm.verify_audit(&ctx).await).await?;
    Ok(Json(convert::audit_verification(report)))
}

/// The latest signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "OK", body = CheckpointResponse)))]
async fn audit_checkpoint(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
) -> Result<Json<CheckpointResponse>, ApiError> {
    Ok(checkpoint_response(&s, s.hsm().latest_checkpoint(&ctx).await?))
}

/// Write a signed checkpoint now.
#[utoipa::path(post, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, description = "OK", body = CheckpointResponse)))]
async fn audit_checkpoint_now(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
) -> Result<Json<CheckpointResponse>, ApiError> {
    Ok(checkpoint_response(&s, s.hsm().checkpoint_audit(&ctx).await?))
}

fn checkpoint_response(s: &AppState, checkpoint: Option<Checkpoint>) -> Json<CheckpointResponse> {
    Json(CheckpointResponse {
        checkpoint: checkpoint.map(convert::checkpoint),
        public_key_pem: s.hsm().audit_public_key_pem().to_owned(),
    })
}

/// The whole audit log as NDJSON, as `ferrohsm audit verify` checks it.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    responses((status = 200, description = "OK", content_type = "application/x-ndjson", body = String)))]
async fn audit_export(State(s): State<AppState>, Ctx(ctx): Ctx) -> Result<Response, ApiError> {
    export_response(&s, ctx).await
}

/// The audit export as a streamed NDJSON response (REST and the dashboard).
pub(crate) async fn export_response(
    s: &AppState,
    ctx: RequestContext,
) -> Result<Response, ApiError> {
    // The export runs on the blocking pool and writes 64 KiB chunks into a small bounded
    // queue that the response body drains: memory stays bounded whatever the log's size, and
    // a slow client slows the export down instead of buffering it.
    let (chunks, mut body) = tokio::sync::mpsc::channel::<Chunk>(4);
    let hsm = s.hsm().clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out =
            ChunkWriter { chunks: chunks.clone(), buffer: Vec::with_capacity(EXPORT_CHUNK) };
        let result = handle.block_on(hsm.export_audit(&ctx, &mut out));
        let last = match result {
            Ok(_) => out.flush_chunk().map(|()| Chunk::Done),
            Err(e) => Ok(Chunk::Failed(ApiError::from(e))),
        };
        if let Ok(last) = last {
            let _ = chunks.blocking_send(last);
        }
    });
    // The first message decides the status: an error before any byte is an error response.
    let first = body.recv().await.unwrap_or(Chunk::Done);
    let first = match first {
        Chunk::Failed(e) => return Err(e),
        Chunk::Data(bytes) => Some(bytes),
        Chunk::Done => None,
    };
    let stream = ExportStream { first, body, done: false };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream))
        .into_response())
}

/// The size of one streamed export chunk.
const EXPORT_CHUNK: usize = 64 * 1024;

/// What the export thread sends to the response body.
enum Chunk {
    Data(axum::body::Bytes),
    Failed(ApiError),
    Done,
}

/// Writes the export into the bounded queue, one chunk at a time. It runs on a blocking-pool
/// thread, outside async code, so it may block on a full queue.
struct ChunkWriter {
    chunks: tokio::sync::mpsc::Sender<Chunk>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(EXPORT_CHUNK));
        // `blocking_send` would refuse inside `block_on`; a blocking-pool thread may park.
        let chunk = Chunk::Data(axum::body::Bytes::from(data));
        let mut pending = Some(chunk);
        while let Some(chunk) = pending.take() {
            match self.chunks.try_send(chunk) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(chunk)) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    pending = Some(chunk);
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(std::io::Error::other("the client went away"));
                }
            }
        }
        Ok(())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= EXPORT_CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The response body of an export: the first chunk, then the rest as they come.
struct ExportStream {
    first: Option<axum::body::Bytes>,
    body: tokio::sync::mpsc::Receiver<Chunk>,
    done: bool,
}

impl futures_core::Stream for ExportStream {
    type Item = std::io::Result<axum::body::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(first)));
        }
        if self.done {
            return std::task::Poll::Ready(None);
        }
        match self.body.poll_recv(cx) {
            std::task::Poll::Ready(Some(Chunk::Data(bytes))) => {
                std::task::Poll::Ready(Some(Ok(bytes)))
            }
            std::task::Poll::Ready(Some(Chunk::Failed(e))) => {
                // Mid-stream: the body ends with an error (the client sees a cut export,
                // which `ferrohsm audit verify` reports as a torn last line).
                self.done = true;
                std::task::Poll::Ready(Some(Err(std::io::Error::other(format!("{e:?}")))))
            }
            std::task::Poll::Ready(Some(Chunk::Done) | None) => {
                self.done = true;
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Runs an audit read on the blocking pool: reading, parsing and verifying the log is disk
/// and CPU work that must not hold an async worker, where health checks and every other
/// request run.
pub(crate) async fn off_runtime<T: Send + 'static>(
    hsm: &Hsm,
    work: impl AsyncFnOnce(Hsm) -> ferrohsm_core::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let hsm = hsm.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work(hsm)))
        .await
        .map_err(|e| ApiError::internal(format!("audit read task: {e}")))?
        .map_err(ApiError::from)
}

// ----- Tokens --------------------------------------------------------------------------------

/// Issue a token signed by the server's token key (admin only).
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, description = "OK", body = TokenResponse)))]
async fn issue_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let max_ttl = s.hsm().max_token_lifetime().unsigned_abs();
    // The new token's mint chain: the caller's own chain, then the caller.
    if body.roles.is_empty() {
        return Err(ApiError::invalid("a token needs at least one role"));
    }
    let mut minted_by = ctx.minted_by.clone();
    minted_by.push(ctx.principal());
    let spec = TokenSpec {
        sub: body.sub,
        roles: body
            .roles
            .into_iter()
            .map(|r| convert::role(r).map(|r| r.as_str().to_owned()))
            .collect::<Result<_, _>>()?,
        ttl: Duration::from_secs(body.ttl_seconds.unwrap_or(3600)),
        issuer: s.inner.issuer.clone(),
        audience: s.auth().audience().to_owned(),
        cert_sha256: body.cert_sha256,
        minted_by,
        max_ttl,
    };
    let key = s.hsm().token_key();
    let unsigned = crate::auth::unsigned_token(key, &spec).map_err(ApiError::invalid)?;
    let grant = TokenGrant {
        subject: spec.sub.clone(),
        roles: spec.roles.clone(),
        ttl: time::Duration::try_from(spec.ttl).unwrap_or(time::Duration::MAX),
        cert_sha256: spec.cert_sha256.clone(),
    };
    let signature = s.hsm().issue_token(&ctx, &grant, unsigned.signing_input.as_bytes()).await?;
    Ok(Json(TokenResponse {
        token: crate::auth::finish_token(&unsigned, &signature),
        expires_at: unsigned.expires_at,
        kid: key.kid().to_owned(),
        jti: unsigned.jti,
        sid: unsigned.sid,
    }))
}

/// Revoke tokens by token id (`jti`) or session (`sid`), effective at once (admin).
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth", request_body = RevokeTokenRequest,
    responses((status = 200, description = "Revoked", body = TokenRevocationInfo)))]
async fn revoke_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    ApiJson(body): ApiJson<RevokeTokenRequest>,
) -> Result<Json<TokenRevocationInfo>, ApiError> {
    let (matches, value) = match (body.jti, body.sid) {
        (Some(jti), None) => (TokenMatch::Jti, jti),
        (None, Some(sid)) => (TokenMatch::Sid, sid),
        _ => return Err(ApiError::invalid("name exactly one of jti and sid")),
    };
    let revoked = s.hsm().revoke_token(&ctx, matches, &value, body.reason).await?;
    Ok(Json(convert::token_revocation(&revoked)))
}

/// The public key the server signs tokens with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", security(()),
    responses((status = 200, description = "OK", body = JwkSet)))]
async fn jwks(State(s): State<AppState>) -> Json<JwkSet> {
    Json(JwkSet { keys: vec![convert::jwk(s.hsm().token_key().jwk())] })
}

// ----- Operations ----------------------------------------------------------------------------

/// Health of the store, audit sink, seal and policy (200 when all are ok, else 503).
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "OK", body = Health), (status = 503, description = "Unavailable", body = Health)))]
async fn healthz(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = health_report(&s).await;
    let status =
        if health.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

/// Health of every component: the core's, the token keyset's and the scheduled jobs'.
pub(crate) async fn health_report(s: &AppState) -> Health {
    let mut health = s.hsm().health().await;
    health.keyset = s.auth().health();
    let jobs = s.inner.jobs.health();
    let (tls_status, tls_detail, serving) = s.inner.tls.health();
    let failing =
        health.keyset.as_ref().is_some_and(|k| k.status != "ok") || jobs.status != "ok" || !serving;
    health.jobs = Some(jobs);
    if failing {
        health.status = "degraded".into();
    }
    let mut health = convert::health(health);
    health.tls =
        Some(ferrohsm_api::ComponentHealth { status: tls_status.into(), detail: tls_detail });
    health
}

/// Ready to serve (503 while draining for shutdown or when unhealthy).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "OK", body = String), (status = 503, description = "Unavailable", body = String)))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.inner.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if s.hsm().ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the audit log or the store is failing")
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "OK", content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<AppState>) -> Response {
    let text = s.inner.metrics.render(s.hsm()).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OK", content_type = "application/json", body = Object)))]
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi_document().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}
