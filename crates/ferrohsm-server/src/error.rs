//! `ApiError`: the one place a failure becomes an HTTP status and the SPEC §6 error body.
//!
//! Handlers return `ApiError`; its response carries the error in an extension with an empty
//! body, and the request-id middleware renders the body once it knows the request id (so every
//! error, including extractor rejections, names its request).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrohsm_api::{ApprovalInfo, ErrorBody, ErrorCode, ErrorDetail};

/// A failed request: a status, a stable code and a message safe to show the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Detail for the server log only (internal errors).
    detail: Option<String>,
    retry_after: Option<u64>,
    approval: Option<Box<ApprovalInfo>>,
}

/// What the request-id middleware needs to render an error body.
#[derive(Debug, Clone)]
pub(crate) struct PendingError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// A 401 `unauthenticated`. The message says only that authentication failed; the reason
    /// goes to the log and the audit record.
    pub fn unauthenticated() -> Self {
        ApiError::new(ErrorCode::Unauthenticated, "authentication failed")
    }

    /// A 404 for a path that names nothing.
    pub fn no_route() -> Self {
        ApiError::new(ErrorCode::NotFound, "no such route")
    }

    /// A 413 `payload_too_large` for a request body over the limit.
    pub fn too_large() -> Self {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is larger than the limit")
    }

    /// A 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// A 500 `internal`; `detail` is logged with the request id, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(ErrorCode::Internal, "internal error")
        }
    }

    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: status(code),
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
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message safe to show the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Detail for the server log only (internal errors).
    pub(crate) fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The approval a dual-controlled request created (a 202).
    pub(crate) fn approval_id(&self) -> Option<uuid::Uuid> {
        self.approval.as_ref().map(|a| a.id)
    }

    /// Seconds to wait before retrying (rate limits).
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl From<ferrohsm_core::Error> for ApiError {
    fn from(e: ferrohsm_core::Error) -> Self {
        use ferrohsm_core::Error as E;
        // A core code this contract does not know is an internal error (logged, not sent).
        let code = e.code().parse::<ErrorCode>().unwrap_or(ErrorCode::Internal);
        if matches!(code, ErrorCode::Integrity | ErrorCode::Internal | ErrorCode::Unknown) {
            return ApiError {
                code: if code == ErrorCode::Integrity { code } else { ErrorCode::Internal },
                ..ApiError::internal(format!("{}: {e}", e.code()))
            };
        }
        let mut error = ApiError::new(code, e.to_string());
        match &e {
            E::RateLimited { retry_after } => {
                error.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
            }
            E::ApprovalRequired(approval) => {
                error.approval = Some(Box::new(crate::convert::approval(approval)));
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

/// The HTTP status of each code: exhaustive, so a code added to the contract does not compile
/// until it has one.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidUsage
        | ErrorCode::Unsupported
        | ErrorCode::InvalidCiphertext => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::InvalidState => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ApprovalRequired => StatusCode::ACCEPTED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Integrity | ErrorCode::Internal | ErrorCode::Unknown => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Renders an error body with its request id.
pub(crate) fn render(pending: &PendingError, request_id: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: pending.code,
            message: pending.message.clone(),
            request_id: request_id.to_owned(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §6's table of codes and statuses.
    #[test]
    fn every_code_has_the_status_the_spec_gives() {
        let expected = |code: ErrorCode| match code.as_str() {
            "invalid_request" | "invalid_usage" | "unsupported" | "invalid_ciphertext" => 400,
            "unauthenticated" => 401,
            "forbidden" => 403,
            "not_found" => 404,
            "conflict" | "invalid_state" => 409,
            "payload_too_large" => 413,
            "rate_limited" => 429,
            "approval_required" => 202,
            "unavailable" => 503,
            _ => 500,
        };
        for code in ErrorCode::ALL {
            assert_eq!(status(code).as_u16(), expected(code), "{code}");
        }
    }

    #[test]
    fn core_errors_become_their_contract_codes() {
        use ferrohsm_core::Error as E;
        let e = ApiError::from(E::NotFound("key k".into()));
        assert_eq!((e.code(), e.status()), (ErrorCode::NotFound, StatusCode::NOT_FOUND));
        let e = ApiError::from(E::RateLimited { retry_after: std::time::Duration::from_millis(1) });
        assert_eq!(e.code(), ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(1), "Retry-After rounds up to a whole second");
        // Stored data that fails its check is 500 `integrity`, with the detail kept for the log.
        let e = ApiError::from(E::MasterKeyMismatch);
        assert_eq!(
            (e.code(), e.status()),
            (ErrorCode::Integrity, StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert!(e.detail.is_some());
    }
}
