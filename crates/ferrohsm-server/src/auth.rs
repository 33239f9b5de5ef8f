//! Bearer-token authentication (SPEC §7): JWT keysets from a file, reloaded when it changes,
//! plus the HSM's own token key; and minting tokens with that key.
//!
//! The algorithm of a token is the one its keyset entry names: the token's `alg` header must
//! equal it, so `none` and RS/HS confusion are refused before any signature check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrohsm_core::{Hsm, Principal, Role, TokenKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How far a token's `exp` and `nbf` may be off the server's clock.
pub const CLOCK_SKEW_SECONDS: u64 = 30;
/// The default longest lifetime of a token the server issues or accepts.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 86_400;
/// Identity-source names the server gives its own tokens; no keyset issuer may take them.
pub const RESERVED_ISSUERS: &[&str] = &["bootstrap", "minted", "local"];

/// A keyset file entry (TOML `[[key]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    kid: String,
    algorithm: String,
    issuer: String,
    /// The roles tokens of this issuer may grant; a token claiming another is refused.
    roles: Vec<String>,
    /// HS256: the secret, base64, at least 32 bytes decoded.
    #[serde(default)]
    secret: Option<String>,
    /// RS256/ES256/ES384/EdDSA: the public key, PEM.
    #[serde(default)]
    public_key: Option<String>,
    /// Or a file holding that PEM (relative to the keyset file).
    #[serde(default)]
    public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysetFile {
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

/// One accepted signing key.
struct Accepted {
    algorithm: Algorithm,
    issuer: String,
    /// The roles its tokens may grant (`None`: the server's own key, any role).
    roles: Option<Vec<String>>,
    key: DecodingKey,
}

/// Why a keyset file was refused.
#[derive(Debug, thiserror::Error)]
#[error("keyset {path}: {message}")]
pub struct KeysetError {
    path: String,
    message: String,
}

/// Checks a keyset file's text as the server would load it (keys given as files are looked
/// up in the current directory); the number of keys. For tools and fuzzing.
pub fn check_keyset(text: &str, own_issuer: &str) -> Result<usize, KeysetError> {
    parse_keyset(Path::new("keyset.toml"), text, own_issuer).map(|k| k.len())
}

fn load_keyset(path: &Path, own_issuer: &str) -> Result<HashMap<String, Accepted>, KeysetError> {
    let fail = |message: String| KeysetError { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    parse_keyset(path, &text, own_issuer)
}

fn parse_keyset(
    path: &Path,
    text: &str,
    own_issuer: &str,
) -> Result<HashMap<String, Accepted>, KeysetError> {
    let fail = |message: String| KeysetError { path: path.display().to_string(), message };
    let file: KeysetFile = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
    let mut keys = HashMap::new();
    for entry in file.keys {
        let kid = entry.kid.clone();
        let fail_key = |m: String| fail(format!("key {kid:?}: {m}"));
        let pem = match (&entry.public_key, &entry.public_key_file) {
            (Some(p), None) => Some(p.clone().into_bytes()),
            (None, Some(f)) => {
                let f = path.parent().map_or_else(|| f.clone(), |dir| dir.join(f));
                Some(std::fs::read(&f).map_err(|e| fail_key(format!("{}: {e}", f.display())))?)
            }
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(fail_key("give public_key or public_key_file, not both".into()));
            }
        };
        let need_pem = || pem.clone().ok_or_else(|| fail_key("needs a public key".into()));
        let (algorithm, key) = match entry.algorithm.as_str() {
            "HS256" => {
                let secret =
                    entry.secret.as_deref().ok_or_else(|| fail_key("needs a secret".into()))?;
                let bytes = Zeroizing::new(
                    ferrohsm_core::b64::decode(secret)
                        .map_err(|_| fail_key("the secret is not base64".into()))?,
                );
                if bytes.len() < 32 {
                    return Err(fail_key("an HS256 secret must be at least 32 bytes".into()));
                }
                (Algorithm::HS256, DecodingKey::from_secret(&bytes))
            }
            name @ ("RS256" | "ES256" | "ES384" | "EdDSA") => {
                let pem = need_pem()?;
                let (algorithm, key) = match name {
                    "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                    "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
                    "ES384" => (Algorithm::ES384, DecodingKey::from_ec_pem(&pem)),
                    _ => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
                };
                (algorithm, key.map_err(|e| fail_key(e.to_string()))?)
            }
            other => {
                return Err(fail_key(format!(
                    "unsupported algorithm {other:?} (HS256, RS256, ES256, ES384, EdDSA)"
                )));
            }
        };
        if algorithm != Algorithm::HS256 && entry.secret.is_some() {
            return Err(fail_key("only HS256 keys take a secret".into()));
        }
        if entry.issuer == own_issuer || RESERVED_ISSUERS.contains(&entry.issuer.as_str()) {
            return Err(fail_key(format!(
                "the issuer {:?} is the server's own or reserved ({}); name the identity provider",
                entry.issuer,
                RESERVED_ISSUERS.join(", ")
            )));
        }
        if entry.issuer.is_empty() {
            return Err(fail_key("the issuer cannot be empty".into()));
        }
        if let Some(role) =
            entry.roles.iter().find(|r| !Role::ALL.iter().any(|known| known.as_str() == *r))
        {
            return Err(fail_key(format!("unknown role {role:?} in roles")));
        }
        let accepted = Accepted { algorithm, issuer: entry.issuer, roles: Some(entry.roles), key };
        if keys.insert(entry.kid, accepted).is_some() {
            return Err(fail(format!("duplicate kid {kid:?}")));
        }
    }
    Ok(keys)
}

/// The claims FerroHSM reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The actor.
    pub sub: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The issuer.
    pub iss: String,
    /// The audience: one string or a list (RFC 7519 allows both).
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Confirmation: binds the token to a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The token id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Who minted the token through the API, the root first (only in tokens the server
    /// signs; taken from the minter's credential, never from the request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minted_by: Vec<Principal>,
}

/// The `aud` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The `cnf` claim (RFC 8705).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url SHA-256 of the client certificate (DER).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Why a token was refused (for logs, metrics and audit records; clients only see 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a well-formed JWT.
    Malformed,
    /// `kid` names no configured key.
    UnknownKey,
    /// `alg` differs from the key's algorithm.
    WrongAlgorithm,
    /// The signature does not verify.
    BadSignature,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// Wrong `iss` for the key.
    WrongIssuer,
    /// Wrong `aud`.
    WrongAudience,
    /// A required claim is missing.
    MissingClaim,
    /// Bound to a certificate the connection did not present.
    CertificateMismatch,
    /// Claims a role its issuer may not grant.
    RoleNotGranted,
    /// Lives longer than the maximum token lifetime.
    LifetimeTooLong,
    /// Revoked by `jti` or `sid`.
    Revoked,
}

