package ferrohsm

import (
	"context"
	"iter"
	"net/url"
	"strconv"
	"time"
)

// AuditRecordsPage reads one page of audit records, oldest first (GET /v1/audit; admin or
// auditor).
func (c *Client) AuditRecordsPage(ctx context.Context, q AuditQuery, opts ...CallOption) (*AuditPage, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set := func(name, value string) {
		if value != "" {
			v.Set(name, value)
		}
	}
	set("cursor", q.Cursor)
	set("actor", q.Actor)
	set("action", q.Action)
	set("key_id", q.KeyID)
	set("outcome", string(q.Outcome))
	set("request_id", q.RequestID)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	var out AuditPage
	_, err := c.do(ctx, request{method: "GET", path: "/v1/audit", query: v, retryable: true}, &out, opts)
	return result(&out, err)
}

// AuditRecords lists every audit record matching q, following next_cursor (q.Limit is the
// page size).
func (c *Client) AuditRecords(ctx context.Context, q AuditQuery, opts ...CallOption) iter.Seq2[AuditRecord, error] {
	return paginate(q.Cursor, func(cursor string) ([]AuditRecord, string, error) {
		q.Cursor = cursor
		page, err := c.AuditRecordsPage(ctx, q, opts...)
		if err != nil {
			return nil, "", err
		}
		return page.Records, page.NextCursor, nil
	})
}

// VerifyAudit has the server verify its whole audit log: chain, HMACs and checkpoint
// signatures (GET /v1/audit/verify).
func (c *Client) VerifyAudit(ctx context.Context, opts ...CallOption) (*AuditVerification, error) {
	var out AuditVerification
	_, err := c.do(ctx, request{method: "GET", path: "/v1/audit/verify", retryable: true}, &out, opts)
	return result(&out, err)
}

// AuditCheckpoint reads the latest signed checkpoint and its public key
// (GET /v1/audit/checkpoint).
func (c *Client) AuditCheckpoint(ctx context.Context, opts ...CallOption) (*AuditCheckpoint, error) {
	var out AuditCheckpoint
	_, err := c.do(ctx, request{method: "GET", path: "/v1/audit/checkpoint", retryable: true}, &out, opts)
	return result(&out, err)
}

// WriteAuditCheckpoint writes a signed checkpoint now (POST /v1/audit/checkpoint). Not
// retried.
func (c *Client) WriteAuditCheckpoint(ctx context.Context, opts ...CallOption) (*AuditCheckpoint, error) {
	var out AuditCheckpoint
	_, err := c.do(ctx, request{method: "POST", path: "/v1/audit/checkpoint"}, &out, opts)
	return result(&out, err)
}
