package ferrohsm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is an httptest server that records every request it answers.
type fake struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
}

type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

func newFake(t *testing.T, h func(w http.ResponseWriter, r *http.Request, n int)) *fake {
	t.Helper()
	f := &fake{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), string(body)})
		n := len(f.requests)
		f.mu.Unlock()
		h(w, r, n)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *fake) req(i int) recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[i]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Request-Id", "req-"+code)
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg, "request_id": "req-" + code}})
}

// fastRetries keeps backoffs in milliseconds. MaxElapsed is far beyond any test's duration, so
// the number of attempts depends on MaxAttempts alone, however slowly a loaded machine answers.
var fastRetries = WithRetryPolicy(RetryPolicy{MaxAttempts: 4, MaxElapsed: time.Hour, InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})

// answered is a transport that reads each answer whole and calls after(n), n counting the
// answers from 1, when the client closes it: from then on the client needs neither the
// connection nor its context for that attempt. Tests act at that known point of a call (say,
// cancel while the client waits to retry) instead of after a guessed delay.
type answered struct {
	base  http.RoundTripper
	after func(n int)
	mu    sync.Mutex
	n     int
}

func (a *answered) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := a.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = &closeHook{Reader: bytes.NewReader(body), onClose: func() {
		a.mu.Lock()
		a.n++
		n := a.n
		a.mu.Unlock()
		a.after(n)
	}}
	return resp, nil
}

type closeHook struct {
	io.Reader
	once    sync.Once
	onClose func()
}

func (c *closeHook) Close() error {
	c.once.Do(c.onClose)
	return nil
}

// withAnswerHook sends the client's requests to f through an answered transport.
func withAnswerHook(f *fake, after func(n int)) Option {
	return WithHTTPClient(&http.Client{Transport: &answered{base: f.Client().Transport, after: after}})
}

func newClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, append([]Option{WithToken("tok")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const keyJSON = `{"id":"01a232d7-0144-7488-b4e8-cf6f90f5973c","name":"r1-orders","description":"","algorithm":"aes-256-gcm","usages":["encrypt","decrypt","wrap","unwrap"],"tags":{"team":"r1"},"state":"active","revocation":null,"destroy_after":null,"destroyed_at":null,"current_version":1,"versions":[{"version":1,"created_at":"2026-12-01T18:21:21.092840349Z","state":"active","encryptions":0}],"created_at":"2026-12-01T18:21:21.092840349Z","updated_at":"2026-12-01T18:21:21.092840349Z","created_by":"scn-operator"}`

func TestErrorsCarryCodeStatusMessageAndRequestID(t *testing.T) {
	cases := []struct {
		status   int
		body     string
		code     ErrorCode
		sentinel error
		known    bool
	}{
		{404, `{"error":{"code":"not_found","message":"key k not found","request_id":"r1"}}`, CodeNotFound, ErrNotFound, true},
		{409, `{"error":{"code":"conflict","message":"name taken","request_id":"r1"}}`, CodeConflict, ErrConflict, true},
		{409, `{"error":{"code":"invalid_state","message":"revoked","request_id":"r1"}}`, CodeInvalidState, ErrInvalidState, true},
		{401, `{"error":{"code":"unauthenticated","message":"authentication failed","request_id":"r1"}}`, CodeUnauthenticated, ErrUnauthenticated, true},
		{403, `{"error":{"code":"forbidden","message":"no role","request_id":"r1"}}`, CodeForbidden, ErrForbidden, true},
		{429, `{"error":{"code":"rate_limited","message":"slow down","request_id":"r1"}}`, CodeRateLimited, ErrRateLimited, true},
		{400, `{"error":{"code":"invalid_ciphertext","message":"bad","request_id":"r1"}}`, CodeInvalidCiphertext, ErrInvalidCiphertext, true},
		{500, `{"error":{"code":"integrity","message":"internal error","request_id":"r1"}}`, CodeIntegrity, ErrIntegrity, true},
		// A newer server's code: kept as sent, matched by status, extra fields tolerated.
		{404, `{"error":{"code":"key_archived","message":"archived","request_id":"r1","hint":"h"},"trace":1}`, "key_archived", ErrNotFound, false},
		{402, `{"error":{"code":"quota_exceeded","message":"pay up","request_id":"r1"}}`, "quota_exceeded", nil, false},
	}
	for _, tc := range cases {
		t.Run(string(tc.code), func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			c := newClient(t, f.URL, WithoutRetries())
			_, err := c.DescribeKey(context.Background(), "k")
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("want *APIError, got %T %v", err, err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Code != tc.code || apiErr.RequestID != "r1" || apiErr.Message == "" {
				t.Fatalf("got %+v", apiErr)
			}
			if apiErr.Known() != tc.known {
				t.Fatalf("Known() = %v", apiErr.Known())
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("errors.Is(%v, %v) is false", err, tc.sentinel)
			}
			for _, other := range []error{ErrNotFound, ErrConflict, ErrInvalidState, ErrForbidden, ErrApprovalRequired, ErrRateLimited} {
				if other != tc.sentinel && errors.Is(err, other) {
					t.Fatalf("%v also matches %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), string(tc.code)) || !strings.Contains(err.Error(), "r1") {
				t.Fatalf("message %q names neither code nor request id", err)
			}
		})
	}
}

func TestNonJSONErrorBody(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("X-Request-Id", "proxy-1")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>bad gateway</html>")
	})
	_, err := newClient(t, f.URL).DescribeKey(context.Background(), "k")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || apiErr.Code != "" || apiErr.RequestID != "proxy-1" ||
		!strings.Contains(apiErr.Message, "bad gateway") {
		t.Fatalf("got %#v", err)
	}
	if f.count() != 1 {
		t.Fatalf("a 502 was retried (%d requests)", f.count())
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			writeError(w, 429, "rate_limited", "slow down")
			return
		}
		_, _ = io.WriteString(w, keyJSON)
	})
	// MaxElapsed far beyond the 1 s wait: only Retry-After decides when the retry goes.
	c := newClient(t, f.URL, WithRetryPolicy(RetryPolicy{InitialBackoff: time.Millisecond, MaxElapsed: time.Hour}))
	var info ResponseInfo
	start := time.Now()
	k, err := c.DescribeKey(context.Background(), "r1-orders", WithResponseInfo(&info))
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %v, before Retry-After's second", waited)
	}
	if k.Name != "r1-orders" || f.count() != 2 || info.Attempts != 2 || info.StatusCode != 200 {
		t.Fatalf("key %q, %d requests, info %+v", k.Name, f.count(), info)
	}
}

