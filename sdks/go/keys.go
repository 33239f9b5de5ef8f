package ferrohsm

import (
	"context"
	"iter"
	"net/url"
	"strconv"
)

// A key argument is a key's id (a canonical lowercase UUID) or its name.

// CreateKey creates a key (POST /v1/keys, 201). Never retried except on 429 with
// RetryPolicy.RateLimitedWrites.
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	_, err := c.do(ctx, request{method: "POST", path: "/v1/keys", body: req, hasBody: true}, &out, opts)
	return result(&out, err)
}

// DescribeKey reads a key's metadata (GET /v1/keys/{key}).
func (c *Client) DescribeKey(ctx context.Context, key string, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	_, err := c.do(ctx, request{method: "GET", path: "/v1/keys/" + seg(key), retryable: true}, &out, opts)
	return result(&out, err)
}

// ListKeysPage reads one page of keys, oldest first (GET /v1/keys). Keys lists every page.
func (c *Client) ListKeysPage(ctx context.Context, o ListKeysOptions, opts ...CallOption) (*KeyPage, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.Algorithm != "" {
		q.Set("algorithm", string(o.Algorithm))
	}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	for _, k := range sortedKeys(o.Tags) {
		q.Add("tag", k+":"+o.Tags[k])
	}
	if o.NamePrefix != "" {
		q.Set("name_prefix", o.NamePrefix)
	}
	var out KeyPage
	header, err := c.do(ctx, request{method: "GET", path: "/v1/keys", query: q, retryable: true}, &out, opts)
	if header != nil {
		out.ETag = header.Get("ETag")
	}
	return result(&out, err)
}

// Keys lists every key matching o, following next_cursor page by page (o.Limit is the page
// size). On an error it yields the error once and stops. Breaking out of the loop stops
// fetching.
func (c *Client) Keys(ctx context.Context, o ListKeysOptions, opts ...CallOption) iter.Seq2[KeyInfo, error] {
	return paginate(o.Cursor, func(cursor string) ([]KeyInfo, string, error) {
		o.Cursor = cursor
		page, err := c.ListKeysPage(ctx, o, opts...)
		if err != nil {
			return nil, "", err
		}
		return page.Keys, page.NextCursor, nil
	})
}

// RotateKey adds a version and makes it current (POST /v1/keys/{key}/rotate). Not retried.
func (c *Client) RotateKey(ctx context.Context, key string, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	_, err := c.do(ctx, request{method: "POST", path: "/v1/keys/" + seg(key) + "/rotate"}, &out, opts)
	return result(&out, err)
}

// RollbackKey makes another existing version current (POST /v1/keys/{key}/rollback). Not
// retried: a repeat could undo a rotation made in between.
func (c *Client) RollbackKey(ctx context.Context, key string, version uint32, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	body := struct {
		Version uint32 `json:"version"`
	}{version}
	_, err := c.do(ctx, request{method: "POST", path: "/v1/keys/" + seg(key) + "/rollback", body: body, hasBody: true}, &out, opts)
	return result(&out, err)
}

// RevokeKey revokes a key (POST /v1/keys/{key}/revoke). Not retried.
func (c *Client) RevokeKey(ctx context.Context, key string, req RevokeRequest, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	_, err := c.do(ctx, request{method: "POST", path: "/v1/keys/" + seg(key) + "/revoke", body: req, hasBody: true}, &out, opts)
	return result(&out, err)
}

// DestroyKey schedules destruction after a grace period (POST /v1/keys/{key}/destroy). Not
// retried.
func (c *Client) DestroyKey(ctx context.Context, key string, req DestroyRequest, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	r := request{method: "POST", path: "/v1/keys/" + seg(key) + "/destroy"}
	if req.GraceSeconds != nil {
		r.body, r.hasBody = req, true
	}
	_, err := c.do(ctx, r, &out, opts)
	return result(&out, err)
}

// CancelDestroy cancels a scheduled destruction (POST /v1/keys/{key}/cancel-destroy). Not
// retried.
func (c *Client) CancelDestroy(ctx context.Context, key string, opts ...CallOption) (*KeyInfo, error) {
	var out KeyInfo
	_, err := c.do(ctx, request{method: "POST", path: "/v1/keys/" + seg(key) + "/cancel-destroy"}, &out, opts)
	return result(&out, err)
}

// PublicKey exports a version's public key as PEM, DER and JWK (GET /v1/keys/{key}/public);
// version 0 means the current version.
func (c *Client) PublicKey(ctx context.Context, key string, version uint32, opts ...CallOption) (*PublicKeyInfo, error) {
	q := url.Values{}
	if version != 0 {
		q.Set("version", strconv.FormatUint(uint64(version), 10))
	}
	var out PublicKeyInfo
	_, err := c.do(ctx, request{method: "GET", path: "/v1/keys/" + seg(key) + "/public", query: q, retryable: true}, &out, opts)
	return result(&out, err)
}

// ----- Cryptographic operations ------------------------------------------------------------
//
// These are computations: repeating one has no effect beyond its own audit record (and, for
// encrypt, one more nonce of the version's budget), so they are retried on 429 and 503.

// Encrypt encrypts with the key's current version (AES-256-GCM).
func (c *Client) Encrypt(ctx context.Context, key string, req EncryptRequest, opts ...CallOption) (*Encrypted, error) {
	if req.Plaintext == nil {
		req.Plaintext = []byte{}
	}
	var out Encrypted
	_, err := c.do(ctx, c.crypto(key, "encrypt", req), &out, opts)
	return result(&out, err)
}

// Decrypt decrypts an fhsm:v<N>: ciphertext.
func (c *Client) Decrypt(ctx context.Context, key string, req DecryptRequest, opts ...CallOption) (*Decrypted, error) {
	var out Decrypted
	_, err := c.do(ctx, c.crypto(key, "decrypt", req), &out, opts)
	if err == nil && out.Plaintext == nil {
		out.Plaintext = []byte{}
	}
	return result(&out, err)
}

// Sign signs a message or a digest with the current version.
func (c *Client) Sign(ctx context.Context, key string, req SignRequest, opts ...CallOption) (*Signed, error) {
	var out Signed
	_, err := c.do(ctx, c.crypto(key, "sign", req), &out, opts)
	return result(&out, err)
}

// Verify checks a signature. An invalid signature is not an error: Valid is false.
func (c *Client) Verify(ctx context.Context, key string, req VerifyRequest, opts ...CallOption) (*Verified, error) {
	var out Verified
	_, err := c.do(ctx, c.crypto(key, "verify", req), &out, opts)
	return result(&out, err)
}

// Wrap wraps key material (RFC 5649) with the current version.
func (c *Client) Wrap(ctx context.Context, key string, req WrapRequest, opts ...CallOption) (*Wrapped, error) {
	if req.KeyMaterial == nil {
		req.KeyMaterial = []byte{}
	}
	var out Wrapped
	_, err := c.do(ctx, c.crypto(key, "wrap", req), &out, opts)
	return result(&out, err)
}

// Unwrap unwraps an fhsm:v<N>: wrapped key.
func (c *Client) Unwrap(ctx context.Context, key string, req UnwrapRequest, opts ...CallOption) (*Unwrapped, error) {
	var out Unwrapped
	_, err := c.do(ctx, c.crypto(key, "unwrap", req), &out, opts)
	return result(&out, err)
}

func (c *Client) crypto(key, op string, body any) request {
	return request{method: "POST", path: "/v1/keys/" + seg(key) + "/" + op, body: body, hasBody: true, retryable: true}
}

// result returns out unless err is set.
func result[T any](out *T, err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	return out, nil
}
