//! Identity and state types: key ids, names, states and revocation reasons.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A server-assigned key id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(Uuid);

impl KeyId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        KeyId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The smallest possible id, for range scans.
    pub(crate) const MIN: KeyId = KeyId(Uuid::nil());
}

impl From<Uuid> for KeyId {
    fn from(uuid: Uuid) -> Self {
        KeyId(uuid)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, InvalidName> {
        // Only the canonical lowercase hyphenated form, so one key has one spelling.
        let uuid = Uuid::try_parse(s).map_err(|_| InvalidName(format!("{s:?} is not a key id")))?;
        if uuid.as_hyphenated().to_string() != s {
            return Err(InvalidName(format!("{s:?} is not a canonical key id")));
        }
        Ok(KeyId(uuid))
    }
}

/// A rejected name or id, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// An optional, unique, human-chosen key name: `[a-z0-9][a-z0-9._-]{0,127}`, and never
/// something that reads as a UUID (so a path segment is unambiguously an id or a name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    /// The maximum length of a name in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a name.
    pub fn parse(name: &str) -> Result<Self, InvalidName> {
        let bytes = name.as_bytes();
        let valid_first =
            bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let valid_rest = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if !valid_first || !valid_rest || bytes.len() > Self::MAX_LEN {
            return Err(InvalidName(format!(
                "key names match [a-z0-9][a-z0-9._-]{{0,127}}; {name:?} does not"
            )));
        }
        if Uuid::try_parse(name).is_ok() {
            return Err(InvalidName(format!("{name:?} reads as a key id and cannot be a name")));
        }
        Ok(KeyName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({})", self.0)
    }
}

impl Serialize for KeyName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        KeyName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Implements `as_str`, `Display`, `FromStr` and snake_case serde for a fieldless enum.
macro_rules! snake_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(InvalidName(format!(concat!("unknown ", $what, " {:?}"), other))),
                }
            }
        }
    };
}

/// A key's lifecycle state (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyState {
    /// Usable for every operation its usages allow.
    Active,
    /// No new encrypt/sign/wrap; decrypt/verify/unwrap still allowed unless compromised.
    Revoked,
    /// Scheduled for destruction after a grace period; cancellable; no use at all.
    PendingDestruction,
    /// Material wiped; only the metadata tombstone remains.
    Destroyed,
}

snake_names!(KeyState, "key state", {
    Active => "active",
    Revoked => "revoked",
    PendingDestruction => "pending_destruction",
    Destroyed => "destroyed",
});

/// Why a key was revoked (after RFC 5280's reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The key material is known or suspected to be exposed: all use is refused.
    Compromised,
    /// Replaced by another key.
    Superseded,
    /// The key's purpose has ended.
    CessationOfOperation,
    /// The owner's right to the key was withdrawn.
    PrivilegeWithdrawn,
}

snake_names!(RevocationReason, "revocation reason", {
    Unspecified => "unspecified",
    Compromised => "compromised",
    Superseded => "superseded",
    CessationOfOperation => "cessation_of_operation",
    PrivilegeWithdrawn => "privilege_withdrawn",
});

/// The state of one key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VersionState {
    /// The version's material is held (sealed).
    Active,
    /// The version's material has been wiped.
    Destroyed,
}

snake_names!(VersionState, "version state", {
    Active => "active",
    Destroyed => "destroyed",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "0", "prod.payments-key_1", &"a".repeat(128)] {
            assert!(KeyName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "é",
            &"a".repeat(129),
            "0190a5c4-1111-7000-8000-000000000001",
        ] {
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_have_one_spelling() {
        let id = KeyId::generate();
        assert_eq!(id.to_string().parse::<KeyId>().ok(), Some(id));
        assert!(id.to_string().to_uppercase().parse::<KeyId>().is_err());
        assert!(id.as_uuid().simple().to_string().parse::<KeyId>().is_err());
        assert!("not-an-id".parse::<KeyId>().is_err());
        let later = KeyId::generate();
        assert!(later > id, "UUIDv7 ids sort by creation");
    }

    #[test]
    fn state_names_round_trip() {
        for s in KeyState::ALL {
            assert_eq!(s.as_str().parse::<KeyState>().ok(), Some(*s));
        }
        for r in RevocationReason::ALL {
            assert_eq!(r.as_str().parse::<RevocationReason>().ok(), Some(*r));
        }
    }
}
