//! The few DER structures a token's raw values need around them: SubjectPublicKeyInfo from an
//! EC point or an RSA modulus and exponent, ECDSA signatures from raw `r‖s`, and the
//! DigestInfo prefix of PKCS#1 v1.5 signatures.

use ferrohsm_crypto::{Algorithm, HashAlgorithm};

/// `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// `rsaEncryption` (1.2.840.113549.1.1.1) and its NULL parameters.
const RSA_ENCRYPTION: &[u8] =
    &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00];
/// The named curve P-256 (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS` holds it.
pub(crate) const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// The named curve P-384 (1.3.132.0.34).
pub(crate) const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

/// The curve parameters of an EC algorithm.
pub(crate) fn curve(algorithm: Algorithm) -> Option<&'static [u8]> {
    match algorithm {
        Algorithm::EcP256 => Some(P256),
        Algorithm::EcP384 => Some(P384),
        _ => None,
    }
}

fn length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(tag);
    length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// An unsigned big-endian integer as a DER INTEGER.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    let digits = &bytes[start.min(bytes.len())..];
    let mut body = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(digits);
    tlv(0x02, &body)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0);
    body.extend_from_slice(bytes);
    tlv(0x03, &body)
}

/// The uncompressed point inside `CKA_EC_POINT`: tokens wrap it in a DER OCTET STRING (as the
/// standard says); a few return it bare.
pub(crate) fn ec_point(value: &[u8]) -> Option<&[u8]> {
    let inner = match value {
        [0x04, n, rest @ ..] if usize::from(*n) == rest.len() => rest,
        [0x04, 0x81, n, rest @ ..] if usize::from(*n) == rest.len() => rest,
        _ => value,
    };
    (inner.first() == Some(&0x04)).then_some(inner)
}

/// The SubjectPublicKeyInfo of an EC public key.
pub(crate) fn ec_spki(curve: &[u8], point: &[u8]) -> Vec<u8> {
    sequence(&[&sequence(&[EC_PUBLIC_KEY, curve]), &bit_string(point)])
}

/// The SubjectPublicKeyInfo of an RSA public key.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let key = sequence(&[&integer(modulus), &integer(exponent)]);
    sequence(&[&tlv(0x30, RSA_ENCRYPTION), &bit_string(&key)])
}

/// An ECDSA signature as DER from the token's `r‖s` (two halves of equal length).
pub(crate) fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(sequence(&[&integer(r), &integer(s)]))
}

/// The DigestInfo prefix a PKCS#1 v1.5 signature puts before the digest.
pub(crate) fn digest_info_prefix(hash: HashAlgorithm) -> &'static [u8] {
    match hash {
        HashAlgorithm::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlgorithm::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(integer(&[]), [0x02, 0x01, 0x00]);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        assert_eq!(tlv(0x04, &[0; 0x81])[..3], [0x04, 0x81, 0x81]);
        assert_eq!(tlv(0x04, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn an_ec_point_is_found_wrapped_or_bare() {
        let point = [0x04, 1, 2, 3];
        assert_eq!(ec_point(&[0x04, 0x04, 0x04, 1, 2, 3]), Some(&point[..]));
        assert_eq!(ec_point(&point), Some(&point[..]));
        assert_eq!(ec_point(&[0x02, 1]), None);
    }

    #[test]
    fn odd_raw_signatures_are_refused() {
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
        assert!(ecdsa_signature(&[]).is_none());
        assert_eq!(
            ecdsa_signature(&[0x01, 0x80]).unwrap_or_default(),
            [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]
        );
    }
}
