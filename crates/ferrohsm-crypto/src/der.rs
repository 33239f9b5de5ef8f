//! Reading DER: one definite-length tag-length-value element at a time, bounds-checked (a
//! length past the input, an indefinite or over-long length form is `None`, never a panic).

/// One DER element from the front of `der`: its tag byte, its contents and what follows it.
/// Multi-byte tags are not read (`None`): no structure FerroHSM reads uses them.
pub fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        (bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), rest)
    };
    (rest.len() >= len).then(|| {
        let (body, rest) = rest.split_at(len);
        (tag, body, rest)
    })
}

#[cfg(test)]
mod tests {
    use super::tlv;

    #[test]
    fn elements_are_read_or_refused_within_bounds() {
        assert_eq!(tlv(&[0x04, 0x02, 1, 2, 9]), Some((0x04, &[1u8, 2][..], &[9u8][..])));
        assert_eq!(tlv(&[0x30, 0x81, 0x01, 7]), Some((0x30, &[7u8][..], &[][..])));
        for bad in [&[][..], &[0x30], &[0x30, 0x03, 1], &[0x30, 0x80], &[0x30, 0x85, 0, 0, 0, 0, 1]]
        {
            assert_eq!(tlv(bad), None, "{bad:?}");
        }
        assert_eq!(tlv(&[0x1f, 0x01, 0x00]), None, "multi-byte tag");
    }
}
