//! The default provider, on aws-lc-rs.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AES_256, KeyEncryptionKey, KeyWrapPadded};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, PqdsaKeyPair, RsaKeyPair,
    UnparsedPublicKey, VerificationAlgorithm,
};
use aws_lc_rs::{hkdf, hmac, rsa};
use zeroize::Zeroizing;

use crate::provider::{AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::{
    Algorithm, CryptoProvider, Error, HashAlgorithm, HmacKey, KeyMaterial, PublicKey, Result,
    SecretBytes, SecretKey, SignInput, SignatureScheme,
};

/// The default [`CryptoProvider`], built on aws-lc-rs (AWS-LC, a BoringSSL derivative).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLcProvider;

impl AwsLcProvider {
    /// The provider as a shareable trait object.
    pub fn shared() -> Arc<dyn CryptoProvider> {
        Arc::new(AwsLcProvider)
    }
}

impl CryptoProvider for AwsLcProvider {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn fill_random(&self, out: &mut [u8]) -> Result<()> {
        SystemRandom::new().fill(out).map_err(|_| Error::Crypto)
    }

    fn generate(&self, algorithm: Algorithm) -> Result<KeyMaterial> {
        let bytes = match algorithm {
            Algorithm::Aes256Gcm => {
                let mut key = vec![0u8; 32];
                self.fill_random(&mut key)?;
                key
            }
            Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
                let size = match algorithm {
                    Algorithm::Rsa2048 => rsa::KeySize::Rsa2048,
                    Algorithm::Rsa3072 => rsa::KeySize::Rsa3072,
                    _ => rsa::KeySize::Rsa4096,
                };
                let pair = RsaKeyPair::generate(size).map_err(|_| Error::Crypto)?;
                pair.as_der().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
            Algorithm::EcP256 | Algorithm::EcP384 => {
                let pair =
                    EcdsaKeyPair::generate(ecdsa_signing(algorithm)?).map_err(|_| Error::Crypto)?;
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
            Algorithm::Ed25519 => {
                let pair = Ed25519KeyPair::generate().map_err(|_| Error::Crypto)?;
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
            Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => {
                let pair =
                    PqdsaKeyPair::generate(mldsa_signing(algorithm)?).map_err(|_| Error::Crypto)?;
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
        };
        Ok(KeyMaterial::new(algorithm, SecretBytes::new(bytes)))
    }

    fn import(&self, algorithm: Algorithm, der_or_raw: &[u8]) -> Result<KeyMaterial> {
        let candidate = KeyMaterial::new(algorithm, SecretBytes::copy_from(der_or_raw));
        let loaded = load_inner(&candidate)?;
        // Normalise asymmetric keys to PKCS#8 v1, whatever version was imported.
        let bytes = match &loaded.inner {
            Inner::Aes { .. } => return Ok(candidate),
            Inner::Rsa { pair, .. } => pair.as_der().map_err(|_| Error::Crypto)?.as_ref().to_vec(),
            Inner::Ecdsa { pair, .. } => {
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
            Inner::Ed25519 { pair, .. } => {
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
            Inner::MlDsa { pair, .. } => {
                pair.to_pkcs8v1().map_err(|_| Error::Crypto)?.as_ref().to_vec()
            }
        };
        Ok(KeyMaterial::new(algorithm, SecretBytes::new(bytes)))
    }

    fn load(&self, material: &KeyMaterial) -> Result<Arc<dyn SecretKey>> {
        Ok(Arc::new(load_inner(material)?))
    }

    fn load_public(&self, algorithm: Algorithm, spki_der: &[u8]) -> Result<Arc<dyn PublicKey>> {
        Ok(Arc::new(parse_public(algorithm, spki_der)?))
    }

    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
        out
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&key, data).as_ref());
        out
    }

    fn hmac_sha256_verify(&self, key: &[u8], data: &[u8], tag: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        hmac::verify(&key, data, tag).is_ok()
    }

    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
        struct Len(usize);
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
        let info = [info];
        let okm = prk.expand(&info, Len(out.len())).map_err(|_| Error::Crypto)?;
        okm.fill(out).map_err(|_| Error::Crypto)
    }

    fn hmac_sha256_key(&self, key: &[u8]) -> Arc<dyn HmacKey> {
        Arc::new(AwsLcHmacKey(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    fn ed25519_from_seed(&self, seed: &[u8; 32]) -> Result<Arc<dyn SecretKey>> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| Error::KeyRejected(Algorithm::Ed25519))?;
        let spki = der_of(pair.public_key())?;
        let public = parse_public(Algorithm::Ed25519, &spki)?;
        Ok(Arc::new(LoadedKey {
            algorithm: Algorithm::Ed25519,
            inner: Inner::Ed25519 { pair, public },
        }))
    }
}

/// A prepared HMAC-SHA256 key.
struct AwsLcHmacKey(hmac::Key);

impl fmt::Debug for AwsLcHmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([REDACTED])")
    }
}

impl HmacKey for AwsLcHmacKey {
    fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, data).as_ref());
        out
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, data, tag).is_ok()
    }
}

