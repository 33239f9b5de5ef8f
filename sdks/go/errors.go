package ferrohsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrorCode is a failed request's stable machine code. A newer server may send codes this
// SDK does not list; they are kept as sent.
type ErrorCode string

// The codes of the REST contract.
const (
	CodeInvalidRequest    ErrorCode = "invalid_request"
	CodeInvalidUsage      ErrorCode = "invalid_usage"
	CodeUnsupported       ErrorCode = "unsupported"
	CodeInvalidCiphertext ErrorCode = "invalid_ciphertext"
	CodeUnauthenticated   ErrorCode = "unauthenticated"
	CodeForbidden         ErrorCode = "forbidden"
	CodeNotFound          ErrorCode = "not_found"
	CodeConflict          ErrorCode = "conflict"
	CodeInvalidState      ErrorCode = "invalid_state"
	CodePayloadTooLarge   ErrorCode = "payload_too_large"
	CodeRateLimited       ErrorCode = "rate_limited"
	CodeApprovalRequired  ErrorCode = "approval_required"
	CodeUnavailable       ErrorCode = "unavailable"
	CodeIntegrity         ErrorCode = "integrity"
	CodeInternal          ErrorCode = "internal"
)

// Sentinel errors for errors.Is. An *APIError matches the sentinel of its code; a code this
// SDK does not know matches by HTTP status where the status says enough (404, 401, 403, 429,
// 503).
var (
	ErrNotFound          = errors.New("ferrohsm: not found")
	ErrConflict          = errors.New("ferrohsm: conflict")
	ErrInvalidState      = errors.New("ferrohsm: invalid state")
	ErrInvalidRequest    = errors.New("ferrohsm: invalid request")
	ErrInvalidUsage      = errors.New("ferrohsm: invalid usage")
	ErrUnsupported       = errors.New("ferrohsm: unsupported")
	ErrInvalidCiphertext = errors.New("ferrohsm: invalid ciphertext")
	ErrUnauthenticated   = errors.New("ferrohsm: unauthenticated")
	ErrForbidden         = errors.New("ferrohsm: forbidden")
	ErrPayloadTooLarge   = errors.New("ferrohsm: payload too large")
	ErrRateLimited       = errors.New("ferrohsm: rate limited")
	ErrUnavailable       = errors.New("ferrohsm: unavailable")
	ErrIntegrity         = errors.New("ferrohsm: integrity check failed")
	ErrInternal          = errors.New("ferrohsm: internal server error")
	// ErrApprovalRequired is matched by *ApprovalRequiredError: the operation is under dual
	// control and waits for approvals (HTTP 202).
	ErrApprovalRequired = errors.New("ferrohsm: approval required")
	// ErrApprovalDenied and ErrApprovalExpired are matched by *ApprovalClosedError, returned
	// by the dual-control helper when the approval it waits for cannot be used any more.
	ErrApprovalDenied  = errors.New("ferrohsm: approval denied")
	ErrApprovalExpired = errors.New("ferrohsm: approval expired")
	// ErrNotModified is returned by ListKeysPage with WithIfNoneMatch when the page's ETag
	// still matches (HTTP 304).
	ErrNotModified = errors.New("ferrohsm: not modified")
)

var sentinelByCode = map[ErrorCode]error{
	CodeNotFound:          ErrNotFound,
	CodeConflict:          ErrConflict,
	CodeInvalidState:      ErrInvalidState,
	CodeInvalidRequest:    ErrInvalidRequest,
	CodeInvalidUsage:      ErrInvalidUsage,
	CodeUnsupported:       ErrUnsupported,
	CodeInvalidCiphertext: ErrInvalidCiphertext,
	CodeUnauthenticated:   ErrUnauthenticated,
	CodeForbidden:         ErrForbidden,
	CodePayloadTooLarge:   ErrPayloadTooLarge,
	CodeRateLimited:       ErrRateLimited,
	CodeApprovalRequired:  ErrApprovalRequired,
	CodeUnavailable:       ErrUnavailable,
	CodeIntegrity:         ErrIntegrity,
	CodeInternal:          ErrInternal,
}

var sentinelByStatus = map[int]error{
	http.StatusNotFound:           ErrNotFound,
	http.StatusUnauthorized:       ErrUnauthenticated,
	http.StatusForbidden:          ErrForbidden,
	http.StatusTooManyRequests:    ErrRateLimited,
	http.StatusServiceUnavailable: ErrUnavailable,
}