func TestRetryAfterAsHTTPDate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d, ok := parseRetryAfter(now.Add(3*time.Second).Format(http.TimeFormat), now)
	if !ok || d != 3*time.Second {
		t.Fatalf("got %v %v", d, ok)
	}
	if _, ok := parseRetryAfter("soon", now); ok {
		t.Fatal("parsed a bad Retry-After")
	}
	if d, ok := parseRetryAfter("7", now); !ok || d != 7*time.Second {
		t.Fatalf("got %v %v", d, ok)
	}
}

func TestBackoffIsJitteredExponentialAndCapped(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}
	for i := 0; i < 200; i++ {
		for retry, hi := range map[int]time.Duration{1: 100, 2: 200, 3: 400, 4: 400, 9: 400} {
			hi *= time.Millisecond
			if d := p.backoff(retry, 0); d < hi/2 || d > hi {
				t.Fatalf("retry %d: backoff %v outside [%v, %v]", retry, d, hi/2, hi)
			}
		}
		if d := p.backoff(1, 10*time.Second); d < 10*time.Second || d > 11*time.Second {
			t.Fatalf("Retry-After 10s: waited %v", d)
		}
	}
}

func TestRetriesAreBoundedByAttempts(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeError(w, 503, "unavailable", "audit log down")
	})
	c := newClient(t, f.URL, WithRetryPolicy(RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	_, err := c.Encrypt(context.Background(), "k", EncryptRequest{Plaintext: []byte("x")})
	if !errors.Is(err, ErrUnavailable) || f.count() != 3 {
		t.Fatalf("err %v after %d requests, want unavailable after 3", err, f.count())
	}
	// Every attempt sent the same body.
	for i := 1; i < 3; i++ {
		if f.req(i).Body != f.req(0).Body || f.req(0).Body != `{"plaintext":"eA=="}` {
			t.Fatalf("attempt %d sent %q, first %q", i, f.req(i).Body, f.req(0).Body)
		}
	}
}

func TestRetriesAreBoundedByTime(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "30")
		writeError(w, 429, "rate_limited", "slow down")
	})
	// A 30 s wait would end beyond MaxElapsed, so it must not start: the first answer is
	// returned. Had the wait started, it would end in a second attempt (MaxAttempts 2), so the
	// request count tells, whatever the machine's speed (no wall-clock bound).
	c := newClient(t, f.URL, WithRetryPolicy(RetryPolicy{MaxAttempts: 2, MaxElapsed: time.Second}))
	_, err := c.DescribeKey(context.Background(), "k")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.RetryAfter != 30*time.Second || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("got %v", err)
	}
	if f.count() != 1 {
		t.Fatalf("%d requests; a 30 s wait beyond MaxElapsed must not start", f.count())
	}
	// A wait that would end after the context's deadline does not start either (MaxElapsed is
	// no bound here). Had it started, the deadline would end it: the error would wrap
	// context.DeadlineExceeded. The deadline only has to outlast one local request.
	c = newClient(t, f.URL, WithRetryPolicy(RetryPolicy{MaxAttempts: 2, MaxElapsed: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.DescribeKey(ctx, "k"); !errors.Is(err, ErrRateLimited) || errors.Is(err, context.DeadlineExceeded) || f.count() != 2 {
		t.Fatalf("got %v after %d requests in all, want rate_limited after 2", err, f.count())
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "2")
		writeError(w, 503, "unavailable", "busy")
	})
	// Cancel once the client holds the first answer whole: it is then about to wait (or
	// waiting) 2 s before the retry, never mid-request, however slow the machine.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClient(t, f.URL, withAnswerHook(f, func(n int) {
		if n == 1 {
			cancel()
		}
	}))
	_, err := c.DescribeKey(ctx, "k")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) || f.count() != 1 {
		t.Fatalf("got %v with %d requests", err, f.count())
	}
}

