//! `PostgresApprovalStore`: one row per approval, its body opaque.

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_store::{ApprovalDocument, ApprovalStore, DamagedRecord, Error};
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::writer::Job;
use crate::{Db, Result, big, db_error, nanos};

/// Approvals in a PostgreSQL database (see [`crate::PostgresBackend`]).
#[derive(Debug, Clone)]
pub struct PostgresApprovalStore {
    db: Arc<Db>,
}

impl PostgresApprovalStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresApprovalStore { db }
    }
}

fn from_row(db: &Db, row: &sqlx::postgres::PgRow) -> Result<ApprovalDocument> {
    let id: String = row.get(0);
    let corrupt = |reason: String| {
        db.note_damaged(DamagedRecord {
            location: format!("{} table approvals, id {id}", db.location),
            id: Some(id.clone()),
            reason: reason.clone(),
        });
        Error::Corrupt { record: format!("approval {id}"), reason }
    };
    let uuid = id.parse::<Uuid>().map_err(|e| corrupt(e.to_string()))?;
    let revision: i64 = row.get(1);
    let open: bool = row.get(2);
    let updated_ns: i64 = row.get(3);
    let body: Vec<u8> = row.get(4);
    let updated_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(updated_ns))
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(ApprovalDocument {
        id: uuid,
        revision: u64::try_from(revision).map_err(|e| corrupt(e.to_string()))?,
        open,
        updated_at,
        body,
    })
}

#[async_trait]
impl ApprovalStore for PostgresApprovalStore {
    async fn create(&self, approval: ApprovalDocument) -> Result<()> {
        self.db.submit(|reply| Job::CreateApproval(approval, reply)).await?
    }

    async fn get(&self, id: &Uuid) -> Result<Option<ApprovalDocument>> {
        let row =
            sqlx::query("SELECT id, revision, open, updated_at, body FROM approvals WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.db.pool)
                .await
                .map_err(db_error("reading an approval"))?;
        row.map(|r| from_row(&self.db, &r)).transpose()
    }

    async fn update(&self, approval: ApprovalDocument) -> Result<()> {
        self.db.submit(|reply| Job::UpdateApproval(approval, reply)).await?
    }

    async fn import(&self, approval: ApprovalDocument) -> Result<()> {
        self.db.submit(|reply| Job::ImportApproval(approval, reply)).await?
    }

    async fn list(&self, limit: usize) -> Result<Vec<ApprovalDocument>> {
        let rows = sqlx::query(
            "SELECT id, revision, open, updated_at, body FROM approvals ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_error("listing approvals"))?;
        // An unreadable row is reported and left out, so one bad row cannot hide the rest.
        Ok(rows.iter().filter_map(|r| from_row(&self.db, r).ok()).collect())
    }

    async fn prune_closed(&self, before: OffsetDateTime, limit: usize) -> Result<u64> {
        let before_ns = nanos(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db.submit(|reply| Job::PruneApprovals { before_ns, limit, reply }).await?
    }

    fn damaged(&self) -> Vec<DamagedRecord> {
        let damaged = self.db.shared.damaged.lock().unwrap_or_else(|p| p.into_inner());
        damaged.iter().filter(|d| d.location.contains("table approvals")).cloned().collect()
    }
}

async fn revision_of(conn: &mut PgConnection, id: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT revision FROM approvals WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading an approval"))
}

pub(crate) async fn create(
    conn: &mut PgConnection,
    doc: ApprovalDocument,
    import: bool,
) -> Result<()> {
    if doc.revision != 1 && !import {
        return Err(Error::ApprovalConflict(doc.id));
    }
    let inserted = sqlx::query(
        "INSERT INTO approvals (id, revision, open, updated_at, body) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
    )
    .bind(doc.id.to_string())
    .bind(big(doc.revision))
    .bind(doc.open)
    .bind(nanos(doc.updated_at))
    .bind(&doc.body)
    .execute(&mut *conn)
    .await
    .map_err(db_error("writing an approval"))?;
    if inserted.rows_affected() != 1 {
        return Err(Error::ApprovalConflict(doc.id));
    }
    Ok(())
}

pub(crate) async fn update(conn: &mut PgConnection, doc: ApprovalDocument) -> Result<()> {
    let stored =
        revision_of(conn, &doc.id.to_string()).await?.ok_or(Error::ApprovalNotFound(doc.id))?;
    if i64::try_from(doc.revision).ok() != stored.checked_add(1) {
        return Err(Error::ApprovalConflict(doc.id));
    }
    // Compare-and-swap on the revision, in SQL too.
    let done = sqlx::query(
        "UPDATE approvals SET revision = $1, open = $2, updated_at = $3, body = $4 \
         WHERE id = $5 AND revision = $6",
    )
    .bind(big(doc.revision))
    .bind(doc.open)
    .bind(nanos(doc.updated_at))
    .bind(&doc.body)
    .bind(doc.id.to_string())
    .bind(stored)
    .execute(&mut *conn)
    .await
    .map_err(db_error("writing an approval"))?;
    if done.rows_affected() != 1 {
        return Err(Error::ApprovalConflict(doc.id));
    }
    Ok(())
}

pub(crate) async fn prune(conn: &mut PgConnection, before_ns: i64, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM approvals WHERE id IN \
         (SELECT id FROM approvals WHERE NOT open AND updated_at < $1 LIMIT $2)",
    )
    .bind(before_ns)
    .bind(limit)
    .execute(&mut *conn)
    .await
    .map_err(db_error("pruning approvals"))?;
    Ok(done.rows_affected())
}
