package ferrohsm

// The runner of the shared scenarios (../testdata/scenarios.json, format in
// ../testdata/README.md): every step goes through the SDK's typed methods.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

type scenarioFile struct {
	Version   int        `json:"version"`
	Scenarios []scenario `json:"scenarios"`
}

type scenario struct {
	Name  string `json:"name"`
	Steps []step `json:"steps"`
}

type step struct {
	Call   string            `json:"call"`
	As     string            `json:"as"`
	Input  map[string]any    `json:"input"`
	Expect map[string]any    `json:"expect"`
	Save   map[string]string `json:"save"`
}

func TestScenarios(t *testing.T) {
	live := needLiveServer(t)
	file := loadScenarios(t, "../testdata/scenarios.json")
	run := runID(t, "go")
	t.Logf("run %s: %d scenarios", run, len(file.Scenarios))
	for _, sc := range file.Scenarios {
		ok := t.Run(sc.Name, func(t *testing.T) {
			vars := map[string]string{"run": run}
			for i, st := range sc.Steps {
				as := st.As
				if as == "" {
					as = "operator"
				}
				if err := runStep(t, live.as(t, as), st, vars); err != nil {
					t.Fatalf("scenario %q, step %d (%s as %s): %v", sc.Name, i, st.Call, as, err)
				}
			}
		})
		if !ok {
			// A runner stops at the first step that fails.
			t.Fatalf("stopping at the first failed scenario (%q)", sc.Name)
		}
	}
}

func loadScenarios(t *testing.T, path string) scenarioFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var f scenarioFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	if f.Version != 1 || len(f.Scenarios) == 0 {
		t.Fatalf("%s: want version 1 and at least one scenario", path)
	}
	return f
}

// outcome is what a step's call produced.
type outcome struct {
	status int
	out    any // the typed response
	count  int // items gathered by a list call
	isList bool
	err    error
}

