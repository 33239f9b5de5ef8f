//! Key algorithms, key usages, signature schemes and hash functions, with their wire names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Implements `as_str`, `Display`, `FromStr` and string serde for a fieldless enum.
macro_rules! wire_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(Error::InvalidInput(format!(
                        concat!("unknown ", $what, " {:?}"),
                        other
                    ))),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A key algorithm (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256 in GCM mode; also AES key wrap with padding (RFC 5649).
    Aes256Gcm,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// EdDSA on Curve25519.
    Ed25519,
    /// ML-DSA-44 (FIPS 204).
    MlDsa44,
    /// ML-DSA-65 (FIPS 204).
    MlDsa65,
    /// ML-DSA-87 (FIPS 204).
    MlDsa87,
}

wire_names!(Algorithm, "algorithm", {
    Aes256Gcm => "aes-256-gcm",
    Rsa2048 => "rsa-2048",
    Rsa3072 => "rsa-3072",
    Rsa4096 => "rsa-4096",
    EcP256 => "ec-p256",
    EcP384 => "ec-p384",
    Ed25519 => "ed25519",
    MlDsa44 => "ml-dsa-44",
    MlDsa65 => "ml-dsa-65",
    MlDsa87 => "ml-dsa-87",
});

impl Algorithm {
    /// Whether keys of this algorithm are symmetric (and so have no public key).
    pub fn is_symmetric(self) -> bool {
        matches!(self, Algorithm::Aes256Gcm)
    }

    /// The usages a key of this algorithm can ever have.
    pub fn allowed_usages(self) -> &'static [Usage] {
        if self.is_symmetric() {
            &[Usage::Encrypt, Usage::Decrypt, Usage::Wrap, Usage::Unwrap]
        } else {
            &[Usage::Sign, Usage::Verify]
        }
    }

    /// The signature scheme used when a sign or verify request names none.
    ///
    /// RSA defaults to PKCS#1 v1.5 with SHA-256, which every standard tool verifies without
    /// extra options; PSS is available by naming it.
    pub fn default_scheme(self) -> Option<SignatureScheme> {
        match self {
            Algorithm::Aes256Gcm => None,
            Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
                Some(SignatureScheme::RsaPkcs1Sha256)
            }
            Algorithm::EcP256 => Some(SignatureScheme::EcdsaP256Sha256),
            Algorithm::EcP384 => Some(SignatureScheme::EcdsaP384Sha384),
            Algorithm::Ed25519 => Some(SignatureScheme::Ed25519),
            Algorithm::MlDsa44 => Some(SignatureScheme::MlDsa44),
            Algorithm::MlDsa65 => Some(SignatureScheme::MlDsa65),
            Algorithm::MlDsa87 => Some(SignatureScheme::MlDsa87),
        }
    }

    /// Whether `scheme` can be used with a key of this algorithm.
    pub fn supports_scheme(self, scheme: SignatureScheme) -> bool {
        scheme.key_algorithms().contains(&self)
    }

    /// The RSA modulus length in bytes, for RSA algorithms.
    pub fn rsa_modulus_len(self) -> Option<usize> {
        match self {
            Algorithm::Rsa2048 => Some(256),
            Algorithm::Rsa3072 => Some(384),
            Algorithm::Rsa4096 => Some(512),
            _ => None,
        }
    }
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Usage {
    /// Encrypt data.
    Encrypt,
    /// Decrypt data.
    Decrypt,
    /// Sign messages or digests.
    Sign,
    /// Verify signatures.
    Verify,
    /// Wrap other key material.
    Wrap,
    /// Unwrap key material.
    Unwrap,
}

wire_names!(Usage, "usage", {
    Encrypt => "encrypt",
    Decrypt => "decrypt",
    Sign => "sign",
    Verify => "verify",
    Wrap => "wrap",
    Unwrap => "unwrap",
});

/// A hash function used by a signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

wire_names!(HashAlgorithm, "hash algorithm", {
    Sha256 => "sha-256",
    Sha384 => "sha-384",
    Sha512 => "sha-512",
});

impl HashAlgorithm {
    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// A complete signature scheme: padding (for RSA), hash and curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512, MGF1-SHA-512 and a 64-byte salt.
    RsaPssSha512,
    /// ECDSA on P-256 with SHA-256, DER-encoded signature.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384, DER-encoded signature.
    EcdsaP384Sha384,
    /// Ed25519 (pure, messages only).
    Ed25519,
    /// ML-DSA-44 (pure, messages only, empty context).
    MlDsa44,
    /// ML-DSA-65 (pure, messages only, empty context).
    MlDsa65,
    /// ML-DSA-87 (pure, messages only, empty context).
    MlDsa87,
}