func TestSafeCallsAreRetried(t *testing.T) {
	answers := map[string]string{
		"/v1/keys/k":             keyJSON,
		"/v1/keys":               `{"keys":[],"next_cursor":null}`,
		"/v1/keys/k/public":      `{"key_id":"k","key_version":1,"algorithm":"ec-p256","pem":"","der":""}`,
		"/v1/keys/k/encrypt":     `{"key_id":"k","key_version":1,"ciphertext":"fhsm:v1:AA=="}`,
		"/v1/keys/k/decrypt":     `{"key_id":"k","key_version":1,"plaintext":"aGk="}`,
		"/v1/keys/k/sign":        `{"key_id":"k","key_version":1,"algorithm":"ed25519","signature":"AA=="}`,
		"/v1/keys/k/verify":      `{"key_id":"k","key_version":1,"algorithm":"ed25519","valid":true}`,
		"/v1/keys/k/wrap":        `{"key_id":"k","key_version":1,"wrapped":"fhsm:v1:AA=="}`,
		"/v1/keys/k/unwrap":      `{"key_id":"k","key_version":1,"key_material":"AA=="}`,
		"/v1/approvals":          `{"approvals":[]}`,
		"/v1/approvals/a":        approvalJSON("a", "pending"),
		"/v1/audit":              `{"records":[],"next_cursor":null}`,
		"/v1/audit/verify":       `{"valid":true,"records":1,"signatures_checked":0,"first_seq":1,"last_seq":1,"partial":false}`,
		"/v1/audit/checkpoint":   `{"checkpoint":null,"public_key_pem":"pem"}`,
		"/.well-known/jwks.json": `{"keys":[]}`,
	}
	seen := map[string]int{}
	var mu sync.Mutex
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		mu.Lock()
		seen[r.URL.Path]++
		first := seen[r.URL.Path] == 1
		mu.Unlock()
		if first {
			code := map[bool]int{true: 429, false: 503}[len(r.URL.Path)%2 == 0]
			writeError(w, code, map[int]string{429: "rate_limited", 503: "unavailable"}[code], "later")
			return
		}
		_, _ = io.WriteString(w, answers[r.URL.Path])
	})
	c := newClient(t, f.URL, fastRetries)
	ctx := context.Background()
	calls := map[string]func() error{
		"describe": func() error { _, err := c.DescribeKey(ctx, "k"); return err },
		"list":     func() error { _, err := c.ListKeysPage(ctx, ListKeysOptions{}); return err },
		"public":   func() error { _, err := c.PublicKey(ctx, "k", 0); return err },
		"encrypt":  func() error { _, err := c.Encrypt(ctx, "k", EncryptRequest{Plaintext: []byte("hi")}); return err },
		"decrypt":  func() error { _, err := c.Decrypt(ctx, "k", DecryptRequest{Ciphertext: "fhsm:v1:AA=="}); return err },
		"sign":     func() error { _, err := c.Sign(ctx, "k", SignRequest{Message: []byte("m")}); return err },
		"verify": func() error {
			_, err := c.Verify(ctx, "k", VerifyRequest{Message: []byte("m"), Signature: []byte{0}})
			return err
		},
		"wrap":       func() error { _, err := c.Wrap(ctx, "k", WrapRequest{KeyMaterial: []byte{1}}); return err },
		"unwrap":     func() error { _, err := c.Unwrap(ctx, "k", UnwrapRequest{Wrapped: "fhsm:v1:AA=="}); return err },
		"approvals":  func() error { _, err := c.ListApprovalsPage(ctx, ListApprovalsOptions{}, ""); return err },
		"approval":   func() error { _, err := c.DescribeApproval(ctx, "a"); return err },
		"audit":      func() error { _, err := c.AuditRecordsPage(ctx, AuditQuery{}); return err },
		"verify log": func() error { _, err := c.VerifyAudit(ctx); return err },
		"checkpoint": func() error { _, err := c.AuditCheckpoint(ctx); return err },
		"jwks":       func() error { _, err := c.JWKS(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for path, n := range seen {
		if n != 2 {
			t.Errorf("%s: %d requests, want 2 (one refusal, one retry)", path, n)
		}
	}
	if len(seen) != len(answers) {
		t.Errorf("saw %d paths, want %d", len(seen), len(answers))
	}
}

func TestStateChangesAreNotRetried(t *testing.T) {
	for _, status := range []int{429, 503} {
		f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("Retry-After", "0")
			writeError(w, status, map[int]string{429: "rate_limited", 503: "unavailable"}[status], "later")
		})
		c := newClient(t, f.URL, fastRetries)
		ctx := context.Background()
		grace := int64(60)
		calls := map[string]func() error{
			"create":   func() error { _, err := c.CreateKey(ctx, CreateKeyRequest{Algorithm: AlgorithmAES256GCM}); return err },
			"rotate":   func() error { _, err := c.RotateKey(ctx, "k"); return err },
			"rollback": func() error { _, err := c.RollbackKey(ctx, "k", 1); return err },
			"revoke":   func() error { _, err := c.RevokeKey(ctx, "k", RevokeRequest{Reason: RevocationSuperseded}); return err },
			"destroy":  func() error { _, err := c.DestroyKey(ctx, "k", DestroyRequest{GraceSeconds: &grace}); return err },
			"cancel":   func() error { _, err := c.CancelDestroy(ctx, "k"); return err },
			"approve":  func() error { _, err := c.Approve(ctx, "a", ""); return err },
			"deny":     func() error { _, err := c.Deny(ctx, "a", "no"); return err },
			"token": func() error {
				_, err := c.IssueToken(ctx, TokenRequest{Sub: "x", Roles: []Role{RoleService}})
				return err
			},
			"revoke tok": func() error { _, err := c.RevokeToken(ctx, RevokeTokenRequest{Jti: "j"}); return err },
			"checkpoint": func() error { _, err := c.WriteAuditCheckpoint(ctx); return err },
			// An encrypt that executes an approval is not repeated either.
			"approved encrypt": func() error {
				_, err := c.Encrypt(ctx, "k", EncryptRequest{Plaintext: []byte("x")}, WithApprovalID("01a232d8-1713-74a8-a78e-b3ebbed6c695"))
				return err
			},
		}
		for name, call := range calls {
			before := f.count()
			err := call()
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
				t.Errorf("%d %s: got %v", status, name, err)
			}
			if n := f.count() - before; n != 1 {
				t.Errorf("%d %s: %d requests, want 1", status, name, n)
			}
		}
	}
}

