//! Whole numbers in request bodies. JSON has one number type, and JSON Schema's `integer`
//! includes `2.0`, so a request may write a whole number with a fraction of zero; anything
//! with a fractional part, or out of the field's range, is refused.

use std::fmt;
use std::marker::PhantomData;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i128>> Whole<T> {
    fn fit<E: serde::de::Error>(value: i128) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::custom(format!("{value} is out of range")))
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        Self::fit(i128::from(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        Self::fit(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        // 2^63 bounds every field here; beyond it a float is not exact anyway.
        if !v.is_finite() || v.fract() != 0.0 || v.abs() >= 9.223_372_036_854_776e18 {
            return Err(E::custom(format!("{v} is not a whole number in range")));
        }
        #[allow(clippy::cast_possible_truncation)]
        Self::fit(v as i128)
    }
}

/// A whole number.
struct WholeValue<T>(T);

impl<'de, T: TryFrom<i128>> Deserialize<'de> for WholeValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Whole(PhantomData)).map(WholeValue)
    }
}

/// `#[serde(deserialize_with = "whole")]`.
pub(crate) fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    WholeValue::deserialize(d).map(|w| w.0)
}

/// `#[serde(default, deserialize_with = "whole_option")]`.
pub(crate) fn whole_option<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<WholeValue<T>>::deserialize(d).map(|o| o.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Version {
        #[serde(deserialize_with = "super::whole")]
        version: u32,
        #[serde(default, deserialize_with = "super::whole_option")]
        grace: Option<i64>,
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn whole_numbers_may_carry_a_zero_fraction_and_nothing_else() -> TestResult {
        let v: Version = serde_json::from_str(r#"{"version": 1696.0, "grace": -5}"#)?;
        assert_eq!((v.version, v.grace), (1696, Some(-5)));
        let v: Version = serde_json::from_str(r#"{"version": 3, "grace": null}"#)?;
        assert_eq!((v.version, v.grace), (3, None));
        for bad in [
            r#"{"version": 1.5}"#,
            r#"{"version": -1}"#,
            r#"{"version": 4294967296}"#,
            r#"{"version": 1e300}"#,
            r#"{"version": "1"}"#,
        ] {
            assert!(serde_json::from_str::<Version>(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
