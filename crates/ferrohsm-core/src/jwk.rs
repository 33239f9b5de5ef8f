//! Public keys as JSON Web Keys, read from their SubjectPublicKeyInfo DER.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrohsm_crypto::Algorithm;
use ferrohsm_crypto::der::tlv;

use crate::wire::Jwk;

/// The JWK of a public key, for the algorithms JOSE defines (RSA, P-256, P-384, Ed25519).
/// ML-DSA has no registered JWK form yet, so it gets none; neither does malformed DER.
pub(crate) fn from_spki(algorithm: Algorithm, spki: &[u8]) -> Option<Jwk> {
    let key = subject_public_key(spki)?;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match algorithm {
        Algorithm::EcP256 | Algorithm::EcP384 => {
            let (crv, len) =
                if algorithm == Algorithm::EcP256 { ("P-256", 32) } else { ("P-384", 48) };
            let point = key.strip_prefix(&[0x04])?;
            if point.len() != 2 * len {
                return None;
            }
            let (x, y) = point.split_at(len);
            Some(Jwk {
                kty: "EC".into(),
                crv: Some(crv.into()),
                x: Some(b64(x)),
                y: Some(b64(y)),
                ..Jwk::default()
            })
        }
        Algorithm::Ed25519 if key.len() == 32 => Some(Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(b64(key)),
            ..Jwk::default()
        }),
        Algorithm::Rsa2048 | Algorithm::Rsa3072 | Algorithm::Rsa4096 => {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let (tag, body, _) = tlv(key)?;
            if tag != 0x30 {
                return None;
            }
            let (n, rest) = integer(body)?;
            let (e, rest) = integer(rest)?;
            rest.is_empty().then(|| Jwk {
                kty: "RSA".into(),
                n: Some(b64(n)),
                e: Some(b64(e)),
                ..Jwk::default()
            })
        }
        _ => None,
    }
}

/// The key bytes of `SEQUENCE { AlgorithmIdentifier, BIT STRING }`.
fn subject_public_key(spki: &[u8]) -> Option<&[u8]> {
    let (tag, body, rest) = tlv(spki)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, _, body) = tlv(body)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, rest) = tlv(body)?;
    if tag != 0x03 || !rest.is_empty() {
        return None;
    }
    // The first content byte counts unused bits, which must be zero for a key.
    bits.strip_prefix(&[0])
}

/// An INTEGER's magnitude without its sign-padding zero byte.
fn integer(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, body, rest) = tlv(der)?;
    if tag != 0x02 || body.is_empty() {
        return None;
    }
    let body = match body {
        [0, tail @ ..] if !tail.is_empty() => tail,
        _ => body,
    };
    Some((body, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_der_gives_no_jwk() {
        for bad in [&[][..], &[0x30], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x02, 0x30, 0x00]] {
            assert_eq!(from_spki(Algorithm::EcP256, bad), None);
        }
    }
}
