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
}