// APIError is a failed request: the server's error body {"error": {"code", "message",
// "request_id"}} and the HTTP status.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the stable machine code as sent (possibly one this SDK does not list), or empty
	// when the body was not a FerroHSM error body (a proxy's answer, say).
	Code ErrorCode
	// Message is safe to show the caller.
	Message string
	// RequestID correlates the failure with the server's logs and audit records.
	RequestID string
	// RetryAfter is the Retry-After header's wait, when the server sent one.
	RetryAfter time.Duration

	body []byte
}

func (e *APIError) Error() string {
	code := string(e.Code)
	if code == "" {
		code = "http error"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ferrohsm: %s (HTTP %d)", code, e.StatusCode)
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " [request %s]", e.RequestID)
	}
	return b.String()
}

// Is matches the sentinel of the error's code (ErrNotFound for not_found, …); a code this SDK
// does not know matches by status.
func (e *APIError) Is(target error) bool {
	if s, ok := sentinelByCode[e.Code]; ok {
		return s == target
	}
	return sentinelByStatus[e.StatusCode] == target
}

// Known reports whether the code is one this SDK knows.
func (e *APIError) Known() bool {
	_, ok := sentinelByCode[e.Code]
	return ok
}

// ApprovalRequiredError is returned when an operation is under dual control (HTTP 202): the
// server opened an approval, approvers must vote on it, and then the same request, repeated
// with WithApprovalID(ApprovalID), runs once. It matches ErrApprovalRequired, and unwraps to
// an *APIError with code approval_required and status 202.
type ApprovalRequiredError struct {
	// ApprovalID is the approval to repeat the request with (X-Approval-Id).
	ApprovalID string
	// Approval is the approval as the 202 body gave it: what will run, quorum, approver roles.
	Approval ApprovalInfo
	// Location is the approval's URL path (/v1/approvals/{id}).
	Location string
	// RequestID is the id of the request that opened the approval.
	RequestID string
}

func (e *ApprovalRequiredError) Error() string {
	return fmt.Sprintf("ferrohsm: approval required: approval %s (%s, policy %s) has %d of %d approvals",
		e.ApprovalID, e.Approval.Operation, e.Approval.Policy, e.Approval.Approvals, e.Approval.Quorum)
}

// Is matches ErrApprovalRequired.
func (e *ApprovalRequiredError) Is(target error) bool { return target == ErrApprovalRequired }

// Unwrap gives the *APIError view of the 202.
func (e *ApprovalRequiredError) Unwrap() error {
	return &APIError{
		StatusCode: http.StatusAccepted,
		Code:       CodeApprovalRequired,
		Message:    "approval " + e.ApprovalID + " required",
		RequestID:  e.RequestID,
	}
}

// ApprovalClosedError is returned by the dual-control helper when the approval it waits for
// was denied, expired or executed by someone else: the request cannot run with it. It
// matches ErrApprovalDenied or ErrApprovalExpired by state.
type ApprovalClosedError struct {
	// Approval is the approval as last read.
	Approval ApprovalInfo
	// Expired is set when the approval was still pending past its expires_at.
	Expired bool
}

func (e *ApprovalClosedError) Error() string {
	if e.Expired && e.Approval.State == ApprovalPending {
		return fmt.Sprintf("ferrohsm: approval %s expired at %s with %d of %d approvals",
			e.Approval.ID, e.Approval.ExpiresAt.Format(time.RFC3339), e.Approval.Approvals, e.Approval.Quorum)
	}
	return fmt.Sprintf("ferrohsm: approval %s is %s", e.Approval.ID, e.Approval.State)
}

// Is matches ErrApprovalDenied or ErrApprovalExpired.
func (e *ApprovalClosedError) Is(target error) bool {
	switch {
	case e.Approval.State == ApprovalDenied:
		return target == ErrApprovalDenied
	case e.Approval.State == ApprovalExpired || e.Expired:
		return target == ErrApprovalExpired
	}
	return false
}

// parseError builds the error of a non-2xx answer from its body and headers.
func parseError(status int, header http.Header, body []byte) *APIError {
	e := &APIError{StatusCode: status, RequestID: header.Get("X-Request-Id"), body: body}
	var parsed struct {
		Error *struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &parsed) == nil && parsed.Error != nil && parsed.Error.Code != "" {
		e.Code = ErrorCode(parsed.Error.Code)
		e.Message = parsed.Error.Message
		if parsed.Error.RequestID != "" {
			e.RequestID = parsed.Error.RequestID
		}
	} else {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 512 {
			msg = msg[:512] + "…"
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		e.Message = msg
	}
	if d, ok := parseRetryAfter(header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	return e
}