impl AuthFailure {
    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::Malformed => "malformed_token",
            AuthFailure::UnknownKey => "unknown_kid",
            AuthFailure::WrongAlgorithm => "wrong_algorithm",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::CertificateMismatch => "certificate_mismatch",
            AuthFailure::RoleNotGranted => "role_not_granted",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::Revoked => "revoked",
        }
    }
}

struct Keyset {
    keys: HashMap<String, Accepted>,
    modified: Option<SystemTime>,
}

/// How many verified tokens are remembered (their signatures are not checked again).
const TOKEN_CACHE_ENTRIES: usize = 10_000;

/// Checks bearer tokens against the configured keysets and the HSM's own token key.
///
/// A token whose signature and claims verified is remembered (by its SHA-256) until it
/// expires, so a client reusing its token costs one hash, not one signature check, per
/// request. Time-based claims and the certificate binding are checked on every use, and the
/// cache is emptied whenever the keyset changes, so a removed key stops working at once.
pub struct Authenticator {
    audience: String,
    issuer: String,
    max_lifetime: u64,
    file: Option<PathBuf>,
    keyset: RwLock<Arc<Keyset>>,
    own_kid: String,
    own: Accepted,
    verified: std::sync::Mutex<TokenCache>,
    /// When the keyset in force was loaded, and why the file was last refused (until it loads).
    status: RwLock<(OffsetDateTime, Option<String>)>,
}

