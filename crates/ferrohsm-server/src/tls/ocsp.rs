//! Checking an OCSP response (RFC 6960) before it is stapled: it must be a successful basic
//! response whose single response names the served certificate (serial number, and the hashes
//! of its issuer's name and, when the chain holds the issuer, key), says `good`, and is fresh
//! (`thisUpdate` not in the future beyond a small skew, `nextUpdate` present and not passed).
//!
//! The response's signature is not checked here: clients check it against the issuer they
//! trust. This check exists so the server never staples a response that would make clients
//! fail the connection (another certificate's, a revoked or a stale one) without saying so.
//!
//! DER is read with `ferrohsm_crypto::der::tlv` (definite lengths, bounds-checked): anything
//! malformed is refused, nothing indexes past its input.

use time::OffsetDateTime;

/// How far in the future a `thisUpdate` may be (clock skew between responder and server).
const SKEW: time::Duration = time::Duration::minutes(5);

const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// Why a response is not stapled; `reason` is a fixed label (for the metric).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    /// `unreadable`, `oversized` (both from reading the file), `malformed`, `unsuccessful`,
    /// `mismatch`, `revoked`, `unknown`, `stale` or `future`.
    pub reason: &'static str,
    /// What exactly, for the log.
    pub detail: String,
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal { reason, detail: detail.into() }
}

fn malformed(what: &str) -> Refusal {
    refuse("malformed", format!("not a DER OCSP response ({what})"))
}

/// When an accepted response stops being fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fresh {
    /// The response's `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// The response's `nextUpdate`: after it, the response is stale.
    pub next_update: OffsetDateTime,
}

/// One DER item: its tag byte and content.
struct Item<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads one item from the front of `input`, returning it and the rest.
fn item(input: &[u8]) -> Option<(Item<'_>, &[u8])> {
    let (tag, content, rest) = ferrohsm_core::der::tlv(input)?;
    Some((Item { tag, content }, rest))
}

/// Reads an item that must have `tag`.
fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), Refusal> {
    match item(input) {
        Some((i, rest)) if i.tag == tag => Ok((i.content, rest)),
        _ => Err(malformed(what)),
    }
}

/// Skips an item with `tag` if it is next.
fn skip_optional(input: &[u8], tag: u8) -> &[u8] {
    match item(input) {
        Some((i, rest)) if i.tag == tag => rest,
        _ => input,
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const ENUMERATED: u8 = 0x0a;
const OID: u8 = 0x06;
const GENERALIZED_TIME: u8 = 0x18;
const UTC_TIME: u8 = 0x17;

/// What a served certificate says about itself, for matching a response.
struct Served<'a> {
    serial: &'a [u8],
    issuer_name: &'a [u8],
}

/// The serial number and issuer name (as encoded, tag included) of a certificate.
fn served(cert: &[u8]) -> Result<Served<'_>, Refusal> {
    let bad = || refuse("mismatch", "the served certificate could not be read");
    let (certificate, _) = expect(cert, SEQUENCE, "certificate").map_err(|_| bad())?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate").map_err(|_| bad())?;
    let tbs = skip_optional(tbs, 0xa0); // [0] version
    let (serial, tbs) = expect(tbs, INTEGER, "serial").map_err(|_| bad())?;
    let (_, tbs) = expect(tbs, SEQUENCE, "signature").map_err(|_| bad())?;
    let (_, after) = expect(tbs, SEQUENCE, "issuer").map_err(|_| bad())?;
    let issuer_name = &tbs[..tbs.len() - after.len()];
    Ok(Served { serial, issuer_name })
}

/// What the TLS state reports of a served certificate: its serial number and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The serial number in lower-case hex.
    pub serial: String,
    /// The start of its validity.
    pub not_before: OffsetDateTime,
    /// The end of its validity.
    pub not_after: OffsetDateTime,
}

/// The serial number and validity of a certificate (DER), if it can be read.
pub(crate) fn facts(cert: &[u8]) -> Option<Facts> {
    let (certificate, _) = expect(cert, SEQUENCE, "certificate").ok()?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate").ok()?;
    let tbs = skip_optional(tbs, 0xa0);
    let (serial, tbs) = expect(tbs, INTEGER, "serial").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "signature").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "issuer").ok()?;
    let (validity, _) = expect(tbs, SEQUENCE, "validity").ok()?;
    let (not_before, rest) = item(validity)?;
    let (not_after, _) = item(rest)?;
    Some(Facts {
        serial: ferrohsm_core::hex::encode(serial),
        not_before: x509_time(&not_before)?,
        not_after: x509_time(&not_after)?,
    })
}