/// Parses and checks material; shared by `load` and `import`.
fn load_inner(material: &KeyMaterial) -> Result<LoadedKey> {
    let algorithm = material.algorithm();
    let bytes = material.danger_expose();
    let rejected = |_| Error::KeyRejected(algorithm);
    let inner = match algorithm {
        Algorithm::Aes256Gcm => {
            if bytes.len() != 32 {
                return Err(Error::KeyRejected(algorithm));
            }
            let aead = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| Error::KeyRejected(algorithm))?,
            );
            let mut raw = Zeroizing::new([0u8; 32]);
            raw.copy_from_slice(bytes);
            Inner::Aes { aead, raw }
        }
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            let pair = RsaKeyPair::from_pkcs8(bytes).map_err(rejected)?;
            if Some(pair.public_modulus_len()) != algorithm.rsa_modulus_len() {
                return Err(Error::KeyRejected(algorithm));
            }
            let spki = der_of(pair.public_key())?;
            Inner::Rsa { pair, spki }
        }
        Algorithm::EcP256 | Algorithm::EcP384 => {
            let pair =
                EcdsaKeyPair::from_pkcs8(ecdsa_signing(algorithm)?, bytes).map_err(rejected)?;
            let spki = der_of(pair.public_key())?;
            let public = parse_public(algorithm, &spki)?;
            Inner::Ecdsa { pair, public }
        }
        Algorithm::Ed25519 => {
            let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(rejected)?;
            let spki = der_of(pair.public_key())?;
            let public = parse_public(algorithm, &spki)?;
            Inner::Ed25519 { pair, public }
        }
        Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => {
            let pair =
                PqdsaKeyPair::from_pkcs8(mldsa_signing(algorithm)?, bytes).map_err(rejected)?;
            let spki = der_of(pair.public_key())?;
            let public = parse_public(algorithm, &spki)?;
            Inner::MlDsa { pair, public }
        }
    };
    Ok(LoadedKey { algorithm, inner })
}

/// A loaded key of any algorithm.
struct LoadedKey {
    algorithm: Algorithm,
    inner: Inner,
}

