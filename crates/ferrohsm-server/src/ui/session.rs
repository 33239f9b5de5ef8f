//! Dashboard sessions: an in-memory, bounded table from a random cookie value to the bearer
//! token the user pasted. Losing it (a restart) only signs everyone out.
//!
//! The table is keyed by the SHA-256 of the cookie value, holds the token zeroized on drop,
//! and never outlives the token: a session ends at the token's `exp` or after
//! [`MAX_SESSION_LIFETIME`], whichever comes first. Every request still re-verifies the token
//! (signature, expiry, revocation, certificate binding), so a session is never more than a
//! handle on a credential that is checked as REST checks it.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// The most sessions held at once (a sign-in beyond it is refused until some end).
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// The most sessions one subject holds; its oldest ends when it signs in once more.
pub(crate) const MAX_SESSIONS_PER_SUBJECT: usize = 16;

/// The longest a session lives, whatever the token's lifetime (seconds).
pub(crate) const MAX_SESSION_LIFETIME: u64 = 12 * 3600;

/// The length of a cookie value: 32 random bytes, base64url without padding.
const COOKIE_VALUE_LEN: usize = 43;

/// One signed-in browser.
pub(crate) struct Session {
    /// The bearer token, re-verified on every request.
    pub(crate) token: Zeroizing<String>,
    /// The token's subject (for the per-subject bound and the page header).
    pub(crate) subject: String,
    /// The CSRF token every form of this session carries.
    pub(crate) csrf: String,
    /// Unix seconds after which the session is gone.
    pub(crate) expires_at: u64,
    created_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Clone for Session {
    fn clone(&self) -> Self {
        Session {
            token: self.token.clone(),
            subject: self.subject.clone(),
            csrf: self.csrf.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
        }
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionError {
    /// The table is full of live sessions.
    Full,
    /// The system random generator failed.
    Random,
}

/// The session table.
#[derive(Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("live", &self.len()).finish()
    }
}

impl Sessions {
    /// Starts a session for `token` (already verified) of `subject`, expiring at the token's
    /// `token_exp` or after the maximum lifetime. Returns the cookie value and the session.
    pub(crate) fn create(
        &self,
        token: &str,
        subject: &str,
        token_exp: u64,
        now: u64,
    ) -> Result<(String, Session), SessionError> {
        let value = random_value()?;
        let session = Session {
            token: Zeroizing::new(token.to_owned()),
            subject: subject.to_owned(),
            csrf: random_value()?,
            expires_at: token_exp.min(now.saturating_add(MAX_SESSION_LIFETIME)),
            created_at: now,
        };
        let mut table = self.lock();
        table.retain(|_, s| s.expires_at > now);
        let mine: Vec<([u8; 32], u64)> = table
            .iter()
            .filter(|(_, s)| s.subject == subject)
            .map(|(id, s)| (*id, s.created_at))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_SUBJECT
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, created)| *created)
        {
            table.remove(oldest);
        }
        if table.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        table.insert(id_of(&value), session.clone());
        Ok((value, session))
    }

    /// The live session a cookie value names.
    pub(crate) fn get(&self, value: &str, now: u64) -> Option<Session> {
        if !well_formed(value) {
            return None;
        }
        let id = id_of(value);
        let mut table = self.lock();
        match table.get(&id) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                table.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Ends the session a cookie value names (signing out); true if there was one.
    pub(crate) fn remove(&self, value: &str) -> bool {
        well_formed(value) && self.lock().remove(&id_of(value)).is_some()
    }

    /// How many sessions are held (expired ones included until the next sign-in sweeps them).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fresh random value: 32 bytes, base64url.
pub(crate) fn random_value() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SessionError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `value` could be a cookie value this table issued.
fn well_formed(value: &str) -> bool {
    value.len() == COOKIE_VALUE_LEN
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn id_of(value: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    let mut id = [0u8; 32];
    id.copy_from_slice(digest.as_ref());
    id
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_session_ends_with_its_token_and_never_later_than_the_maximum() {
        let sessions = Sessions::default();
        let (value, s) = sessions.create("tok", "alice", NOW + 60, NOW).expect("created");
        assert_eq!(s.expires_at, NOW + 60);
        assert!(sessions.get(&value, NOW + 59).is_some());
        assert!(sessions.get(&value, NOW + 60).is_none(), "gone at the token's expiry");
        assert_eq!(sessions.len(), 0, "an expired session is dropped when seen");
        let (_, long) = sessions.create("tok", "alice", NOW + 10 * 86_400, NOW).expect("created");
        assert_eq!(long.expires_at, NOW + MAX_SESSION_LIFETIME);
    }

    #[test]
    fn signing_out_ends_the_session_and_unknown_or_malformed_values_name_nothing() {
        let sessions = Sessions::default();
        let (value, _) = sessions.create("tok", "alice", NOW + 600, NOW).expect("created");
        assert!(sessions.remove(&value));
        assert!(sessions.get(&value, NOW).is_none());
        assert!(!sessions.remove(&value));
        for bad in ["", "short", &"a".repeat(44), &format!("{}!", "a".repeat(42))] {
            assert!(sessions.get(bad, NOW).is_none());
        }
        assert!(sessions.get(&random_value().expect("random"), NOW).is_none());
    }

    #[test]
    fn one_subject_holds_a_bounded_number_of_sessions_its_oldest_going_first() {
        let sessions = Sessions::default();
        let mut values = Vec::new();
        for i in 0..MAX_SESSIONS_PER_SUBJECT as u64 + 3 {
            values.push(sessions.create("tok", "alice", NOW + 600, NOW + i).expect("created").0);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_SUBJECT);
        assert!(sessions.get(&values[0], NOW + 100).is_none(), "the oldest ended");
        assert!(sessions.get(values.last().expect("some"), NOW + 100).is_some());
        sessions.create("tok", "bob", NOW + 600, NOW).expect("another subject is not affected");
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_SUBJECT + 1);
    }

    #[test]
    fn a_full_table_refuses_new_sessions_until_some_expire() {
        let sessions = Sessions::default();
        for i in 0..MAX_SESSIONS {
            sessions.create("tok", &format!("user{i}"), NOW + 60, NOW).expect("created");
        }
        assert_eq!(
            sessions.create("tok", "one-more", NOW + 60, NOW).err(),
            Some(SessionError::Full)
        );
        sessions.create("tok", "later", NOW + 600, NOW + 61).expect("expired sessions swept");
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let sessions = Sessions::default();
        let (_, s) = sessions.create("secret-token-text", "alice", NOW + 60, NOW).expect("ok");
        assert!(!format!("{s:?}").contains("secret-token-text"));
        assert!(!format!("{:?}", s.csrf).is_empty());
        assert!(!format!("{s:?}").contains(&s.csrf));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
