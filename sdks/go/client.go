package ferrohsm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Version is this SDK's version, sent in the User-Agent.
const Version = "0.1.0"

// The environment variables NewFromEnv reads; the ferrohsm CLI reads the same.
const (
	EnvServer     = "FERROHSM_SERVER"
	EnvCACert     = "FERROHSM_CA_CERT"
	EnvToken      = "FERROHSM_TOKEN"
	EnvClientCert = "FERROHSM_CLIENT_CERT"
	EnvClientKey  = "FERROHSM_CLIENT_KEY"
)

// maxResponseBody bounds what one answer may hold (the server's own payload limit is 1 MiB,
// 2 MiB as base64 JSON; a page of 1000 keys or audit records is well below this).
const maxResponseBody = 64 << 20

// Client calls a FerroHSM server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	tokens    TokenSource
	userAgent string
	retry     RetryPolicy
}

// TokenSource gives the bearer token of each request. It is called once per HTTP attempt, so
// a source that rotates its token is picked up by the next request (and by retries).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource that always gives the same token.
type StaticToken string

// Token returns the token.
func (s StaticToken) Token(context.Context) (string, error) { return string(s), nil }

// TokenFunc adapts a function to TokenSource, for tokens that rotate (read a file, ask an
// identity provider, refresh before expiry).
type TokenFunc func(ctx context.Context) (string, error)

// Token calls f.
func (f TokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// RetryPolicy bounds the retries of requests that may be repeated safely (see the package
// documentation for which): they are retried on HTTP 429 and 503, waiting at least the
// server's Retry-After, else a jittered exponential backoff.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included; 1 disables retries.
	MaxAttempts int
	// MaxElapsed bounds the time from the first attempt to the start of the last one: a wait
	// that would end later is not started, and the last answer is returned.
	MaxElapsed time.Duration
	// InitialBackoff is the backoff before the first retry when the server sent no
	// Retry-After; it doubles with each retry up to MaxBackoff. The wait is drawn uniformly
	// from [backoff/2, backoff].
	InitialBackoff time.Duration
	// MaxBackoff caps the backoff.
	MaxBackoff time.Duration
	// RateLimitedWrites also retries calls that change state (create, rotate, rollback,
	// revoke, destroy, cancel-destroy, approve, deny, token issue and revoke) when the answer
	// is 429, never when it is 503. The server checks the rate limit before it acts, so a
	// 429 is a refusal that changed nothing, while a 503 may come after the change took
	// effect (the request timed out, or its audit record failed and the answer was withheld).
	RateLimitedWrites bool
}

// DefaultRetryPolicy is used unless WithRetryPolicy says otherwise.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:    4,
	MaxElapsed:     30 * time.Second,
	InitialBackoff: 200 * time.Millisecond,
	MaxBackoff:     5 * time.Second,
}

type config struct {
	httpClient  *http.Client
	caFile      string
	rootCAs     *x509.CertPool
	clientCerts []tls.Certificate
	certFile    string
	keyFile     string
	tlsConfig   *tls.Config
	tokens      TokenSource
	userAgent   string
	retry       RetryPolicy
}

func (c *config) setsTLS() bool {
	return c.caFile != "" || c.rootCAs != nil || len(c.clientCerts) > 0 || c.certFile != "" || c.tlsConfig != nil
}

// Option configures a Client.
type Option func(*config) error

// WithHTTPClient uses hc for every request. It cannot be combined with the TLS options
// (configure hc's transport instead).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error {
		if hc == nil {
			return errors.New("ferrohsm: WithHTTPClient(nil)")
		}
		c.httpClient = hc
		return nil
	}
}

// WithCAFile trusts the CA certificates in a PEM file (FERROHSM_CA_CERT), in addition to
// nothing else: the system roots are not used.
func WithCAFile(path string) Option {
	return func(c *config) error { c.caFile = path; return nil }
}

// WithRootCAs trusts the certificates of pool to verify the server.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(c *config) error { c.rootCAs = pool; return nil }
}

