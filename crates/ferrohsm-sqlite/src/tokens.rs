//! `SqliteTokenRevocationStore`: revoked tokens, pruned once they can match no live token.

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_store::{Error, MAX_TOKEN_REVOCATIONS, TokenRevocation, TokenRevocationStore};
use sqlx::SqliteConnection;
use time::OffsetDateTime;

use crate::writer::Job;
use crate::{Db, Result, db_error, millis};

/// Token revocations in an SQLite database (see [`crate::SqliteBackend`]).
#[derive(Debug, Clone)]
pub struct SqliteTokenRevocationStore {
    db: Arc<Db>,
}

impl SqliteTokenRevocationStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        SqliteTokenRevocationStore { db }
    }
}

#[async_trait]
impl TokenRevocationStore for SqliteTokenRevocationStore {
    async fn add(&self, revocation: TokenRevocation, now: OffsetDateTime) -> Result<()> {
        let now = millis(now);
        self.db.submit(|reply| Job::AddRevocation(revocation, now, reply)).await?
    }

    async fn live(&self, now: OffsetDateTime) -> Result<Vec<TokenRevocation>> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM token_revocations WHERE expires_at > ? ORDER BY id",
        )
        .bind(millis(now))
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_error("reading token revocations"))?;
        // A revocation that cannot be read fails closed: the caller stops rather than forget it.
        ferrohsm_sql::parse_revocations(&bodies)
    }
}

pub(crate) async fn add(
    conn: &mut SqliteConnection,
    revocation: TokenRevocation,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM token_revocations WHERE expires_at <= ?")
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
    sqlx::query("INSERT OR REPLACE INTO token_revocations (id, expires_at, body) VALUES (?, ?, ?)")
        .bind(revocation.id.to_string())
        .bind(millis(revocation.expires_at))
        .bind(body)
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing a token revocation"))?;
    Ok(())
}
