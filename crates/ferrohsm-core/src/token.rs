//! The key the HSM signs bearer tokens with: Ed25519, derived from the master key, so every
//! replica sharing a master key issues and accepts the same tokens and nothing extra is stored.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrohsm_crypto::{CryptoProvider, SecretKey, SignInput, SignatureScheme};
use ferrohsm_seal::MasterKey;

use crate::wire::Jwk;
use crate::{Error, Result};

/// The HKDF purpose of the token signing seed (the number is the key's generation).
const TOKEN_PURPOSE: &str = "token-signing/1";

/// The token signing key. Its private half never leaves this type; frontends build the
/// token's signing input and ask for a signature.
#[derive(Clone)]
pub struct TokenKey {
    kid: String,
    secret: Arc<dyn SecretKey>,
    public: Vec<u8>,
}

impl TokenKey {
    /// Derives the token key from the master key.
    pub fn derive(provider: &dyn CryptoProvider, master: &MasterKey) -> Result<TokenKey> {
        let seed = master.derive(provider, TOKEN_PURPOSE).map_err(Error::Setup)?;
        let secret = provider.ed25519_from_seed(&seed).map_err(Error::Crypto)?;
        let spki = secret
            .public_key_der()
            .ok_or(Error::InvalidRequest("the token key has no public half".into()))?;
        // The raw key is the last 32 bytes of an Ed25519 SubjectPublicKeyInfo.
        let public = spki.get(spki.len().saturating_sub(32)..).unwrap_or_default().to_vec();
        let digest = provider.sha256(&public);
        let kid = format!(
            "ferrohsm-{}",
            ferrohsm_crypto::hex::encode(digest.get(..8).unwrap_or_default())
        );
        Ok(TokenKey { kid, secret, public })
    }

    /// The key id tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The public key as a JWK for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            kid: Some(self.kid.clone()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&self.public)),
            ..Jwk::default()
        }
    }

    /// Signs a JWS signing input (`base64url(header) "." base64url(claims)`).
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        self.secret
            .sign(SignatureScheme::Ed25519, SignInput::Message(signing_input))
            .map_err(Error::Crypto)
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}
