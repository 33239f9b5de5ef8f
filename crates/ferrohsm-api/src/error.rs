//! The error body of every failed request, and its stable codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A failed request's stable machine code. The server maps each to its HTTP status with an
/// exhaustive `match`, so a code added here does not compile until it has a status there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range (400).
    InvalidRequest,
    /// The key does not allow this usage (400).
    InvalidUsage,
    /// The key's algorithm does not support this operation (400).
    Unsupported,
    /// The ciphertext or wrapped key is malformed or fails authentication (400).
    InvalidCiphertext,
    /// No valid credentials (401).
    Unauthenticated,
    /// The caller's roles or the policy refuse the operation (403).
    Forbidden,
    /// The key, version, approval or route does not exist (404).
    NotFound,
    /// A name is taken, or a concurrent change won (409).
    Conflict,
    /// The key or approval is in a state that refuses the operation (409).
    InvalidState,
    /// The body or a value in it is larger than the limit (413).
    PayloadTooLarge,
    /// Too many requests; retry after the `Retry-After` header's seconds (429).
    RateLimited,
    /// Dual control: the operation waits for approvals (202, with the approval as the body).
    ApprovalRequired,
    /// A dependency (the audit log, the store) is unavailable; retrying later may work (503).
    Unavailable,
    /// Stored data failed its integrity check (500).
    Integrity,
    /// An internal error; the server log has the detail under the request id (500).
    Internal,
    /// A code this version of the contract does not know (a newer server's).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server sends (all but [`ErrorCode::Unknown`]).
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidUsage,
        ErrorCode::Unsupported,
        ErrorCode::InvalidCiphertext,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::InvalidState,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::ApprovalRequired,
        ErrorCode::Unavailable,
        ErrorCode::Integrity,
        ErrorCode::Internal,
    ];

    /// The code as it travels (`not_found`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidUsage => "invalid_usage",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::InvalidCiphertext => "invalid_ciphertext",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ApprovalRequired => "approval_required",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Integrity => "integrity",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Whether repeating the same request later may succeed (rate limited, unavailable).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = Error;

    /// A code a server sends; `unknown` and anything else is refused (deserialising, by
    /// contrast, reads any unknown code as [`ErrorCode::Unknown`]).
    fn from_str(s: &str) -> Result<Self, Error> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::UnknownCode(s.to_owned()))
    }
}

/// The body of every error answer (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code, message and request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable machine code.
    pub code: ErrorCode,
    /// A human-readable message, safe to show the caller.
    pub message: String,
    /// The request id, for correlating with logs and audit records.
    pub request_id: String,
}

/// What this crate's own conversions can fail at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that is no error code of this contract.
    #[error("unknown error code {0:?}")]
    UnknownCode(String),
    /// A string that is none of the known values of an enumeration.
    #[error("unknown {what} {value:?}")]
    UnknownValue {
        /// What was parsed (`algorithm`, `key state`, …).
        what: &'static str,
        /// The string.
        value: String,
    },
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownCode(_) => "unknown_code",
            Error::UnknownValue { .. } => "unknown_value",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn every_code_round_trips_as_its_string() -> TestResult {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code)?;
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json)?, code);
            assert_eq!(code.as_str().parse::<ErrorCode>()?, code);
        }
        Ok(())
    }

    #[test]
    fn a_newer_servers_code_and_fields_are_tolerated() -> TestResult {
        let body = r#"{"error":{"code":"quota_exceeded","message":"m","request_id":"r","hint":"h"},"trace":1}"#;
        let parsed: ErrorBody = serde_json::from_str(body)?;
        assert_eq!(parsed.error.code, ErrorCode::Unknown);
        assert_eq!(parsed.error.message, "m");
        // Parsing a string is stricter: it names codes a server may send.
        assert_eq!(
            "quota_exceeded".parse::<ErrorCode>(),
            Err(Error::UnknownCode("quota_exceeded".into()))
        );
        assert!("unknown".parse::<ErrorCode>().is_err());
        Ok(())
    }
}
