//! Per-actor token buckets with a bounded actor table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Operation, RateLimitConfig};

/// Token-bucket rate limiting per actor (or per source address for unauthenticated callers).
///
/// The table of buckets is bounded: it keeps two generations of at most `max_actors / 2`
/// buckets each; when the current generation fills, the previous one is dropped. An actor
/// active in either generation keeps its bucket (it moves to the current one), so the actors
/// forgotten are the least recently seen, and memory stays within `max_actors` buckets however
/// many distinct actors appear. A forgotten actor starts again with a full bucket.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: RateLimitConfig,
    current: HashMap<String, Bucket>,
    previous: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Tokens taken here since [`RateLimiter::take_usage`] last reported them.
    unreported: f64,
}

impl RateLimiter {
    /// A limiter with `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            state: Mutex::new(State { config, current: HashMap::new(), previous: HashMap::new() }),
        }
    }

    /// Replaces the limits (after a policy reload); existing buckets keep their tokens.
    pub fn reconfigure(&self, config: RateLimitConfig) {
        self.lock().config = config;
    }

    /// Takes the operation's weight from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str, operation: Operation, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        let capacity = f64::from(state.config.capacity);
        let refill = state.config.refill_per_second;
        let weight = f64::from(state.config.weight(operation));
        let mut bucket = match state.current.remove(key).or_else(|| state.previous.remove(key)) {
            Some(b) => b,
            None => Bucket { tokens: capacity, updated: now, unreported: 0.0 },
        };
        bucket.refill(capacity, refill, now);
        let result = if bucket.tokens >= weight {
            bucket.tokens -= weight;
            bucket.unreported += weight;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((weight - bucket.tokens) / refill)
                .unwrap_or(Duration::MAX))
        };
        state.keep(key, bucket);
        result
    }

    /// The tokens taken here since the last call, for at most `max` buckets (those that took
    /// the most), which then count from zero again; the rest are reported by a later call.
    /// With several replicas sharing one limit, each reports its usage and applies the
    /// others' with [`RateLimiter::debit`].
    pub fn take_usage(&self, max: usize) -> Vec<(String, f64)> {
        let mut state = self.lock();
        let State { current, previous, .. } = &mut *state;
        let mut used: Vec<(&String, &mut Bucket)> = current
            .iter_mut()
            .chain(previous.iter_mut())
            .filter(|(_, b)| b.unreported > 0.0)
            .collect();
        used.sort_by(|a, b| b.1.unreported.total_cmp(&a.1.unreported));
        used.into_iter()
            .take(max)
            .map(|(key, bucket)| (key.clone(), std::mem::take(&mut bucket.unreported)))
            .collect()
    }

    /// Puts back usage that [`RateLimiter::take_usage`] returned but could not be reported,
    /// so the next report includes it (for buckets still held).
    pub fn unreport(&self, usage: &[(String, f64)]) {
        let mut state = self.lock();
        for (key, tokens) in usage {
            if let Some(bucket) = state.current.get_mut(key) {
                bucket.unreported += tokens;
            } else if let Some(bucket) = state.previous.get_mut(key) {
                bucket.unreported += tokens;
            }
        }
    }

    /// Takes from each named bucket the tokens other replicas report its caller used there.
    /// A bucket may go below empty, at most by its capacity, so a caller who overspent
    /// elsewhere waits here too, but never longer than twice a full refill.
    pub fn debit(&self, usage: &[(String, f64)], now: Instant) {
        let mut state = self.lock();
        let capacity = f64::from(state.config.capacity);
        let refill = state.config.refill_per_second;
        for (key, tokens) in usage {
            if !tokens.is_finite() || *tokens <= 0.0 {
                continue;
            }
            let mut bucket = match state.current.remove(key).or_else(|| state.previous.remove(key))
            {
                Some(b) => b,
                None => Bucket { tokens: capacity, updated: now, unreported: 0.0 },
            };
            bucket.refill(capacity, refill, now);
            bucket.tokens = (bucket.tokens - tokens).max(-capacity);
            state.keep(key, bucket);
        }
    }

    /// How many actors' buckets are held now.
    pub fn tracked_actors(&self) -> usize {
        let state = self.lock();
        state.current.len() + state.previous.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update finishes under the lock, so a poisoned table is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Puts `bucket` back as the most recently used, dropping the older generation when the
    /// current one is full.
    fn keep(&mut self, key: &str, bucket: Bucket) {
        let half = (self.config.max_actors / 2).max(1);
        if self.current.len() >= half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key.to_owned(), bucket);
    }
}

impl Bucket {
    fn refill(&mut self, capacity: f64, per_second: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(capacity: u32, max_actors: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            capacity,
            refill_per_second: 1.0,
            max_actors,
            weights: HashMap::new(),
        })
    }

    /// What one replica takes is reported once, and debits the same bucket on another, so
    /// that two replicas together admit one bucket's worth, not two.
    #[test]
    fn usage_reported_by_one_replica_is_debited_on_another() {
        let now = Instant::now();
        let (a, b) = (limiter(10, 100), limiter(10, 100));
        for _ in 0..10 {
            assert!(a.check("actor:x", Operation::Encrypt, now).is_ok());
        }
        assert!(a.check("actor:x", Operation::Encrypt, now).is_err());
        let usage = a.take_usage(100);
        assert_eq!(usage, vec![("actor:x".to_owned(), 10.0)]);
        assert!(a.take_usage(100).is_empty(), "reported once");
        a.unreport(&usage);
        assert_eq!(a.take_usage(100), usage, "a failed report is made again");
        b.debit(&usage, now);
        assert!(b.check("actor:x", Operation::Encrypt, now).is_err());
        // Another caller is untouched.
        assert!(b.check("actor:y", Operation::Encrypt, now).is_ok());
        // The debt is bounded: after two full refills the caller is served again.
        b.debit(&[("actor:x".to_owned(), 1e12)], now);
        let later = now + Duration::from_secs(21);
        assert!(b.check("actor:x", Operation::Encrypt, later).is_ok());
        // Nonsense from the database is ignored.
        b.debit(&[("actor:z".to_owned(), f64::NAN), ("actor:z".to_owned(), -5.0)], now);
        assert!(b.check("actor:z", Operation::Encrypt, now).is_ok());
    }

    /// The heaviest users are reported first, at most `max` per call; the rest wait for the
    /// next call; the table stays bounded when debits name many callers.
    #[test]
    fn usage_reports_are_bounded_and_the_table_too() {
        let now = Instant::now();
        let a = limiter(100, 10);
        for (i, n) in [(1, 3), (2, 7), (3, 5)] {
            for _ in 0..n {
                a.check(&format!("actor:{i}"), Operation::Encrypt, now).unwrap();
            }
        }
        let first = a.take_usage(2);
        assert_eq!(first, vec![("actor:2".to_owned(), 7.0), ("actor:3".to_owned(), 5.0)]);
        assert_eq!(a.take_usage(2), vec![("actor:1".to_owned(), 3.0)]);
        let flood: Vec<(String, f64)> = (0..1000).map(|i| (format!("ip:{i}"), 1.0)).collect();
        a.debit(&flood, now);
        assert!(a.tracked_actors() <= 10, "{}", a.tracked_actors());
    }
}