func TestRateLimitedWritesOptIn(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch {
		case r.URL.Path == "/v1/keys" && n == 1:
			writeError(w, 429, "rate_limited", "later")
		case r.URL.Path == "/v1/keys":
			writeJSON(w, 201, json.RawMessage(keyJSON))
		default:
			writeError(w, 503, "unavailable", "timed out")
		}
	})
	c := newClient(t, f.URL, WithRetryPolicy(RetryPolicy{InitialBackoff: time.Millisecond, MaxElapsed: time.Hour, RateLimitedWrites: true}))
	if _, err := c.CreateKey(context.Background(), CreateKeyRequest{Algorithm: AlgorithmAES256GCM}); err != nil || f.count() != 2 {
		t.Fatalf("create after a 429: %v with %d requests", err, f.count())
	}
	if _, err := c.RotateKey(context.Background(), "k"); !errors.Is(err, ErrUnavailable) || f.count() != 3 {
		t.Fatalf("a 503 of rotate was retried: %v, %d requests", err, f.count())
	}
}

func TestTokenSourceIsCalledPerAttempt(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 2 {
			writeError(w, 503, "unavailable", "later")
			return
		}
		_, _ = io.WriteString(w, keyJSON)
	})
	var calls atomic.Int32
	c, err := New(f.URL, fastRetries, WithTokenFunc(func(ctx context.Context) (string, error) {
		return fmt.Sprintf("tok-%d", calls.Add(1)), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := c.DescribeKey(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []string{"Bearer tok-1", "Bearer tok-2", "Bearer tok-3"} {
		if got := f.req(i).Header.Get("Authorization"); got != want {
			t.Fatalf("request %d: Authorization %q, want %q", i, got, want)
		}
	}
	// A failing source stops the call before any request.
	before := f.count()
	c, _ = New(f.URL, WithTokenSource(TokenFunc(func(context.Context) (string, error) { return "", errors.New("vault sealed") })))
	if _, err := c.DescribeKey(context.Background(), "k"); err == nil || !strings.Contains(err.Error(), "vault sealed") || f.count() != before {
		t.Fatalf("got %v, %d requests", err, f.count()-before)
	}
	// A static token; no token sends no Authorization header.
	c, _ = New(f.URL, WithToken("static"))
	_, _ = c.DescribeKey(context.Background(), "k")
	if got := f.req(f.count() - 1).Header.Get("Authorization"); got != "Bearer static" {
		t.Fatalf("got %q", got)
	}
	c, _ = New(f.URL)
	_, _ = c.DescribeKey(context.Background(), "k")
	if got := f.req(f.count() - 1).Header.Get("Authorization"); got != "" {
		t.Fatalf("got %q", got)
	}
}

func TestHeadersAndResponseInfo(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("Location", "/v1/keys/k")
		writeJSON(w, 201, json.RawMessage(keyJSON))
	})
	c := newClient(t, f.URL, WithUserAgent("release-pipeline/2.3"))
	var info ResponseInfo
	k, err := c.CreateKey(context.Background(),
		CreateKeyRequest{Name: "orders", Algorithm: AlgorithmAES256GCM, Tags: map[string]string{"team": "x"}},
		WithRequestID("deploy-42"), WithResponseInfo(&info))
	if err != nil {
		t.Fatal(err)
	}
	r := f.req(0)
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "release-pipeline/2.3 ferrohsm-go/"+Version+" (go") {
		t.Fatalf("User-Agent %q", ua)
	}
	if r.Header.Get("X-Request-Id") != "deploy-42" || r.Header.Get("Content-Type") != "application/json" ||
		r.Method != "POST" || r.Path != "/v1/keys" {
		t.Fatalf("request %+v", r)
	}
	if r.Body != `{"name":"orders","algorithm":"aes-256-gcm","tags":{"team":"x"}}` {
		t.Fatalf("body %s", r.Body)
	}
	if info.StatusCode != 201 || info.RequestID != "deploy-42" || info.Header.Get("Location") != "/v1/keys/k" || info.Attempts != 1 {
		t.Fatalf("info %+v", info)
	}
	if k.CreatedAt.IsZero() || k.Versions[0].CreatedAt.Nanosecond() != 92840349 || k.DestroyAfter != nil || k.Revocation != nil {
		t.Fatalf("decoded %+v", k)
	}
}