/// Verified tokens by SHA-256. The generation changes with every keyset reload, so a
/// verification that began under the previous keyset cannot insert into the new cache.
#[derive(Default)]
struct TokenCache {
    generation: u64,
    entries: HashMap<[u8; 32], Arc<VerifiedToken>>,
}

/// A token whose signature and claims verified.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: Claims,
    /// Whether the server's own token key signed it (else a keyset key did).
    pub own: bool,
}

impl VerifiedToken {
    /// Where the identity comes from: the keyset issuer, or `bootstrap` / `minted` for the
    /// server's own tokens (minted through the API when they carry a mint chain).
    pub fn identity_source(&self) -> &str {
        match (self.own, self.claims.minted_by.is_empty()) {
            (false, _) => &self.claims.iss,
            (true, true) => "bootstrap",
            (true, false) => "minted",
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Accepts tokens for `audience` signed by the HSM's token key (issuer `issuer`) or by a
    /// key of the keyset file.
    pub fn new(
        hsm: &Hsm,
        issuer: &str,
        audience: &str,
        keyset_file: Option<PathBuf>,
    ) -> Result<Self, KeysetError> {
        let max_lifetime = u64::try_from(hsm.max_token_lifetime().whole_seconds()).unwrap_or(0);
        let key = hsm.token_key();
        let x = URL_SAFE_NO_PAD.encode(key.public_key());
        let own = Accepted {
            algorithm: Algorithm::EdDSA,
            issuer: issuer.to_owned(),
            roles: None,
            key: DecodingKey::from_ed_components(&x)
                .map_err(|e| KeysetError { path: "token key".into(), message: e.to_string() })?,
        };
        let keyset = match &keyset_file {
            Some(path) => Keyset { keys: load_keyset(path, issuer)?, modified: modified(path) },
            None => Keyset { keys: HashMap::new(), modified: None },
        };
        Ok(Authenticator {
            audience: audience.to_owned(),
            issuer: issuer.to_owned(),
            max_lifetime,
            file: keyset_file,
            keyset: RwLock::new(Arc::new(keyset)),
            own_kid: key.kid().to_owned(),
            own,
            verified: std::sync::Mutex::new(TokenCache::default()),
            status: RwLock::new((OffsetDateTime::now_utc(), None)),
        })
    }

    /// Reloads the keyset file if it changed. On error the previous keyset stays in force.
    pub fn reload_if_changed(&self) -> Result<bool, KeysetError> {
        let Some(path) = &self.file else { return Ok(false) };
        let now = modified(path);
        let current = self.keyset.read().unwrap_or_else(|p| p.into_inner()).modified;
        if now == current {
            return Ok(false);
        }
        let keys = match load_keyset(path, &self.issuer) {
            Ok(keys) => keys,
            Err(e) => {
                self.status.write().unwrap_or_else(|p| p.into_inner()).1 = Some(e.to_string());
                return Err(e);
            }
        };
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = (OffsetDateTime::now_utc(), None);
        *self.keyset.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Keyset { keys, modified: now });
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        cache.entries.clear();
        Ok(true)
    }

    /// Verifies a token. `client_cert` is the connection's certificate fingerprint as
    /// base64url SHA-256, when it presented one. Revocation is the caller's check (it needs
    /// the HSM's revocation list), made on every request.
    pub fn verify(
        &self,
        token: &str,
        client_cert: Option<&str>,
    ) -> Result<Arc<VerifiedToken>, AuthFailure> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        let (cached, generation) = {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            (cache.entries.get(&id).cloned(), cache.generation)
        };
        let verified = match cached {
            Some(verified) => verified,
            None => {
                // The generation was read before the keyset snapshot, so a reload in between
                // makes the insert below a no-op.
                let verified = Arc::new(self.verify_signed(token)?);
                let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if cache.generation == generation {
                    if cache.entries.len() >= TOKEN_CACHE_ENTRIES {
                        // Expired entries go first; if none, start over (a re-check is only cost).
                        let now = jsonwebtoken::get_current_timestamp();
                        cache
                            .entries
                            .retain(|_, v| v.claims.exp.saturating_add(CLOCK_SKEW_SECONDS) >= now);
                        if cache.entries.len() >= TOKEN_CACHE_ENTRIES {
                            cache.entries.clear();
                        }
                    }
                    cache.entries.insert(id, verified.clone());
                }
                verified
            }
        };
        self.check_times(&verified.claims)?;
        if let Some(cnf) = &verified.claims.cnf
            && client_cert != Some(cnf.x5t_s256.as_str())
        {
            return Err(AuthFailure::CertificateMismatch);
        }
        Ok(verified)
    }