func runStep(t *testing.T, c *Client, st step, vars map[string]string) error {
	input, err := substitute(st.Input, vars)
	if err != nil {
		return fmt.Errorf("input: %w", err)
	}
	expectAny, err := substitute(st.Expect, vars)
	if err != nil {
		return fmt.Errorf("expect: %w", err)
	}
	expect := expectAny.(map[string]any)
	in := input.(map[string]any)
	if in == nil {
		in = map[string]any{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := call(ctx, c, st.Call, in)
	if res.err != nil && isLocal(res.err) {
		return res.err
	}
	saved, err := check(res, expect)
	if err != nil {
		return err
	}
	for name, field := range st.Save {
		v, err := lookup(saved, field)
		if err != nil {
			return fmt.Errorf("save %s: %w", name, err)
		}
		vars[name] = v
	}
	return nil
}

// localError marks a failure of the runner itself (a bad input), not of the server.
type localError struct{ error }

func isLocal(err error) bool {
	var l localError
	return errors.As(err, &l)
}

func localf(format string, args ...any) outcome {
	return outcome{err: localError{fmt.Errorf(format, args...)}}
}

// call runs one operation through the typed method it names.
func call(ctx context.Context, c *Client, name string, in map[string]any) outcome {
	var info ResponseInfo
	opts := []CallOption{WithResponseInfo(&info)}
	if id, ok := in["approval_id"]; ok {
		s, ok := id.(string)
		if !ok {
			return localf("approval_id must be a string")
		}
		opts = append(opts, WithApprovalID(s))
		delete(in, "approval_id")
	}
	key, hasKey := in["key"].(string)
	delete(in, "key")
	id, hasID := in["id"].(string)
	delete(in, "id")
	needKey := func() error {
		if !hasKey {
			return localError{errors.New("input needs key")}
		}
		return nil
	}
	needID := func() error {
		if !hasID {
			return localError{errors.New("input needs id")}
		}
		return nil
	}
	done := func(out any, err error) outcome {
		return outcome{status: info.StatusCode, out: out, err: err}
	}
	// body decodes what is left of the input into a typed request, refusing unknown fields.
	body := func(v any) error {
		data, err := json.Marshal(in)
		if err != nil {
			return localError{err}
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return localError{fmt.Errorf("input does not decode into %T: %w", v, err)}
		}
		return nil
	}
	noBody := func() error {
		if len(in) > 0 {
			return localError{fmt.Errorf("unexpected input fields %v", keysOf(in))}
		}
		return nil
	}
	var err error
	switch name {
	case "create_key":
		var req CreateKeyRequest
		if err = body(&req); err != nil {
			return outcome{err: err}
		}
		return done(c.CreateKey(ctx, req, opts...))
	case "describe_key":
		if err = errors.Join(needKey(), noBody()); err != nil {
			return outcome{err: err}
		}
		return done(c.DescribeKey(ctx, key, opts...))
	case "rotate_key":
		if err = errors.Join(needKey(), noBody()); err != nil {
			return outcome{err: err}
		}
		return done(c.RotateKey(ctx, key, opts...))
	case "rollback_key":
		var req struct {
			Version uint32 `json:"version"`
		}
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.RollbackKey(ctx, key, req.Version, opts...))
	case "revoke_key":
		var req RevokeRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.RevokeKey(ctx, key, req, opts...))
	case "destroy_key":
		var req DestroyRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.DestroyKey(ctx, key, req, opts...))
	case "cancel_destroy":
		if err = errors.Join(needKey(), noBody()); err != nil {
			return outcome{err: err}
		}
		return done(c.CancelDestroy(ctx, key, opts...))
	case "encrypt":
		var req EncryptRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Encrypt(ctx, key, req, opts...))
	case "decrypt":
		var req DecryptRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Decrypt(ctx, key, req, opts...))
	case "sign":
		var req SignRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Sign(ctx, key, req, opts...))
	case "verify":
		var req VerifyRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Verify(ctx, key, req, opts...))
	case "wrap":
		var req WrapRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Wrap(ctx, key, req, opts...))
	case "unwrap":
		var req UnwrapRequest
		if err = errors.Join(needKey(), body(&req)); err != nil {
			return outcome{err: err}
		}
		return done(c.Unwrap(ctx, key, req, opts...))
	case "public_key":
		version, err := intField(in, "version")
		if err = errors.Join(needKey(), err, noBody()); err != nil {
			return outcome{err: err}
		}
		return done(c.PublicKey(ctx, key, uint32(version), opts...))
	case "describe_approval":
		if err = errors.Join(needID(), noBody()); err != nil {
			return outcome{err: err}
		}
		return done(c.DescribeApproval(ctx, id, opts...))
	case "approve", "deny":
		var req struct {
			Comment string `json:"comment"`
		}
		if err = errors.Join(needID(), body(&req)); err != nil {
			return outcome{err: err}
		}
		if name == "approve" {
			return done(c.Approve(ctx, id, req.Comment, opts...))
		}
		return done(c.Deny(ctx, id, req.Comment, opts...))
	case "audit_verify":
		if err = noBody(); err != nil {
			return outcome{err: err}
		}
		return done(c.VerifyAudit(ctx, opts...))
	case "list_keys":
		var o ListKeysOptions
		limit, err := intField(in, "limit")
		o.Limit = int(limit)
		o.Algorithm = Algorithm(stringField(in, "algorithm"))
		o.State = KeyState(stringField(in, "state"))
		o.NamePrefix = stringField(in, "name_prefix")
		if tag, ok := in["tag"]; ok {
			delete(in, "tag")
			o.Tags = map[string]string{}
			tags := []any{tag}
			if list, ok := tag.([]any); ok {
				tags = list
			}
			for _, t := range tags {
				s, _ := t.(string)
				k, v, ok := strings.Cut(s, ":")
				if !ok {
					return localf("tag %v is not a k:v string", t)
				}
				o.Tags[k] = v
			}
		}
		if err = errors.Join(err, noBody()); err != nil {
			return outcome{err: err}
		}
		return gather(c.Keys(ctx, o, opts...), &info)
	case "list_approvals":
		limit, err := intField(in, "limit")
		if err = errors.Join(err, noBody()); err != nil {
			return outcome{err: err}
		}
		return gather(c.Approvals(ctx, ListApprovalsOptions{Limit: int(limit)}, opts...), &info)
	case "audit_records":
		var q AuditQuery
		limit, err := intField(in, "limit")
		q.Limit = int(limit)
		q.Actor = stringField(in, "actor")
		q.Action = stringField(in, "action")
		q.KeyID = stringField(in, "key_id")
		q.Outcome = AuditOutcome(stringField(in, "outcome"))
		q.RequestID = stringField(in, "request_id")
		for _, f := range []struct {
			name string
			to   *time.Time
		}{{"since", &q.Since}, {"until", &q.Until}} {
			if s := stringField(in, f.name); s != "" {
				tm, perr := time.Parse(time.RFC3339Nano, s)
				if perr != nil {
					return localf("%s: %v", f.name, perr)
				}
				*f.to = tm
			}
		}
		if err = errors.Join(err, noBody()); err != nil {
			return outcome{err: err}
		}
		return gather(c.AuditRecords(ctx, q, opts...), &info)
	}
	return localf("unknown call %q", name)
}