wire_names!(SignatureScheme, "signature scheme", {
    RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
    RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
    RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
    RsaPssSha256 => "rsa-pss-sha256",
    RsaPssSha384 => "rsa-pss-sha384",
    RsaPssSha512 => "rsa-pss-sha512",
    EcdsaP256Sha256 => "ecdsa-p256-sha256",
    EcdsaP384Sha384 => "ecdsa-p384-sha384",
    Ed25519 => "ed25519",
    MlDsa44 => "ml-dsa-44",
    MlDsa65 => "ml-dsa-65",
    MlDsa87 => "ml-dsa-87",
});

impl SignatureScheme {
    /// The hash applied to the message, or `None` for schemes that sign the message itself
    /// (and so cannot sign a pre-computed digest).
    pub fn hash(self) -> Option<HashAlgorithm> {
        use SignatureScheme::*;
        match self {
            RsaPkcs1Sha256 | RsaPssSha256 | EcdsaP256Sha256 => Some(HashAlgorithm::Sha256),
            RsaPkcs1Sha384 | RsaPssSha384 | EcdsaP384Sha384 => Some(HashAlgorithm::Sha384),
            RsaPkcs1Sha512 | RsaPssSha512 => Some(HashAlgorithm::Sha512),
            Ed25519 | MlDsa44 | MlDsa65 | MlDsa87 => None,
        }
    }

    /// The key algorithms this scheme works with.
    pub fn key_algorithms(self) -> &'static [Algorithm] {
        use SignatureScheme::*;
        const RSA: &[Algorithm] = &[Algorithm::Rsa2048, Algorithm::Rsa3072, Algorithm::Rsa4096];
        match self {
            RsaPkcs1Sha256 | RsaPkcs1Sha384 | RsaPkcs1Sha512 | RsaPssSha256 | RsaPssSha384
            | RsaPssSha512 => RSA,
            EcdsaP256Sha256 => &[Algorithm::EcP256],
            EcdsaP384Sha384 => &[Algorithm::EcP384],
            Ed25519 => &[Algorithm::Ed25519],
            MlDsa44 => &[Algorithm::MlDsa44],
            MlDsa65 => &[Algorithm::MlDsa65],
            MlDsa87 => &[Algorithm::MlDsa87],
        }
    }
}

/// What is signed or verified: a message (hashed by the provider) or a pre-computed digest.
#[derive(Debug, Clone, Copy)]
pub enum SignInput<'a> {
    /// The message itself.
    Message(&'a [u8]),
    /// The digest of the message under the scheme's hash; its length must match the hash.
    Digest(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().ok(), Some(*alg));
            let json = format!("\"{alg}\"");
            let back: Algorithm = serde_json_like(&json);
            assert_eq!(back, *alg);
        }
        for scheme in SignatureScheme::ALL {
            assert_eq!(scheme.as_str().parse::<SignatureScheme>().ok(), Some(*scheme));
            for alg in scheme.key_algorithms() {
                assert!(alg.supports_scheme(*scheme));
            }
        }
        for usage in Usage::ALL {
            assert_eq!(usage.as_str().parse::<Usage>().ok(), Some(*usage));
        }
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        for bad in ["", "AES-256-GCM", "rsa-1024", "ec-p521", "aes-256-gcm "] {
            assert!(matches!(bad.parse::<Algorithm>(), Err(Error::InvalidInput(_))), "{bad}");
        }
    }

    #[test]
    fn every_asymmetric_algorithm_has_a_default_scheme_it_supports() {
        for alg in Algorithm::ALL {
            match alg.default_scheme() {
                Some(scheme) => assert!(alg.supports_scheme(scheme), "{alg}"),
                None => assert!(alg.is_symmetric(), "{alg}"),
            }
        }
    }

    fn serde_json_like(json: &str) -> Algorithm {
        // A tiny string deserializer is enough: serde's `IntoDeserializer` for &str.
        use serde::de::IntoDeserializer;
        let inner = json.trim_matches('"');
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            inner.into_deserializer();
        match Algorithm::deserialize(de) {
            Ok(alg) => alg,
            Err(e) => panic!("{e}"),
        }
    }
}
