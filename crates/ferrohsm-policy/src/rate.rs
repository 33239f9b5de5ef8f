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
        let half = (state.config.max_actors / 2).max(1);
        let mut bucket = match state.current.remove(key).or_else(|| state.previous.remove(key)) {
            Some(b) => b,
            None => Bucket { tokens: capacity, updated: now },
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * refill).min(capacity);
        bucket.updated = now;
        let result = if bucket.tokens >= weight {
            bucket.tokens -= weight;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((weight - bucket.tokens) / refill)
                .unwrap_or(Duration::MAX))
        };
        if state.current.len() >= half {
            state.previous = std::mem::take(&mut state.current);
        }
        state.current.insert(key.to_owned(), bucket);
        result
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