    /// The time rules, checked on every use: not expired, not before `nbf`, and no longer
    /// lived than the maximum lifetime (from now, and from `iat`).
    fn check_times(&self, claims: &Claims) -> Result<(), AuthFailure> {
        let now = jsonwebtoken::get_current_timestamp();
        if claims.exp.saturating_add(CLOCK_SKEW_SECONDS) < now {
            return Err(AuthFailure::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(CLOCK_SKEW_SECONDS)) {
            return Err(AuthFailure::NotYetValid);
        }
        let limit = self.max_lifetime.saturating_add(CLOCK_SKEW_SECONDS);
        let iat = claims.iat.ok_or(AuthFailure::MissingClaim)?;
        if iat > now.saturating_add(CLOCK_SKEW_SECONDS)
            || claims.exp.saturating_sub(iat) > limit
            || claims.exp.saturating_sub(now) > limit
        {
            return Err(AuthFailure::LifetimeTooLong);
        }
        Ok(())
    }

    /// Checks a token's signature and claims (everything but the certificate binding).
    fn verify_signed(&self, token: &str) -> Result<VerifiedToken, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        let kid = header.kid.as_deref().ok_or(AuthFailure::UnknownKey)?;
        let keyset = self.keyset.read().unwrap_or_else(|p| p.into_inner()).clone();
        let own = kid == self.own_kid;
        let accepted =
            if own { &self.own } else { keyset.keys.get(kid).ok_or(AuthFailure::UnknownKey)? };
        if header.alg != accepted.algorithm {
            return Err(AuthFailure::WrongAlgorithm);
        }
        let mut validation = Validation::new(accepted.algorithm);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);
        validation.set_issuer(&[&accepted.issuer]);
        validation.set_audience(&[&self.audience]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &accepted.key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => AuthFailure::BadSignature,
                    K::ExpiredSignature => AuthFailure::Expired,
                    K::ImmatureSignature => AuthFailure::NotYetValid,
                    K::InvalidIssuer => AuthFailure::WrongIssuer,
                    K::InvalidAudience => AuthFailure::WrongAudience,
                    K::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
                    K::InvalidAlgorithm | K::MissingAlgorithm => AuthFailure::WrongAlgorithm,
                    _ => AuthFailure::Malformed,
                }
            })?;
        let claims = data.claims;
        if !own && !claims.minted_by.is_empty() {
            // Only the server records mint chains; from anyone else it is a forgery attempt.
            return Err(AuthFailure::Malformed);
        }
        if let Some(granted) = &accepted.roles
            && claims.roles.iter().any(|r| !granted.contains(r))
        {
            return Err(AuthFailure::RoleNotGranted);
        }
        Ok(VerifiedToken { claims, own })
    }

    /// The keyset file's health, when there is one: when the keyset in force was loaded, and
    /// why a changed file was refused.
    pub fn health(&self) -> Option<ferrohsm_core::wire::ComponentHealth> {
        self.file.as_ref()?;
        let (since, error) = self.status.read().unwrap_or_else(|p| p.into_inner()).clone();
        let since =
            since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Some(match error {
            None => ferrohsm_core::wire::ComponentHealth {
                status: "ok".into(),
                detail: format!("keyset of {since} in force"),
            },
            Some(e) => ferrohsm_core::wire::ComponentHealth {
                status: "error".into(),
                detail: format!(
                    "the keyset of {since} stays in force; the changed file failed: {e}"
                ),
            },
        })
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The longest mint chain (A mints B mints C… ): bounds the token size.
pub const MAX_MINT_CHAIN: usize = 8;

/// What a new token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The subject.
    pub sub: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Lifetime.
    pub ttl: std::time::Duration,
    /// Issuer.
    pub issuer: String,
    /// Audience.
    pub audience: String,
    /// Certificate binding: hex SHA-256 of the client certificate.
    pub cert_sha256: Option<String>,
    /// Who mints it, the root first (empty for a bootstrap token minted with the master key).
    pub minted_by: Vec<Principal>,
    /// The longest lifetime allowed.
    pub max_ttl: std::time::Duration,
}

