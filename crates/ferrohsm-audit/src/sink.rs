//! The `AuditSink` trait and the in-memory sink.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferrohsm_crypto::CryptoProvider;

use crate::chain::Chain;
use crate::query::PageFilter;
use crate::{
    AuditEntry, AuditFilter, AuditHead, AuditKeys, AuditRecord, Checkpoint, Error, Line, Pruned,
    RecordPage, Result,
};

/// Where audit records go. An append returns only once its record is durable (for durable
/// sinks), so a caller that waits for it never acknowledges an unrecorded operation.
#[async_trait]
pub trait AuditSink: Send + Sync + Debug {
    /// A short name ("memory", "file", …).
    fn kind(&self) -> &'static str;

    /// Seals `entry` as the next record of the chain and stores it.
    async fn append(&self, entry: AuditEntry) -> Result<AuditRecord>;

    /// Writes a signed checkpoint of the current head, if records were added since the last
    /// one, and returns the latest checkpoint.
    async fn checkpoint(&self) -> Result<Option<Checkpoint>>;

    /// The latest checkpoint written.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>>;

    /// Writes every line of the log (records and checkpoints, oldest first) as NDJSON.
    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64>;

    /// Like [`AuditSink::export`], but may skip lines before record `after + 1` (an indexed
    /// sink starts near it, so reading one page costs about one page). A write error from
    /// `out` (a reader that has what it needs) ends the export with that error.
    async fn export_after(&self, after: u64, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let _ = after;
        self.export(out).await
    }

    /// Up to `limit` records after record `after` that pass `filter`, in sequence order. An
    /// indexed sink answers from its indexes; this default streams the export from `after`.
    async fn query(&self, filter: &AuditFilter, after: u64, limit: usize) -> Result<RecordPage> {
        let mut page = PageFilter::new(filter, after, limit);
        match self.export_after(after, &mut page).await {
            Ok(_) => {}
            // The page refused more lines: it is full, and the read stops there.
            Err(_) if page.is_full() => {}
            Err(e) => return Err(e),
        }
        Ok(page.finish())
    }

    /// The last acknowledged record's sequence number and hash.
    async fn head(&self) -> Result<AuditHead>;

    /// Retention: removes the oldest part of the log up to a signed checkpoint, which stays as
    /// the log's first line (its anchor: a verifier with the checkpoint key checks the rest
    /// from it). The anchor is the latest checkpoint that covers records up to `up_to` at most
    /// and was signed before `before`. `None` when no checkpoint qualifies or the log already
    /// starts at it.
    async fn prune(&self, before: time::OffsetDateTime, up_to: u64) -> Result<Option<Pruned>>;

    /// Writes another log's lines, verbatim and in order, into this empty log (migration
    /// between backends); appends then continue that chain. The caller has verified the
    /// lines; a log that already holds records refuses with `Unavailable`.
    async fn import(&self, lines: Vec<String>) -> Result<u64>;

    /// Checkpoints and closes the sink; later appends fail with `Unavailable`.
    async fn close(&self) -> Result<()>;

    /// Why the sink refuses records right now (a failed write it has not yet recovered
    /// from), or `None` when it accepts them. Health checks report it.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// An audit log in process memory, for tests and embedding; nothing survives the process.
///
/// It keeps the most recent lines only (by default [`MemoryAuditSink::DEFAULT_CAPACITY`]), so a
/// long-running embedder's memory stays bounded. Once older lines have been dropped, an export
/// starts mid-chain: verify it with `--allow-partial` (the chain from there on is checked as
/// usual). Use the file sink to keep everything.
#[derive(Debug)]
pub struct MemoryAuditSink {
    state: Mutex<MemoryState>,
}

#[derive(Debug)]
struct MemoryState {
    chain: Chain,
    /// Kept as values; encoded only on export, to keep appends cheap for embedders.
    lines: VecDeque<Line>,
    capacity: usize,
    latest: Option<Checkpoint>,
    checkpointed_seq: u64,
    closed: bool,
}

impl MemoryAuditSink {
    /// How many lines are kept by default.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty log sealed with `keys`, keeping the most recent
    /// [`MemoryAuditSink::DEFAULT_CAPACITY`] lines.
    pub fn new(provider: Arc<dyn CryptoProvider>, keys: Arc<AuditKeys>) -> Self {
        Self::with_capacity(provider, keys, Self::DEFAULT_CAPACITY)
    }