func TestPathsAndQueriesAreEscaped(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		_, _ = io.WriteString(w, `{"keys":[],"next_cursor":null}`)
	})
	c := newClient(t, f.URL+"/prefix/")
	_, _ = c.ListKeysPage(context.Background(), ListKeysOptions{
		Limit: 2, Cursor: "k1abc", Algorithm: AlgorithmECP256, State: KeyStateRevoked,
		Tags: map[string]string{"team": "a b", "env": "prod&x"}, NamePrefix: "ci-",
	})
	_, _ = c.DescribeKey(context.Background(), "a/b?c")
	_, _ = c.PublicKey(context.Background(), "k", 3)
	since := time.Date(2026, 11, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))
	_, _ = c.AuditRecordsPage(context.Background(), AuditQuery{Limit: 5, Actor: "ada", Action: "encrypt", KeyID: "id", Outcome: OutcomeDenied, RequestID: "r", Since: since})
	want := []recorded{
		{Path: "/prefix/v1/keys", Query: "algorithm=ec-p256&cursor=k1abc&limit=2&name_prefix=ci-&state=revoked&tag=env%3Aprod%26x&tag=team%3Aa+b"},
		{Path: "/prefix/v1/keys/a%2Fb%3Fc"},
		{Path: "/prefix/v1/keys/k/public", Query: "version=3"},
		{Path: "/prefix/v1/audit", Query: "action=encrypt&actor=ada&key_id=id&limit=5&outcome=denied&request_id=r&since=2026-10-31T23%3A00%3A00Z"},
	}
	for i, w := range want {
		if got := f.req(i); got.Path != w.Path || got.Query != w.Query {
			t.Errorf("request %d: %s?%s, want %s?%s", i, got.Path, got.Query, w.Path, w.Query)
		}
	}
}

