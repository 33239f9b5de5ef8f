//! `PostgresAuditSink`: the audit log as rows of exactly the NDJSON lines the file sink
//! writes (same records, chain, HMACs and checkpoints), with indexed columns beside them for
//! queries. The export is the lines in position order, so the offline verifier reads it
//! unchanged. The head (`audit_head`) is shared by every replica on the database.

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_audit::{
    AuditEntry, AuditFilter, AuditHead, AuditRecord, AuditSink, Checkpoint, Line, RecordPage,
    parse_line,
};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row as _};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::writer::Job;
use crate::{Db, Result, audit_error, big, db_error, millis};

/// The audit log in a PostgreSQL database (see [`crate::PostgresBackend`]).
#[derive(Debug, Clone)]
pub struct PostgresAuditSink {
    db: Arc<Db>,
}

impl PostgresAuditSink {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PostgresAuditSink { db }
    }

    /// Writes lines from position `pos` on.
    async fn export_from(
        &self,
        pos: i64,
        out: &mut (dyn std::io::Write + Send),
    ) -> ferrohsm_audit::Result<u64> {
        ferrohsm_sql::export(pos, out, |pos| async move {
            sqlx::query_as("SELECT pos, line FROM audit_log WHERE pos >= $1 ORDER BY pos LIMIT $2")
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
impl AuditSink for PostgresAuditSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, entry: AuditEntry) -> ferrohsm_audit::Result<AuditRecord> {
        self.db.submit(|reply| Job::Append(entry, reply)).await?
    }

    async fn checkpoint(&self) -> ferrohsm_audit::Result<Option<Checkpoint>> {
        self.db.submit(Job::Checkpoint).await?
    }

    async fn latest_checkpoint(&self) -> ferrohsm_audit::Result<Option<Checkpoint>> {
        let mut conn = self
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| audit_error(db_error("reading the latest checkpoint")(e)))?;
        read_latest_checkpoint(&mut conn).await.map_err(audit_error)
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
            sqlx::query_scalar("SELECT pos FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 1")
                .bind(big(after))
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
        let mut sql: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT line FROM audit_log WHERE seq > ");
        sql.push_bind(big(after));
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
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.db.pool)
            .await
            .map_err(|e| audit_error(db_error("reading the audit chain head")(e)))?;
        let corrupt = |reason: &str| {
            audit_error(ferrohsm_store::Error::Corrupt {
                record: "audit_head".into(),
                reason: reason.to_owned(),
            })
        };
        Ok(AuditHead {
            seq: u64::try_from(row.get::<i64, _>(0))
                .map_err(|_| corrupt("a negative sequence number"))?,
            hash: row
                .get::<Vec<u8>, _>(1)
                .try_into()
                .map_err(|_| corrupt("its hash is not 32 bytes"))?,
        })
    }

    async fn close(&self) -> ferrohsm_audit::Result<()> {
        self.db.close().await;
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.db.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The newest checkpoint line.
pub(crate) async fn read_latest_checkpoint(conn: &mut PgConnection) -> Result<Option<Checkpoint>> {
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

/// Audit lines sealed in the writer's transaction, inserted together (one statement for the
/// batch, however many) before anything in the transaction reads the log, and before commit.
#[derive(Default)]
pub(crate) struct Pending {
    pos: Vec<i64>,
    seq: Vec<Option<i64>>,
    checkpoint: Vec<Option<i64>>,
    ts_ms: Vec<i64>,
    actor: Vec<Option<String>>,
    action: Vec<Option<String>>,
    key_id: Vec<Option<String>>,
    outcome: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    hash: Vec<Option<Vec<u8>>>,
    line: Vec<String>,
}

impl Pending {
    /// Queues `record` at position `pos`.
    pub(crate) fn record(&mut self, record: &AuditRecord, pos: i64) -> Result<()> {
        let line = serde_json::to_string(record)
            .map_err(|e| ferrohsm_store::Error::backend("encoding a record", e))?;
        self.pos.push(pos);
        self.seq.push(Some(big(record.seq)));
        self.checkpoint.push(None);
        self.ts_ms.push(ts_millis(&record.ts));
        self.actor.push(Some(record.actor.clone()));
        self.action.push(Some(record.action.clone()));
        self.key_id.push(record.key_id.clone());
        self.outcome.push(Some(record.outcome.as_str().to_owned()));
        self.request_id.push(Some(record.request_id.clone()));
        self.hash.push(Some(record.hash.to_vec()));
        self.line.push(line);
        Ok(())
    }

    /// Queues checkpoint `cp` at position `pos`.
    pub(crate) fn checkpoint(&mut self, cp: &Checkpoint, pos: i64) -> Result<()> {
        let line = serde_json::to_string(cp)
            .map_err(|e| ferrohsm_store::Error::backend("encoding a checkpoint", e))?;
        self.pos.push(pos);
        self.seq.push(None);
        self.checkpoint.push(Some(big(cp.seq)));
        self.ts_ms.push(ts_millis(&cp.ts));
        for column in [
            &mut self.actor,
            &mut self.action,
            &mut self.key_id,
            &mut self.outcome,
            &mut self.request_id,
        ] {
            column.push(None);
        }
        self.hash.push(None);
        self.line.push(line);
        Ok(())
    }

    /// Inserts what is queued (one statement).
    pub(crate) async fn flush(&mut self, conn: &mut PgConnection) -> Result<()> {
        if self.pos.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(self);
        sqlx::query(
            "INSERT INTO audit_log (pos, seq, checkpoint, ts_ms, actor, action, key_id, outcome, \
             request_id, hash, line) SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], \
             $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::bytea[], $11::text[])",
        )
        .bind(rows.pos)
        .bind(rows.seq)
        .bind(rows.checkpoint)
        .bind(rows.ts_ms)
        .bind(rows.actor)
        .bind(rows.action)
        .bind(rows.key_id)
        .bind(rows.outcome)
        .bind(rows.request_id)
        .bind(rows.hash)
        .bind(rows.line)
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing audit records"))?;
        Ok(())
    }
}

/// Inserts `record` as exactly `line`.
async fn insert_record_line(
    conn: &mut PgConnection,
    record: &AuditRecord,
    line: String,
    pos: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (pos, seq, ts_ms, actor, action, key_id, outcome, request_id, hash, line) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(pos)
    .bind(big(record.seq))
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

/// Inserts `cp` as exactly `line`.
async fn insert_checkpoint_line(
    conn: &mut PgConnection,
    cp: &Checkpoint,
    line: String,
    pos: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (pos, checkpoint, ts_ms, line) VALUES ($1, $2, $3, $4)")
        .bind(pos)
        .bind(big(cp.seq))
        .bind(ts_millis(&cp.ts))
        .bind(line)
        .execute(&mut *conn)
        .await
        .map_err(db_error("writing an audit checkpoint"))?;
    Ok(())
}

/// Inserts another log's lines into the empty log (inside the writer's transaction) from
/// position `pos` on; returns the head they end at and their last checkpoint. A refusal
/// (a log that is not empty, an unreadable line) is found before anything is written.
pub(crate) async fn import(
    conn: &mut PgConnection,
    lines: &[String],
    pos: &mut i64,
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
    let mut parsed = Vec::with_capacity(lines.len());
    for (n, text) in lines.iter().enumerate() {
        match parse_line(text.as_bytes()) {
            Ok(line) => parsed.push(line),
            Err(e) => {
                return Err(ferrohsm_audit::Error::Unavailable(format!(
                    "import line {}: {e}",
                    n + 1
                )));
            }
        }
    }
    let mut last_record = None;
    let mut latest: Option<Checkpoint> = None;
    for (line, text) in parsed.into_iter().zip(lines) {
        let written = match line {
            Line::Record(r) => {
                last_record = Some(AuditHead { seq: r.seq, hash: r.hash });
                insert_record_line(conn, &r, text.clone(), *pos).await
            }
            Line::Checkpoint(cp) => {
                let written = insert_checkpoint_line(conn, &cp, text.clone(), *pos).await;
                latest = Some(cp);
                written
            }
        };
        written.map_err(audit_error)?;
        *pos += 1;
    }
    // A log of checkpoints only (cut by retention at its newest) continues from the newest.
    let head = last_record
        .or_else(|| latest.as_ref().map(|cp| AuditHead { seq: cp.seq, hash: cp.hash }))
        .unwrap_or_default();
    Ok((head, latest))
}

/// Retention inside the writer's transaction: removes every line before the latest checkpoint
/// allowed as an anchor, which stays as the first line.
pub(crate) async fn prune(
    conn: &mut PgConnection,
    before_ms: i64,
    before: OffsetDateTime,
    up_to: u64,
) -> Result<Option<ferrohsm_audit::Pruned>> {
    let candidates = sqlx::query(
        "SELECT pos, line FROM audit_log WHERE checkpoint IS NOT NULL AND checkpoint <= $1 \
         AND ts_ms <= $2 ORDER BY pos DESC LIMIT 8",
    )
    .bind(big(up_to))
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
    let row = sqlx::query("SELECT COUNT(seq), MIN(seq), COUNT(*) FROM audit_log WHERE pos < $1")
        .bind(pos)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("counting pruned audit lines"))?;
    let (records, first, lines): (i64, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
    if lines == 0 {
        return Ok(None);
    }
    sqlx::query("DELETE FROM audit_log WHERE pos < $1")
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
