//! The writer of one replica: takes every queued write, applies them in one transaction that
//! first locks the shared `audit_head` row (so the writers of all replicas take turns),
//! commits once, and only then answers each caller. A refused write (a stale revision, a taken
//! name) is answered with its refusal and changes nothing; any database error fails the whole
//! transaction (PostgreSQL aborts it), answers every write of the batch with the failure, and
//! rewinds this replica's view of the chain. A lost connection is opened again at the next
//! batch, so writes answer 503 while the database is away and work again when it is back.

use std::sync::Arc;
use std::time::Duration;

use ferrohsm_audit::{AuditHead, AuditKeys, Chain, Checkpoint};
use ferrohsm_crypto::CryptoProvider;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::{CheckpointPolicy, Result, Shared, audit, big, db_error, keys, millis, tokens};

/// Writes taken per transaction at most.
const MAX_BATCH: usize = 1024;

/// How often a failed writer tries again by itself, so health turns green without traffic.
const RETRY: Duration = Duration::from_secs(1);

/// The longest the writer waits to (re)connect before the batch answers 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) use ferrohsm_sql::Job;
use ferrohsm_sql::{Held, hold, hold_audit, retry_copy};

/// A database failure inside a write (as opposed to a refusal) fails the whole batch.
fn fatal<T>(value: &Result<T>) -> Result<()> {
    match value {
        Err(
            e @ (ferrohsm_store::Error::Backend { .. } | ferrohsm_store::Error::Unavailable { .. }),
        ) => Err(retry_copy(e)),
        _ => Ok(()),
    }
}

/// The shared head row, as read (locked) at the start of a write transaction.
struct Head {
    next_pos: i64,
    checkpointed_seq: u64,
    checkpointed_at_ms: i64,
}