enum Inner {
    Aes { aead: LessSafeKey, raw: Zeroizing<[u8; 32]> },
    Rsa { pair: RsaKeyPair, spki: Vec<u8> },
    Ecdsa { pair: EcdsaKeyPair, public: AwsLcPublicKey },
    Ed25519 { pair: Ed25519KeyPair, public: AwsLcPublicKey },
    MlDsa { pair: PqdsaKeyPair, public: AwsLcPublicKey },
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl SecretKey for LoadedKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Aes { .. } => None,
            Inner::Rsa { spki, .. } => Some(spki),
            Inner::Ecdsa { public, .. }
            | Inner::Ed25519 { public, .. }
            | Inner::MlDsa { public, .. } => Some(&public.der),
        }
    }

    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let Inner::Aes { aead, .. } = &self.inner else {
            return Err(self.unsupported("encrypt"));
        };
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| Error::Crypto)?;
        let mut out = Vec::with_capacity(AEAD_NONCE_LEN + plaintext.len() + AEAD_TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[AEAD_NONCE_LEN..],
            )
            .map_err(|_| Error::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let Inner::Aes { aead, .. } = &self.inner else {
            return Err(self.unsupported("decrypt"));
        };
        if sealed.len() < AEAD_NONCE_LEN + AEAD_TAG_LEN {
            return Err(Error::Crypto);
        }
        let (nonce, body) = sealed.split_at(AEAD_NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Crypto)?;
        let mut work = body.to_vec();
        match aead.open_in_place(nonce, Aad::from(aad), &mut work) {
            Ok(plain) => {
                let len = plain.len();
                work.truncate(len);
                Ok(SecretBytes::new(work))
            }
            Err(_) => {
                zeroize::Zeroize::zeroize(&mut work);
                Err(Error::Crypto)
            }
        }
    }

    fn wrap(&self, key_material: &[u8]) -> Result<Vec<u8>> {
        let Inner::Aes { raw, .. } = &self.inner else {
            return Err(self.unsupported("wrap"));
        };
        if key_material.is_empty() {
            return Err(Error::InvalidInput("key material to wrap is empty".into()));
        }
        let kek = KeyEncryptionKey::new(&AES_256, raw.as_ref()).map_err(|_| Error::Crypto)?;
        // RFC 5649 output is the input padded to a multiple of 8, plus one 8-byte block.
        let mut out = vec![0u8; key_material.len().div_ceil(8) * 8 + 8];
        let len = kek.wrap_with_padding(key_material, &mut out).map_err(|_| Error::Crypto)?.len();
        out.truncate(len);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        let Inner::Aes { raw, .. } = &self.inner else {
            return Err(self.unsupported("unwrap"));
        };
        if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
            return Err(Error::Crypto);
        }
        let kek = KeyEncryptionKey::new(&AES_256, raw.as_ref()).map_err(|_| Error::Crypto)?;
        let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
        let len = kek.unwrap_with_padding(wrapped, &mut out).map_err(|_| Error::Crypto)?.len();
        Ok(SecretBytes::copy_from(&out[..len]))
    }

    fn sign(&self, scheme: SignatureScheme, input: SignInput<'_>) -> Result<Vec<u8>> {
        self.check_scheme(scheme, "sign")?;
        match &self.inner {
            Inner::Aes { .. } => Err(self.unsupported("sign")),
            Inner::Rsa { pair, .. } => {
                let encoding = rsa_encoding(scheme)?;
                let mut sig = vec![0u8; pair.public_modulus_len()];
                match input {
                    SignInput::Message(msg) => pair
                        .sign(encoding, &SystemRandom::new(), msg, &mut sig)
                        .map_err(|_| Error::Crypto)?,
                    SignInput::Digest(d) => pair
                        .sign_digest(encoding, &import_digest(scheme, d)?, &mut sig)
                        .map_err(|_| Error::Crypto)?,
                }
                Ok(sig)
            }
            Inner::Ecdsa { pair, .. } => {
                let sig = match input {
                    SignInput::Message(msg) => pair.sign(&SystemRandom::new(), msg),
                    SignInput::Digest(d) => pair.sign_digest(&import_digest(scheme, d)?),
                }
                .map_err(|_| Error::Crypto)?;
                Ok(sig.as_ref().to_vec())
            }
            Inner::Ed25519 { pair, .. } => {
                let msg = message_only(input, self.algorithm)?;
                Ok(pair.try_sign(msg).map_err(|_| Error::Crypto)?.as_ref().to_vec())
            }
            Inner::MlDsa { pair, .. } => {
                let msg = message_only(input, self.algorithm)?;
                let mut sig = vec![0u8; pair.algorithm().signature_len()];
                let len = pair.sign(msg, &mut sig).map_err(|_| Error::Crypto)?;
                sig.truncate(len);
                Ok(sig)
            }
        }
    }

    fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool> {
        match &self.inner {
            Inner::Aes { .. } => Err(self.unsupported("verify")),
            Inner::Rsa { spki, .. } => AwsLcPublicKey::new_rsa(self.algorithm, spki.clone())?
                .verify(scheme, input, signature),
            Inner::Ecdsa { public, .. }
            | Inner::Ed25519 { public, .. }
            | Inner::MlDsa { public, .. } => public.verify(scheme, input, signature),
        }
    }
}

impl LoadedKey {
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported { operation, algorithm: self.algorithm }
    }

    fn check_scheme(&self, scheme: SignatureScheme, operation: &'static str) -> Result<()> {
        if self.algorithm.supports_scheme(scheme) {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "signature scheme {scheme} cannot {operation} with a {} key",
                self.algorithm
            )))
        }
    }
}

/// A parsed public key.
struct AwsLcPublicKey {
    algorithm: Algorithm,
    der: Vec<u8>,
    /// Pre-parsed for single-scheme algorithms; RSA keys are parsed per scheme on use.
    parsed: Option<ParsedPublicKey>,
}

impl fmt::Debug for AwsLcPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl AwsLcPublicKey {
    fn new_rsa(algorithm: Algorithm, der: Vec<u8>) -> Result<Self> {
        Ok(AwsLcPublicKey { algorithm, der, parsed: None })
    }
}

fn parse_public(algorithm: Algorithm, spki_der: &[u8]) -> Result<AwsLcPublicKey> {
    let rejected = |_| Error::KeyRejected(algorithm);
    match algorithm {
        Algorithm::Aes256Gcm => Err(Error::Unsupported { operation: "public key", algorithm }),
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            let key = rsa::PublicKey::from_der(spki_der).map_err(rejected)?;
            if Some(key.modulus_len()) != algorithm.rsa_modulus_len() {
                return Err(Error::KeyRejected(algorithm));
            }
            // Store the SubjectPublicKeyInfo form even if PKCS#1 was given.
            let der = der_of(&key)?;
            AwsLcPublicKey::new_rsa(algorithm, der)
        }
        _ => {
            let scheme = algorithm.default_scheme().ok_or(Error::KeyRejected(algorithm))?;
            let parsed = ParsedPublicKey::new(verification(scheme)?, spki_der).map_err(rejected)?;
            let der = parsed.as_der().map_err(|_| Error::KeyRejected(algorithm))?.as_ref().to_vec();
            Ok(AwsLcPublicKey { algorithm, der, parsed: Some(parsed) })
        }
    }
}

