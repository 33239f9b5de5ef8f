//! `ApiError`: the one place a failure becomes an HTTP status and the SPEC §6 error body.
//!
//! Handlers return `ApiError`; its response carries the error in an extension with an empty
//! body, and the request-id middleware renders the body once it knows the request id (so every
//! error, including extractor rejections, names its request).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrohsm_core::wire::{ApprovalInfo, ErrorDetail};

/// A failed request: a status, a stable code and a message safe to show the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Detail for the server log only (internal errors).
    detail: Option<String>,
    retry_after: Option<u64>,
    approval: Option<Box<ApprovalInfo>>,
}

/// What the request-id middleware needs to render an error body.
#[derive(Debug, Clone)]
pub(crate) struct PendingError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A 401 `unauthenticated`. The message says only that authentication failed; the reason
    /// goes to the log and the audit record.
    pub fn unauthenticated() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "authentication failed")
    }

    /// A 404 for a path that names nothing.
    pub fn no_route() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// A 413 `payload_too_large` for a request body over the limit.
    pub fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the limit",
        )
    }

    /// A 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A 500 `internal`; `detail` is logged with the request id, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
        }
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            approval: None,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ferrohsm_core::Error> for ApiError {
    fn from(e: ferrohsm_core::Error) -> Self {
        use ferrohsm_core::Error as E;
        let code = e.code();
        let status = match code {
            "invalid_request" | "invalid_usage" | "unsupported" | "invalid_ciphertext" => {
                StatusCode::BAD_REQUEST
            }
            "forbidden" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "conflict" | "invalid_state" => StatusCode::CONFLICT,
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
            "approval_required" => StatusCode::ACCEPTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            // `integrity`, `internal` and any code added later without a status here.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return ApiError {
                code: if code == "integrity" { "integrity" } else { "internal" },
                ..ApiError::internal(format!("{code}: {e}"))
            };
        }
        let mut error = ApiError::new(status, code, e.to_string());
        match &e {
            E::RateLimited { retry_after } => {
                error.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
            }
            E::ApprovalRequired(approval) => {
                error.approval = Some(Box::new(ApprovalInfo::from(&**approval)));
            }
            _ => {}
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(approval) = self.approval {
            // Dual control: 202 with the approval, where to follow it, and its id.
            let location = format!("/v1/approvals/{}", approval.id);
            let id = approval.id.to_string();
            let mut response = (StatusCode::ACCEPTED, axum::Json(*approval)).into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert("x-approval-id", v);
            }
            return response;
        }
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(PendingError {
            code: self.code,
            message: self.message,
            detail: self.detail,
        });
        response
    }
}

/// Renders an error body with its request id.
pub(crate) fn render(pending: &PendingError, request_id: &str) -> Vec<u8> {
    let body = ferrohsm_core::wire::ErrorBody {
        error: ErrorDetail {
            code: pending.code.to_owned(),
            message: pending.message.clone(),
            request_id: request_id.to_owned(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Maps a JSON body rejection (bad JSON, unknown field, wrong type, too large, wrong content
/// type) to an `ApiError`.
pub(crate) fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large();
    }
    ApiError::invalid(rejection.body_text())
}
