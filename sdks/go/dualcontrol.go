package ferrohsm

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ApprovalOption configures RunWithApproval and WaitForApproval.
type ApprovalOption func(*approvalConfig)

type approvalConfig struct {
	poll       time.Duration
	onRequired func(ctx context.Context, e *ApprovalRequiredError) error
	waiter     func(ctx context.Context, approval ApprovalInfo) error
	poller     *Client
}

// WithPollInterval sets how often the approval is read while it is pending (default 2 s).
func WithPollInterval(d time.Duration) ApprovalOption {
	return func(c *approvalConfig) { c.poll = d }
}

// OnApprovalRequired calls f once, when the server answers that the operation needs
// approval: tell the approvers (f receives the approval id and exactly what will run). An
// error from f stops RunWithApproval with that error.
func OnApprovalRequired(f func(ctx context.Context, e *ApprovalRequiredError) error) ApprovalOption {
	return func(c *approvalConfig) { c.onRequired = f }
}

// WithApprovalWaiter replaces polling: f must return nil once the approval has its votes
// (say, when a chat bot reports the second approval), or an error to give up. The repeat of
// the request then tells whether it really was approved.
func WithApprovalWaiter(f func(ctx context.Context, approval ApprovalInfo) error) ApprovalOption {
	return func(c *approvalConfig) { c.waiter = f }
}

// WithApprovalPoller reads the approval with another client while polling. Reading an
// approval needs the admin, operator or auditor role, so a service that asks for a
// dual-controlled operation polls through a client of another principal, or uses
// WithApprovalWaiter.
func WithApprovalPoller(c *Client) ApprovalOption {
	return func(cfg *approvalConfig) { cfg.poller = c }
}

// RunWithApproval runs a call that may be under dual control. If the server answers 202, it
// calls the OnApprovalRequired callback, waits until the approval is approved (polling it,
// or through WithApprovalWaiter), then repeats the call once with WithApprovalID. A denied
// or expired approval ends it with an *ApprovalClosedError. call must send the same request
// each time, and pass its opts on:
//
//	enc, err := ferrohsm.RunWithApproval(ctx, client,
//		func(ctx context.Context, opts ...ferrohsm.CallOption) (*ferrohsm.Encrypted, error) {
//			return client.Encrypt(ctx, "payroll", ferrohsm.EncryptRequest{Plaintext: data}, opts...)
//		})
func RunWithApproval[T any](ctx context.Context, c *Client, call func(ctx context.Context, opts ...CallOption) (T, error), opts ...ApprovalOption) (T, error) {
	cfg := approvalConfig{poll: 2 * time.Second, poller: c}
	for _, o := range opts {
		o(&cfg)
	}
	out, err := call(ctx)
	var required *ApprovalRequiredError
	if !errors.As(err, &required) {
		return out, err
	}
	var zero T
	if cfg.onRequired != nil {
		if err := cfg.onRequired(ctx, required); err != nil {
			return zero, err
		}
	}
	if cfg.waiter != nil {
		if err := cfg.waiter(ctx, required.Approval); err != nil {
			return zero, err
		}
	} else if _, err := waitForApproval(ctx, cfg.poller, required.ApprovalID, cfg.poll); err != nil {
		return zero, err
	}
	return call(ctx, WithApprovalID(required.ApprovalID))
}

// WaitForApproval polls an approval until it is approved, and returns it. A denied, expired
// or executed approval is an *ApprovalClosedError.
func (c *Client) WaitForApproval(ctx context.Context, id string, opts ...ApprovalOption) (*ApprovalInfo, error) {
	cfg := approvalConfig{poll: 2 * time.Second, poller: c}
	for _, o := range opts {
		o(&cfg)
	}
	return waitForApproval(ctx, cfg.poller, id, cfg.poll)
}

func waitForApproval(ctx context.Context, c *Client, id string, poll time.Duration) (*ApprovalInfo, error) {
	if poll <= 0 {
		poll = 2 * time.Second
	}
	for {
		a, err := c.DescribeApproval(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("ferrohsm: reading approval %s: %w", id, err)
		}
		switch a.State {
		case ApprovalApproved:
			return a, nil
		case ApprovalPending:
			if !a.ExpiresAt.IsZero() && time.Now().After(a.ExpiresAt) {
				return nil, &ApprovalClosedError{Approval: *a, Expired: true}
			}
		default:
			return nil, &ApprovalClosedError{Approval: *a}
		}
		timer := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("ferrohsm: waiting for approval %s (%d of %d): %w", id, a.Approvals, a.Quorum, context.Cause(ctx))
		case <-timer.C:
		}
	}
}