// gather follows every page of a list call.
func gather[T any](seq func(func(T, error) bool), info *ResponseInfo) outcome {
	n := 0
	for _, err := range seq {
		if err != nil {
			return outcome{status: info.StatusCode, isList: true, err: err}
		}
		n++
	}
	return outcome{status: info.StatusCode, isList: true, count: n}
}

// check compares an outcome with a step's expectation and returns the JSON object fields
// may be saved from.
func check(res outcome, expect map[string]any) (map[string]any, error) {
	if code, ok := expect["error"]; ok {
		wantStatus, err := number(expect["status"])
		if err != nil {
			return nil, fmt.Errorf("expect.status: %w", err)
		}
		var apiErr *APIError
		if !errors.As(res.err, &apiErr) {
			return nil, fmt.Errorf("want error %v (%d), got %s", code, wantStatus, describe(res))
		}
		if string(apiErr.Code) != code || int64(apiErr.StatusCode) != wantStatus {
			return nil, fmt.Errorf("want error %v (%d), got %v", code, wantStatus, apiErr)
		}
		if sentinel, known := sentinelByCode[apiErr.Code]; known && !errors.Is(res.err, sentinel) {
			return nil, fmt.Errorf("errors.Is(%v, %v) is false", res.err, sentinel)
		}
		return nil, nil
	}
	if v, ok := expect["approval_required"]; ok {
		if v != true {
			return nil, fmt.Errorf("expect.approval_required must be true")
		}
		var required *ApprovalRequiredError
		if !errors.As(res.err, &required) || !errors.Is(res.err, ErrApprovalRequired) {
			return nil, fmt.Errorf("want approval_required, got %s", describe(res))
		}
		if required.ApprovalID == "" || required.ApprovalID != required.Approval.ID {
			return nil, fmt.Errorf("the approval id %q differs from the approval's id %q", required.ApprovalID, required.Approval.ID)
		}
		got, err := asJSON(required.Approval)
		if err != nil {
			return nil, err
		}
		got["approval_id"] = required.ApprovalID
		if want, ok := expect["output"]; ok {
			if err := subset(want, got, "output"); err != nil {
				return nil, err
			}
		}
		return got, nil
	}
	wantStatus, err := number(expect["status"])
	if err != nil {
		return nil, fmt.Errorf("expect.status: %w", err)
	}
	if res.err != nil {
		return nil, fmt.Errorf("want status %d, got %s", wantStatus, describe(res))
	}
	if int64(res.status) != wantStatus {
		return nil, fmt.Errorf("want status %d, got %d", wantStatus, res.status)
	}
	if res.isList {
		if _, ok := expect["output"]; ok {
			return nil, errors.New("output is not defined for list calls (use count)")
		}
		if want, ok := expect["count"]; ok {
			n, err := number(want)
			if err != nil {
				return nil, fmt.Errorf("expect.count: %w", err)
			}
			if int64(res.count) != n {
				return nil, fmt.Errorf("want count %d, got %d", n, res.count)
			}
		}
		return nil, nil
	}
	if _, ok := expect["count"]; ok {
		return nil, errors.New("count is only for list calls")
	}
	got, err := asJSON(res.out)
	if err != nil {
		return nil, err
	}
	if want, ok := expect["output"]; ok {
		if err := subset(want, got, "output"); err != nil {
			return nil, err
		}
	}
	return got, nil
}

