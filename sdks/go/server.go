package ferrohsm

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Health reads /healthz (no token needed). A server that is not healthy answers 503 with the
// same body: Health then returns that body and an *APIError matching ErrUnavailable.
func (c *Client) Health(ctx context.Context, opts ...CallOption) (*Health, error) {
	var out Health
	_, err := c.do(ctx, request{method: "GET", path: "/healthz"}, &out, opts)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable {
		if json.Unmarshal(apiErr.body, &out) == nil && out.Status != "" {
			return &out, &APIError{StatusCode: apiErr.StatusCode, Code: CodeUnavailable,
				Message: "the server is " + out.Status, RequestID: apiErr.RequestID}
		}
	}
	return result(&out, err)
}

// JWKS reads the public key the server signs its tokens with (/.well-known/jwks.json).
func (c *Client) JWKS(ctx context.Context, opts ...CallOption) (*JWKSet, error) {
	var out JWKSet
	_, err := c.do(ctx, request{method: "GET", path: "/.well-known/jwks.json", retryable: true}, &out, opts)
	return result(&out, err)
}

// IssueToken issues a token signed by the server's token key (POST /v1/auth/token; admin).
// Not retried.
func (c *Client) IssueToken(ctx context.Context, req TokenRequest, opts ...CallOption) (*TokenResponse, error) {
	var out TokenResponse
	_, err := c.do(ctx, request{method: "POST", path: "/v1/auth/token", body: req, hasBody: true}, &out, opts)
	return result(&out, err)
}

// RevokeToken revokes a token by jti, or every token of a session by sid
// (POST /v1/auth/revoke; admin). Not retried.
func (c *Client) RevokeToken(ctx context.Context, req RevokeTokenRequest, opts ...CallOption) (*TokenRevocation, error) {
	var out TokenRevocation
	_, err := c.do(ctx, request{method: "POST", path: "/v1/auth/revoke", body: req, hasBody: true}, &out, opts)
	return result(&out, err)
}
