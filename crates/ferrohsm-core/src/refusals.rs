//! Refusals that cost an attacker nothing (bad tokens, rate-limited calls) must not cost the
//! audit log a durable record each. Every source gets a small budget of individual records;
//! beyond it, refusals are counted per (source, action, reason) and written as one aggregated
//! record per interval, with the count. The table of counts is bounded: when it is full, new
//! sources are counted under one overflow source, so the counts still add up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrohsm_policy::{Operation, RateLimitConfig, RateLimiter};

/// Individual refusal records per source: a burst of this many…
pub const DEFAULT_REFUSAL_BURST: u32 = 32;
/// …then one more every ten seconds.
pub const DEFAULT_REFUSAL_REFILL_PER_SECOND: f64 = 0.1;
/// Failed authentications per source before the answer becomes 429: a burst of this many…
pub const DEFAULT_AUTH_FAILURE_BURST: u32 = 100;
/// …then this many per second.
pub const DEFAULT_AUTH_FAILURE_REFILL_PER_SECOND: f64 = 10.0;
/// How often aggregated refusals are written.
pub const DEFAULT_REFUSAL_INTERVAL: Duration = Duration::from_secs(60);
/// The most (source, action, reason) counters kept between two flushes.
const MAX_COUNTERS: usize = 10_000;
/// The source that counts refusals once the table is full.
const OVERFLOW_SOURCE: &str = "(other sources)";
/// Sources whose buckets are remembered.
const MAX_SOURCES: usize = 100_000;

/// One aggregated count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregated {
    pub(crate) source: String,
    pub(crate) action: String,
    pub(crate) reason: String,
    pub(crate) count: u64,
}

/// The budgets and the counts.
#[derive(Debug)]
pub(crate) struct Refusals {
    /// Individual audit records per source.
    records: RateLimiter,
    /// Failed authentications per source before 429.
    failures: RateLimiter,
    counts: Mutex<HashMap<(String, String, String), u64>>,
    pub(crate) interval: Duration,
}

fn bucket(capacity: u32, refill_per_second: f64) -> RateLimiter {
    RateLimiter::new(RateLimitConfig {
        capacity,
        refill_per_second,
        max_actors: MAX_SOURCES,
        weights: HashMap::new(),
    })
}

impl Refusals {
    pub(crate) fn new(interval: Duration) -> Self {
        Refusals {
            records: bucket(DEFAULT_REFUSAL_BURST, DEFAULT_REFUSAL_REFILL_PER_SECOND),
            failures: bucket(DEFAULT_AUTH_FAILURE_BURST, DEFAULT_AUTH_FAILURE_REFILL_PER_SECOND),
            counts: Mutex::new(HashMap::new()),
            interval,
        }
    }

    /// Whether `source` may have one more individual record now.
    pub(crate) fn admit(&self, source: &str) -> bool {
        self.records.check(source, Operation::DescribeKey, Instant::now()).is_ok()
    }

    /// Takes one failed authentication from `source`'s budget; the wait when it is spent.
    pub(crate) fn failure(&self, source: &str) -> Result<(), Duration> {
        self.failures.check(source, Operation::DescribeKey, Instant::now())
    }

    /// Counts one refusal for the next aggregated record.
    pub(crate) fn count(&self, source: &str, action: &str, reason: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (source.to_owned(), action.to_owned(), reason.to_owned());
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
            return;
        }
        let key = if counts.len() < MAX_COUNTERS {
            key
        } else {
            (OVERFLOW_SOURCE.to_owned(), action.to_owned(), reason.to_owned())
        };
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Everything counted since the last call, largest first.
    pub(crate) fn drain(&self) -> Vec<Aggregated> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut list: Vec<Aggregated> = counts
            .into_iter()
            .map(|((source, action, reason), count)| Aggregated { source, action, reason, count })
            .collect();
        list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.source.cmp(&b.source)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_the_table_stays_bounded() {
        let r = Refusals::new(DEFAULT_REFUSAL_INTERVAL);
        for i in 0..(MAX_COUNTERS + 500) {
            r.count(&format!("ip:{i}"), "authenticate", "bad_signature");
        }
        for _ in 0..3 {
            r.count("ip:0", "authenticate", "bad_signature");
        }
        let drained = r.drain();
        assert_eq!(drained.len(), MAX_COUNTERS + 1, "the overflow source takes the rest");
        assert_eq!(drained.iter().map(|a| a.count).sum::<u64>(), (MAX_COUNTERS + 503) as u64);
        assert_eq!(drained[0].source, OVERFLOW_SOURCE);
        assert_eq!(drained[0].count, 500);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn each_source_has_its_own_small_budget() {
        let r = Refusals::new(DEFAULT_REFUSAL_INTERVAL);
        let admitted = (0..100).filter(|_| r.admit("ip:a")).count();
        assert_eq!(admitted, DEFAULT_REFUSAL_BURST as usize);
        assert!(r.admit("ip:b"));
    }
}