impl PublicKey for AwsLcPublicKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn der(&self) -> &[u8] {
        &self.der
    }

    fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool> {
        if !self.algorithm.supports_scheme(scheme) {
            return Err(Error::InvalidInput(format!(
                "signature scheme {scheme} cannot verify with a {} key",
                self.algorithm
            )));
        }
        let outcome = match (&self.parsed, input) {
            (Some(parsed), SignInput::Message(msg)) => parsed.verify_sig(msg, signature),
            (Some(parsed), SignInput::Digest(d)) => {
                if scheme.hash().is_none() {
                    message_only(input, self.algorithm)?;
                }
                parsed.verify_digest_sig(&import_digest(scheme, d)?, signature)
            }
            (None, SignInput::Message(msg)) => {
                UnparsedPublicKey::new(verification(scheme)?, &self.der).verify(msg, signature)
            }
            (None, SignInput::Digest(d)) => {
                UnparsedPublicKey::new(verification(scheme)?, &self.der)
                    .verify_digest(&import_digest(scheme, d)?, signature)
            }
        };
        Ok(outcome.is_ok())
    }
}

fn der_of<K: AsDer<aws_lc_rs::encoding::PublicKeyX509Der<'static>>>(key: &K) -> Result<Vec<u8>> {
    Ok(key.as_der().map_err(|_| Error::Crypto)?.as_ref().to_vec())
}

fn message_only<'a>(input: SignInput<'a>, algorithm: Algorithm) -> Result<&'a [u8]> {
    match input {
        SignInput::Message(msg) => Ok(msg),
        SignInput::Digest(_) => {
            Err(Error::Unsupported { operation: "signing a digest", algorithm })
        }
    }
}

fn import_digest(scheme: SignatureScheme, digest_bytes: &[u8]) -> Result<Digest> {
    let hash = scheme
        .hash()
        .ok_or_else(|| Error::InvalidInput(format!("{scheme} signs messages only, not digests")))?;
    if digest_bytes.len() != hash.output_len() {
        return Err(Error::InvalidInput(format!(
            "a {hash} digest is {} bytes, got {}",
            hash.output_len(),
            digest_bytes.len()
        )));
    }
    let alg = match hash {
        HashAlgorithm::Sha256 => &digest::SHA256,
        HashAlgorithm::Sha384 => &digest::SHA384,
        HashAlgorithm::Sha512 => &digest::SHA512,
    };
    Digest::import_less_safe(digest_bytes, alg).map_err(|_| Error::Crypto)
}

fn ecdsa_signing(algorithm: Algorithm) -> Result<&'static signature::EcdsaSigningAlgorithm> {
    match algorithm {
        Algorithm::EcP256 => Ok(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        Algorithm::EcP384 => Ok(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        _ => Err(Error::KeyRejected(algorithm)),
    }
}

fn mldsa_signing(algorithm: Algorithm) -> Result<&'static signature::PqdsaSigningAlgorithm> {
    match algorithm {
        Algorithm::MlDsa44 => Ok(&signature::ML_DSA_44_SIGNING),
        Algorithm::MlDsa65 => Ok(&signature::ML_DSA_65_SIGNING),
        Algorithm::MlDsa87 => Ok(&signature::ML_DSA_87_SIGNING),
        _ => Err(Error::KeyRejected(algorithm)),
    }
}

fn rsa_encoding(scheme: SignatureScheme) -> Result<&'static dyn signature::RsaEncoding> {
    use SignatureScheme::*;
    Ok(match scheme {
        RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
        RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
        RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
        RsaPssSha256 => &signature::RSA_PSS_SHA256,
        RsaPssSha384 => &signature::RSA_PSS_SHA384,
        RsaPssSha512 => &signature::RSA_PSS_SHA512,
        other => return Err(Error::InvalidInput(format!("{other} is not an RSA scheme"))),
    })
}

fn verification(scheme: SignatureScheme) -> Result<&'static dyn VerificationAlgorithm> {
    use SignatureScheme::*;
    Ok(match scheme {
        RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        RsaPkcs1Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        RsaPkcs1Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        RsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
        RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
        EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
        Ed25519 => &signature::ED25519,
        MlDsa44 => &signature::ML_DSA_44,
        MlDsa65 => &signature::ML_DSA_65,
        MlDsa87 => &signature::ML_DSA_87,
    })
}