/// A certificate's `Time`: `UTCTime` (`YYMMDDHHMMSSZ`, years 1950 to 2049) or
/// `GeneralizedTime`.
fn x509_time(time: &Item<'_>) -> Option<OffsetDateTime> {
    match time.tag {
        GENERALIZED_TIME => generalized_time(time.content),
        UTC_TIME => {
            let year: u8 = std::str::from_utf8(time.content.get(..2)?).ok()?.parse().ok()?;
            let century: &[u8] = if year >= 50 { b"19" } else { b"20" };
            generalized_time(&[century, time.content].concat())
        }
        _ => None,
    }
}

/// The subjectPublicKey bits (without the unused-bits byte) of a certificate.
fn public_key_bits(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = expect(cert, SEQUENCE, "certificate").ok()?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate").ok()?;
    let tbs = skip_optional(tbs, 0xa0);
    let (_, tbs) = expect(tbs, INTEGER, "serial").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "signature").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "issuer").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "validity").ok()?;
    let (_, tbs) = expect(tbs, SEQUENCE, "subject").ok()?;
    let (spki, _) = expect(tbs, SEQUENCE, "subjectPublicKeyInfo").ok()?;
    let (_, spki) = expect(spki, SEQUENCE, "algorithm").ok()?;
    let (bits, _) = expect(spki, BIT_STRING, "subjectPublicKey").ok()?;
    bits.split_first().map(|(_, key)| key)
}

fn digest(oid: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match oid {
        OID_SHA1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        OID_SHA256 => &aws_lc_rs::digest::SHA256,
        _ => return None,
    };
    Some(aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec())
}

/// `YYYYMMDDHHMMSS[.f]Z`.
fn generalized_time(content: &[u8]) -> Option<OffsetDateTime> {
    let text = std::str::from_utf8(content).ok()?;
    let text = text.strip_suffix('Z')?;
    let whole = text.split('.').next()?;
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |range: std::ops::Range<usize>| whole.get(range)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(n(0..4)?), month, u8::try_from(n(6..8)?).ok()?)
            .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(n(8..10)?).ok()?,
        u8::try_from(n(10..12)?).ok()?,
        u8::try_from(n(12..14)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(clock).assume_utc())
}