func TestBodiesOfOptionalAndByteFields(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		_, _ = io.WriteString(w, `{}`)
	})
	c := newClient(t, f.URL)
	ctx := context.Background()
	grace := int64(0)
	_, _ = c.Sign(ctx, "k", SignRequest{Message: []byte{}})
	_, _ = c.Sign(ctx, "k", SignRequest{Digest: []byte{1, 2}, Algorithm: SchemeECDSAP256SHA256})
	_, _ = c.Verify(ctx, "k", VerifyRequest{Message: []byte("m"), Signature: []byte{9}, KeyVersion: 2})
	_, _ = c.Encrypt(ctx, "k", EncryptRequest{})
	_, _ = c.DestroyKey(ctx, "k", DestroyRequest{})
	_, _ = c.DestroyKey(ctx, "k", DestroyRequest{GraceSeconds: &grace})
	_, _ = c.Approve(ctx, "a", "")
	_, _ = c.Deny(ctx, "a", "why")
	_, _ = c.RollbackKey(ctx, "k", 2)
	want := []string{
		`{"message":""}`,
		`{"digest":"AQI=","algorithm":"ecdsa-p256-sha256"}`,
		`{"message":"bQ==","signature":"CQ==","key_version":2}`,
		`{"plaintext":""}`,
		``,
		`{"grace_seconds":0}`,
		``,
		`{"comment":"why"}`,
		`{"version":2}`,
	}
	for i, w := range want {
		if got := f.req(i).Body; got != w {
			t.Errorf("request %d (%s): body %q, want %q", i, f.req(i).Path, got, w)
		}
	}
}

func TestKeysIteratorFollowsCursors(t *testing.T) {
	pages := map[string]string{
		"":   `{"keys":[{"id":"1"},{"id":"2"}],"next_cursor":"c1"}`,
		"c1": `{"keys":[{"id":"3"},{"id":"4"}],"next_cursor":"c2"}`,
		"c2": `{"keys":[{"id":"5"}],"next_cursor":null}`,
	}
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Query().Get("limit") != "2" || r.URL.Query().Get("tag") != "team:x" {
			writeError(w, 400, "invalid_request", "lost the filters: "+r.URL.RawQuery)
			return
		}
		_, _ = io.WriteString(w, pages[r.URL.Query().Get("cursor")])
	})
	c := newClient(t, f.URL)
	opts := ListKeysOptions{Limit: 2, Tags: map[string]string{"team": "x"}}
	var ids []string
	for k, err := range c.Keys(context.Background(), opts) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	if strings.Join(ids, ",") != "1,2,3,4,5" || f.count() != 3 {
		t.Fatalf("ids %v after %d requests", ids, f.count())
	}
	// Breaking out stops fetching.
	for range c.Keys(context.Background(), opts) {
		break
	}
	if f.count() != 4 {
		t.Fatalf("%d requests after an early break, want 4", f.count())
	}
}

func TestIteratorsReportErrorsAndRepeatedCursors(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Query().Get("cursor") {
		case "":
			_, _ = io.WriteString(w, `{"records":[{"seq":1},{"seq":2}],"next_cursor":"2"}`)
		case "2":
			writeError(w, 403, "forbidden", "no role allows read_audit")
		}
	})
	c := newClient(t, f.URL)
	var seqs []uint64
	var gotErr error
	for r, err := range c.AuditRecords(context.Background(), AuditQuery{Limit: 2}) {
		if err != nil {
			gotErr = err
			continue
		}
		seqs = append(seqs, r.Seq)
	}
	if len(seqs) != 2 || !errors.Is(gotErr, ErrForbidden) {
		t.Fatalf("seqs %v, err %v", seqs, gotErr)
	}
	loop := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		_, _ = io.WriteString(w, `{"keys":[{"id":"1"}],"next_cursor":"same"}`)
	})
	n := 0
	for _, err := range newClient(t, loop.URL).Keys(context.Background(), ListKeysOptions{}) {
		if err != nil {
			if !strings.Contains(err.Error(), "repeated the cursor") {
				t.Fatal(err)
			}
			break
		}
		n++
	}
	if n != 2 || loop.count() != 2 {
		t.Fatalf("%d keys from %d requests", n, loop.count())
	}
}