// WithClientCertificate presents cert to the server (mutual TLS). A token bound to a client
// certificate (cnf.x5t#S256) is accepted only over a connection that presents it.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(c *config) error { c.clientCerts = append(c.clientCerts, cert); return nil }
}

// WithClientCertificateFiles loads a client certificate and its key from PEM files
// (FERROHSM_CLIENT_CERT, FERROHSM_CLIENT_KEY).
func WithClientCertificateFiles(certFile, keyFile string) Option {
	return func(c *config) error {
		if certFile == "" || keyFile == "" {
			return errors.New("ferrohsm: a client certificate needs both its certificate and its key file")
		}
		c.certFile, c.keyFile = certFile, keyFile
		return nil
	}
}

// WithTLSConfig starts from cfg (cloned) instead of an empty configuration; WithCAFile,
// WithRootCAs and the client certificate options still apply on top.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) error { c.tlsConfig = cfg; return nil }
}

// WithToken sends a fixed bearer token.
func WithToken(token string) Option {
	return func(c *config) error { c.tokens = StaticToken(token); return nil }
}

// WithTokenFunc calls f for the token of every HTTP attempt.
func WithTokenFunc(f func(ctx context.Context) (string, error)) Option {
	return func(c *config) error { c.tokens = TokenFunc(f); return nil }
}

// WithTokenSource takes the token of every HTTP attempt from ts.
func WithTokenSource(ts TokenSource) Option {
	return func(c *config) error { c.tokens = ts; return nil }
}

// WithUserAgent puts product (e.g. "release-pipeline/2.3") before the SDK's own User-Agent.
func WithUserAgent(product string) Option {
	return func(c *config) error { c.userAgent = product; return nil }
}

// WithRetryPolicy replaces DefaultRetryPolicy. Zero fields take the default's values.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *config) error {
		d := DefaultRetryPolicy
		if p.MaxAttempts > 0 {
			d.MaxAttempts = p.MaxAttempts
		}
		if p.MaxElapsed > 0 {
			d.MaxElapsed = p.MaxElapsed
		}
		if p.InitialBackoff > 0 {
			d.InitialBackoff = p.InitialBackoff
		}
		if p.MaxBackoff > 0 {
			d.MaxBackoff = p.MaxBackoff
		}
		d.RateLimitedWrites = p.RateLimitedWrites
		c.retry = d
		return nil
	}
}

// WithoutRetries makes every request a single attempt.
func WithoutRetries() Option {
	return func(c *config) error { c.retry.MaxAttempts = 1; return nil }
}

// New returns a client of the server at baseURL (https://host:port, optionally with a path
// prefix).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("ferrohsm: the server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("ferrohsm: the server URL %q is not an http(s) URL with a host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ferrohsm: the server URL %q has a query or fragment", baseURL)
	}
	cfg := config{retry: DefaultRetryPolicy}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	hc := cfg.httpClient
	if hc != nil && cfg.setsTLS() {
		return nil, errors.New("ferrohsm: WithHTTPClient cannot be combined with TLS options; configure that client's transport")
	}
	if hc == nil {
		tlsCfg, err := cfg.buildTLS()
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		tr.ForceAttemptHTTP2 = true
		hc = &http.Client{Transport: tr}
	}
	ua := "ferrohsm-go/" + Version + " (" + runtime.Version() + ")"
	if cfg.userAgent != "" {
		ua = cfg.userAgent + " " + ua
	}
	tokens := cfg.tokens
	if tokens == nil {
		tokens = StaticToken("")
	}
	return &Client{base: u, http: hc, tokens: tokens, userAgent: ua, retry: cfg.retry}, nil
}

func (c *config) buildTLS() (*tls.Config, error) {
	var t *tls.Config
	if c.tlsConfig != nil {
		t = c.tlsConfig.Clone()
	} else {
		t = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("ferrohsm: reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if c.rootCAs != nil {
			pool = c.rootCAs.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ferrohsm: the CA file %s holds no PEM certificate", c.caFile)
		}
		t.RootCAs = pool
	} else if c.rootCAs != nil {
		t.RootCAs = c.rootCAs
	}
	if c.certFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("ferrohsm: loading the client certificate: %w", err)
		}
		t.Certificates = append(t.Certificates, cert)
	}
	t.Certificates = append(t.Certificates, c.clientCerts...)
	return t, nil
}

