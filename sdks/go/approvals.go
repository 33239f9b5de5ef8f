package ferrohsm

import (
	"context"
	"iter"
	"net/url"
	"strconv"
)

// ListApprovalsPage reads approvals, newest first (GET /v1/approvals).
func (c *Client) ListApprovalsPage(ctx context.Context, o ListApprovalsOptions, cursor string, opts ...CallOption) (*ApprovalPage, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out ApprovalPage
	_, err := c.do(ctx, request{method: "GET", path: "/v1/approvals", query: q, retryable: true}, &out, opts)
	return result(&out, err)
}

// Approvals lists approvals, newest first. Today's servers answer one page of at most
// o.Limit approvals (default 100, at most 1000) without a cursor, so that page is all this
// yields; when a server sends next_cursor, the iterator follows it.
func (c *Client) Approvals(ctx context.Context, o ListApprovalsOptions, opts ...CallOption) iter.Seq2[ApprovalInfo, error] {
	return paginate("", func(cursor string) ([]ApprovalInfo, string, error) {
		page, err := c.ListApprovalsPage(ctx, o, cursor, opts...)
		if err != nil {
			return nil, "", err
		}
		return page.Approvals, page.NextCursor, nil
	})
}

// DescribeApproval reads one approval (GET /v1/approvals/{id}).
func (c *Client) DescribeApproval(ctx context.Context, id string, opts ...CallOption) (*ApprovalInfo, error) {
	var out ApprovalInfo
	_, err := c.do(ctx, request{method: "GET", path: "/v1/approvals/" + seg(id), retryable: true}, &out, opts)
	return result(&out, err)
}

// Approve votes for a pending approval (POST /v1/approvals/{id}/approve); comment is
// optional. Not retried: a repeated vote is refused (409) even when the first one counted.
func (c *Client) Approve(ctx context.Context, id, comment string, opts ...CallOption) (*ApprovalInfo, error) {
	return c.vote(ctx, id, "approve", comment, opts)
}

// Deny votes against a pending approval (POST /v1/approvals/{id}/deny), which rejects it.
// Not retried.
func (c *Client) Deny(ctx context.Context, id, comment string, opts ...CallOption) (*ApprovalInfo, error) {
	return c.vote(ctx, id, "deny", comment, opts)
}

func (c *Client) vote(ctx context.Context, id, verb, comment string, opts []CallOption) (*ApprovalInfo, error) {
	r := request{method: "POST", path: "/v1/approvals/" + seg(id) + "/" + verb}
	if comment != "" {
		r.body = struct {
			Comment string `json:"comment"`
		}{comment}
		r.hasBody = true
	}
	var out ApprovalInfo
	_, err := c.do(ctx, r, &out, opts)
	return result(&out, err)
}
