//! PEM encoding and decoding of PKCS#8 private keys and SubjectPublicKeyInfo public keys.

use crate::{Error, Result, SecretBytes};

/// The PEM label of a SubjectPublicKeyInfo document.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
/// The PEM label of an unencrypted PKCS#8 document.
pub const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// Encodes SubjectPublicKeyInfo DER as a `PUBLIC KEY` PEM block.
pub fn public_key_pem(spki_der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(PUBLIC_KEY_LABEL, spki_der.to_vec()))
}

/// Encodes PKCS#8 DER as a `PRIVATE KEY` PEM block, in a zeroizing buffer.
pub fn danger_private_key_pem(pkcs8_der: &[u8]) -> SecretBytes {
    let pem = pem::encode(&pem::Pem::new(PRIVATE_KEY_LABEL, pkcs8_der.to_vec()));
    SecretBytes::new(pem.into_bytes())
}

/// Decodes one PEM block with the `expected` label into its DER contents.
pub fn decode_pem(text: &str, expected: &str) -> Result<Vec<u8>> {
    let block = pem::parse(text).map_err(|e| Error::InvalidInput(format!("bad PEM: {e}")))?;
    if block.tag() != expected {
        return Err(Error::InvalidInput(format!(
            "expected a PEM {expected:?} block, found {:?}",
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_label_check() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let text = public_key_pem(&der);
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(decode_pem(&text, PUBLIC_KEY_LABEL).ok(), Some(der));
        assert!(matches!(decode_pem(&text, PRIVATE_KEY_LABEL), Err(Error::InvalidInput(_))));
        assert!(matches!(decode_pem("not pem", PUBLIC_KEY_LABEL), Err(Error::InvalidInput(_))));
    }
}