// NewFromEnv returns a client configured like the ferrohsm CLI: FERROHSM_SERVER (required),
// FERROHSM_CA_CERT, FERROHSM_TOKEN, and FERROHSM_CLIENT_CERT with FERROHSM_CLIENT_KEY for
// mutual TLS. opts apply after the environment and win over it.
func NewFromEnv(opts ...Option) (*Client, error) {
	server := os.Getenv(EnvServer)
	if server == "" {
		return nil, fmt.Errorf("ferrohsm: %s is not set (e.g. https://localhost:8443)", EnvServer)
	}
	var env []Option
	if ca := os.Getenv(EnvCACert); ca != "" {
		env = append(env, WithCAFile(ca))
	}
	if tok := os.Getenv(EnvToken); tok != "" {
		env = append(env, WithToken(tok))
	}
	cert, key := os.Getenv(EnvClientCert), os.Getenv(EnvClientKey)
	if cert != "" || key != "" {
		env = append(env, WithClientCertificateFiles(cert, key))
	}
	return New(server, append(env, opts...)...)
}

// ----- Per-call options ------------------------------------------------------------------

// CallOption adjusts one call.
type CallOption func(*callConfig)

type callConfig struct {
	requestID   string
	approvalID  string
	ifNoneMatch string
	info        *ResponseInfo
}

// WithRequestID sends X-Request-Id (up to 128 visible ASCII characters): the server uses it
// in its logs, the audit record and any error body instead of generating one.
func WithRequestID(id string) CallOption { return func(c *callConfig) { c.requestID = id } }

// WithApprovalID sends X-Approval-Id: the repeat of a request that an approval authorised.
// A call that carries it is never retried (the approval runs once).
func WithApprovalID(id string) CallOption { return func(c *callConfig) { c.approvalID = id } }

// WithIfNoneMatch sends If-None-Match on ListKeysPage; an unchanged page answers
// ErrNotModified.
func WithIfNoneMatch(etag string) CallOption { return func(c *callConfig) { c.ifNoneMatch = etag } }

// WithResponseInfo fills info with what the last HTTP attempt of the call answered, whether
// the call succeeded or not.
func WithResponseInfo(info *ResponseInfo) CallOption { return func(c *callConfig) { c.info = info } }

// ResponseInfo describes the HTTP answer of a call.
type ResponseInfo struct {
	// StatusCode is the last attempt's HTTP status (0 when no answer arrived).
	StatusCode int
	// RequestID is the X-Request-Id the server answered with.
	RequestID string
	// Header is the last answer's headers.
	Header http.Header
	// Attempts is how many HTTP attempts the call made.
	Attempts int
}

// ----- The request loop --------------------------------------------------------------------

type request struct {
	method  string
	path    string // escaped, starting with /
	query   url.Values
	body    any // marshalled as JSON when hasBody
	hasBody bool
	// retryable: repeating the request cannot repeat a side effect (see doc.go).
	retryable bool
}