/// A token ready to sign: the JWS signing input and what it claims.
#[derive(Debug)]
pub struct UnsignedToken {
    /// `base64url(header) "." base64url(claims)`.
    pub signing_input: String,
    /// When it expires.
    pub expires_at: OffsetDateTime,
    /// Its id.
    pub jti: String,
    /// Its session id.
    pub sid: String,
}

/// Builds a token's signing input for the HSM's token key.
pub fn unsigned_token(key: &TokenKey, spec: &TokenSpec) -> Result<UnsignedToken, String> {
    ferrohsm_core::validate_token_field("the subject", &spec.sub).map_err(|e| e.to_string())?;
    let ttl = spec.ttl.as_secs();
    let max = spec.max_ttl.as_secs();
    if ttl == 0 || ttl > max {
        return Err(format!("the lifetime must be 1 to {max} seconds"));
    }
    if spec.minted_by.len() > MAX_MINT_CHAIN {
        return Err(format!("a mint chain is at most {MAX_MINT_CHAIN} long"));
    }
    for role in &spec.roles {
        if !ferrohsm_core::Role::ALL.iter().any(|r| r.as_str() == role) {
            return Err(format!("unknown role {role:?}"));
        }
    }
    let cnf = match &spec.cert_sha256 {
        None => None,
        Some(hex) => {
            let bytes = ferrohsm_core::hex::decode(hex)
                .filter(|b| b.len() == 32)
                .ok_or("cert_sha256 must be 64 hex digits")?;
            Some(Confirmation { x5t_s256: URL_SAFE_NO_PAD.encode(bytes) })
        }
    };
    let now = OffsetDateTime::now_utc();
    let iat = u64::try_from(now.unix_timestamp()).unwrap_or_default();
    let jti = uuid::Uuid::now_v7().to_string();
    let sid = uuid::Uuid::now_v7().to_string();
    let claims = Claims {
        sub: spec.sub.clone(),
        roles: spec.roles.clone(),
        iss: spec.issuer.clone(),
        aud: Audience::One(spec.audience.clone()),
        exp: iat + ttl,
        nbf: Some(iat),
        iat: Some(iat),
        sid: Some(sid.clone()),
        cnf,
        jti: Some(jti.clone()),
        minted_by: spec.minted_by.clone(),
    };
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()});
    let claims = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    );
    Ok(UnsignedToken {
        signing_input,
        expires_at: now + time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX)),
        jti,
        sid,
    })
}