    /// An empty log keeping the most recent `capacity` lines.
    pub fn with_capacity(
        provider: Arc<dyn CryptoProvider>,
        keys: Arc<AuditKeys>,
        capacity: usize,
    ) -> Self {
        MemoryAuditSink {
            state: Mutex::new(MemoryState {
                chain: Chain::new(provider, keys),
                lines: VecDeque::new(),
                capacity: capacity.max(1),
                latest: None,
                checkpointed_seq: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // Each mutation completes under the lock before anything can panic, so a poisoned
        // state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryState {
    fn push(&mut self, line: Line) {
        if self.lines.len() >= self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn checkpoint(&mut self) -> Result<Option<Checkpoint>> {
        if self.chain.seq() > self.checkpointed_seq
            && let Some(cp) = self.chain.checkpoint()?
        {
            self.push(Line::Checkpoint(cp.clone()));
            self.checkpointed_seq = cp.seq;
            self.latest = Some(cp);
        }
        Ok(self.latest.clone())
    }
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, entry: AuditEntry) -> Result<AuditRecord> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::Unavailable("the audit log is closed".into()));
        }
        let record = state.chain.seal(entry);
        state.push(Line::Record(record.clone()));
        Ok(record)
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.lock().checkpoint()
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.lock().latest.clone())
    }

    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let lines = self.lock().lines.clone();
        for line in &lines {
            let text = match line {
                Line::Record(r) => to_line(r)?,
                Line::Checkpoint(c) => to_line(c)?,
            };
            out.write_all(text.as_bytes()).map_err(Error::io("export"))?;
        }
        Ok(lines.len() as u64)
    }

    async fn head(&self) -> Result<AuditHead> {
        Ok(self.lock().chain.head())
    }

    async fn prune(&self, before: time::OffsetDateTime, up_to: u64) -> Result<Option<Pruned>> {
        let mut state = self.lock();
        let Some((at, anchor)) = state.lines.iter().enumerate().rev().find_map(|(i, l)| match l {
            Line::Checkpoint(cp) if crate::query::anchor_allowed(cp, before, up_to) => {
                Some((i, cp.clone()))
            }
            _ => None,
        }) else {
            return Ok(None);
        };
        if at == 0 {
            return Ok(None);
        }
        let removed: Vec<Line> = state.lines.drain(..at).collect();
        let seqs: Vec<u64> = removed
            .iter()
            .filter_map(|l| match l {
                Line::Record(r) => Some(r.seq),
                Line::Checkpoint(_) => None,
            })
            .collect();
        Ok(Some(Pruned {
            first_seq: seqs.first().copied().unwrap_or(anchor.seq),
            anchor,
            records: seqs.len() as u64,
            lines: removed.len() as u64,
        }))
    }

    async fn import(&self, lines: Vec<String>) -> Result<u64> {
        let parsed = parse_import(&lines)?;
        let mut state = self.lock();
        if state.chain.seq() != 0 || !state.lines.is_empty() {
            return Err(Error::Unavailable("an import needs an empty audit log".into()));
        }
        for line in parsed.lines {
            state.push(line);
        }
        state.chain.reset(parsed.head.seq, parsed.head.hash);
        if let Some(cp) = parsed.latest {
            state.checkpointed_seq = cp.seq;
            state.latest = Some(cp);
        }
        Ok(lines.len() as u64)
    }

    async fn close(&self) -> Result<()> {
        let mut state = self.lock();
        state.checkpoint()?;
        state.closed = true;
        Ok(())
    }
}

/// One JSON line, newline included.
pub(crate) fn to_line<T: serde::Serialize>(value: &T) -> Result<String> {
    let mut line = serde_json::to_string(value)
        .map_err(|e| Error::Unavailable(format!("encoding a record: {e}")))?;
    line.push('\n');
    Ok(line)
}

/// Lines to import, parsed: the values, the head they end at and their last checkpoint.
pub(crate) struct Import {
    pub(crate) lines: Vec<Line>,
    pub(crate) head: AuditHead,
    pub(crate) latest: Option<Checkpoint>,
}

/// Parses the lines of an import; each must be a record or a checkpoint.
pub(crate) fn parse_import(lines: &[String]) -> Result<Import> {
    let mut import =
        Import { lines: Vec::with_capacity(lines.len()), head: AuditHead::default(), latest: None };
    for (n, text) in lines.iter().enumerate() {
        let line = crate::parse_line(text.as_bytes())
            .map_err(|e| Error::Unavailable(format!("import line {}: {e}", n + 1)))?;
        match &line {
            Line::Record(r) => import.head = AuditHead { seq: r.seq, hash: r.hash },
            Line::Checkpoint(c) => import.latest = Some(c.clone()),
        }
        import.lines.push(line);
    }
    Ok(import)
}
