package ferrohsm

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Algorithm is a key algorithm.
type Algorithm string

// The algorithms a server knows today. A newer server may answer with others; they parse as
// their string.
const (
	AlgorithmAES256GCM Algorithm = "aes-256-gcm"
	AlgorithmRSA2048   Algorithm = "rsa-2048"
	AlgorithmRSA3072   Algorithm = "rsa-3072"
	AlgorithmRSA4096   Algorithm = "rsa-4096"
	AlgorithmECP256    Algorithm = "ec-p256"
	AlgorithmECP384    Algorithm = "ec-p384"
	AlgorithmEd25519   Algorithm = "ed25519"
	AlgorithmMLDSA44   Algorithm = "ml-dsa-44"
	AlgorithmMLDSA65   Algorithm = "ml-dsa-65"
	AlgorithmMLDSA87   Algorithm = "ml-dsa-87"
)

// Usage is what a key may be used for.
type Usage string

// Key usages.
const (
	UsageEncrypt Usage = "encrypt"
	UsageDecrypt Usage = "decrypt"
	UsageSign    Usage = "sign"
	UsageVerify  Usage = "verify"
	UsageWrap    Usage = "wrap"
	UsageUnwrap  Usage = "unwrap"
)

// KeyState is a key's lifecycle state.
type KeyState string

// Key states.
const (
	KeyStateActive             KeyState = "active"
	KeyStateRevoked            KeyState = "revoked"
	KeyStatePendingDestruction KeyState = "pending_destruction"
	KeyStateDestroyed          KeyState = "destroyed"
)

// Custody is where a key's material is kept.
type Custody string

// Custodies. A newer server may answer with others; they parse as their string. A KeyInfo
// from a server that does not say reads as [CustodySealed].
const (
	// CustodySealed is sealed under the master key in the server's own store.
	CustodySealed Custody = "sealed"
	// CustodyPKCS11 is generated and used inside the server's PKCS#11 token, never exported.
	CustodyPKCS11 Custody = "pkcs11"
)

// VersionState says whether a key version's material exists.
type VersionState string

// Version states.
const (
	VersionStateActive    VersionState = "active"
	VersionStateDestroyed VersionState = "destroyed"
)

// SignatureScheme is a complete signature scheme (padding, hash and curve).
type SignatureScheme string

// Signature schemes.
const (
	SchemeRSAPKCS1SHA256  SignatureScheme = "rsa-pkcs1-sha256"
	SchemeRSAPKCS1SHA384  SignatureScheme = "rsa-pkcs1-sha384"
	SchemeRSAPKCS1SHA512  SignatureScheme = "rsa-pkcs1-sha512"
	SchemeRSAPSSSHA256    SignatureScheme = "rsa-pss-sha256"
	SchemeRSAPSSSHA384    SignatureScheme = "rsa-pss-sha384"
	SchemeRSAPSSSHA512    SignatureScheme = "rsa-pss-sha512"
	SchemeECDSAP256SHA256 SignatureScheme = "ecdsa-p256-sha256"
	SchemeECDSAP384SHA384 SignatureScheme = "ecdsa-p384-sha384"
	SchemeEd25519         SignatureScheme = "ed25519"
	SchemeMLDSA44         SignatureScheme = "ml-dsa-44"
	SchemeMLDSA65         SignatureScheme = "ml-dsa-65"
	SchemeMLDSA87         SignatureScheme = "ml-dsa-87"
)

// RevocationReason says why a key was revoked.
type RevocationReason string

// Revocation reasons. Only [RevocationCompromised] refuses all further use.
const (
	RevocationUnspecified          RevocationReason = "unspecified"
	RevocationCompromised          RevocationReason = "compromised"
	RevocationSuperseded           RevocationReason = "superseded"
	RevocationCessationOfOperation RevocationReason = "cessation_of_operation"
	RevocationPrivilegeWithdrawn   RevocationReason = "privilege_withdrawn"
)

// ApprovalState is the state of a dual-control approval.
type ApprovalState string

// Approval states.
const (
	ApprovalPending  ApprovalState = "pending"
	ApprovalApproved ApprovalState = "approved"
	ApprovalDenied   ApprovalState = "denied"
	ApprovalExpired  ApprovalState = "expired"
	ApprovalExecuted ApprovalState = "executed"
)

// Role is a caller's role.
type Role string

// Roles.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleAuditor  Role = "auditor"
	RoleService  Role = "service"
)