/// Appends the signature to a signing input.
pub fn finish_token(unsigned: &UnsignedToken, signature: &[u8]) -> String {
    format!("{}.{}", unsigned.signing_input, URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyset(text: &str) -> Result<usize, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("keyset.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        load_keyset(&path, "ferrohsm").map(|k| k.len()).map_err(|e| e.to_string())
    }

    #[test]
    fn keyset_files_are_checked() {
        let secret = ferrohsm_core::b64::encode(&[7u8; 32]);
        let short = ferrohsm_core::b64::encode(&[7u8; 31]);
        let check = |text: String, expected: Result<usize, &str>| {
            let got = keyset(&text);
            match (&got, expected) {
                (Ok(n), Ok(m)) => assert_eq!(*n, m, "{text}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{e} lacks {needle}"),
                _ => panic!("{text}: got {got:?}"),
            }
        };
        let hs = |kid: &str, s: &str| {
            format!(
                "[[key]]\nkid = \"{kid}\"\nalgorithm = \"HS256\"\nissuer = \"i\"\nroles = [\"operator\"]\nsecret = \"{s}\"\n"
            )
        };
        check(hs("a", &secret), Ok(1));
        check(hs("a", &short), Err("at least 32 bytes"));
        check(hs("a", "not base64!"), Err("not base64"));
        check(format!("{}{}", hs("a", &secret), hs("a", &secret)), Err("duplicate kid"));
        check(
            "[[key]]\nkid = \"a\"\nalgorithm = \"none\"\nissuer = \"i\"\nroles = []\n".into(),
            Err("unsupported algorithm"),
        );
        check(
            "[[key]]\nkid = \"a\"\nalgorithm = \"ES256\"\nissuer = \"i\"\nroles = []\n".into(),
            Err("needs a public key"),
        );
        check(
            "[[key]]\nkid = \"a\"\nalgorithm = \"ES256\"\nissuer = \"i\"\nroles = []\npublic_key = \"x\"\npublic_key_file = \"y\"\n".into(),
            Err("not both"),
        );
        check("[[key]]\nkid = \"a\"\nalgorithm = \"HS256\"\nissuer = \"i\"\nroles = []\nsecret = \"x\"\ncolour = 1\n".into(), Err("colour"));
        check(String::new(), Ok(0));
        // Issue 10: an issuer lists the roles it may grant, and cannot pose as the server.
        let entry = |issuer: &str, roles: &str| {
            format!(
                "[[key]]\nkid = \"a\"\nalgorithm = \"HS256\"\nissuer = \"{issuer}\"\nroles = {roles}\nsecret = \"{secret}\"\n"
            )
        };
        check(entry("idp", r#"["admin", "operator"]"#), Ok(1));
        check(entry("idp", r#"["root"]"#), Err("unknown role"));
        check(
            format!(
                "[[key]]\nkid = \"a\"\nalgorithm = \"HS256\"\nissuer = \"idp\"\nsecret = \"{secret}\"\n"
            ),
            Err("missing field `roles`"),
        );
        for reserved in ["ferrohsm", "bootstrap", "minted", "local", ""] {
            check(entry(reserved, "[]"), Err("issuer"));
        }
    }

    #[test]
    fn token_specs_are_checked() {
        let master =
            ferrohsm_core::MasterKey::from_bytes(&[3u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let key = TokenKey::derive(ferrohsm_core::default_provider().as_ref(), &master)
            .unwrap_or_else(|e| panic!("{e}"));
        let spec = TokenSpec {
            sub: "s".into(),
            roles: vec!["operator".into()],
            ttl: std::time::Duration::from_secs(60),
            issuer: "i".into(),
            audience: "a".into(),
            cert_sha256: None,
            minted_by: Vec::new(),
            max_ttl: std::time::Duration::from_secs(MAX_TOKEN_TTL_SECONDS),
        };
        assert!(unsigned_token(&key, &spec).is_ok());
        let bad = [
            TokenSpec { sub: String::new(), ..spec.clone() },
            TokenSpec { ttl: std::time::Duration::ZERO, ..spec.clone() },
            TokenSpec {
                ttl: std::time::Duration::from_secs(MAX_TOKEN_TTL_SECONDS + 1),
                ..spec.clone()
            },
            TokenSpec { roles: vec!["root".into()], ..spec.clone() },
            TokenSpec { cert_sha256: Some("abcd".into()), ..spec.clone() },
            // Issue 10: a subject that could forge a log line, or any unsafe character.
            TokenSpec { sub: "olga\n2026-12-01T00:00:00Z INFO forged".into(), ..spec.clone() },
            TokenSpec { sub: "a b".into(), ..spec.clone() },
            TokenSpec { sub: "x".repeat(129), ..spec.clone() },
            TokenSpec {
                minted_by: vec![Principal { iss: "i".into(), sub: "s".into() }; 9],
                ..spec.clone()
            },
        ];
        for b in bad {
            assert!(unsigned_token(&key, &b).is_err(), "{b:?}");
        }
    }
}
