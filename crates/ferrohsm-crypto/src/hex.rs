//! Lowercase hexadecimal, as used for hashes, fingerprints and key ids.

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Decodes hex digits (either case); `None` for an odd length or any other character.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would also take a sign ("+1").
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(super::encode(&[0, 255, 16]), "00ff10");
        assert_eq!(super::decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(super::decode("00FF10"), Some(vec![0, 255, 16]));
        for bad in ["0", "zz", "0g", "+1"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
