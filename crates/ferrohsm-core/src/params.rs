//! What an approval shows and binds: the named parameters of an operation, in order, and the
//! keyed digest over exactly those parameters.
//!
//! Approvers see the list (REST, CLI, the audit record of the request that opened the
//! approval); the approval binds its digest, and a repeated request must produce the same
//! digest to execute. So what is shown is what runs. Secret inputs (plaintext, key material)
//! appear only as a length and a keyed digest: an unkeyed hash of a low-entropy secret would
//! let anyone who can read approvals test guesses. Non-secret inputs (messages to sign,
//! ciphertexts, signatures) appear with their SHA-256, which an approver can compare with the
//! artefact they expect.

use std::collections::BTreeMap;

use ferrohsm_crypto::{CryptoProvider, SignInput, SignatureScheme};
use ferrohsm_policy::{Operation, Parameter};
use ferrohsm_seal::Sealer;
use ferrohsm_store::KeyRecord;

/// The whole list an approval shows: operation, key (id, name, tags), then the operation's
/// own parameters.
pub(crate) fn describe(
    operation: Operation,
    key: Option<&KeyRecord>,
    own: Vec<Parameter>,
) -> Vec<Parameter> {
    let mut list = vec![Parameter::new("operation", operation.as_str())];
    if let Some(key) = key {
        list.push(Parameter::new("key_id", key.id.to_string()));
        if let Some(name) = &key.name {
            list.push(Parameter::new("key_name", name.to_string()));
        }
        list.push(Parameter::new("key_algorithm", key.algorithm.to_string()));
        list.push(Parameter::new("key_tags", tags(&key.tags)));
    }
    list.extend(own);
    list
}

/// The keyed digest of a parameter list: HMAC under the sealer's binding key of every name
/// and value, each length-prefixed, in order (never a `Debug` rendering).
pub(crate) fn digest(sealer: &Sealer, parameters: &[Parameter]) -> String {
    let mut buf = Vec::new();
    for p in parameters {
        for part in [p.name.as_bytes(), p.value.as_bytes()] {
            buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
            buf.extend_from_slice(part);
        }
    }
    ferrohsm_audit::hex(&sealer.bind(&buf))
}

/// `k=v, k2=v2`, or `(none)`.
pub(crate) fn tags(tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return "(none)".into();
    }
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// A secret input: its length and keyed digest.
pub(crate) fn secret(sealer: &Sealer, name: &str, bytes: &[u8]) -> [Parameter; 2] {
    let keyed = ferrohsm_audit::hex(&sealer.bind(bytes));
    [
        Parameter::new(format!("{name}_length"), bytes.len().to_string()),
        Parameter::new(format!("{name}_keyed_digest"), keyed),
    ]
}

/// A public input: its length and SHA-256.
pub(crate) fn public(provider: &dyn CryptoProvider, name: &str, bytes: &[u8]) -> [Parameter; 2] {
    [
        Parameter::new(format!("{name}_length"), bytes.len().to_string()),
        Parameter::new(format!("{name}_sha256"), ferrohsm_audit::hex(&provider.sha256(bytes))),
    ]
}

/// What is signed or verified: a message or a digest, and the scheme.
pub(crate) fn signed(
    provider: &dyn CryptoProvider,
    input: SignInput<'_>,
    scheme: Option<SignatureScheme>,
) -> Vec<Parameter> {
    let mut list = match input {
        SignInput::Message(m) => public(provider, "message", m).to_vec(),
        SignInput::Digest(d) => vec![Parameter::new("digest", ferrohsm_audit::hex(d))],
    };
    list.push(Parameter::new("scheme", scheme.map_or("default", |s| s.as_str())));
    list
}

/// A destruction grace period in seconds, with a readable form.
pub(crate) fn grace(grace: time::Duration, origin: &str) -> Parameter {
    let seconds = grace.whole_seconds();
    let count = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let readable = if seconds == 0 {
        "purged at the next scheduler run".to_owned()
    } else if seconds % 86_400 == 0 {
        count(seconds / 86_400, "day")
    } else if seconds % 3600 == 0 {
        count(seconds / 3600, "hour")
    } else {
        count(seconds, "second")
    };
    Parameter::new("grace_seconds", format!("{seconds} ({readable}; {origin})"))
}

/// An optional value, `(none)` when absent.
pub(crate) fn optional(name: &str, value: Option<&str>) -> Parameter {
    Parameter::new(name, value.unwrap_or("(none)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_binds_names_values_and_their_boundaries() {
        let master =
            ferrohsm_seal::MasterKey::from_bytes(&[9u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let provider = crate::default_provider();
        let sealer = Sealer::new(provider, &master).unwrap_or_else(|e| panic!("{e}"));
        let d = |list: &[(&str, &str)]| {
            let list: Vec<Parameter> = list.iter().map(|(n, v)| Parameter::new(*n, *v)).collect();
            digest(&sealer, &list)
        };
        let base = d(&[("a", "bc"), ("d", "e")]);
        assert_eq!(base, d(&[("a", "bc"), ("d", "e")]));
        for other in [
            d(&[("a", "b"), ("cd", "e")]),
            d(&[("ab", "c"), ("d", "e")]),
            d(&[("d", "e"), ("a", "bc")]),
            d(&[("a", "bc")]),
            d(&[("a", "bc"), ("d", "e"), ("", "")]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn graces_read_as_people_say_them() {
        let check = |seconds: i64, expected: &str| {
            assert_eq!(grace(time::Duration::seconds(seconds), "requested").value, expected);
        };
        check(0, "0 (purged at the next scheduler run; requested)");
        check(604_800, "604800 (7 days; requested)");
        check(7200, "7200 (2 hours; requested)");
        check(61, "61 (61 seconds; requested)");
        check(3600, "3600 (1 hour; requested)");
        check(1, "1 (1 second; requested)");
    }
}
