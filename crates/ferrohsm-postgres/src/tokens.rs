//! `PostgresTokenRevocationStore`: revoked tokens, pruned once they can match no live token.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferrohsm_store::{Error, MAX_TOKEN_REVOCATIONS, TokenRevocation, TokenRevocationStore};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::writer::Job;
use crate::{Db, Result, db_error, millis};

/// Token revocations in a PostgreSQL database (see [`crate::PostgresBackend`]).
///
/// Every replica asks for the live revocations each second; they are read again only when
/// the `revocations_changed` counter, raised in the transaction of every stored revocation,
/// moved since the last read (one small query otherwise).
#[derive(Debug, Clone)]
pub struct PostgresTokenRevocationStore {
    db: Arc<Db>,
    read: Arc<Mutex<LastRead>>,
}

/// The counter value of the last read, and what it read.
type LastRead = Option<(i64, Vec<TokenRevocation>)>;

impl PostgresTokenRevocationStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresTokenRevocationStore { db, read: Arc::new(Mutex::new(None)) }
    }
}

#[async_trait]
impl TokenRevocationStore for PostgresTokenRevocationStore {
    async fn add(&self, revocation: TokenRevocation, now: OffsetDateTime) -> Result<()> {
        let now = millis(now);
        self.db.submit(|reply| Job::AddRevocation(revocation, now, reply)).await?
    }

    async fn live(&self, now: OffsetDateTime) -> Result<Vec<TokenRevocation>> {
        // The counter first: a revocation stored after it was read raises it again, so the
        // next call reads once more; none is missed.
        let changed: i64 = sqlx::query_scalar("SELECT version FROM revocations_changed")
            .fetch_one(&self.db.pool)
            .await
            .map_err(db_error("reading token revocations"))?;
        if let Some((version, live)) = &*self.read.lock().unwrap_or_else(|p| p.into_inner())
            && *version == changed
        {
            return Ok(live.iter().filter(|r| r.expires_at > now).cloned().collect());
        }
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM token_revocations WHERE expires_at > $1 ORDER BY id",
        )
        .bind(millis(now))
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_error("reading token revocations"))?;
        // A revocation that cannot be read fails closed: the caller stops rather than forget it.
        let live = bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b).map_err(|e| Error::Corrupt {
                    record: "a token revocation row".into(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<TokenRevocation>>>()?;
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = Some((changed, live.clone()));
        Ok(live)
    }
}

pub(crate) async fn add(
    conn: &mut PgConnection,
    revocation: TokenRevocation,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM token_revocations WHERE expires_at <= $1")
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_error("pruning token revocations"))?;
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM token_revocations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("counting token revocations"))?;
    if usize::try_from(live).unwrap_or(usize::MAX) >= MAX_TOKEN_REVOCATIONS {
        return Err(Error::InvalidQuery(format!(
            "{MAX_TOKEN_REVOCATIONS} token revocations are in force; wait for some to expire or lower the maximum token lifetime"
        )));
    }
    let body = serde_json::to_string(&revocation)
        .map_err(|e| Error::backend("encoding a token revocation", e))?;
    sqlx::query(
        "INSERT INTO token_revocations (id, expires_at, body) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, body = EXCLUDED.body",
    )
    .bind(revocation.id.to_string())
    .bind(millis(revocation.expires_at))
    .bind(body)
    .execute(&mut *conn)
    .await
    .map_err(db_error("writing a token revocation"))?;
    sqlx::query("UPDATE revocations_changed SET version = version + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing a token revocation"))?;
    Ok(())
}
