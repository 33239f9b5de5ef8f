//! Cryptographic operations: requests and results (SPEC §4, §6).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bytes::b64;
use crate::{Algorithm, Secret, SignatureScheme};

/// `POST /v1/keys/{key}/encrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The plaintext, base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub plaintext: Secret,
    /// Associated data bound to the ciphertext, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub aad: Option<Vec<u8>>,
}

/// The result of an encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Encrypted {
    /// The key.
    pub key_id: Uuid,
    /// The version that encrypted.
    pub key_version: u32,
    /// `fhsm:v<version>:<base64(nonce || ciphertext || tag)>`.
    pub ciphertext: String,
}

/// `POST /v1/keys/{key}/decrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// `fhsm:v<N>:…` as returned by encrypt.
    pub ciphertext: String,
    /// The associated data given to encrypt, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub aad: Option<Vec<u8>>,
}

/// The result of a decryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plaintext {
    /// The key.
    pub key_id: Uuid,
    /// The version that decrypted.
    pub key_version: u32,
    /// The plaintext, base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub plaintext: Secret,
}

/// `POST /v1/keys/{key}/sign`: exactly one of `message` and `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The message, base64 (hashed by the server).
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub message: Option<Vec<u8>>,
    /// A pre-computed digest, base64, of the scheme's hash length (not for Ed25519 or ML-DSA).
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub digest: Option<Vec<u8>>,
    /// The scheme; the key's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SignatureScheme>,
}

impl SignRequest {
    /// Signs `message` (hashed by the server) with the key's default scheme.
    pub fn message(message: impl Into<Vec<u8>>) -> Self {
        SignRequest { message: Some(message.into()), ..SignRequest::default() }
    }

    /// Signs a pre-computed `digest` with the key's default scheme.
    pub fn digest(digest: impl Into<Vec<u8>>) -> Self {
        SignRequest { digest: Some(digest.into()), ..SignRequest::default() }
    }
}

/// The result of signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signed {
    /// The key.
    pub key_id: Uuid,
    /// The version that signed.
    pub key_version: u32,
    /// The scheme used.
    pub algorithm: SignatureScheme,
    /// The signature, base64: DER for ECDSA, raw for RSA, Ed25519 and ML-DSA.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Vec<u8>,
}

/// `POST /v1/keys/{key}/verify`: exactly one of `message` and `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The message, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub message: Option<Vec<u8>>,
    /// A pre-computed digest, base64.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub digest: Option<Vec<u8>>,
    /// The signature, base64.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Vec<u8>,
    /// The scheme; the key's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SignatureScheme>,
    /// The version to verify with; the signature's own version is unknown, so the current
    /// one when omitted.
    #[serde(
        default,
        deserialize_with = "crate::number::whole_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub key_version: Option<u32>,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verified {
    /// The key.
    pub key_id: Uuid,
    /// The version checked against.
    pub key_version: u32,
    /// The scheme used.
    pub algorithm: SignatureScheme,
    /// Whether the signature is valid.
    pub valid: bool,
}

/// `POST /v1/keys/{key}/wrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    /// The key material to wrap, base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub key_material: Secret,
}

/// The result of wrapping key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wrapped {
    /// The key.
    pub key_id: Uuid,
    /// The version that wrapped.
    pub key_version: u32,
    /// `fhsm:v<version>:<base64(RFC 5649 wrapping)>`.
    pub wrapped: String,
}

/// `POST /v1/keys/{key}/unwrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    /// `fhsm:v<N>:…` as returned by wrap.
    pub wrapped: String,
}

/// The result of unwrapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyMaterial {
    /// The key.
    pub key_id: Uuid,
    /// The version that unwrapped.
    pub key_version: u32,
    /// The key material, base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub key_material: Secret,
}

/// A version's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKeyInfo {
    /// The key.
    pub key_id: Uuid,
    /// The version.
    pub key_version: u32,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub pem: String,
    /// SubjectPublicKeyInfo DER, base64.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub der: Vec<u8>,
    /// The key as a JSON Web Key (RFC 7517), for algorithms JOSE defines (RSA, EC, Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
}

/// A public key as a JSON Web Key (RFC 7517/7518/8037): base64url members without padding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// The key id, when the key is published in a key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The JOSE algorithm the key is used with, when fixed (`EdDSA` for token keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` for signing keys.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The curve (`P-256`, `P-384`, `Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, or the Ed25519 public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JSON Web Key Set (`/.well-known/jwks.json`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}