pub(crate) struct Writer {
    conn: Option<PgConnection>,
    options: PgConnectOptions,
    chain: Chain,
    checkpoints: CheckpointPolicy,
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) fn new(
        conn: PgConnection,
        options: PgConnectOptions,
        provider: Arc<dyn CryptoProvider>,
        keys: Arc<AuditKeys>,
        checkpoints: CheckpointPolicy,
        shared: Arc<Shared>,
    ) -> Self {
        // The head is read (and the chain resumed from it) inside every transaction.
        let chain = Chain::resume(provider, keys, 0, [0; 32]);
        Writer { conn: Some(conn), options, chain, checkpoints, shared }
    }

    pub(crate) async fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(64);
        loop {
            let failed = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            let wait = if failed { RETRY } else { self.checkpoints.every };
            match tokio::time::timeout(wait, receiver.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => {
                    // Closed: a last checkpoint covers everything written.
                    self.batch(Vec::new(), true).await;
                    if let Some(conn) = self.conn.take() {
                        let _ = conn.close().await;
                    }
                    return;
                }
                Err(_) => {
                    // Quiet: write a checkpoint if one is due, or retry after a failure.
                    self.batch(Vec::new(), false).await;
                    continue;
                }
            }
            while jobs.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut jobs);
            self.batch(batch, false).await;
        }
    }

    /// Applies `jobs` in one transaction, with a checkpoint if one is due (or `checkpoint`).
    async fn batch(&mut self, jobs: Vec<Job>, checkpoint: bool) {
        let mut jobs = jobs;
        // After a failed transaction, the first one to commit also records the recovery in
        // the log itself (nobody waits for that record's answer).
        let failure = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(reason) = failure {
            // No record number here: other replicas may have appended since this one's view,
            // and the record's own sequence number and link say where the chain continues.
            let message = format!(
                "recovered after a failed write ({reason}); the writes of that transaction were refused"
            );
            let (reply, _) = oneshot::channel();
            jobs.insert(0, Job::Append(ferrohsm_audit::recovery_entry(message), reply));
        }
        let before = self.chain.head();
        let mut held: Vec<Held> = Vec::with_capacity(jobs.len());
        let result = self.transaction(jobs, checkpoint, &mut held).await;
        match result {
            Ok(()) => {
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                for h in held {
                    h(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a database transaction failed; its writes are refused");
                // The connection is not reused after a failure: it may be half-open, inside an
                // aborted transaction, or on a server that has become a read-only standby.
                if let Some(mut conn) = self.conn.take() {
                    let _ = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        sqlx::raw_sql("ROLLBACK").execute(&mut conn),
                    )
                    .await;
                }
                self.chain.reset(before.seq, before.hash);
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(e.to_string());
                for h in held {
                    h(Some(&e));
                }
            }
        }
    }

    /// The writer's connection, opened again after a failure.
    async fn connection(&mut self) -> Result<&mut PgConnection> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
                .await
                .map_err(|_| ferrohsm_store::Error::Unavailable {
                    what: format!(
                        "reconnecting the writer took longer than {}s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    cause: None,
                })?
                .map_err(db_error("reconnecting the writer"))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| ferrohsm_store::Error::Unavailable {
            what: "the writer has no database connection".into(),
            cause: None,
        })
    }

    async fn transaction(
        &mut self,
        jobs: Vec<Job>,
        force_checkpoint: bool,
        held: &mut Vec<Held>,
    ) -> Result<()> {
        let conn = self.connection().await?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await
            .map_err(db_error("starting a write"))?;
        let row = sqlx::query(
            "SELECT seq, hash, next_pos, checkpointed_seq, checkpointed_at_ms \
             FROM audit_head WHERE id = 1 FOR UPDATE",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("locking the audit chain head"))?;
        let stored = AuditHead {
            seq: u64::try_from(row.get::<i64, _>(0)).unwrap_or(0),
            hash: row.get::<Vec<u8>, _>(1).try_into().map_err(|_| {
                ferrohsm_store::Error::Corrupt {
                    record: "audit_head".into(),
                    reason: "its hash is not 32 bytes".into(),
                }
            })?,
        };
        let mut head = Head {
            next_pos: row.get(2),
            checkpointed_seq: u64::try_from(row.get::<i64, _>(3)).unwrap_or(0),
            checkpointed_at_ms: row.get(4),
        };
        // Another replica (or handle) appended since: continue its chain.
        if stored != self.chain.head() {
            self.chain.reset(stored.seq, stored.hash);
        }
        let mut latest: Option<Checkpoint> = None;
        let mut pending = audit::Pending::default();
        for job in jobs {
            let conn = self.conn.as_mut().ok_or_else(|| ferrohsm_store::Error::Unavailable {
                what: "the writer lost its connection".into(),
                cause: None,
            })?;
            // Jobs that read the log see every line sealed before them.
            if matches!(job, Job::Import(..) | Job::Prune { .. } | Job::Checkpoint(..)) {
                pending.flush(conn).await?;
            }
            match job {
                Job::Key(kind, record, reply) => {
                    let value = keys::apply(conn, kind, record).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::CreateAudited(write, reply) => {
                    let (record, entry) = *write;
                    let value = keys::apply(conn, keys::KeyWrite::Create, record).await;
                    let fatal = fatal(&value);
                    match value {
                        Ok(key) => {
                            let record = self.chain.seal(entry);
                            pending.record(&record, head.next_pos)?;
                            head.next_pos += 1;
                            held.push(hold(reply, Ok((key, record))));
                        }
                        Err(e) => held.push(hold(reply, Err(e))),
                    }
                    fatal?;
                }
                Job::CreateApproval(doc, reply) => {
                    let value = crate::approvals::create(conn, doc, false).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::ImportApproval(doc, reply) => {
                    let value = crate::approvals::create(conn, doc, true).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::UpdateApproval(doc, reply) => {
                    let value = crate::approvals::update(conn, doc).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::PruneApprovals { before_ns, limit, reply } => {
                    let value = crate::approvals::prune(conn, before_ns, limit).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::AddRevocation(revocation, now_ms, reply) => {
                    let value = tokens::add(conn, revocation, now_ms).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::Append(entry, reply) => {
                    let record = self.chain.seal(entry);
                    pending.record(&record, head.next_pos)?;
                    head.next_pos += 1;
                    held.push(hold_audit(reply, Ok(record)));
                }
                Job::Import(lines, reply) => {
                    match audit::import(conn, &lines, &mut head.next_pos).await {
                        Ok((imported, last)) => {
                            self.chain.reset(imported.seq, imported.hash);
                            if let Some(cp) = last {
                                head.checkpointed_seq = cp.seq;
                                latest = Some(cp);
                            }
                            held.push(hold_audit(reply, Ok(lines.len() as u64)));
                        }
                        Err(e) => held.push(hold_audit(reply, Err(e))),
                    }
                }
                Job::Prune { before_ms, before, up_to, reply } => {
                    let pruned = audit::prune(conn, before_ms, before, up_to).await?;
                    held.push(hold_audit(reply, Ok(pruned)));
                }
                Job::Checkpoint(reply) => {
                    let written = self.checkpoint(&mut head, &mut pending)?;
                    if let Some(cp) = written {
                        latest = Some(cp);
                    }
                    let answer = match &latest {
                        Some(cp) => Some(cp.clone()),
                        None => {
                            let conn = self.conn.as_mut().ok_or_else(|| {
                                ferrohsm_store::Error::Unavailable {
                                    what: "the writer lost its connection".into(),
                                    cause: None,
                                }
                            })?;
                            audit::read_latest_checkpoint(conn).await?
                        }
                    };
                    held.push(hold_audit(reply, Ok(answer)));
                }
            }
        }
        let now_ms = millis(time::OffsetDateTime::now_utc());
        let since = self.chain.seq().saturating_sub(head.checkpointed_seq);
        let due = since > 0
            && (force_checkpoint
                || since >= self.checkpoints.every_records
                || now_ms.saturating_sub(head.checkpointed_at_ms)
                    >= i64::try_from(self.checkpoints.every.as_millis()).unwrap_or(i64::MAX));
        if due {
            self.checkpoint(&mut head, &mut pending)?;
        }
        let conn = self.conn.as_mut().ok_or_else(|| ferrohsm_store::Error::Unavailable {
            what: "the writer lost its connection".into(),
            cause: None,
        })?;
        pending.flush(conn).await?;
        sqlx::query(
            "UPDATE audit_head SET seq = $1, hash = $2, next_pos = $3, checkpointed_seq = $4, \
             checkpointed_at_ms = $5 WHERE id = 1",
        )
        .bind(big(self.chain.seq()))
        .bind(self.chain.head().hash.to_vec())
        .bind(head.next_pos)
        .bind(big(head.checkpointed_seq))
        .bind(head.checkpointed_at_ms)
        .execute(&mut *conn)
        .await
        .map_err(db_error("moving the audit chain head"))?;
        sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(db_error("committing a write transaction"))?;
        Ok(())
    }

    /// Writes a checkpoint of the head unless one already covers it.
    fn checkpoint(
        &mut self,
        head: &mut Head,
        pending: &mut audit::Pending,
    ) -> Result<Option<Checkpoint>> {
        if self.chain.seq() <= head.checkpointed_seq {
            return Ok(None);
        }
        let cp = self.chain.checkpoint().map_err(|e| ferrohsm_store::Error::Backend {
            what: "signing a checkpoint".into(),
            cause: Box::new(e),
        })?;
        let Some(cp) = cp else { return Ok(None) };
        pending.checkpoint(&cp, head.next_pos)?;
        head.next_pos += 1;
        head.checkpointed_seq = cp.seq;
        head.checkpointed_at_ms = millis(time::OffsetDateTime::now_utc());
        Ok(Some(cp))
    }
}
