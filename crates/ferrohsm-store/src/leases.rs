//! [`JobLeases`]: which of several processes sharing a store runs a scheduled job.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// Leases on scheduled jobs (due destructions and rotations, retention), so that of several
/// server replicas sharing one database exactly one runs each job at a time. A backend that
/// belongs to one process needs none (its process always holds every lease).
#[async_trait]
pub trait JobLeases: Send + Sync + std::fmt::Debug {
    /// Takes the lease on `job` for `holder` until `ttl` from now, or renews it if `holder`
    /// already has it, unless another holder's lease has not expired. Returns whether
    /// `holder` holds it now. Expiry is judged by one clock (the database's), never by the
    /// replicas' own.
    async fn acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives up every lease `holder` holds (it is shutting down), so another holder can take
    /// them at once instead of when they expire.
    async fn release(&self, holder: &str) -> Result<()>;
}

/// Rate-limit usage shared between server replicas on one database, so that a caller's limit
/// holds across all of them rather than once per replica. Each replica reports what its
/// callers used since its last report and learns what they used on the other replicas since
/// then; it debits its own buckets with that. A backend that belongs to one process has none.
#[async_trait]
pub trait RateUsage: Send + Sync + std::fmt::Debug {
    /// Records `usage` (bucket name, tokens) as used at `holder`, and returns the tokens each
    /// bucket was reported to use by other holders since `holder`'s previous exchange (none
    /// on its first). Reports older than a few seconds may be forgotten.
    async fn exchange(&self, holder: &str, usage: &[(String, f64)]) -> Result<Vec<(String, f64)>>;
}