func describe(res outcome) string {
	if res.err != nil {
		return "error: " + res.err.Error()
	}
	return fmt.Sprintf("success (HTTP %d)", res.status)
}

// asJSON serialises a typed response back to REST JSON.
func asJSON(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// subset reports where want is not a subset of got: objects compare as subsets, arrays
// whole, null matches null or absent, numbers by value.
func subset(want, got any, path string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %s", path, show(got))
		}
		for k, wv := range w {
			gv, present := g[k]
			if !present {
				if wv == nil {
					continue
				}
				return fmt.Errorf("%s.%s: missing (want %s)", path, k, show(wv))
			}
			if err := subset(wv, gv, path+"."+k); err != nil {
				return err
			}
		}
		return nil
	case nil:
		if got != nil {
			return fmt.Errorf("%s: want null, got %s", path, show(got))
		}
		return nil
	}
	if !equalJSON(want, got) {
		return fmt.Errorf("%s: want %s, got %s", path, show(want), show(got))
	}
	return nil
}

func equalJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !equalJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		r1, ok1 := new(big.Rat).SetString(x.String())
		r2, ok2 := new(big.Rat).SetString(y.String())
		return ok1 && ok2 && r1.Cmp(r2) == 0
	default:
		return a == b
	}
}

func show(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(data)
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// substitute replaces ${name} in every string of v.
func substitute(v any, vars map[string]string) (any, error) {
	switch x := v.(type) {
	case string:
		var missing []string
		out := varRef.ReplaceAllStringFunc(x, func(ref string) string {
			name := ref[2 : len(ref)-1]
			val, ok := vars[name]
			if !ok {
				missing = append(missing, name)
			}
			return val
		})
		if len(missing) > 0 {
			return nil, fmt.Errorf("unknown variable(s) %v in %q", missing, x)
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			s, err := substitute(e, vars)
			if err != nil {
				return nil, err
			}
			out[k] = s
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			s, err := substitute(e, vars)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	return v, nil
}

// lookup reads a dotted path (versions.0.version) and gives the value as a variable: a
// string as itself, anything else as its JSON text.
func lookup(obj map[string]any, path string) (string, error) {
	var cur any = obj
	for _, part := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[part]
			if !ok {
				return "", fmt.Errorf("no field %q in %s", part, path)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(c) {
				return "", fmt.Errorf("no element %q in %s", part, path)
			}
			cur = c[i]
		default:
			return "", fmt.Errorf("%s: %q reaches into a scalar", path, part)
		}
	}
	if s, ok := cur.(string); ok {
		return s, nil
	}
	return show(cur), nil
}

func number(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case string:
		return strconv.ParseInt(n, 10, 64)
	case nil:
		return 0, errors.New("missing")
	}
	return 0, fmt.Errorf("%v is not a number", v)
}

// intField takes an integer input field (a number, or a string after substitution).
func intField(in map[string]any, name string) (int64, error) {
	v, ok := in[name]
	if !ok {
		return 0, nil
	}
	delete(in, name)
	n, err := number(v)
	if err != nil {
		return 0, localError{fmt.Errorf("%s: %w", name, err)}
	}
	return n, nil
}

// stringField takes a string input field.
func stringField(in map[string]any, name string) string {
	v, ok := in[name]
	if !ok {
		return ""
	}
	delete(in, name)
	s, _ := v.(string)
	return s
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