// do runs r and decodes a 2xx answer into out (unless out is nil). It returns
// *ApprovalRequiredError for 202, ErrNotModified for 304 and *APIError for other failures.
func (c *Client) do(ctx context.Context, r request, out any, opts []CallOption) (http.Header, error) {
	var cc callConfig
	for _, o := range opts {
		o(&cc)
	}
	var payload []byte
	if r.hasBody {
		var err error
		if payload, err = json.Marshal(r.body); err != nil {
			return nil, fmt.Errorf("ferrohsm: encoding the request: %w", err)
		}
	}
	target := c.base.String() + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	// A call with an approval id is never repeated: the approval runs once, and an attempt
	// that timed out may have used it.
	retry503 := r.retryable && cc.approvalID == ""
	retry429 := retry503 || (c.retry.RateLimitedWrites && cc.approvalID == "")
	maxAttempts := max(c.retry.MaxAttempts, 1)
	start := time.Now()
	for attempt := 1; ; attempt++ {
		status, header, body, err := c.attempt(ctx, r.method, target, payload, r.hasBody, &cc)
		if cc.info != nil {
			*cc.info = ResponseInfo{StatusCode: status, Header: header, Attempts: attempt}
			if header != nil {
				cc.info.RequestID = header.Get("X-Request-Id")
			}
		}
		if err != nil {
			return header, err
		}
		switch {
		case status == http.StatusAccepted:
			return header, approvalRequired(header, body)
		case status == http.StatusNotModified:
			return header, ErrNotModified
		case status >= 200 && status < 300:
			if out != nil {
				if err := json.Unmarshal(body, out); err != nil {
					return header, fmt.Errorf("ferrohsm: decoding the answer of %s %s (HTTP %d): %w", r.method, r.path, status, err)
				}
			}
			return header, nil
		}
		apiErr := parseError(status, header, body)
		again := (status == http.StatusTooManyRequests && retry429) ||
			(status == http.StatusServiceUnavailable && retry503)
		if !again || attempt >= maxAttempts {
			return header, apiErr
		}
		wait := c.retry.backoff(attempt, apiErr.RetryAfter)
		if time.Since(start)+wait > c.retry.MaxElapsed {
			return header, apiErr
		}
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(deadline) {
			return header, apiErr
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return header, fmt.Errorf("ferrohsm: waiting to retry after %w: %w", apiErr, context.Cause(ctx))
		case <-timer.C:
		}
	}
}

// backoff is the wait before retry number `retry` (1 for the first): at least the server's
// Retry-After (plus up to a tenth of it, at most a second, so that clients told the same
// wait do not return together), else a jittered exponential backoff.
func (p RetryPolicy) backoff(retry int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		spread := min(retryAfter/10, time.Second)
		if spread > 0 {
			return retryAfter + rand.N(spread)
		}
		return retryAfter
	}
	b := p.InitialBackoff
	for i := 1; i < retry && b < p.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, p.MaxBackoff)
	if half := b / 2; half > 0 {
		return half + rand.N(b-half+1)
	}
	return b
}

func (c *Client) attempt(ctx context.Context, method, target string, payload []byte, hasBody bool, cc *callConfig) (int, http.Header, []byte, error) {
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ferrohsm: building the request: %w", err)
	}
	token, err := c.tokens.Token(ctx)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ferrohsm: getting the bearer token: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if cc.requestID != "" {
		req.Header.Set("X-Request-Id", cc.requestID)
	}
	if cc.approvalID != "" {
		req.Header.Set("X-Approval-Id", cc.approvalID)
	}
	if cc.ifNoneMatch != "" {
		req.Header.Set("If-None-Match", cc.ifNoneMatch)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ferrohsm: %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return resp.StatusCode, resp.Header, nil, fmt.Errorf("ferrohsm: reading the answer of %s %s: %w", method, req.URL.Path, err)
	}
	if len(data) > maxResponseBody {
		return resp.StatusCode, resp.Header, nil, fmt.Errorf("ferrohsm: the answer of %s %s is larger than %d bytes", method, req.URL.Path, maxResponseBody)
	}
	return resp.StatusCode, resp.Header, data, nil
}

func approvalRequired(header http.Header, body []byte) error {
	e := &ApprovalRequiredError{Location: header.Get("Location"), RequestID: header.Get("X-Request-Id")}
	if err := json.Unmarshal(body, &e.Approval); err != nil {
		return fmt.Errorf("ferrohsm: decoding the approval of a 202 answer: %w", err)
	}
	e.ApprovalID = header.Get("X-Approval-Id")
	if e.ApprovalID == "" {
		e.ApprovalID = e.Approval.ID
	}
	if e.ApprovalID == "" {
		return errors.New("ferrohsm: a 202 answer named no approval")
	}
	return e
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, 24*3600)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}

// seg escapes one path segment (a key name or id, an approval id).
func seg(s string) string { return url.PathEscape(s) }
