//! `PostgresJobLeases`: one row per scheduled job naming the replica that runs it and until
//! when, judged by the database's clock. `PostgresRateUsage`: the rate-limit usage each
//! replica reports, read back by the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferrohsm_store::{JobLeases, RateUsage};

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

    async fn release(&self, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM job_leases WHERE holder = $1")
            .bind(holder)
            .execute(&self.db.pool)
            .await
            .map_err(db_error("releasing job leases"))?;
        Ok(())
    }
}

/// How long reports stay in `rate_usage`: a replica exchanges every second or so, so older
/// rows have been read by every live replica.
const USAGE_KEPT_SECONDS: f64 = 10.0;

/// Every this many exchanges, a replica removes the reports older than [`USAGE_KEPT_SECONDS`].
const PRUNE_EVERY: u64 = 8;

/// Rate-limit usage shared through the `rate_usage` table (see [`RateUsage`]).
///
/// Reports are rows with increasing ids; each replica remembers the last id it read. A row
/// whose id was taken before, but committed after, a later row already read is missed: the
/// shared limit is a throttle that may let a little more through, never a count to rely on.
#[derive(Debug)]
pub struct PostgresRateUsage {
    db: Arc<Db>,
    /// The last id read, and the number of exchanges made.
    seen: Mutex<Option<(i64, u64)>>,
}

impl PostgresRateUsage {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresRateUsage { db, seen: Mutex::new(None) }
    }
}

#[async_trait]
impl RateUsage for PostgresRateUsage {
    async fn exchange(&self, holder: &str, usage: &[(String, f64)]) -> Result<Vec<(String, f64)>> {
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = self.db.pool.acquire().await.map_err(db_error("reading rate usage"))?;
        if !usage.is_empty() {
            let (buckets, tokens): (Vec<&str>, Vec<f64>) =
                usage.iter().map(|(b, t)| (b.as_str(), *t)).unzip();
            sqlx::query(
                "INSERT INTO rate_usage (holder, bucket, tokens) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::float8[])",
            )
            .bind(holder)
            .bind(buckets)
            .bind(tokens)
            .execute(&mut *conn)
            .await
            .map_err(db_error("reporting rate usage"))?;
        }
        // The first exchange reads every report still kept: usage reported just before this
        // replica started must still count here.
        let (last, exchanges) = seen.unwrap_or((0, 0));
        let rows: Vec<(String, Option<f64>, i64)> = sqlx::query_as(
            "SELECT bucket, SUM(tokens) FILTER (WHERE holder <> $2), MAX(id) FROM rate_usage \
             WHERE id > $1 AND at > clock_timestamp() - make_interval(secs => $3) GROUP BY bucket",
        )
        .bind(last)
        .bind(holder)
        .bind(USAGE_KEPT_SECONDS)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("reading rate usage"))?;
        let newest = rows.iter().map(|(_, _, id)| *id).max().unwrap_or(last);
        if exchanges % PRUNE_EVERY == PRUNE_EVERY - 1 {
            sqlx::query(
                "DELETE FROM rate_usage WHERE at < clock_timestamp() - make_interval(secs => $1)",
            )
            .bind(USAGE_KEPT_SECONDS)
            .execute(&mut *conn)
            .await
            .map_err(db_error("pruning rate usage"))?;
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((newest, exchanges + 1));
        Ok(rows.into_iter().filter_map(|(bucket, tokens, _)| Some((bucket, tokens?))).collect())
    }
}
