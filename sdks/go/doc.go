// Package ferrohsm is the Go client of FerroHSM's REST API: keys, cryptographic operations,
// dual-control approvals and the audit log. It uses the standard library only.
//
// # Connecting
//
// New takes the server's URL and options; NewFromEnv reads the variables the ferrohsm CLI
// reads (FERROHSM_SERVER, FERROHSM_CA_CERT, FERROHSM_TOKEN, and FERROHSM_CLIENT_CERT with
// FERROHSM_CLIENT_KEY):
//
//	client, err := ferrohsm.NewFromEnv()
//	// or
//	client, err := ferrohsm.New("https://hsm.internal:8443",
//		ferrohsm.WithCAFile("/etc/ferrohsm/ca.pem"),
//		ferrohsm.WithClientCertificateFiles("client.pem", "client-key.pem"), // mutual TLS
//		ferrohsm.WithTokenFunc(readCurrentToken),                        // called per request
//	)
//
// WithCAFile trusts only the given CA (the dev server's CA file); WithRootCAs takes a pool;
// WithTLSConfig starts from a configuration of your own. A token comes from WithToken
// (fixed), or WithTokenFunc / WithTokenSource, called for every HTTP attempt so that a
// rotated token is used from the next request on. A Client is safe for concurrent use.
//
// # Calls
//
// Every call takes a context.Context, typed request and response structs whose json tags
// are the REST names ([]byte for base64 fields, time.Time for timestamps), and CallOptions:
// WithRequestID sends X-Request-Id (the id then appears in the server's logs, in the audit
// record and in any error body), WithApprovalID sends X-Approval-Id, and WithResponseInfo
// reports the HTTP status, headers and number of attempts. A key argument is a key's id or
// its name. The User-Agent is "ferrohsm-go/VERSION (goX.Y)", after WithUserAgent's product.
//
// Optional scalar fields that the server sends as null (a key's name, a revocation comment,
// an audit record's key id) are plain fields with omitempty: the zero value means absent.
// Optional timestamps and objects (destroy_after, revocation, executed_at) are pointers.
//
// # Errors
//
// A refused call returns an *APIError with the HTTP status, the stable code, the message and
// the request id. errors.Is matches a sentinel per code: ErrNotFound, ErrConflict,
// ErrInvalidState, ErrForbidden, ErrUnauthenticated, ErrRateLimited, ErrInvalidRequest,
// ErrUnavailable, and so on. A code this SDK does not know (from a newer server) is kept as
// sent in APIError.Code and still matches by status where the status says enough (404, 401,
// 403, 429, 503).
//
// An operation under dual control answers 202 with the approval; the call returns an
// *ApprovalRequiredError carrying ApprovalID and the ApprovalInfo (what will run, the
// quorum, the approver roles), and errors.Is(err, ErrApprovalRequired) is true. Approvers
// vote with Approve (or Deny); the requester then repeats the same request with
// WithApprovalID(id), and it runs once. RunWithApproval does all of this: it makes the
// request, calls an optional callback with the approval (to notify approvers), polls the
// approval (or waits through a callback of yours) until it is approved, and repeats the
// request with the approval id.
//
// # Retries
//
// A call is retried, with a jittered exponential backoff and never sooner than the server's
// Retry-After, when the server answers 429 (rate limited) or 503 (unavailable), and only if
// repeating it cannot repeat a side effect:
//
//   - every GET (describe, list, public key, approvals, audit records, audit verify, …);
//   - the computations encrypt, decrypt, sign, verify, wrap and unwrap: a repeat changes no
//     state (it writes its own audit record, and an encrypt uses one more nonce of the
//     version's budget).
//
// Calls that change state are not retried: create, rotate, rollback (a repeat could undo a
// rotation made in between), revoke, destroy, cancel-destroy (a repeat after a success
// fails with invalid_state), approve and deny (a repeated vote is refused), issuing and
// revoking tokens, and writing an audit checkpoint. RetryPolicy.RateLimitedWrites opts them
// in for 429 only: the server checks the rate limit before it acts, so a 429 changed
// nothing, while a 503 may come after the change took effect. A call carrying an approval id
// is never retried, since the approval runs once. RetryPolicy bounds the attempts and the
// total time; a wait that would outlast the context's deadline is not started.
//
// # Pagination
//
// Keys, AuditRecords and Approvals return an iter.Seq2[T, error] that follows next_cursor
// page by page:
//
//	for key, err := range client.Keys(ctx, ferrohsm.ListKeysOptions{Tags: map[string]string{"team": "payments"}}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(key.ID, key.Name)
//	}
//
// ListKeysPage, AuditRecordsPage and ListApprovalsPage read one page. The server lists
// approvals as one page of at most 1000 (there is no approvals cursor yet); the iterator
// follows a cursor if a server sends one.
package ferrohsm
