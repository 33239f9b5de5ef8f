package ferrohsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func approvalJSON(id, state string) string {
	return approvalJSONAt(id, state, time.Now().Add(time.Hour))
}

func approvalJSONAt(id, state string, expires time.Time) string {
	approvals := map[string]int{"pending": 1, "approved": 2, "executed": 2}[state]
	return fmt.Sprintf(`{"id":%q,"operation":"encrypt","key_id":"k1","requester":"operator","requester_identity":["operator"],`+
		`"parameters":[{"name":"operation","value":"encrypt"}],"summary":"operation=encrypt","policy":"dual","quorum":2,`+
		`"approvals":%d,"approver_roles":["admin","operator"],"approver_issuers":[],"require_certificate":false,"state":%q,`+
		`"votes":[],"created_at":"2026-12-01T18:22:32.211338059Z","expires_at":%q,"executed_at":null}`,
		id, approvals, state, expires.UTC().Format(time.RFC3339Nano))
}

const approvalID = "01a232d8-1713-74a8-a78e-b3ebbed6c695"

// dualServer answers encrypt with 202 until it carries X-Approval-Id, and the approval with
// the states in turn (the last one repeating).
func dualServer(t *testing.T, states ...string) (*fake, *atomic.Int32) {
	var describes atomic.Int32
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/v1/keys/payroll/encrypt":
			if id := r.Header.Get("X-Approval-Id"); id != "" {
				if id != approvalID {
					writeError(w, 404, "not_found", "approval "+id)
					return
				}
				_, _ = io.WriteString(w, `{"key_id":"k1","key_version":1,"ciphertext":"fhsm:v1:AA=="}`)
				return
			}
			w.Header().Set("Location", "/v1/approvals/"+approvalID)
			w.Header().Set("X-Approval-Id", approvalID)
			w.Header().Set("X-Request-Id", "req-202")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, approvalJSON(approvalID, "pending"))
		case "/v1/approvals/" + approvalID:
			i := int(describes.Add(1)) - 1
			_, _ = io.WriteString(w, approvalJSON(approvalID, states[min(i, len(states)-1)]))
		default:
			writeError(w, 404, "not_found", "no such route")
		}
	})
	return f, &describes
}

func encryptPayroll(c *Client) func(ctx context.Context, opts ...CallOption) (*Encrypted, error) {
	return func(ctx context.Context, opts ...CallOption) (*Encrypted, error) {
		return c.Encrypt(ctx, "payroll", EncryptRequest{Plaintext: []byte("payroll")}, opts...)
	}
}

func TestApprovalRequiredError(t *testing.T) {
	f, _ := dualServer(t, "pending")
	_, err := newClient(t, f.URL).Encrypt(context.Background(), "payroll", EncryptRequest{Plaintext: []byte("x")})
	var required *ApprovalRequiredError
	if !errors.As(err, &required) || !errors.Is(err, ErrApprovalRequired) {
		t.Fatalf("got %T %v", err, err)
	}
	if required.ApprovalID != approvalID || required.Approval.Quorum != 2 || required.Approval.State != ApprovalPending ||
		required.Location != "/v1/approvals/"+approvalID || required.RequestID != "req-202" ||
		required.Approval.ApproverRoles[1] != RoleOperator || required.Approval.Parameters[0].Value != "encrypt" {
		t.Fatalf("got %+v", required)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 202 || apiErr.Code != CodeApprovalRequired {
		t.Fatalf("APIError view: %+v", apiErr)
	}
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		t.Fatal("an approval_required error matches another sentinel")
	}
	if f.count() != 1 {
		t.Fatalf("a 202 was retried: %d requests", f.count())
	}
}