/// Checks `response` (DER) for the certificate `leaf` (DER), whose issuer `issuer` (DER) is
/// known when the chain holds it, at `now`.
pub fn check(
    response: &[u8],
    leaf: &[u8],
    issuer: Option<&[u8]>,
    now: OffsetDateTime,
) -> Result<Fresh, Refusal> {
    let (outer, trailing) = expect(response, SEQUENCE, "OCSPResponse")?;
    if !trailing.is_empty() {
        return Err(malformed("bytes after the response"));
    }
    let (status, rest) = expect(outer, ENUMERATED, "responseStatus")?;
    if status != [0] {
        return Err(refuse(
            "unsuccessful",
            format!(
                "the responder answered status {} instead of successful",
                status.first().copied().unwrap_or(255)
            ),
        ));
    }
    let (bytes, _) = expect(rest, 0xa0, "responseBytes")?;
    let (bytes, _) = expect(bytes, SEQUENCE, "ResponseBytes")?;
    let (kind, rest) = expect(bytes, OID, "responseType")?;
    if kind != OID_OCSP_BASIC {
        return Err(malformed("not a basic OCSP response"));
    }
    let (basic, _) = expect(rest, OCTET_STRING, "response")?;
    let (basic, _) = expect(basic, SEQUENCE, "BasicOCSPResponse")?;
    let (data, _) = expect(basic, SEQUENCE, "tbsResponseData")?;
    let data = skip_optional(data, 0xa0); // [0] version
    let data = match item(data) {
        Some((i, rest)) if i.tag == 0xa1 || i.tag == 0xa2 => rest, // responderID
        _ => return Err(malformed("responderID")),
    };
    let (_, data) = expect(data, GENERALIZED_TIME, "producedAt")?;
    let (mut responses, _) = expect(data, SEQUENCE, "responses")?;

    let served = served(leaf)?;
    let issuer_key = issuer.and_then(public_key_bits);
    while !responses.is_empty() {
        let (single, rest) = expect(responses, SEQUENCE, "SingleResponse")?;
        responses = rest;
        let (cert_id, single) = expect(single, SEQUENCE, "CertID")?;
        let (algorithm, cert_id) = expect(cert_id, SEQUENCE, "hashAlgorithm")?;
        let (oid, _) = expect(algorithm, OID, "hash OID")?;
        let (name_hash, cert_id) = expect(cert_id, OCTET_STRING, "issuerNameHash")?;
        let (key_hash, cert_id) = expect(cert_id, OCTET_STRING, "issuerKeyHash")?;
        let (serial, _) = expect(cert_id, INTEGER, "serialNumber")?;
        let Some(expected_name) = digest(oid, served.issuer_name) else {
            continue; // a hash this check does not know cannot name our certificate
        };
        let key_matches = match issuer_key {
            Some(key) => digest(oid, key).is_some_and(|h| h == key_hash),
            None => true,
        };
        if serial != served.serial || name_hash != expected_name || !key_matches {
            continue;
        }
        let (status, single) = match item(single) {
            Some((i, rest)) => (i.tag, rest),
            None => return Err(malformed("certStatus")),
        };
        match status {
            0x80 => {}
            0xa1 => return Err(refuse("revoked", "the responder says the certificate is revoked")),
            0x82 => return Err(refuse("unknown", "the responder does not know the certificate")),
            _ => return Err(malformed("certStatus")),
        }
        let (this_update, single) = expect(single, GENERALIZED_TIME, "thisUpdate")?;
        let this_update = generalized_time(this_update).ok_or_else(|| malformed("thisUpdate"))?;
        let next_update = match item(single) {
            Some((i, _)) if i.tag == 0xa0 => {
                let (time, _) = expect(i.content, GENERALIZED_TIME, "nextUpdate")?;
                generalized_time(time).ok_or_else(|| malformed("nextUpdate"))?
            }
            _ => {
                return Err(refuse(
                    "stale",
                    "the response has no nextUpdate, so it cannot be known to be fresh",
                ));
            }
        };
        if this_update > now + SKEW {
            return Err(refuse(
                "future",
                format!("its thisUpdate ({this_update}) is in the future"),
            ));
        }
        if next_update <= now {
            return Err(refuse("stale", format!("it expired at {next_update} (nextUpdate)")));
        }
        return Ok(Fresh { this_update, next_update });
    }
    Err(refuse("mismatch", "it is not a response for the served certificate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let leaf = [0x30, 0x00];
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x82, 0xff, 0xff],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x03, 0x0a, 0x01, 0x00],
            &[0x30, 0x03, 0x0a, 0x01, 0x06],
        ] {
            let refused = check(bad, &leaf, None, OffsetDateTime::now_utc()).unwrap_err();
            assert!(["malformed", "unsuccessful"].contains(&refused.reason), "{refused:?}");
        }
    }

    #[test]
    fn certificate_facts_read_utc_and_generalized_times_and_refuse_garbage() {
        let at = |y, m, d| {
            time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
                .unwrap()
                .midnight()
                .assume_utc()
        };
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.serial_number = Some(vec![0x01, 0x02, 0xfe].into());
        // Before 2050: UTCTime; from 2050 on: GeneralizedTime (RFC 5280 §4.1.2.5).
        params.not_before = at(2024, 2, 29);
        params.not_after = at(2051, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = facts(cert.der()).unwrap();
        assert_eq!(f.serial, "0102fe");
        assert_eq!((f.not_before, f.not_after), (at(2024, 2, 29), at(2051, 1, 1)));
        for cut in 0..cert.der().len() {
            assert!(facts(&cert.der()[..cut]).is_none(), "{cut}");
        }
        assert!(facts(b"not a certificate").is_none());
    }

    #[test]
    fn generalized_times_parse_or_are_refused() {
        let t = generalized_time(b"20261202013000Z").unwrap();
        assert_eq!((t.year(), t.hour(), t.minute()), (2026, 1, 30));
        assert!(generalized_time(b"20261202013000.5Z").is_some());
        for bad in
            [&b"20261302013000Z"[..], b"2026120201300Z", b"20261202013000", b"2026120201300aZ"]
        {
            assert!(generalized_time(bad).is_none());
        }
    }
}
