package ferrohsm

// The scenario runner's own comparisons, without a server: they must fail where the
// README's rules say a step fails.

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func parseJSON(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSubsetRules(t *testing.T) {
	got := `{"a":1,"b":{"c":"x","d":[1,2]},"e":null,"f":[{"g":1,"h":2}],"n":1.0}`
	for want, ok := range map[string]bool{
		`{}`:                    true,
		`{"a":1}`:               true,
		`{"a":1.0}`:             true, // numbers by value
		`{"n":1}`:               true,
		`{"a":2}`:               false,
		`{"a":"1"}`:             false,
		`{"b":{"c":"x"}}`:       true, // nested objects are subsets
		`{"b":{"c":"y"}}`:       false,
		`{"b":{"d":[1,2]}}`:     true,
		`{"b":{"d":[1]}}`:       false, // arrays compare whole
		`{"b":{"d":[2,1]}}`:     false,
		`{"f":[{"g":1}]}`:       false, // an array's objects compare whole too
		`{"f":[{"g":1,"h":2}]}`: true,
		`{"e":null}`:            true,
		`{"missing":null}`:      true, // null matches absent
		`{"missing":1}`:         false,
		`{"a":null}`:            false,
		`{"b":"x"}`:             false,
	} {
		err := subset(parseJSON(t, want), parseJSON(t, got), "output")
		if (err == nil) != ok {
			t.Errorf("subset(%s): %v, want ok=%v", want, err, ok)
		}
	}
}

func TestCheckRefusesWrongOutcomes(t *testing.T) {
	notFound := &APIError{StatusCode: 404, Code: CodeNotFound, Message: "m", RequestID: "r"}
	expect := func(s string) map[string]any { return parseJSON(t, s).(map[string]any) }
	cases := []struct {
		name string
		res  outcome
		exp  string
		ok   bool
	}{
		{"error as expected", outcome{err: notFound}, `{"error":"not_found","status":404}`, true},
		{"other code", outcome{err: notFound}, `{"error":"conflict","status":404}`, false},
		{"other status", outcome{err: notFound}, `{"error":"not_found","status":400}`, false},
		{"success when an error was expected", outcome{status: 200, out: &Verified{Valid: true}}, `{"error":"not_found","status":404}`, false},
		{"error when success was expected", outcome{err: notFound}, `{"status":200}`, false},
		{"status differs", outcome{status: 200, out: &KeyInfo{}}, `{"status":201}`, false},
		{"output matches", outcome{status: 200, out: &Verified{Valid: false}}, `{"status":200,"output":{"valid":false}}`, true},
		{"output differs", outcome{status: 200, out: &Verified{Valid: true}}, `{"status":200,"output":{"valid":false}}`, false},
		{"count matches", outcome{status: 200, isList: true, count: 3}, `{"status":200,"count":3}`, true},
		{"count differs", outcome{status: 200, isList: true, count: 2}, `{"status":200,"count":3}`, false},
		{"approval expected, success", outcome{status: 200, out: &Encrypted{}}, `{"approval_required":true}`, false},
		{"approval as expected", outcome{err: &ApprovalRequiredError{ApprovalID: "a", Approval: ApprovalInfo{ID: "a", Quorum: 2}}},
			`{"approval_required":true,"output":{"quorum":2}}`, true},
		{"approval output differs", outcome{err: &ApprovalRequiredError{ApprovalID: "a", Approval: ApprovalInfo{ID: "a", Quorum: 2}}},
			`{"approval_required":true,"output":{"quorum":3}}`, false},
		{"approval when an error was expected", outcome{err: &ApprovalRequiredError{ApprovalID: "a", Approval: ApprovalInfo{ID: "a"}}},
			`{"error":"conflict","status":409}`, false},
		{"plain error when approval was expected", outcome{err: errors.New("connection refused")}, `{"approval_required":true}`, false},
	}
	for _, tc := range cases {
		_, err := check(tc.res, expect(tc.exp))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestSubstituteAndLookup(t *testing.T) {
	vars := map[string]string{"run": "go1", "id": "k-1"}
	v, err := substitute(parseJSON(t, `{"name":"${run}-orders","tags":{"team":"${run}"},"list":["${id}",2]}`), vars)
	if err != nil || show(v) != `{"list":["k-1",2],"name":"go1-orders","tags":{"team":"go1"}}` {
		t.Fatalf("%s %v", show(v), err)
	}
	if _, err := substitute("${nope}", vars); err == nil {
		t.Fatal("an unknown variable was accepted")
	}
	obj := parseJSON(t, `{"id":"x","versions":[{"version":1,"state":"active"}],"valid":true}`).(map[string]any)
	for path, want := range map[string]string{"id": "x", "versions.0.version": "1", "versions.0.state": "active", "valid": "true"} {
		if got, err := lookup(obj, path); err != nil || got != want {
			t.Errorf("%s: %q %v", path, got, err)
		}
	}
	for _, bad := range []string{"nope", "versions.1.version", "id.x"} {
		if _, err := lookup(obj, bad); err == nil {
			t.Errorf("%s resolved", bad)
		}
	}
}
