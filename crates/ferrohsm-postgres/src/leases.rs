//! `PostgresJobLeases`: one row per scheduled job naming the replica that runs it and until
//! when, judged by the database's clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferrohsm_store::JobLeases;

use crate::{Db, Result, db_error};

/// Job leases in a PostgreSQL database (see [`crate::PostgresBackend`]).
#[derive(Debug, Clone)]
pub struct PostgresJobLeases {
    db: Arc<Db>,
}

impl PostgresJobLeases {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresJobLeases { db }
    }
}

#[async_trait]
impl JobLeases for PostgresJobLeases {
    async fn acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        // One statement: insert, or take over an expired lease, or renew our own.
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO job_leases (job, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, \
             expires_at = EXCLUDED.expires_at \
             WHERE job_leases.expires_at <= clock_timestamp() OR job_leases.holder = EXCLUDED.holder \
             RETURNING holder",
        )
        .bind(job)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.db.pool)
        .await
        .map_err(db_error("taking a job lease"))?;
        Ok(held.is_some())
    }
}
