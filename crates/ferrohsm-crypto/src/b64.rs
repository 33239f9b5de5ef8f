//! Standard base64 (RFC 4648, padded), as used for every binary field FerroHSM writes:
//! a helper for `#[serde(with = "ferrohsm_crypto::b64")]` plus plain encode and decode.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer};

/// Encodes bytes as standard padded base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64, rejecting anything else (whitespace, URL-safe alphabet,
/// missing padding, non-canonical trailing bits).
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

/// Serializes bytes as a base64 string.
pub fn serialize<S: Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&encode(bytes.as_ref()))
}

/// Deserializes a base64 string into any type built from a byte vector.
pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<Vec<u8>>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    let bytes = decode(&text).map_err(serde::de::Error::custom)?;
    T::try_from(bytes).map_err(|_| serde::de::Error::custom("base64 field has the wrong length"))
}

/// `#[serde(with = "b64::option")]` for optional binary fields (absent or `null` is `None`).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some(bytes)` as base64 and `None` as `null`.
    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::serialize(b, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes an optional base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        text.map(|t| super::decode(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// `#[serde(with = "b64::secret")]` for secret fields: decodes into a zeroizing
/// [`crate::SecretBytes`], and encodes through a zeroizing buffer. Only request and response
/// bodies that must carry a secret use it.
pub mod secret {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    use crate::SecretBytes;

    /// Serializes the secret as base64.
    pub fn serialize<S: Serializer>(bytes: &SecretBytes, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(super::encode(bytes.expose()));
        serializer.serialize_str(&text)
    }

    /// Deserializes base64 into a secret buffer.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SecretBytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::decode(&text).map(SecretBytes::new).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strict_decoding() {
        assert_eq!(super::decode("aGk=").ok(), Some(b"hi".to_vec()));
        for bad in ["aGk", "aG k=", "aGk=\n", "a-_=", "aGl="] {
            assert!(super::decode(bad).is_err(), "{bad:?}");
        }
    }
}
