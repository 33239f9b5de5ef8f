//! The operator dashboard, served under `/ui` on the API's own TLS listener: server-rendered
//! HTML (maud templates, checked at compile time), one stylesheet and one small script embedded
//! in the binary; every page reads and acts without JavaScript.
//!
//! Sign-in takes a bearer token (pasted; a certificate-bound token also needs the browser to
//! present its certificate on the connection) and keeps it in a server-side session named by an
//! `HttpOnly; Secure; SameSite=Strict` cookie that ends no later than the token. Every request
//! re-verifies that token exactly as the REST middleware does (signature, expiry, certificate
//! binding, revocation), and every action calls the same `Hsm` method as its REST route, so
//! authorization, dual control, rate limits and audit are the same as for REST.
//!
//! It must never render a value without escaping it (maud escapes everything not wrapped in
//! `PreEscaped`, which only the static shell uses), never change state on a request without the
//! session's CSRF token and a same-origin `Origin`, never put a token in a page, a URL or a log,
//! and never answer without the security headers of [`guard`].

mod approvals;
mod audit;
mod keys;
mod layout;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferrohsm_core::{Operation, RequestContext, Role};
use maud::{Markup, html};

use crate::app::{AppState, ConnInfo, RequestId, TokenRefusal};
use crate::error::ApiError;
pub(crate) use session::Sessions;
use session::{Session, SessionError, same_secret};

/// The session cookie (the `__Host-` prefix pins it to this host, `/` and `Secure`).
const SESSION_COOKIE: &str = "__Host-ferrohsm-session";

/// The sign-in form's double-submit cookie (login CSRF), before there is a session.
const SIGN_IN_COOKIE: &str = "__Host-ferrohsm-sign-in";

/// The Content-Security-Policy of every `/ui` answer.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'; object-src 'none'; report-uri /ui/csp-report";

/// The largest form or report body the dashboard reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the dashboard keeps beside the HSM.
#[derive(Debug, Default)]
pub(crate) struct UiState {
    pub(crate) sessions: Sessions,
    csp_reports: AtomicU64,
}

impl UiState {
    /// How many Content-Security-Policy violation reports browsers have sent.
    pub(crate) fn csp_reports(&self) -> u64 {
        self.csp_reports.load(Ordering::Relaxed)
    }
}

/// The dashboard's routes, with their own body limit and security headers.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/static/app.css", get(stylesheet))
        .route("/ui/static/app.js", get(script))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/csp-report", post(csp_report))
        .route("/ui/keys", get(keys::list))
        .route("/ui/keys/{key}", get(keys::detail))
        .route("/ui/keys/{key}/public.pem", get(keys::public_pem))
        .route("/ui/keys/{key}/{action}", post(keys::act))
        .route("/ui/approvals", get(approvals::list))
        .route("/ui/approvals/{id}", get(approvals::detail))
        .route("/ui/approvals/{id}/{vote}", post(approvals::act))
        .route("/ui/audit", get(audit::records))
        .route("/ui/audit/verify", get(audit::verify))
        .route("/ui/audit/export", get(audit::export))
        .route("/ui/audit/checkpoint", post(audit::checkpoint))
        .route("/ui/health", get(audit::health))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(guard))
}

// ----- Security headers and same-origin checks ----------------------------------------------

/// Refuses a state-changing request from another site, renders a failed request's error page
/// (now that its request id is known), and adds the security headers to every answer.
async fn guard(req: Request, next: Next) -> Response {
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let id = request_id(req.extensions());
    let response_host = request_host(&req).map(str::to_owned);
    let mut response = if reading || req.uri().path() == "/ui/csp-report" || same_origin(&req) {
        next.run(req).await
    } else {
        tracing::info!(path = req.uri().path(), "a cross-site dashboard request was refused");
        UiError::page(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This form was sent from another site, so it was refused.",
        )
        .into_response()
    };
    if let Some(failure) = response.extensions_mut().remove::<UiError>() {
        if let Some(detail) = &failure.detail {
            tracing::error!(code = %failure.code, detail = %detail, request_id = %id, "dashboard request failed");
        }
        let page = match failure.approval {
            Some(approval) => approval_page(approval),
            None => error_page(failure.status, &failure.code, &failure.message, &id),
        };
        let (parts, _) = response.into_parts();
        response = Response::from_parts(parts, page.into_body());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    }
    secure(&mut response, long_hsts(response_host.as_deref()));
    response
}

/// Whether HSTS should be remembered for long: not for `localhost` or an address literal,
/// where a browser would otherwise force HTTPS on every other local program for years.
fn long_hsts(host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    !(name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok())
}

