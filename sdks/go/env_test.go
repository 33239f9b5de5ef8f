package ferrohsm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// liveServer is the dev server the integration tests and the scenario runner talk to,
// described by FERROHSM_SERVER, FERROHSM_CA_CERT and FERROHSM_SCENARIO_TOKENS (a JSON object
// mapping each principal of sdks/testdata/README.md to a bearer token).
type liveServer struct {
	server  string
	caFile  string
	tokens  map[string]string
	mu      sync.Mutex
	clients map[string]*Client
}

// needLiveServer skips the test, saying why, unless the three variables are set.
func needLiveServer(t *testing.T) *liveServer {
	t.Helper()
	server, ca, tokensFile := os.Getenv(EnvServer), os.Getenv(EnvCACert), os.Getenv("FERROHSM_SCENARIO_TOKENS")
	if server == "" || ca == "" || tokensFile == "" {
		t.Skip("integration test skipped: set FERROHSM_SERVER, FERROHSM_CA_CERT and FERROHSM_SCENARIO_TOKENS " +
			"(a JSON file mapping admin, operator, auditor, service, approver1, approver2 to tokens; see sdks/testdata/README.md)")
	}
	data, err := os.ReadFile(tokensFile)
	if err != nil {
		t.Fatalf("reading FERROHSM_SCENARIO_TOKENS: %v", err)
	}
	var tokens map[string]string
	if err := json.Unmarshal(data, &tokens); err != nil {
		t.Fatalf("FERROHSM_SCENARIO_TOKENS (%s) is not a JSON object of strings: %v", tokensFile, err)
	}
	for _, p := range []string{"admin", "operator", "auditor", "service", "approver1", "approver2"} {
		if tokens[p] == "" {
			t.Fatalf("FERROHSM_SCENARIO_TOKENS (%s) has no token for principal %q", tokensFile, p)
		}
	}
	return &liveServer{server: server, caFile: ca, tokens: tokens, clients: map[string]*Client{}}
}

// as returns the client of a principal.
func (s *liveServer) as(t *testing.T, principal string, opts ...Option) *Client {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[principal]; ok && len(opts) == 0 {
		return c
	}
	tok, ok := s.tokens[principal]
	if !ok {
		t.Fatalf("no token for principal %q", principal)
	}
	c, err := New(s.server, append([]Option{WithCAFile(s.caFile), WithToken(tok), WithUserAgent("ferrohsm-go-tests")}, opts...)...)
	if err != nil {
		t.Fatalf("client for %s: %v", principal, err)
	}
	if len(opts) == 0 {
		s.clients[principal] = c
	}
	return c
}

// runID is a value unique to one run: lowercase letters and digits, starting with a letter.
func runID(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}