// AuditOutcome is how an audited operation ended.
type AuditOutcome string

// Audit outcomes.
const (
	OutcomeSuccess AuditOutcome = "success"
	OutcomeDenied  AuditOutcome = "denied"
	OutcomeError   AuditOutcome = "error"
)

// ----- Keys ---------------------------------------------------------------------------------

// CreateKeyRequest is the body of POST /v1/keys.
type CreateKeyRequest struct {
	// Name is an optional unique name ([a-z0-9][a-z0-9._-]{0,127}).
	Name string `json:"name,omitempty"`
	// Description is free text, up to 1024 characters.
	Description string `json:"description,omitempty"`
	// Algorithm is required.
	Algorithm Algorithm `json:"algorithm"`
	// Usages narrows what the key may do; every usage its algorithm allows when empty.
	Usages []Usage `json:"usages,omitempty"`
	// Tags are the policy tags.
	Tags map[string]string `json:"tags,omitempty"`
	// Custody is where the material is kept ([CustodyPKCS11] needs a server with a PKCS#11
	// token); the server's default when empty.
	Custody Custody `json:"custody,omitempty"`
}

// KeyInfo is a key's metadata (never its material).
type KeyInfo struct {
	ID string `json:"id"`
	// Name is empty for an unnamed key.
	Name           string            `json:"name,omitempty"`
	Description    string            `json:"description"`
	Algorithm      Algorithm         `json:"algorithm"`
	Usages         []Usage           `json:"usages"`
	Tags           map[string]string `json:"tags"`
	State          KeyState          `json:"state"`
	Revocation     *Revocation       `json:"revocation"`
	DestroyAfter   *time.Time        `json:"destroy_after"`
	DestroyedAt    *time.Time        `json:"destroyed_at"`
	CurrentVersion uint32            `json:"current_version"`
	Versions       []VersionInfo     `json:"versions"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	CreatedBy      string            `json:"created_by"`
	// Custody is where the material is kept; [CustodySealed] when the server does not say.
	Custody Custody `json:"custody"`
}

// UnmarshalJSON reads a KeyInfo, with Custody [CustodySealed] when the server sends none.
func (k *KeyInfo) UnmarshalJSON(data []byte) error {
	type plain KeyInfo
	v := plain{Custody: CustodySealed}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*k = KeyInfo(v)
	return nil
}

// Revocation records why and when a key was revoked.
type Revocation struct {
	Reason RevocationReason `json:"reason"`
	// Comment is empty when none was given.
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
}

// VersionInfo is one key version's metadata.
type VersionInfo struct {
	Version   uint32       `json:"version"`
	CreatedAt time.Time    `json:"created_at"`
	State     VersionState `json:"state"`
	// Encryptions is how many AES-GCM encryptions this version has used or reserved.
	Encryptions uint64 `json:"encryptions"`
}

// KeyPage is one page of GET /v1/keys.
type KeyPage struct {
	Keys []KeyInfo `json:"keys"`
	// NextCursor is empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
	// ETag is the page's ETag header; pass it to [WithIfNoneMatch] to ask whether it changed.
	ETag string `json:"-"`
}

// ListKeysOptions filters GET /v1/keys.
type ListKeysOptions struct {
	// Limit is the page size (server default 100, at most 1000).
	Limit int
	// Cursor starts after an earlier page (its NextCursor). Iterators set it themselves.
	Cursor    string
	Algorithm Algorithm
	State     KeyState
	// Tags keeps keys that carry every one of these tags.
	Tags       map[string]string
	NamePrefix string
}

// RevokeRequest is the body of POST /v1/keys/{key}/revoke.
type RevokeRequest struct {
	Reason  RevocationReason `json:"reason"`
	Comment string           `json:"comment,omitempty"`
}

// DestroyRequest is the body of POST /v1/keys/{key}/destroy.
type DestroyRequest struct {
	// GraceSeconds is the grace period before the key may be purged; the policy's or the
	// server's default (24 hours) when nil.
	GraceSeconds *int64 `json:"grace_seconds,omitempty"`
}

// ----- Cryptographic operations ------------------------------------------------------------

// EncryptRequest is the body of POST /v1/keys/{key}/encrypt.
type EncryptRequest struct {
	Plaintext []byte `json:"plaintext"`
	// AAD is associated data bound to the ciphertext; decrypt needs the same.
	AAD []byte `json:"aad,omitempty"`
}

// Encrypted is the result of an encryption.
type Encrypted struct {
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
	// Ciphertext is fhsm:v<version>:<base64(nonce || ciphertext || tag)>.
	Ciphertext string `json:"ciphertext"`
}

// DecryptRequest is the body of POST /v1/keys/{key}/decrypt.
type DecryptRequest struct {
	Ciphertext string `json:"ciphertext"`
	AAD        []byte `json:"aad,omitempty"`
}

// Decrypted is the result of a decryption.
type Decrypted struct {
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
	Plaintext  []byte `json:"plaintext"`
}

// SignRequest is the body of POST /v1/keys/{key}/sign: exactly one of Message and Digest must
// be non-nil (an empty, non-nil Message signs the empty message).
type SignRequest struct {
	// Message is hashed by the server.
	Message []byte
	// Digest is a pre-computed digest (not for Ed25519 or ML-DSA).
	Digest []byte
	// Algorithm is the scheme; the key's default when empty.
	Algorithm SignatureScheme
}

// MarshalJSON keeps a non-nil empty Message or Digest, which omitempty would drop.
func (r SignRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Message   *string         `json:"message,omitempty"`
		Digest    *string         `json:"digest,omitempty"`
		Algorithm SignatureScheme `json:"algorithm,omitempty"`
	}{b64ptr(r.Message), b64ptr(r.Digest), r.Algorithm})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (r *SignRequest) UnmarshalJSON(data []byte) error {
	var raw struct {
		Message   *[]byte         `json:"message"`
		Digest    *[]byte         `json:"digest"`
		Algorithm SignatureScheme `json:"algorithm"`
	}
	if err := unmarshalStrict(data, &raw); err != nil {
		return err
	}
	*r = SignRequest{Message: derefBytes(raw.Message), Digest: derefBytes(raw.Digest), Algorithm: raw.Algorithm}
	return nil
}

// Signed is the result of signing.
type Signed struct {
	KeyID      string          `json:"key_id"`
	KeyVersion uint32          `json:"key_version"`
	Algorithm  SignatureScheme `json:"algorithm"`
	// Signature is DER for ECDSA, raw for RSA, Ed25519 and ML-DSA.
	Signature []byte `json:"signature"`
}

// VerifyRequest is the body of POST /v1/keys/{key}/verify: exactly one of Message and Digest
// must be non-nil.
type VerifyRequest struct {
	Message   []byte
	Digest    []byte
	Signature []byte
	// Algorithm is the scheme; the key's default when empty.
	Algorithm SignatureScheme
	// KeyVersion is the version to verify with; the current version when 0.
	KeyVersion uint32
}

// MarshalJSON keeps a non-nil empty Message or Digest, which omitempty would drop.
func (r VerifyRequest) MarshalJSON() ([]byte, error) {
	sig := r.Signature
	if sig == nil {
		sig = []byte{}
	}
	return json.Marshal(struct {
		Message    *string         `json:"message,omitempty"`
		Digest     *string         `json:"digest,omitempty"`
		Signature  []byte          `json:"signature"`
		Algorithm  SignatureScheme `json:"algorithm,omitempty"`
		KeyVersion uint32          `json:"key_version,omitempty"`
	}{b64ptr(r.Message), b64ptr(r.Digest), sig, r.Algorithm, r.KeyVersion})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (r *VerifyRequest) UnmarshalJSON(data []byte) error {
	var raw struct {
		Message    *[]byte         `json:"message"`
		Digest     *[]byte         `json:"digest"`
		Signature  []byte          `json:"signature"`
		Algorithm  SignatureScheme `json:"algorithm"`
		KeyVersion uint32          `json:"key_version"`
	}
	if err := unmarshalStrict(data, &raw); err != nil {
		return err
	}
	*r = VerifyRequest{
		Message: derefBytes(raw.Message), Digest: derefBytes(raw.Digest), Signature: raw.Signature,
		Algorithm: raw.Algorithm, KeyVersion: raw.KeyVersion,
	}
	return nil
}

// Verified is the result of a verification.
type Verified struct {
	KeyID      string          `json:"key_id"`
	KeyVersion uint32          `json:"key_version"`
	Algorithm  SignatureScheme `json:"algorithm"`
	Valid      bool            `json:"valid"`
}

// WrapRequest is the body of POST /v1/keys/{key}/wrap.
type WrapRequest struct {
	KeyMaterial []byte `json:"key_material"`
}

// Wrapped is the result of wrapping key material (RFC 5649).
type Wrapped struct {
	KeyID      string `json:"key_id"`
	KeyVersion uint32 `json:"key_version"`
	// Wrapped is fhsm:v<version>:<base64(RFC 5649 wrapping)>.
	Wrapped string `json:"wrapped"`
}

// UnwrapRequest is the body of POST /v1/keys/{key}/unwrap.
type UnwrapRequest struct {
	Wrapped string `json:"wrapped"`
}

// Unwrapped is the result of unwrapping.
type Unwrapped struct {
	KeyID       string `json:"key_id"`
	KeyVersion  uint32 `json:"key_version"`
	KeyMaterial []byte `json:"key_material"`
}

// PublicKeyInfo is a version's public key.
type PublicKeyInfo struct {
	KeyID      string    `json:"key_id"`
	KeyVersion uint32    `json:"key_version"`
	Algorithm  Algorithm `json:"algorithm"`
	// PEM is the SubjectPublicKeyInfo as PEM (-----BEGIN PUBLIC KEY-----).
	PEM string `json:"pem"`
	// DER is the SubjectPublicKeyInfo DER.
	DER []byte `json:"der"`
	// JWK is set for algorithms JOSE defines (RSA, EC, Ed25519).
	JWK *JWK `json:"jwk,omitempty"`
}

// JWK is a public key as a JSON Web Key (base64url members without padding).
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// JWKSet is /.well-known/jwks.json.
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

// ----- Approvals -----------------------------------------------------------------------------

// ApprovalInfo is a dual-control approval request.
type ApprovalInfo struct {
	ID        string `json:"id"`
	Operation string `json:"operation"`
	// KeyID is empty for operations on no key.
	KeyID             string   `json:"key_id"`
	Requester         string   `json:"requester"`
	RequesterIdentity []string `json:"requester_identity"`
	// Parameters lists exactly what will run, in order.
	Parameters         []ApprovalParameter `json:"parameters"`
	Summary            string              `json:"summary"`
	Policy             string              `json:"policy"`
	Quorum             uint32              `json:"quorum"`
	Approvals          uint32              `json:"approvals"`
	ApproverRoles      []Role              `json:"approver_roles"`
	ApproverIssuers    []string            `json:"approver_issuers"`
	RequireCertificate bool                `json:"require_certificate"`
	State              ApprovalState       `json:"state"`
	Votes              []Vote              `json:"votes"`
	CreatedAt          time.Time           `json:"created_at"`
	ExpiresAt          time.Time           `json:"expires_at"`
	ExecutedAt         *time.Time          `json:"executed_at"`
}

// ApprovalParameter is one named parameter of an approval.
type ApprovalParameter struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Vote is one vote on an approval.
type Vote struct {
	Actor    string    `json:"actor"`
	Source   string    `json:"source"`
	Identity []string  `json:"identity"`
	Approve  bool      `json:"approve"`
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
}

// ApprovalPage is one page of GET /v1/approvals, newest first.
type ApprovalPage struct {
	Approvals []ApprovalInfo `json:"approvals"`
	// NextCursor is empty on the last page. Servers up to this SDK's version send a single
	// page (of at most ListApprovalsOptions.Limit approvals) and no cursor.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ListApprovalsOptions are the parameters of GET /v1/approvals.
type ListApprovalsOptions struct {
	// Limit is at most this many approvals (server default 100, at most 1000).
	Limit int
}

// ----- Audit -----------------------------------------------------------------------------------

// AuditQuery filters GET /v1/audit.
type AuditQuery struct {
	// Limit is the page size (server default 100, at most 1000).
	Limit int
	// Cursor starts after an earlier page (its NextCursor). Iterators set it themselves.
	Cursor    string
	Actor     string
	Action    string
	KeyID     string
	Outcome   AuditOutcome
	RequestID string
	// Since keeps records written at or after this time (zero: no bound).
	Since time.Time
	// Until keeps records written before this time (zero: no bound).
	Until time.Time
}

// AuditRecord is one record of the audit log, as it appears in the log.
type AuditRecord struct {
	Type string `json:"type"`
	V    int    `json:"v"`
	Seq  uint64 `json:"seq"`
	ID   string `json:"id"`
	// TS is the time exactly as hashed (RFC 3339 UTC); Time parses it.
	TS         string `json:"ts"`
	Actor      string `json:"actor"`
	Action     string `json:"action"`
	KeyID      string `json:"key_id,omitempty"`
	KeyVersion uint32 `json:"key_version,omitempty"`
	// Outcome is success, denied or error.
	Outcome           AuditOutcome `json:"outcome"`
	RequestID         string       `json:"request_id"`
	Session           string       `json:"session,omitempty"`
	ClientFingerprint string       `json:"client_fingerprint,omitempty"`
	SourceIP          string       `json:"source_ip,omitempty"`
	Message           string       `json:"message,omitempty"`
	PrevHash          string       `json:"prev_hash"`
	Hash              string       `json:"hash"`
	HMAC              string       `json:"hmac"`
}

// Time parses TS.
func (r AuditRecord) Time() (time.Time, error) {
	return time.Parse(time.RFC3339Nano, r.TS)
}

// AuditPage is one page of GET /v1/audit, oldest first.
type AuditPage struct {
	Records []AuditRecord `json:"records"`
	// NextCursor is empty when no more records matched.
	NextCursor string `json:"next_cursor,omitempty"`
}

// AuditVerification is the result of GET /v1/audit/verify.
type AuditVerification struct {
	Valid             bool    `json:"valid"`
	Records           uint64  `json:"records"`
	SignaturesChecked uint64  `json:"signatures_checked"`
	FirstSeq          *uint64 `json:"first_seq"`
	LastSeq           *uint64 `json:"last_seq"`
	// Partial says the log is an excerpt (a memory sink keeps only recent records).
	Partial bool `json:"partial"`
	// Failure names the first problem found; empty when valid.
	Failure string `json:"failure,omitempty"`
}

// AuditCheckpoint is GET or POST /v1/audit/checkpoint.
type AuditCheckpoint struct {
	// Checkpoint is the signed checkpoint as the server sends it (null before the first one).
	Checkpoint json.RawMessage `json:"checkpoint"`
	// PublicKeyPEM is the Ed25519 key that signs checkpoints.
	PublicKeyPEM string `json:"public_key_pem"`
}

// ----- Tokens and health ------------------------------------------------------------------

// TokenRequest is the body of POST /v1/auth/token (admin).
type TokenRequest struct {
	Sub        string `json:"sub"`
	Roles      []Role `json:"roles"`
	TTLSeconds uint64 `json:"ttl_seconds,omitempty"`
	// CertSHA256 binds the token to a client certificate (its SHA-256, hex).
	CertSHA256 string `json:"cert_sha256,omitempty"`
}

// TokenResponse is an issued token.
type TokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Kid       string    `json:"kid"`
	Jti       string    `json:"jti"`
	Sid       string    `json:"sid"`
}

// RevokeTokenRequest is the body of POST /v1/auth/revoke: exactly one of Jti and Sid.
type RevokeTokenRequest struct {
	Jti    string `json:"jti,omitempty"`
	Sid    string `json:"sid,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// TokenRevocation is a token revocation in force.
type TokenRevocation struct {
	Matches   string    `json:"matches"`
	Value     string    `json:"value"`
	Reason    string    `json:"reason,omitempty"`
	RevokedBy string    `json:"revoked_by"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Health is GET /healthz. Vault, the key vault (a PKCS#11 token), is nil unless the server has
// one configured; while it is failing, Status is degraded. TLS is the served certificate's
// expiry and, in ACME mode, its renewal: its Status is error while renewals fail (the server
// stays ok) or when no unexpired certificate is served (the server is then degraded); nil from
// servers older than this field.
type Health struct {
	// Status is ok or degraded.
	Status  string           `json:"status"`
	Version string           `json:"version"`
	Store   ComponentHealth  `json:"store"`
	Audit   ComponentHealth  `json:"audit"`
	Seal    ComponentHealth  `json:"seal"`
	Policy  ComponentHealth  `json:"policy"`
	Keyset  *ComponentHealth `json:"keyset,omitempty"`
	Jobs    *ComponentHealth `json:"jobs,omitempty"`
	Vault   *ComponentHealth `json:"vault,omitempty"`
	TLS     *ComponentHealth `json:"tls,omitempty"`
}

// ComponentHealth is one component's health.
type ComponentHealth struct {
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// ----- helpers ---------------------------------------------------------------------------------

func b64ptr(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

func derefBytes(p *[]byte) []byte {
	if p == nil {
		return nil
	}
	if *p == nil {
		return []byte{}
	}
	return *p
}

func unmarshalStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
