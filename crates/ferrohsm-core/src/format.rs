//! The `fhsm:v<version>:<base64>` text form of ciphertexts and wrapped keys (SPEC §5).

use ferrohsm_crypto::b64;

use crate::{Error, Result};

const PREFIX: &str = "fhsm:v";

/// Formats `body` (nonce || ciphertext || tag, or an RFC 5649 wrapping) under `version`.
pub(crate) fn format(version: u32, body: &[u8]) -> String {
    format!("{PREFIX}{version}:{}", b64::encode(body))
}

/// Parses the text form strictly: the exact prefix, a version without sign or leading zeros,
/// and canonical padded base64.
pub(crate) fn parse(text: &str) -> Result<(u32, Vec<u8>)> {
    let rest = text
        .strip_prefix(PREFIX)
        .ok_or(Error::InvalidCiphertext("expected the fhsm:v<version>: prefix"))?;
    let (digits, body) = rest
        .split_once(':')
        .ok_or(Error::InvalidCiphertext("expected the fhsm:v<version>: prefix"))?;
    let well_formed = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    let version = well_formed
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .ok_or(Error::InvalidCiphertext("the version is not a positive integer"))?;
    let body =
        b64::decode(body).map_err(|_| Error::InvalidCiphertext("the body is not valid base64"))?;
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = format(12, b"\x00\x01binary");
        assert!(text.starts_with("fhsm:v12:"));
        assert_eq!(parse(&text).ok(), Some((12, b"\x00\x01binary".to_vec())));
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        for bad in [
            "",
            "fhsm",
            "fhsm:v",
            "fhsm:v1",
            "fhsm:v:AAAA",
            "fhsm:v0:AAAA",
            "fhsm:v01:AAAA",
            "fhsm:v+1:AAAA",
            "fhsm:v-1:AAAA",
            "fhsm:v4294967296:AAAA",
            "fhsm:v1:AAA",
            "fhsm:v1:AA AA",
            "FHSM:v1:AAAA",
            "vault:v1:AAAA",
            "fhsm:v1x:AAAA",
            "fhsm:v1:AAAA\n",
        ] {
            assert!(matches!(parse(bad), Err(Error::InvalidCiphertext(_))), "{bad:?}");
        }
        assert_eq!(parse("fhsm:v4294967295:").ok(), Some((u32::MAX, vec![])));
    }
}