/// Adds the security headers of every dashboard answer. `public_host` says whether the
/// request named a real host name (two years of HSTS) or a local one (an hour).
pub(crate) fn secure(response: &mut Response, public_host: bool) {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", CONTENT_SECURITY_POLICY);
    let hsts = if public_host { "max-age=63072000" } else { "max-age=3600" };
    set(headers, "strict-transport-security", hsts);
    set(headers, "x-content-type-options", "nosniff");
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with
    // every form post, which the same-origin check must refuse.
    set(headers, "referrer-policy", "same-origin");
    set(headers, "x-frame-options", "DENY");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    set(headers, "permissions-policy", "camera=(), microphone=(), geolocation=(), payment=()");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
}

/// The answer to a dashboard request that ran out of time (the server's request timeout).
pub(crate) fn timed_out(request_id: &str, public_host: bool) -> Response {
    let mut response = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The request timed out. Try again.",
        request_id,
    );
    secure(&mut response, public_host);
    response
}

/// Whether a request's host is a real name (see [`long_hsts`]).
pub(crate) fn public_host(req: &Request) -> bool {
    long_hsts(request_host(req))
}

fn request_host(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Whether a request comes from this origin: `Sec-Fetch-Site` (when sent) says same-origin,
/// and `Origin` (when sent) is this server. A client that sends neither is not a browser
/// acting for another site; it still needs the session's CSRF token.
fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site != "same-origin" && site != "none") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    match (origin.to_str().ok(), request_host(req)) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://") == Some(host),
        _ => false,
    }
}

// ----- Sessions ------------------------------------------------------------------------------

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn request_id(extensions: &axum::http::Extensions) -> String {
    extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
}

/// The value of cookie `name`, if the request sent exactly that cookie.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a dashboard cookie.
fn set_cookie(name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .ok()
}

/// A signed-in caller: the session and the context the core sees (built from the session's
/// token, verified on this request).
pub(crate) struct Signed {
    pub(crate) ctx: RequestContext,
    session: Session,
}

impl Signed {
    /// The CSRF token forms of this session carry.
    pub(crate) fn csrf(&self) -> &str {
        &self.session.csrf
    }

    /// When the session ends (Unix seconds).
    pub(crate) fn expires_at(&self) -> u64 {
        self.session.expires_at
    }

    /// Whether one of the caller's roles allows `operation` at all (the core decides for the
    /// key at hand; this only hides buttons that would certainly be refused).
    pub(crate) fn may(&self, operation: Operation) -> bool {
        roles_allow(&self.ctx.roles, operation)
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let ui = state.ui();
        let value = cookie(&parts.headers, SESSION_COOKIE);
        let Some((value, session)) = value.and_then(|v| ui.sessions.get(v, now()).map(|s| (v, s)))
        else {
            return Err(signed_out(&parts.method));
        };
        let conn = parts.extensions.get::<ConnInfo>().cloned().unwrap_or_default();
        let id = request_id(&parts.extensions);
        match crate::app::verify_bearer(state, Some(&session.token), &conn, id).await {
            Ok((ctx, _)) => Ok(Signed { ctx, session }),
            Err(refusal) => {
                // The token was revoked, expired or lost its certificate: the session ends.
                ui.sessions.remove(value);
                Err(match refusal {
                    TokenRefusal::Refused(_) => signed_out(&parts.method),
                    TokenRefusal::Failed(e) => UiError::from(e).into_response(),
                })
            }
        }
    }
}

/// Whether one of `roles` allows `operation` at all.
pub(crate) fn roles_allow(roles: &[String], operation: Operation) -> bool {
    roles.iter().filter_map(|r| r.parse::<Role>().ok()).any(|r| r.allows(operation))
}

