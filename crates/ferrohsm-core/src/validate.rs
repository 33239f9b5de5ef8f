//! Validation of caller-supplied metadata: names, descriptions, tags and usages.

use std::collections::{BTreeMap, BTreeSet};

use ferrohsm_crypto::{Algorithm, Usage};
use ferrohsm_store::KeyName;

use crate::{Error, Result};

/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// The most tags a key may carry.
pub const MAX_TAGS: usize = 50;
/// The longest tag key, in bytes.
pub const MAX_TAG_KEY_LEN: usize = 64;
/// The longest tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

pub(crate) fn name(name: Option<&str>) -> Result<Option<KeyName>> {
    name.map(|n| KeyName::parse(n).map_err(|e| Error::InvalidRequest(e.0))).transpose()
}

pub(crate) fn description(text: Option<&str>) -> Result<String> {
    let text = text.unwrap_or_default();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::InvalidRequest(format!(
            "a description has at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Error::InvalidRequest(
            "a description cannot contain control characters".into(),
        ));
    }
    Ok(text.to_owned())
}

/// The longest subject, session or token id the HSM mints or revokes.
pub const MAX_TOKEN_FIELD_LEN: usize = 128;

/// Checks a token-derived string the HSM mints or revokes (a subject, `sid` or `jti`):
/// 1 to 128 characters of `[A-Za-z0-9._@:+/=~-]`, starting with a letter or digit. Nothing in
/// it can break a log line, a header or a table cell.
pub fn token_field(field: &str, value: &str) -> Result<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._@:+/=~-".contains(c);
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_FIELD_LEN
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(safe);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{field} must be 1 to {MAX_TOKEN_FIELD_LEN} characters of letters, digits and ._@:+/=~- starting with a letter or digit"
        )))
    }
}

/// Tag keys are `[A-Za-z0-9_./-]{1,64}` (no `:`, which separates key and value in list
/// filters); values are up to 256 characters without control characters.
pub(crate) fn tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::InvalidRequest(format!("a key has at most {MAX_TAGS} tags")));
    }
    for (key, value) in tags {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_TAG_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
        if !key_ok {
            return Err(Error::InvalidRequest(format!(
                "tag key {key:?} must match [A-Za-z0-9_./-]{{1,{MAX_TAG_KEY_LEN}}}"
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS || value.chars().any(char::is_control) {
            return Err(Error::InvalidRequest(format!(
                "tag {key:?} has a value over {MAX_TAG_VALUE_CHARS} characters or with control characters"
            )));
        }
    }
    Ok(())
}

pub(crate) fn usages(algorithm: Algorithm, requested: Option<&[Usage]>) -> Result<BTreeSet<Usage>> {
    let allowed = algorithm.allowed_usages();
    let Some(requested) = requested else {
        return Ok(allowed.iter().copied().collect());
    };
    if requested.is_empty() {
        return Err(Error::InvalidRequest("a key needs at least one usage".into()));
    }
    if let Some(bad) = requested.iter().find(|u| !allowed.contains(u)) {
        return Err(Error::InvalidRequest(format!("{algorithm} keys cannot {bad}")));
    }
    Ok(requested.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked() {
        let ok: BTreeMap<String, String> = [("env", "prod"), ("team/payments", "a b c"), ("x", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(tags(&ok).is_ok());
        for (k, v) in [
            ("", "x"),
            ("a:b", "x"),
            ("a b", "x"),
            ("k", "line\nbreak"),
            (&"k".repeat(65), "x"),
            ("k", &"v".repeat(257)),
        ] {
            let one = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(matches!(tags(&one), Err(Error::InvalidRequest(_))), "{k:?}={v:?}");
        }
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(tags(&many).is_err());
    }

    #[test]
    fn usages_must_fit_the_algorithm() {
        assert_eq!(usages(Algorithm::EcP256, None).ok().map(|u| u.len()), Some(2));
        assert!(usages(Algorithm::EcP256, Some(&[Usage::Encrypt])).is_err());
        assert!(usages(Algorithm::Aes256Gcm, Some(&[])).is_err());
        assert_eq!(
            usages(Algorithm::Aes256Gcm, Some(&[Usage::Wrap, Usage::Wrap])).ok().map(|u| u.len()),
            Some(1)
        );
    }

    #[test]
    fn descriptions() {
        assert!(description(Some("multi\nline\tok")).is_ok());
        assert!(description(Some("bell\u{7}")).is_err());
        assert!(description(Some(&"x".repeat(1025))).is_err());
    }
}
