//! List queries, opaque cursors and pages.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ferrohsm_crypto::Algorithm;

use crate::{Error, KeyId, KeyRecord, KeyState, Result};

/// The largest page a list may ask for.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The page size when a query names none.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// Which keys to list, in id (creation) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The page size, 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
    /// Only keys of this algorithm.
    pub algorithm: Option<Algorithm>,
    /// Only keys in this state.
    pub state: Option<KeyState>,
    /// Only keys carrying every one of these tags.
    pub tags: Vec<(String, String)>,
    /// Only named keys whose name starts with this.
    pub name_prefix: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: DEFAULT_LIST_LIMIT,
            cursor: None,
            algorithm: None,
            state: None,
            tags: Vec::new(),
            name_prefix: None,
        }
    }
}

impl ListQuery {
    /// Checks the limit.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIST_LIMIT {
            return Err(Error::InvalidQuery(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {}",
                self.limit
            )));
        }
        Ok(())
    }

    /// Whether `record` passes every filter (the cursor aside).
    pub fn matches(&self, record: &KeyRecord) -> bool {
        self.algorithm.is_none_or(|a| a == record.algorithm)
            && self.state.is_none_or(|s| s == record.state)
            && self.tags.iter().all(|(k, v)| record.tags.get(k) == Some(v))
            && self
                .name_prefix
                .as_deref()
                .is_none_or(|p| record.name.as_ref().is_some_and(|n| n.as_str().starts_with(p)))
    }
}

/// An opaque position in a listing: the next page starts after this key.
///
/// Because ids only grow and pages follow id order, paging neither skips nor repeats a key that
/// existed when the listing began, whatever is inserted meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub(crate) KeyId);

impl Cursor {
    /// A cursor positioned after `id`.
    pub fn after(id: KeyId) -> Self {
        Cursor(id)
    }

    /// The last key of the previous page: the next page starts after it.
    pub fn key_id(&self) -> KeyId {
        self.0
    }
}

const CURSOR_PREFIX: &str = "k1";

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CURSOR_PREFIX}{}", self.0.as_uuid().simple())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({self})")
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidQuery("the cursor is not one this server issued".into());
        let hex = s.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let uuid = uuid::Uuid::try_parse(hex).map_err(|_| bad())?;
        Ok(Cursor(KeyId::from(uuid)))
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The keys, in id order.
    pub keys: Vec<Arc<KeyRecord>>,
    /// Where to continue, if more keys match.
    pub next_cursor: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = Cursor::after(KeyId::generate());
        assert_eq!(c.to_string().parse::<Cursor>().ok(), Some(c));
        for bad in ["", "k1", "k2000", "k1zz", &format!("k1{}", "A".repeat(32)), &format!("x{c}")] {
            assert!(matches!(bad.parse::<Cursor>(), Err(Error::InvalidQuery(_))), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        for (limit, ok) in
            [(0, false), (1, true), (MAX_LIST_LIMIT, true), (MAX_LIST_LIMIT + 1, false)]
        {
            let q = ListQuery { limit, ..ListQuery::default() };
            assert_eq!(q.validate().is_ok(), ok, "{limit}");
        }
    }
}
