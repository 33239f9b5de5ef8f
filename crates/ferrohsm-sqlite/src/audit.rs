//! `SqliteAuditSink`: the audit log as rows of exactly the NDJSON lines the file sink
//! writes (same records, chain, HMACs and checkpoints), with indexed columns beside them for
//! queries. The export is the lines in row order, so the offline verifier reads it unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_audit::{
    AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditSink, Checkpoint, Line, RecordPage,
    parse_line,
};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::writer::{Deferred, Job};
use crate::{Db, Result, audit_error, db_error, millis};

/// The audit log in an SQLite database (see [`crate::SqliteBackend`]).
#[derive(Debug, Clone)]
pub struct SqliteAuditSink {
    db: Arc<Db>,
}

impl SqliteAuditSink {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        SqliteAuditSink { db }
    }

    /// Writes lines from row `pos` on.
    async fn export_from(
        &self,
        pos: i64,
        out: &mut (dyn std::io::Write + Send),
    ) -> ferrohsm_audit::Result<u64> {
        ferrohsm_sql::export(pos, out, |pos| async move {
            sqlx::query_as("SELECT pos, line FROM audit_log WHERE pos >= ? ORDER BY pos LIMIT ?")
                .bind(pos)
                .bind(ferrohsm_sql::EXPORT_PAGE)
                .fetch_all(&self.db.pool)
                .await
                .map_err(|e| audit_error(db_error("exporting the audit log")(e)))
        })
        .await
    }
}

#[async_trait]
impl AuditSink for SqliteAuditSink {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn append(&self, entry: AuditEntry) -> ferrohsm_audit::Result<AuditRecord> {
        self.db.submit(|reply| Job::Append(entry, reply)).await?
    }

    async fn checkpoint(&self) -> ferrohsm_audit::Result<Option<Checkpoint>> {
        self.db.submit(Job::Checkpoint).await?
    }

