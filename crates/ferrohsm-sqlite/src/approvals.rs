//! `SqliteApprovalStore`: one row per approval, its body opaque.

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_store::{ApprovalDocument, ApprovalStore, DamagedRecord, Error};
use sqlx::{Row as _, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::writer::Job;
use crate::{Db, Result, db_error, nanos};

/// Approvals in an SQLite database (see [`crate::SqliteBackend`]).
#[derive(Debug, Clone)]
pub struct SqliteApprovalStore {
    db: Arc<Db>,
}

impl SqliteApprovalStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        SqliteApprovalStore { db }
    }
}

fn from_row(db: &Db, row: &sqlx::sqlite::SqliteRow) -> Result<ApprovalDocument> {
    let id: String = row.get(0);
    let corrupt = |reason: String| {
        db.note_damaged(DamagedRecord {
            location: format!("{} table approvals, id {id}", db.path.display()),
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

const COLUMNS: &str = "SELECT id, revision, open, updated_at, body FROM approvals";

#[async_trait]
impl ApprovalStore for SqliteApprovalStore {
    async fn create(&self, approval: ApprovalDocument) -> Result<()> {
        self.db.submit(|reply| Job::CreateApproval(approval, reply)).await?
    }

    async fn get(&self, id: &Uuid) -> Result<Option<ApprovalDocument>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE id = ?")))
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY id DESC LIMIT ?")))
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

async fn revision_of(conn: &mut SqliteConnection, id: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT revision FROM approvals WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading an approval"))
}

async fn write(conn: &mut SqliteConnection, doc: &ApprovalDocument) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO approvals (id, revision, open, updated_at, body) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(doc.id.to_string())
    .bind(i64::try_from(doc.revision).unwrap_or(i64::MAX))
    .bind(doc.open)
    .bind(nanos(doc.updated_at))
    .bind(&doc.body)
    .execute(&mut *conn)
    .await
    .map_err(db_error("writing an approval"))?;
    Ok(())
}

pub(crate) async fn create(
    conn: &mut SqliteConnection,
    doc: ApprovalDocument,
    import: bool,
) -> Result<()> {
    if (doc.revision != 1 && !import) || revision_of(conn, &doc.id.to_string()).await?.is_some() {
        return Err(Error::ApprovalConflict(doc.id));
    }
    write(conn, &doc).await
}

pub(crate) async fn update(conn: &mut SqliteConnection, doc: ApprovalDocument) -> Result<()> {
    let stored =
        revision_of(conn, &doc.id.to_string()).await?.ok_or(Error::ApprovalNotFound(doc.id))?;
    if i64::try_from(doc.revision).ok() != stored.checked_add(1) {
        return Err(Error::ApprovalConflict(doc.id));
    }
    write(conn, &doc).await
}

pub(crate) async fn prune(conn: &mut SqliteConnection, before_ns: i64, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM approvals WHERE id IN \
         (SELECT id FROM approvals WHERE open = 0 AND updated_at < ? LIMIT ?)",
    )
    .bind(before_ns)
    .bind(limit)
    .execute(&mut *conn)
    .await
    .map_err(db_error("pruning approvals"))?;
    Ok(done.rows_affected())
}