/// The answer to a request without a live session: reads go to the sign-in page, anything
/// else is refused.
fn signed_out(method: &Method) -> Response {
    let mut response = if matches!(*method, Method::GET | Method::HEAD) {
        redirect("/ui/sign-in")
    } else {
        UiError::page(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "You are not signed in (or your session ended). Sign in again.",
        )
        .into_response()
    };
    if let Some(v) = set_cookie(SESSION_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A submitted form of a signed-in caller whose CSRF token matched.
pub(crate) struct Posted {
    pub(crate) who: Signed,
    pub(crate) form: FormData,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let who = Signed::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let form = FormData::read(&headers, Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !form.get("_csrf").is_some_and(|token| same_secret(token, who.csrf())) {
            tracing::info!(actor = ?who.ctx.actor, "a dashboard form without its CSRF token was refused");
            return Err(UiError::page(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This form's security token is missing or stale. Reload the page and try again.",
            )
            .into_response());
        }
        Ok(Posted { who, form })
    }
}

/// An `application/x-www-form-urlencoded` body.
pub(crate) struct FormData(Vec<(String, String)>);

impl FormData {
    async fn read(headers: &HeaderMap, req: Request, state: &AppState) -> Result<Self, UiError> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim() == "application/x-www-form-urlencoded");
        if !form_type {
            return Err(UiError::invalid("expected a form (application/x-www-form-urlencoded)"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                UiError::from(ApiError::too_large())
            } else {
                UiError::invalid("the form could not be read")
            }
        })?;
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(FormData)
            .map_err(|_| UiError::invalid("the form is not well formed"))
    }

    /// The first value of field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The field, trimmed, `None` when empty or absent.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

// ----- Errors and responses ------------------------------------------------------------------

/// A failed dashboard request: the status and stable code REST would give and a message safe
/// to show. Its response carries it as an extension; [`guard`] renders the page with the
/// request id.
#[derive(Debug, Clone)]
pub(crate) struct UiError {
    status: StatusCode,
    code: String,
    message: String,
    /// For the server log only.
    detail: Option<String>,
    retry_after: Option<u64>,
    /// The approval a dual-controlled read created: the page links to it.
    approval: Option<uuid::Uuid>,
}

impl UiError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        UiError::from(ApiError::invalid(message))
    }

    pub(crate) fn page(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        UiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            retry_after: None,
            approval: None,
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError {
            status: e.status(),
            code: e.code().as_str().to_owned(),
            message: e.message().to_owned(),
            detail: e.detail().map(str::to_owned),
            retry_after: e.retry_after(),
            approval: e.approval_id(),
        }
    }
}