    async fn latest_checkpoint(&self) -> ferrohsm_audit::Result<Option<Checkpoint>> {
        Ok(self.db.shared.latest.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> ferrohsm_audit::Result<u64> {
        self.export_from(0, out).await
    }

    async fn export_after(
        &self,
        after: u64,
        out: &mut (dyn std::io::Write + Send),
    ) -> ferrohsm_audit::Result<u64> {
        let start: Option<i64> =
            sqlx::query_scalar("SELECT pos FROM audit_log WHERE seq > ? ORDER BY seq LIMIT 1")
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .fetch_optional(&self.db.pool)
                .await
                .map_err(|e| audit_error(db_error("reading the audit log")(e)))?;
        match start {
            Some(pos) => self.export_from(pos, out).await,
            None => Ok(0),
        }
    }

    async fn query(
        &self,
        filter: &AuditFilter,
        after: u64,
        limit: usize,
    ) -> ferrohsm_audit::Result<RecordPage> {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT line FROM audit_log WHERE seq > ");
        sql.push_bind(i64::try_from(after).unwrap_or(i64::MAX));
        if let Some(actor) = &filter.actor {
            sql.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &filter.action {
            sql.push(" AND action = ").push_bind(action.clone());
        }
        if let Some(key) = &filter.key_id {
            sql.push(" AND key_id = ").push_bind(key.clone());
        }
        if let Some(outcome) = filter.outcome {
            sql.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(request) = &filter.request_id {
            sql.push(" AND request_id = ").push_bind(request.clone());
        }
        if let Some(since) = filter.since {
            sql.push(" AND ts_ms >= ").push_bind(millis(since));
        }
        if let Some(until) = filter.until {
            sql.push(" AND ts_ms < ").push_bind(millis(until));
        }
        sql.push(" ORDER BY seq LIMIT ").push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let lines: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(&self.db.pool)
            .await
            .map_err(|e| audit_error(db_error("querying the audit log")(e)))?;
        ferrohsm_sql::audit_page(&lines, filter, limit)
    }

    async fn prune(
        &self,
        before: OffsetDateTime,
        up_to: u64,
    ) -> ferrohsm_audit::Result<Option<ferrohsm_audit::Pruned>> {
        let before_ms = millis(before);
        self.db.submit(|reply| Job::Prune { before_ms, before, up_to, reply }).await?
    }

    async fn import(&self, lines: Vec<String>) -> ferrohsm_audit::Result<u64> {
        self.db.submit(|reply| Job::Import(lines, reply)).await?
    }

    async fn head(&self) -> ferrohsm_audit::Result<AuditHead> {
        Ok(*self.db.shared.head.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn close(&self) -> ferrohsm_audit::Result<()> {
        self.db.close().await;
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.db.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The SQL that reads the chain head: the last record's sequence number and hash.
const HEAD: &str =
    "SELECT seq, hash FROM audit_log WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1";

/// The last committed record's sequence number and hash.
pub(crate) async fn read_head(conn: &mut SqliteConnection) -> Result<AuditHead> {
    let row = sqlx::query(HEAD)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading the audit chain head"))?;
    head_from(conn, row).await
}

/// Starts a write transaction (`BEGIN IMMEDIATE`) and reads the chain head inside it, in one
/// round trip to SQLite's thread.
pub(crate) async fn begin_and_read_head(conn: &mut SqliteConnection) -> Result<AuditHead> {
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN IMMEDIATE; {HEAD}")))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("starting a write transaction"))?;
    head_from(conn, rows.into_iter().next()).await
}

async fn head_from(
    conn: &mut SqliteConnection,
    row: Option<sqlx::sqlite::SqliteRow>,
) -> Result<AuditHead> {
    let Some(row) = row else {
        // No records: a log that retention cut at its newest checkpoint continues from it.
        return Ok(read_latest_checkpoint(conn)
            .await?
            .map_or_else(AuditHead::default, |cp| AuditHead { seq: cp.seq, hash: cp.hash }));
    };
    let seq: i64 = row.get(0);
    let hash: Vec<u8> = row.get(1);
    let corrupt = |reason: &str| ferrohsm_store::Error::Corrupt {
        record: format!("audit record {seq}"),
        reason: reason.to_owned(),
    };
    Ok(AuditHead {
        seq: u64::try_from(seq).map_err(|_| corrupt("a negative sequence number"))?,
        hash: hash.try_into().map_err(|_| corrupt("its hash is not 32 bytes"))?,
    })
}

/// The newest checkpoint line.
pub(crate) async fn read_latest_checkpoint(
    conn: &mut SqliteConnection,
) -> Result<Option<Checkpoint>> {
    let line: Option<String> = sqlx::query_scalar(
        "SELECT line FROM audit_log WHERE checkpoint IS NOT NULL ORDER BY pos DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error("reading the latest checkpoint"))?;
    match line.as_deref().map(|l| parse_line(l.as_bytes())) {
        None => Ok(None),
        Some(Ok(Line::Checkpoint(cp))) => Ok(Some(cp)),
        Some(_) => Err(ferrohsm_store::Error::Corrupt {
            record: "the latest audit checkpoint".into(),
            reason: "its line is not a checkpoint".into(),
        }),
    }
}

fn ts_millis(ts: &str) -> i64 {
    OffsetDateTime::parse(ts, &Rfc3339).map(millis).unwrap_or(0)
}

/// Rows per multi-row insert (9 parameters each, well under SQLite's limit).
const INSERT_ROWS: usize = 500;

/// Inserts records (in order) with as few statements as possible, deferred to the commit.
pub(crate) fn insert_records(deferred: &mut Deferred, records: &[AuditRecord]) -> Result<()> {
    for chunk in records.chunks(INSERT_ROWS) {
        let mut lines = Vec::with_capacity(chunk.len());
        for r in chunk {
            lines.push(
                serde_json::to_string(r)
                    .map_err(|e| ferrohsm_store::Error::backend("encoding a record", e))?,
            );
        }
        let sql = deferred.statement();
        sql.push(
            "INSERT INTO audit_log (seq, ts_ms, actor, action, key_id, outcome, request_id, hash, line) ",
        );
        sql.push_values(chunk.iter().zip(lines), |mut row, (r, line)| {
            row.push_bind(i64::try_from(r.seq).unwrap_or(i64::MAX))
                .push_bind(ts_millis(&r.ts))
                .push_bind(r.actor.clone())
                .push_bind(r.action.clone())
                .push_bind(r.key_id.clone())
                .push_bind(r.outcome.as_str())
                .push_bind(r.request_id.clone())
                .push_bind(r.hash.to_vec())
                .push_bind(line);
        });
    }
    Ok(())
}

/// Inserts `record` as exactly `line`.
async fn insert_record_line(
    conn: &mut SqliteConnection,
    record: &AuditRecord,
    line: String,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (seq, ts_ms, actor, action, key_id, outcome, request_id, hash, line) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
    .bind(ts_millis(&record.ts))
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.key_id)
    .bind(record.outcome.as_str())
    .bind(&record.request_id)
    .bind(&record.hash[..])
    .bind(line)
    .execute(&mut *conn)
    .await
    .map_err(db_error("writing an audit record"))?;
    Ok(())
}

/// Inserts a checkpoint, deferred to the commit.
pub(crate) fn insert_checkpoint(deferred: &mut Deferred, cp: &Checkpoint) -> Result<()> {
    let line = serde_json::to_string(cp)
        .map_err(|e| ferrohsm_store::Error::backend("encoding a checkpoint", e))?;
    deferred
        .statement()
        .push("INSERT INTO audit_log (checkpoint, ts_ms, line) VALUES (")
        .push_bind(i64::try_from(cp.seq).unwrap_or(i64::MAX))
        .push(", ")
        .push_bind(ts_millis(&cp.ts))
        .push(", ")
        .push_bind(line)
        .push(")");
    Ok(())
}

/// Inserts `cp` as exactly `line`.
async fn insert_checkpoint_line(
    conn: &mut SqliteConnection,
    cp: &Checkpoint,
    line: String,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (checkpoint, ts_ms, line) VALUES (?, ?, ?)")
        .bind(i64::try_from(cp.seq).unwrap_or(i64::MAX))
        .bind(ts_millis(&cp.ts))
        .bind(line)
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing an audit checkpoint"))?;
    Ok(())
}

/// Inserts another log's lines into the empty log (inside the writer's transaction); returns
/// the head they end at and their last checkpoint.
pub(crate) async fn import(
    conn: &mut SqliteConnection,
    lines: &[String],
) -> ferrohsm_audit::Result<(AuditHead, Option<Checkpoint>)> {
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| audit_error(db_error("reading the audit log")(e)))?;
    if stored != 0 {
        return Err(ferrohsm_audit::Error::Unavailable(
            "an import needs an empty audit log".into(),
        ));
    }
    let mut head = AuditHead::default();
    let mut latest = None;
    for (n, text) in lines.iter().enumerate() {
        let written = match parse_line(text.as_bytes()) {
            Ok(Line::Record(r)) => {
                head = AuditHead { seq: r.seq, hash: r.hash };
                insert_record_line(conn, &r, text.clone()).await
            }
            Ok(Line::Checkpoint(cp)) => {
                let written = insert_checkpoint_line(conn, &cp, text.clone()).await;
                latest = Some(cp);
                written
            }
            Err(e) => {
                return Err(ferrohsm_audit::Error::Unavailable(format!(
                    "import line {}: {e}",
                    n + 1
                )));
            }
        };
        written.map_err(audit_error)?;
    }
    Ok((head, latest))
}

/// Retention inside the writer's transaction: removes every line before the latest checkpoint
/// allowed as an anchor, which stays as the first line.
pub(crate) async fn prune(
    conn: &mut SqliteConnection,
    before_ms: i64,
    before: OffsetDateTime,
    up_to: u64,
) -> Result<Option<ferrohsm_audit::Pruned>> {
    let candidates = sqlx::query(
        "SELECT pos, line FROM audit_log WHERE checkpoint IS NOT NULL AND checkpoint <= ? \
         AND ts_ms <= ? ORDER BY pos DESC LIMIT 8",
    )
    .bind(i64::try_from(up_to).unwrap_or(i64::MAX))
    .bind(before_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("finding a retention anchor"))?;
    // The millisecond column narrows the search; the checkpoint's own time decides.
    let mut chosen = None;
    for row in &candidates {
        let line: &str = row.get(1);
        if let Ok(Line::Checkpoint(cp)) = parse_line(line.as_bytes())
            && ferrohsm_audit::anchor_allowed(&cp, before, up_to)
        {
            chosen = Some((row.get::<i64, _>(0), cp));
            break;
        }
    }
    let Some((pos, anchor)) = chosen else { return Ok(None) };
    let row = sqlx::query("SELECT COUNT(seq), MIN(seq), COUNT(*) FROM audit_log WHERE pos < ?")
        .bind(pos)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("counting pruned audit lines"))?;
    let (records, first, lines): (i64, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
    if lines == 0 {
        return Ok(None);
    }
    sqlx::query("DELETE FROM audit_log WHERE pos < ?")
        .bind(pos)
        .execute(&mut *conn)
        .await
        .map_err(db_error("pruning the audit log"))?;
    Ok(Some(ferrohsm_audit::Pruned {
        first_seq: first.and_then(|f| u64::try_from(f).ok()).unwrap_or(anchor.seq),
        anchor,
        records: u64::try_from(records).unwrap_or(0),
        lines: u64::try_from(lines).unwrap_or(0),
    }))
}