func TestApprovalsIterator(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Query().Has("cursor") && r.URL.Query().Get("cursor") != "next" {
			writeError(w, 400, "invalid_request", "unknown field cursor")
			return
		}
		if r.URL.Query().Get("cursor") == "next" {
			_, _ = io.WriteString(w, `{"approvals":[`+approvalJSON("c", "denied")+`]}`)
			return
		}
		_, _ = io.WriteString(w, `{"approvals":[`+approvalJSON("a", "pending")+`,`+approvalJSON("b", "approved")+`],"next_cursor":"next"}`)
	})
	var ids []string
	for a, err := range newClient(t, f.URL).Approvals(context.Background(), ListApprovalsOptions{Limit: 10}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID+":"+string(a.State))
	}
	if strings.Join(ids, ",") != "a:pending,b:approved,c:denied" || f.req(0).Query != "limit=10" {
		t.Fatalf("got %v, first query %q", ids, f.req(0).Query)
	}
}

func TestListKeysETag(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("ETag", `"abc"`)
		if r.Header.Get("If-None-Match") == `"abc"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = io.WriteString(w, `{"keys":[],"next_cursor":null}`)
	})
	c := newClient(t, f.URL)
	page, err := c.ListKeysPage(context.Background(), ListKeysOptions{})
	if err != nil || page.ETag != `"abc"` {
		t.Fatalf("page %+v, err %v", page, err)
	}
	if _, err := c.ListKeysPage(context.Background(), ListKeysOptions{}, WithIfNoneMatch(page.ETag)); !errors.Is(err, ErrNotModified) {
		t.Fatalf("got %v", err)
	}
}

func TestHealth(t *testing.T) {
	status := 200
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		st := map[int]string{200: "ok", 503: "degraded"}[status]
		body := map[string]any{"status": st, "version": "0.1.0",
			"store": map[string]string{"status": "ok", "detail": "filesystem"}, "audit": map[string]string{"status": "ok", "detail": "file"},
			"seal": map[string]string{"status": "ok", "detail": "k"}, "policy": map[string]string{"status": "error", "detail": "line 3"}}
		if status == 503 {
			body["vault"] = map[string]string{"status": "failing", "detail": "token unreachable"}
		}
		writeJSON(w, status, body)
	})
	c := newClient(t, f.URL)
	h, err := c.Health(context.Background())
	if err != nil || h.Status != "ok" || h.Store.Detail != "filesystem" || h.Vault != nil {
		t.Fatalf("%+v %v", h, err)
	}
	status = 503
	h, err = c.Health(context.Background())
	if !errors.Is(err, ErrUnavailable) || h == nil || h.Status != "degraded" || h.Policy.Detail != "line 3" {
		t.Fatalf("%+v %v", h, err)
	}
	if h.Vault == nil || *h.Vault != (ComponentHealth{Status: "failing", Detail: "token unreachable"}) {
		t.Fatalf("vault %+v", h.Vault)
	}
	if f.count() != 2 {
		t.Fatalf("health was retried: %d requests", f.count())
	}
}

func TestHealthVault(t *testing.T) {
	component := `{"status":"ok","detail":"x"}`
	base := `"status":"ok","version":"1","store":` + component + `,"audit":` + component +
		`,"seal":` + component + `,"policy":` + component
	for _, tc := range []struct {
		name, body string
		want       *ComponentHealth
	}{
		{"absent", `{` + base + `}`, nil},
		{"null", `{` + base + `,"vault":null}`, nil},
		{"ok", `{` + base + `,"vault":{"status":"ok","detail":"pkcs11: token FerroHSM"}}`,
			&ComponentHealth{Status: "ok", Detail: "pkcs11: token FerroHSM"}},
	} {
		var h Health
		if err := json.Unmarshal([]byte(tc.body), &h); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (h.Vault == nil) != (tc.want == nil) || (h.Vault != nil && *h.Vault != *tc.want) {
			t.Errorf("%s: vault %+v, want %+v", tc.name, h.Vault, tc.want)
		}
	}
}

func TestHealthTLS(t *testing.T) {
	component := `{"status":"ok","detail":"x"}`
	base := `"status":"ok","version":"1","store":` + component + `,"audit":` + component +
		`,"seal":` + component + `,"policy":` + component
	failing := ComponentHealth{Status: "error", Detail: "acme hsm.example; 3 consecutive renewal failures"}
	for _, tc := range []struct {
		name, body string
		want       *ComponentHealth
	}{
		{"absent", `{` + base + `}`, nil},
		{"failing", `{` + base + `,"tls":{"status":"error","detail":"acme hsm.example; 3 consecutive renewal failures"}}`, &failing},
	} {
		var h Health
		if err := json.Unmarshal([]byte(tc.body), &h); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (h.TLS == nil) != (tc.want == nil) || (h.TLS != nil && *h.TLS != *tc.want) {
			t.Errorf("%s: tls %+v, want %+v", tc.name, h.TLS, tc.want)
		}
		if h.Status != "ok" {
			t.Errorf("%s: a failing renewal alone must not read as degraded", tc.name)
		}
	}
}

func TestNewValidatesItsArguments(t *testing.T) {
	for _, bad := range []string{"", "localhost:8443", "ftp://h", "https://", "https://h/?x=1"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	if _, err := New("https://h", WithHTTPClient(http.DefaultClient), WithCAFile("ca.pem")); err == nil {
		t.Error("WithHTTPClient and WithCAFile together were accepted")
	}
	if _, err := New("https://h", WithCAFile("/nonexistent/ca.pem")); err == nil {
		t.Error("a missing CA file was accepted")
	}
	if _, err := New("https://h", WithClientCertificateFiles("c.pem", "")); err == nil {
		t.Error("a certificate without its key was accepted")
	}
	if _, err := New("https://h/base/", WithHTTPClient(http.DefaultClient)); err != nil {
		t.Error(err)
	}
}

func TestNewFromEnv(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) { _, _ = io.WriteString(w, keyJSON) })
	t.Setenv(EnvServer, "")
	t.Setenv(EnvCACert, "")
	t.Setenv(EnvToken, "")
	t.Setenv(EnvClientCert, "")
	t.Setenv(EnvClientKey, "")
	if _, err := NewFromEnv(); err == nil || !strings.Contains(err.Error(), EnvServer) {
		t.Fatalf("no server: %v", err)
	}
	t.Setenv(EnvServer, f.URL)
	t.Setenv(EnvToken, "env-token")
	c, err := NewFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if got := f.req(0).Header.Get("Authorization"); got != "Bearer env-token" {
		t.Fatalf("Authorization %q", got)
	}
	// Options win over the environment.
	c, _ = NewFromEnv(WithToken("flag-token"))
	_, _ = c.DescribeKey(context.Background(), "k")
	if got := f.req(1).Header.Get("Authorization"); got != "Bearer flag-token" {
		t.Fatalf("Authorization %q", got)
	}
	t.Setenv(EnvCACert, "/nonexistent/ca.pem")
	if _, err := NewFromEnv(); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
	t.Setenv(EnvCACert, "")
	t.Setenv(EnvClientCert, "/some/cert.pem")
	if _, err := NewFromEnv(); err == nil {
		t.Fatal("FERROHSM_CLIENT_CERT without FERROHSM_CLIENT_KEY was accepted")
	}
}

func TestConcurrentUse(t *testing.T) {
	// Every call is refused once (503) and retried: which attempt fails is decided per call
	// (by its request id), not by arrival order, so the outcome does not depend on scheduling.
	var seenMu sync.Mutex
	seen := map[string]bool{}
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		seenMu.Lock()
		first := !seen[r.Header.Get("X-Request-Id")]
		seen[r.Header.Get("X-Request-Id")] = true
		seenMu.Unlock()
		if first {
			writeError(w, 503, "unavailable", "later")
			return
		}
		_, _ = io.WriteString(w, `{"key_id":"k","key_version":1,"ciphertext":"fhsm:v1:AA=="}`)
	})
	var tokens atomic.Int64
	c, _ := New(f.URL, fastRetries, WithTokenFunc(func(context.Context) (string, error) {
		return fmt.Sprint(tokens.Add(1)), nil
	}))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var info ResponseInfo
			if _, err := c.Encrypt(context.Background(), "k", EncryptRequest{Plaintext: []byte("x")}, WithResponseInfo(&info), WithRequestID(fmt.Sprint("call-", i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if int(tokens.Load()) != f.count() {
		t.Fatalf("%d tokens for %d requests", tokens.Load(), f.count())
	}
	if f.count() != 64 {
		t.Fatalf("%d requests for 32 calls refused once each", f.count())
	}
}