impl From<ferrohsm_core::Error> for UiError {
    fn from(e: ferrohsm_core::Error) -> Self {
        UiError::from(ApiError::from(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// The answer to a read that policy put under dual control: where the approval is.
fn approval_page(approval: uuid::Uuid) -> Response {
    let href = format!("/ui/approvals/{approval}");
    let body = layout::bare(
        "Approval required",
        html! {
            p.notice role="status" {
                "Policy requires approval before this runs. An approval request was created; "
                "share it with the approvers, and once they approve, repeat this with the "
                "approval's id."
            }
            p { a href=(href) { "Open the approval request" } }
        },
    );
    html_response(StatusCode::ACCEPTED, body)
}

/// An error page.
fn error_page(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let body = layout::bare(
        "Something went wrong",
        html! {
            p.error role="alert" { (message) }
            dl.facts {
                dt { "Status" } dd { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                dt { "Code" } dd { code { (code) } }
                @if !request_id.is_empty() { dt { "Request id" } dd { code { (request_id) } } }
            }
            p { a href="/ui/keys" { "Back to the keys" } }
        },
    );
    html_response(status, body)
}

/// An HTML page.
pub(crate) fn html_response(status: StatusCode, page: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.into_string())
        .into_response()
}

/// A `303 See Other` to a dashboard path.
pub(crate) fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn home(who: Result<Signed, Response>) -> Response {
    match who {
        Ok(who) => redirect(layout::home(&who.ctx.roles)),
        Err(_) => redirect("/ui/sign-in"),
    }
}

async fn not_found() -> UiError {
    UiError::page(StatusCode::NOT_FOUND, "not_found", "There is no such page.")
}

// ----- Static files --------------------------------------------------------------------------

const STYLESHEET: &str = include_str!("static/app.css");
const SCRIPT: &str = include_str!("static/app.js");

async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", SCRIPT)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body)
        .into_response()
}

// ----- Sign-in, sign-out, CSP reports ------------------------------------------------------

async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

/// The sign-in form with a fresh double-submit token in a cookie and a hidden field.
fn sign_in_form(status: StatusCode, problem: Option<&str>) -> Response {
    let Ok(token) = session::random_value() else {
        return no_randomness().into_response();
    };
    let mut response = html_response(status, layout::sign_in(&token, problem));
    if let Some(v) = set_cookie(SIGN_IN_COOKIE, &token, 3600) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn no_randomness() -> UiError {
    UiError::page(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The server could not make a random value.",
    )
}

async fn sign_in(State(s): State<AppState>, req: Request) -> Response {
    let id = request_id(req.extensions());
    let conn = req.extensions().get::<ConnInfo>().cloned().unwrap_or_default();
    let headers = req.headers().clone();
    let form = match FormData::read(&headers, req, &s).await {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let expected = cookie(&headers, SIGN_IN_COOKIE);
    let sent = form.get("_csrf");
    if !matches!((expected, sent), (Some(a), Some(b)) if same_secret(a, b)) {
        return sign_in_form(
            StatusCode::FORBIDDEN,
            Some("The sign-in form was stale or came from another site. Try again."),
        );
    }
    let Some(token) = form.text("token") else {
        return sign_in_form(StatusCode::BAD_REQUEST, Some("Paste a token to sign in."));
    };
    let (ctx, exp) = match crate::app::verify_bearer(&s, Some(&token), &conn, id).await {
        Ok(verified) => verified,
        Err(TokenRefusal::Refused(reason)) => {
            let why = match reason {
                crate::auth::AuthFailure::CertificateMismatch => {
                    "This token is bound to a client certificate this browser did not present."
                }
                _ => "That token was not accepted (it may be malformed, expired or revoked).",
            };
            return sign_in_form(StatusCode::UNAUTHORIZED, Some(why));
        }
        Err(TokenRefusal::Failed(e)) => return UiError::from(e).into_response(),
    };
    // Signing in again ends the session this browser had (a new id every time).
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        s.ui().sessions.remove(old);
    }
    let (value, session) = match s.ui().sessions.create(&token, &ctx.actor, exp, now()) {
        Ok(created) => created,
        Err(SessionError::Full) => {
            return UiError::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Too many dashboard sessions are open; try again later.",
            )
            .into_response();
        }
        Err(SessionError::Random) => return no_randomness().into_response(),
    };
    tracing::info!(actor = ?ctx.actor, session = ?ctx.session, "dashboard sign-in");
    let mut response = redirect(layout::home(&ctx.roles));
    let max_age = session.expires_at.saturating_sub(now());
    for cookie in [set_cookie(SESSION_COOKIE, &value, max_age), set_cookie(SIGN_IN_COOKIE, "", 0)]
        .into_iter()
        .flatten()
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn sign_out(State(s): State<AppState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let posted = match Posted::from_request(req, &s).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        s.ui().sessions.remove(value);
    }
    tracing::info!(actor = ?posted.who.ctx.actor, "dashboard sign-out");
    let mut response = redirect("/ui/sign-in");
    if let Some(v) = set_cookie(SESSION_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A browser's Content-Security-Policy violation report: counted (and exported as
/// `ferrohsm_ui_csp_reports_total`), logged at debug level only, so a flood costs a counter.
async fn csp_report(State(s): State<AppState>, body: Bytes) -> StatusCode {
    s.ui().csp_reports.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("ferrohsm_ui_csp_reports_total").increment(1);
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    tracing::debug!(report = ?text, "content security policy violation");
    StatusCode::NO_CONTENT
}

/// The pairs of a page's query string.
pub(crate) fn query_pairs(uri: &axum::http::Uri) -> Result<Vec<(String, String)>, UiError> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|_| UiError::invalid("the filters are not well formed"))
}

/// The confirmation a page's `notice` parameter names, if it names one of the fixed list.
pub(crate) fn notice_of(uri: &axum::http::Uri) -> Option<&'static str> {
    let pairs = query_pairs(uri).unwrap_or_default();
    layout::notice(pairs.iter().find(|(n, _)| n == "notice").map(|(_, v)| v.as_str()))
}

/// The address of a filtered list page: `base`, the filters that are set, and the cursor.
pub(crate) fn list_link(base: &str, filters: &[(&str, &String)], cursor: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> =
        filters.iter().filter(|(_, v)| !v.is_empty()).map(|(n, v)| (*n, v.as_str())).collect();
    if let Some(cursor) = cursor {
        pairs.push(("cursor", cursor));
    }
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() { base.to_owned() } else { format!("{base}?{query}") }
}

/// Rendering a time for a page: RFC 3339 for the `datetime` attribute and a readable UTC form.
pub(crate) fn when(t: time::OffsetDateTime) -> Markup {
    let t = t.to_offset(time::UtcOffset::UTC);
    let machine = t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    let human = t.format(&format).unwrap_or_else(|_| machine.clone());
    html! { time datetime=(machine) { (human) } }
}

/// The same for Unix seconds.
pub(crate) fn when_unix(seconds: u64) -> Markup {
    match time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX)) {
        Ok(t) => when(t),
        Err(_) => html! { (seconds) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_is_long_only_for_real_host_names() {
        for public in [Some("hsm.example.com"), Some("hsm.example.com:8443"), None] {
            assert!(long_hsts(public), "{public:?}");
        }
        for local in [
            "localhost",
            "localhost:8443",
            "app.localhost",
            "127.0.0.1:8443",
            "[::1]:8443",
            "10.0.0.7",
        ] {
            assert!(!long_hsts(Some(local)), "{local}");
        }
    }

    #[test]
    fn a_cookie_is_found_by_its_exact_name_only() {
        let mut headers = HeaderMap::new();
        headers
            .insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-ferrohsm-session-x=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Host-ferrohsm-session=3"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("3"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
