//! The single writer: takes every queued write, applies them in one `BEGIN IMMEDIATE`
//! transaction (checks included), commits once, and only then answers each caller. A refused
//! write (a stale revision, a taken name) is answered with its error and changes nothing; a
//! failed commit answers every write of the batch with the failure and rewinds the audit
//! chain to the last committed record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_audit::{AuditEntry, AuditKeys, AuditRecord, Chain, Checkpoint};
use ferrohsm_crypto::CryptoProvider;
use ferrohsm_store::KeyRecord;
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::{CheckpointPolicy, Result, Shared, audit, db_error, keys, tokens};

/// Writes taken per transaction at most.
const MAX_BATCH: usize = 4096;

/// How long the writer waits, at most, for the callers it has just answered to come back
/// and join the next batch (see [`gather`]).
const LINGER: Duration = Duration::from_micros(250);

/// The writer's naps while it lingers (Linux rounds a short sleep up to about 60 µs).
const NAP: Duration = Duration::from_micros(20);

/// How often a failed writer tries again by itself, so health turns green without traffic.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) use ferrohsm_sql::Job;
use ferrohsm_sql::{Held, Reply, hold, hold_audit, retry_copy};

pub(crate) struct Writer {
    conn: SqliteConnection,
    chain: Chain,
    checkpoints: CheckpointPolicy,
    checkpointed_seq: u64,
    last_checkpoint: Instant,
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) async fn open(
        mut conn: SqliteConnection,
        provider: Arc<dyn CryptoProvider>,
        keys: Arc<AuditKeys>,
        checkpoints: CheckpointPolicy,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let head = audit::read_head(&mut conn).await?;
        let latest = audit::read_latest_checkpoint(&mut conn).await?;
        *shared.head.lock().unwrap_or_else(|p| p.into_inner()) = head;
        let checkpointed_seq = latest.as_ref().map_or(0, |c| c.seq);
        *shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = latest;
        Ok(Writer {
            conn,
            chain: Chain::resume(provider, keys, head.seq, head.hash),
            checkpoints,
            checkpointed_seq,
            last_checkpoint: Instant::now(),
            shared,
        })
    }

    pub(crate) async fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(64);
        let mut last_batch = 0;
        loop {
            let mut wait = self.checkpoints.every.saturating_sub(self.last_checkpoint.elapsed());
            let failed = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            if failed {
                wait = wait.min(RETRY);
            }
            match tokio::time::timeout(wait.max(Duration::from_millis(1)), receiver.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => {
                    // Closed: a last checkpoint covers everything written.
                    self.batch(Vec::new(), true).await;
                    let _ = self.conn.close().await;
                    return;
                }
                Err(_) => {
                    self.batch(Vec::new(), self.chain.seq() > self.checkpointed_seq || failed)
                        .await;
                    self.last_checkpoint = Instant::now();
                    continue;
                }
            }
            gather(&mut receiver, &mut jobs, last_batch);
            last_batch = jobs.len();
            let appended = jobs
                .iter()
                .filter(|j| matches!(j, Job::Append(..) | Job::CreateAudited(..)))
                .count() as u64;
            let due = self.chain.seq() + appended
                >= self.checkpointed_seq + self.checkpoints.every_records
                || (appended > 0 && self.last_checkpoint.elapsed() >= self.checkpoints.every);
            let batch = std::mem::take(&mut jobs);
            self.batch(batch, due).await;
            if due {
                self.last_checkpoint = Instant::now();
            }
        }
    }

    /// Applies `jobs` (and a checkpoint if `checkpoint`) in one transaction.
    async fn batch(&mut self, jobs: Vec<Job>, checkpoint: bool) {
        if jobs.is_empty() && !checkpoint {
            return;
        }
        let mut jobs = jobs;
        // After a failed transaction, the first one to commit also records the recovery in
        // the log itself (nobody waits for that record's answer).
        let failure = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(reason) = failure {
            let message = format!(
                "recovered after a failed write ({reason}); the chain continues after record {}",
                self.chain.seq()
            );
            let (reply, _) = oneshot::channel();
            jobs.insert(0, Job::Append(ferrohsm_audit::recovery_entry(message), reply));
        }
        let before = self.chain.head();
        let mut held: Vec<Held> = Vec::with_capacity(jobs.len());
        let mut new_checkpoint = None;
        let mut last_record = None;
        let result = self
            .transaction(jobs, checkpoint, &mut held, &mut new_checkpoint, &mut last_record)
            .await;
        match result {
            Ok(()) => {
                if let Some(record) = last_record {
                    *self.shared.head.lock().unwrap_or_else(|p| p.into_inner()) = record;
                }
                if let Some(cp) = new_checkpoint {
                    self.checkpointed_seq = cp.seq;
                    *self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
                }
                *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                for h in held {
                    h(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a database transaction failed; its writes are refused");
                // "No transaction is active" is expected here (SQLite may have rolled back
                // already); anything else leaves the connection inside the transaction, and
                // the next batch's BEGIN fails until a ROLLBACK succeeds (each failed batch
                // tries again).
                if let Err(rollback) = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await {
                    let active = !rollback.to_string().contains("no transaction is active");
                    if active {
                        tracing::error!(error = %rollback, "rolling back a failed transaction failed");
                    }
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

    /// One transaction, in as few round trips to SQLite's thread as the jobs allow (each
    /// costs two thread wake-ups, which under load cost more than the statements): `BEGIN`
    /// with the chain head, the new keys' rows, then everything nobody needs an answer from
    /// (versions, tags, audit records) together with the `COMMIT`. Rarer writes (updates,
    /// approvals, pruning) run their own statements in order. On `Err` the caller rolls back.
    async fn transaction(
        &mut self,
        jobs: Vec<Job>,
        want_checkpoint: bool,
        held: &mut Vec<Held>,
        new_checkpoint: &mut Option<Checkpoint>,
        last_record: &mut Option<ferrohsm_audit::AuditHead>,
    ) -> Result<()> {
        // Another handle on the same file may have appended: continue its chain.
        let stored = audit::begin_and_read_head(&mut self.conn).await?;
        if stored != self.chain.head() {
            self.chain.reset(stored.seq, stored.hash);
        }
        let mut deferred = Deferred::default();
        let mut creates = Creates::default();
        // Appended records sealed but not yet in `deferred` (one multi-row insert for a run).
        let mut sealed: Vec<AuditRecord> = Vec::new();
        for job in jobs {
            // Deferred statements go first whenever a job reads or orders against them.
            let rare = !matches!(
                job,
                Job::Append(..)
                    | Job::CreateAudited(..)
                    | Job::Key(keys::KeyWrite::Create | keys::KeyWrite::Import, ..)
            );
            if rare {
                // Sealed records first: rows go in sequence order.
                audit::insert_records(&mut deferred, &std::mem::take(&mut sealed))?;
                self.create_keys(&mut creates, &mut deferred, held, last_record).await?;
                deferred.flush(&mut self.conn).await?;
            }
            let conn = &mut self.conn;
            let import = matches!(job, Job::ImportApproval(..));
            // A refused write is answered with its refusal; a database error fails the batch.
            match job {
                Job::Key(
                    kind @ (keys::KeyWrite::Create | keys::KeyWrite::Import),
                    record,
                    reply,
                ) => {
                    creates.0.push((kind, record, CreateReply::Plain(reply)));
                }
                Job::CreateAudited(write, reply) => {
                    let (record, entry) = *write;
                    creates.0.push((
                        keys::KeyWrite::Create,
                        record,
                        CreateReply::Audited(Box::new(entry), reply),
                    ));
                }
                Job::Key(kind, record, reply) => {
                    let value = keys::apply(conn, kind, record).await;
                    let fatal = fatal(&value);
                    held.push(hold(reply, value));
                    fatal?;
                }
                Job::CreateApproval(doc, reply) | Job::ImportApproval(doc, reply) => {
                    let value = crate::approvals::create(conn, doc, import).await;
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
                    *last_record =
                        Some(ferrohsm_audit::AuditHead { seq: record.seq, hash: record.hash });
                    sealed.push(record.clone());
                    held.push(hold_audit(reply, Ok(record)));
                }
                Job::Import(lines, reply) => {
                    let value = audit::import(conn, &lines).await;
                    match value {
                        Ok((head, latest)) => {
                            self.chain.reset(head.seq, head.hash);
                            *last_record = Some(head);
                            if let Some(cp) = latest {
                                *new_checkpoint = Some(cp);
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
                    let cp = self.checkpoint(&mut deferred, new_checkpoint)?;
                    held.push(hold_audit(reply, Ok(cp)));
                }
            }
        }
        audit::insert_records(&mut deferred, &sealed)?;
        self.create_keys(&mut creates, &mut deferred, held, last_record).await?;
        if want_checkpoint {
            self.checkpoint(&mut deferred, new_checkpoint)?;
        }
        deferred.commit(&mut self.conn).await
    }
}

/// Statements nobody needs an answer from before the commit, sent to SQLite together (one
/// round trip for all of them).
pub(crate) struct Deferred {
    sql: QueryBuilder<Sqlite>,
    statements: usize,
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred { sql: QueryBuilder::new(""), statements: 0 }
    }
}

impl Deferred {
    /// The builder, ready for one more statement.
    pub(crate) fn statement(&mut self) -> &mut QueryBuilder<Sqlite> {
        if self.statements > 0 {
            self.sql.push("; ");
        }
        self.statements += 1;
        &mut self.sql
    }

    /// Runs what is deferred so far.
    async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        if self.statements == 0 {
            return Ok(());
        }
        std::mem::take(self).run(conn, "writing a batch").await
    }

    /// Runs what is deferred and commits, in one round trip.
    async fn commit(mut self, conn: &mut SqliteConnection) -> Result<()> {
        self.statement().push("COMMIT");
        self.run(conn, "committing a write transaction").await
    }

    async fn run(mut self, conn: &mut SqliteConnection, what: &'static str) -> Result<()> {
        // Shapes vary from batch to batch: not worth a place in the statement cache.
        self.sql.build().persistent(false).execute(&mut *conn).await.map_err(db_error(what))?;
        Ok(())
    }
}

/// How a new key is answered: with the stored record, or with it and the audit record of
/// its creation (sealed only if the key went in).
enum CreateReply {
    Plain(Reply<Arc<KeyRecord>>),
    Audited(Box<AuditEntry>, Reply<(Arc<KeyRecord>, AuditRecord)>),
}

/// New keys waiting to be inserted together. Any still waiting when the transaction fails
/// are answered that they did not go in.
#[derive(Default)]
struct Creates(Vec<(keys::KeyWrite, KeyRecord, CreateReply)>);

impl Drop for Creates {
    fn drop(&mut self) {
        let failed = || ferrohsm_store::Error::Unavailable {
            what: "the transaction failed before this write".into(),
            cause: None,
        };
        for (_, _, reply) in self.0.drain(..) {
            match reply {
                CreateReply::Plain(reply) => drop(reply.send(Err(failed()))),
                CreateReply::Audited(_, reply) => drop(reply.send(Err(failed()))),
            }
        }
    }
}

impl Writer {
    /// Inserts the waiting new keys and seals the audit records of those that went in; the
    /// answers are held for the commit.
    async fn create_keys(
        &mut self,
        creates: &mut Creates,
        deferred: &mut Deferred,
        held: &mut Vec<Held>,
        last_record: &mut Option<ferrohsm_audit::AuditHead>,
    ) -> Result<()> {
        if creates.0.is_empty() {
            return Ok(());
        }
        let (writes, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut creates.0)
            .into_iter()
            .map(|(kind, record, reply)| ((kind, record), reply))
            .unzip();
        let values = match keys::create_many(&mut self.conn, writes, deferred).await {
            Ok(values) => values,
            Err(e) => {
                for reply in replies {
                    match reply {
                        CreateReply::Plain(reply) => held.push(hold(reply, Err(retry_copy(&e)))),
                        CreateReply::Audited(_, reply) => {
                            held.push(hold(reply, Err(retry_copy(&e))));
                        }
                    }
                }
                return Err(e);
            }
        };
        let mut records = Vec::new();
        for (reply, value) in replies.into_iter().zip(values) {
            match reply {
                CreateReply::Plain(reply) => held.push(hold(reply, value)),
                CreateReply::Audited(entry, reply) => {
                    let value = value.map(|key| {
                        let record = self.chain.seal(*entry);
                        *last_record =
                            Some(ferrohsm_audit::AuditHead { seq: record.seq, hash: record.hash });
                        records.push(record.clone());
                        (key, record)
                    });
                    held.push(hold(reply, value));
                }
            }
        }
        audit::insert_records(deferred, &records)
    }
}

/// Group commit: takes everything queued. Callers answered by the last batch typically come
/// straight back, but on other threads, a few microseconds later; so while the batch is
/// smaller than the last one, the writer naps briefly (up to [`LINGER`]) for them to join,
/// instead of committing a small batch and making them wait a whole commit. The wait adapts
/// to the load: the target is the last batch's size, so a lone caller waits at most once,
/// right after a larger batch, and never after that.
fn gather(receiver: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, last_batch: usize) {
    let target = last_batch.min(MAX_BATCH);
    let deadline = Instant::now() + LINGER;
    loop {
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if jobs.len() >= target || Instant::now() >= deadline {
            return;
        }
        // A blocking nap on the writer's own thread (nothing else of consequence runs there).
        std::thread::sleep(NAP);
    }
}

impl Writer {
    /// Writes a checkpoint of the head unless one already covers it; returns the latest.
    fn checkpoint(
        &self,
        deferred: &mut Deferred,
        new_checkpoint: &mut Option<Checkpoint>,
    ) -> Result<Option<Checkpoint>> {
        let covered = new_checkpoint.as_ref().map_or(self.checkpointed_seq, |c| c.seq);
        if self.chain.seq() > covered {
            let cp = self.chain.checkpoint().map_err(|e| ferrohsm_store::Error::Backend {
                what: "signing a checkpoint".into(),
                cause: Box::new(e),
            })?;
            if let Some(cp) = cp {
                audit::insert_checkpoint(deferred, &cp)?;
                *new_checkpoint = Some(cp);
            }
        }
        Ok(new_checkpoint
            .clone()
            .or_else(|| self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()))
    }
}

/// A database failure inside a write (as opposed to a refusal) fails the whole batch.
fn fatal<T>(value: &Result<T>) -> Result<()> {
    match value {
        Err(
            e @ (ferrohsm_store::Error::Backend { .. } | ferrohsm_store::Error::Unavailable { .. }),
        ) => Err(retry_copy(e)),
        _ => Ok(()),
    }
}