func TestRunWithApprovalPollsThenRepeats(t *testing.T) {
	f, describes := dualServer(t, "pending", "pending", "approved")
	c := newClient(t, f.URL)
	var notified []string
	enc, err := RunWithApproval(context.Background(), c, encryptPayroll(c),
		WithPollInterval(5*time.Millisecond),
		OnApprovalRequired(func(ctx context.Context, e *ApprovalRequiredError) error {
			notified = append(notified, e.ApprovalID)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	if enc.Ciphertext != "fhsm:v1:AA==" || describes.Load() != 3 || len(notified) != 1 || notified[0] != approvalID {
		t.Fatalf("enc %+v, %d polls, notified %v", enc, describes.Load(), notified)
	}
	last := f.req(f.count() - 1)
	if last.Path != "/v1/keys/payroll/encrypt" || last.Header.Get("X-Approval-Id") != approvalID || last.Body != f.req(0).Body {
		t.Fatalf("the repeat was %+v", last)
	}
}

func TestRunWithApprovalWithoutDualControl(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		_, _ = io.WriteString(w, `{"key_id":"k1","key_version":1,"ciphertext":"fhsm:v1:AA=="}`)
	})
	c := newClient(t, f.URL)
	enc, err := RunWithApproval(context.Background(), c, encryptPayroll(c),
		OnApprovalRequired(func(context.Context, *ApprovalRequiredError) error { return errors.New("must not be called") }))
	if err != nil || enc.KeyVersion != 1 || f.count() != 1 || f.req(0).Header.Get("X-Approval-Id") != "" {
		t.Fatalf("%+v %v after %d requests", enc, err, f.count())
	}
}

func TestRunWithApprovalStopsOnDenial(t *testing.T) {
	f, _ := dualServer(t, "pending", "denied")
	c := newClient(t, f.URL)
	_, err := RunWithApproval(context.Background(), c, encryptPayroll(c), WithPollInterval(time.Millisecond))
	var closed *ApprovalClosedError
	if !errors.Is(err, ErrApprovalDenied) || !errors.As(err, &closed) || closed.Approval.State != ApprovalDenied {
		t.Fatalf("got %v", err)
	}
	for i := 0; i < f.count(); i++ {
		if f.req(i).Header.Get("X-Approval-Id") != "" {
			t.Fatal("the request was repeated with a denied approval")
		}
	}
}

func TestRunWithApprovalStopsOnExpiry(t *testing.T) {
	var expired atomic.Bool
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/v1/approvals/"+approvalID {
			expired.Store(true)
			_, _ = io.WriteString(w, approvalJSONAt(approvalID, "pending", time.Now().Add(-time.Minute)))
			return
		}
		w.Header().Set("X-Approval-Id", approvalID)
		w.WriteHeader(202)
		_, _ = io.WriteString(w, approvalJSON(approvalID, "pending"))
	})
	c := newClient(t, f.URL)
	_, err := RunWithApproval(context.Background(), c, encryptPayroll(c), WithPollInterval(time.Millisecond))
	if !expired.Load() || !errors.Is(err, ErrApprovalExpired) || errors.Is(err, ErrApprovalDenied) {
		t.Fatalf("got %v", err)
	}
}

func TestRunWithApprovalWaiterCallback(t *testing.T) {
	f, describes := dualServer(t, "pending")
	c := newClient(t, f.URL)
	var seen ApprovalInfo
	enc, err := RunWithApproval(context.Background(), c, encryptPayroll(c),
		WithApprovalWaiter(func(ctx context.Context, a ApprovalInfo) error {
			seen = a
			return nil // e.g. a chat bot reported the second vote
		}))
	if err != nil || enc.KeyID != "k1" || seen.ID != approvalID || describes.Load() != 0 {
		t.Fatalf("%+v %v, seen %q, %d polls", enc, err, seen.ID, describes.Load())
	}
	// A waiter that gives up ends the call with its error.
	_, err = RunWithApproval(context.Background(), c, encryptPayroll(c),
		WithApprovalWaiter(func(context.Context, ApprovalInfo) error { return errors.New("nobody answered") }))
	if err == nil || !strings.Contains(err.Error(), "nobody answered") {
		t.Fatalf("got %v", err)
	}
}

func TestRunWithApprovalHonoursContext(t *testing.T) {
	f, _ := dualServer(t, "pending")
	// Cancel once the client holds the first answer about the approval whole: the helper is
	// then about to wait (or waiting) for its next poll, an hour away, so only the context can
	// end the call. No deadline races the requests, however slow the machine.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClient(t, f.URL, withAnswerHook(f, func(n int) {
		if n == 2 { // 1: the encrypt's 202, 2: the first read of the approval
			cancel()
		}
	}))
	done := make(chan error, 1)
	go func() {
		_, err := RunWithApproval(ctx, c, encryptPayroll(c), WithPollInterval(time.Hour))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || f.count() != 2 {
			t.Fatalf("got %v after %d requests", err, f.count())
		}
	case <-time.After(time.Minute):
		// Only a helper that ignores its context gets here (it would wait the hour out).
		t.Fatal("RunWithApproval still waits a minute after its context was cancelled")
	}
}

func TestWaitForApproval(t *testing.T) {
	f, describes := dualServer(t, "pending", "approved")
	a, err := newClient(t, f.URL).WaitForApproval(context.Background(), approvalID, WithPollInterval(time.Millisecond))
	if err != nil || a.State != ApprovalApproved || describes.Load() != 2 {
		t.Fatalf("%+v %v", a, err)
	}
	f2, _ := dualServer(t, "executed")
	_, err = newClient(t, f2.URL).WaitForApproval(context.Background(), approvalID)
	var closed *ApprovalClosedError
	if !errors.As(err, &closed) || closed.Approval.State != ApprovalExecuted || errors.Is(err, ErrApprovalDenied) {
		t.Fatalf("got %v", err)
	}
}
