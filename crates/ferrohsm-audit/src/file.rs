//! `FileAuditSink`: NDJSON segments in a directory, written by one thread with group commit.
//!
//! Layout: `<dir>/.lock` (held exclusively) and `<dir>/audit-00000001.ndjson`, `…02`, … .
//! Appends from any number of tasks are queued to a sealing thread, which takes every queued
//! record, seals them in order and writes them with one `write`; a syncing thread then makes
//! everything written so far durable with one `fdatasync`, and only then answers each caller.
//! While one fsync runs, the next batch is being sealed and written, so fsyncs run back to
//! back and each covers every record written meanwhile (group commit). A segment that passes its size limit is closed and the next one
//! started; the chain continues across segments. Checkpoints are written every N records or T
//! seconds (whichever comes first), on request, and at close.
//!
//! On open, the last segment is scanned: a torn tail — an incomplete last line, or bytes that
//! do not parse after the last complete one — can only be records whose append never returned,
//! so it is reported, cut off, and recorded in the log itself (`audit.recovered`). Anything
//! else that does not parse or link is corruption, and the sink refuses to open.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferrohsm_crypto::CryptoProvider;
use tokio::sync::oneshot;

use crate::chain::Chain;
use crate::record::{GENESIS_HASH, Outcome};
use crate::sink::to_line;
use crate::{AuditEntry, AuditKeys, AuditRecord, AuditSink, Checkpoint, Error, Result};

const LOCK_FILE: &str = ".lock";
const SEGMENT_PREFIX: &str = "audit-";
const SEGMENT_SUFFIX: &str = ".ndjson";
/// The most records sealed into one write and fsync.
const MAX_BATCH: usize = 8192;

/// Settings of a [`FileAuditSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileAuditConfig {
    /// The directory holding the segments.
    pub dir: PathBuf,
    /// Start a new segment once the current one reaches this size.
    pub segment_max_bytes: u64,
    /// Checkpoint after this many records.
    pub checkpoint_every_records: u64,
    /// Checkpoint after this long, if records were added.
    pub checkpoint_every: Duration,
}

impl FileAuditConfig {
    /// Defaults: 64 MiB segments, a checkpoint every 10,000 records or 60 seconds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileAuditConfig {
            dir: dir.into(),
            segment_max_bytes: 64 << 20,
            checkpoint_every_records: 10_000,
            checkpoint_every: Duration::from_secs(60),
        }
    }

    /// Sets the segment size limit.
    pub fn segment_max_bytes(mut self, bytes: u64) -> Self {
        self.segment_max_bytes = bytes.max(1);
        self
    }

    /// Sets the checkpoint interval in records.
    pub fn checkpoint_every_records(mut self, records: u64) -> Self {
        self.checkpoint_every_records = records.max(1);
        self
    }

    /// Sets the checkpoint interval in time.
    pub fn checkpoint_every(mut self, interval: Duration) -> Self {
        self.checkpoint_every = interval;
        self
    }
}

/// What recovery on open found and cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that had a torn tail.
    pub segment: PathBuf,
    /// Where the good part ends.
    pub offset: u64,
    /// How many bytes were discarded.
    pub discarded_bytes: u64,
}

#[allow(
    clippy::large_enum_variant,
    reason = "each command is moved once through the channel; boxing would add an allocation per append"
)]
enum Command {
    Append(AuditEntry, oneshot::Sender<Result<AuditRecord>>),
    Checkpoint(oneshot::Sender<Result<Option<Checkpoint>>>),
    Close(oneshot::Sender<Result<()>>),
    Import(Vec<String>, oneshot::Sender<Result<u64>>),
}

/// A durable, append-only audit log in a directory. Only one process may open a directory.
#[derive(Debug)]
pub struct FileAuditSink {
    dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    /// The sealing and syncing threads.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    latest: Arc<Mutex<Option<Checkpoint>>>,
    recovery: Option<Recovery>,
    failed: Failed,
    index: Index,
    /// The last acknowledged record (kept by the syncing stage).
    head: Arc<Mutex<crate::AuditHead>>,
}

/// Record positions every [`INDEX_STRIDE`] records (and at each segment's start): sequence
/// number to (segment number, byte offset). Kept by the writer as it writes and by readers
/// as they scan, so reading from any record starts at most a stride before it.
type Index = Arc<Mutex<std::collections::BTreeMap<u64, (u64, u64)>>>;

/// Records between two index points.
const INDEX_STRIDE: u64 = 256;

/// How often a failed log tries to recover (re-reading its last segment and cutting what was
/// never acknowledged) while it keeps failing.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

impl FileAuditSink {
    /// Opens (creating if needed) the log in `config.dir`, recovering from a crash if needed.
    pub fn open(
        config: FileAuditConfig,
        provider: Arc<dyn CryptoProvider>,
        keys: Arc<AuditKeys>,
    ) -> Result<Self> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
        }

        let segments = segments(&dir)?;
        let mut state = Tail::default();
        let mut recovery = None;
        if let Some(last) = segments.last() {
            let (tail, torn) = scan(&last.1, true)?;
            recovery = torn;
            state = tail;
            // An empty last segment (rotated just before a crash): the head is in the one before.
            if state.seq == 0 && segments.len() > 1 {
                let (before, _) = scan(&segments[segments.len() - 2].1, false)?;
                state = Tail { checkpoint: state.checkpoint.or(before.checkpoint), ..before };
            }
        }
        let (number, path) = match segments.last() {
            Some((n, p)) => (*n, p.clone()),
            None => (1, segment_path(&dir, 1)),
        };
        let file = open_segment(&path)?;
        let bytes = file.metadata().map_err(Error::io(&path))?.len();
        if let Some(r) = &recovery {
            tracing::warn!(segment = %r.segment.display(), offset = r.offset, discarded = r.discarded_bytes,
                "audit log: cut off a torn tail left by a crash");
        }

        let index: Index = Arc::new(Mutex::new(first_records(&segments)));
        let chain = Chain::resume(provider, keys, state.seq, state.head);
        let latest = Arc::new(Mutex::new(state.checkpoint.clone()));
        let head = Arc::new(Mutex::new(crate::AuditHead { seq: state.seq, hash: state.head }));
        let failed: Failed = Arc::new(Mutex::new(None));
        let (sender, receiver) = mpsc::channel();
        let (sync_sender, sync_receiver) = mpsc::channel();
        let writer = Writer {
            dir: dir.clone(),
            config,
            chain,
            file: Arc::new(file),
            path,
            number,
            bytes,
            checkpointed_seq: state.checkpoint.as_ref().map_or(0, |c| c.seq),
            last_checkpoint: Instant::now(),
            failed: failed.clone(),
            index: index.clone(),
            last_recovery: None,
            syncer: sync_sender,
            latest: latest.clone(),
            head: head.clone(),
            _lock: lock,
        };
        let sink_failed = failed.clone();
        let syncer = {
            let latest = latest.clone();
            let head = head.clone();
            std::thread::Builder::new()
                .name("ferrohsm-audit-sync".into())
                .spawn(move || sync_loop(sync_receiver, latest, head, failed))
                .map_err(Error::io(&dir))?
        };
        let sealer = std::thread::Builder::new()
            .name("ferrohsm-audit".into())
            .spawn(move || writer.run(receiver))
            .map_err(Error::io(&dir))?;
        Ok(FileAuditSink {
            dir,
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(vec![sealer, syncer]),
            latest,
            recovery,
            failed: sink_failed,
            index,
            head,
        })
    }

    /// What recovery on open cut off, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Records the recovery in the log itself (called by whoever opened the sink, so the
    /// record carries their context).
    pub async fn record_recovery(&self) -> Result<Option<AuditRecord>> {
        let Some(r) = &self.recovery else { return Ok(None) };
        let entry = recovery_entry(format!(
            "discarded {} bytes of unacknowledged writes at byte {} of {}",
            r.discarded_bytes,
            r.offset,
            r.segment.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        self.append(entry).await.map(Some)
    }

    /// The segment files, oldest first.
    pub fn segment_paths(&self) -> Result<Vec<PathBuf>> {
        Ok(segments(&self.dir)?.into_iter().map(|(_, p)| p).collect())
    }

    /// Writes the log's whole lines from segment `first` at byte `offset` on (a line being
    /// written concurrently is left for the next read), learning index points on the way.
    /// A write error from `out` (a reader that has what it needs) ends the read.
    fn read_from(
        &self,
        first: u64,
        offset: u64,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        let mut lines = 0;
        for (number, path) in segments(&self.dir)?.into_iter().filter(|(n, _)| *n >= first) {
            let mut file = File::open(&path).map_err(Error::io(&path))?;
            let mut position = if number == first { offset } else { 0 };
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(position))
                .map_err(Error::io(&path))?;
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(Error::io(&path))?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                // Learn index points on the way (segments written before this process).
                if let Some(seq) = record_seq(&line)
                    && seq.is_multiple_of(INDEX_STRIDE)
                {
                    self.index
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(seq)
                        .or_insert((number, position));
                }
                position += n as u64;
                out.write_all(&line).map_err(Error::io("export"))?;
                lines += 1;
            }
        }
        Ok(lines)
    }

    fn send(&self, command: Command) -> Result<()> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref() {
            Some(s) => {
                s.send(command).map_err(|_| Error::Unavailable("the audit writer stopped".into()))
            }
            None => Err(Error::Unavailable("the audit log is closed".into())),
        }
    }
}

async fn answer<T>(receiver: oneshot::Receiver<Result<T>>) -> Result<T> {
    receiver.await.map_err(|_| Error::Unavailable("the audit writer stopped".into()))?
}

#[async_trait]
impl AuditSink for FileAuditSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn append(&self, entry: AuditEntry) -> Result<AuditRecord> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Append(entry, tx))?;
        answer(rx).await
    }

    async fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Checkpoint(tx))?;
        answer(rx).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn export(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        self.read_from(0, 0, out)
    }

    fn failure(&self) -> Option<String> {
        failure(&self.failed)
    }

    async fn export_after(&self, after: u64, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let target = after.saturating_add(1);
        let start = self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(..=target)
            .next_back()
            .map(|(_, at)| *at);
        let (first, offset) = start.unwrap_or((0, 0));
        self.read_from(first, offset, out)
    }

    async fn head(&self) -> Result<crate::AuditHead> {
        Ok(*self.head.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn prune(
        &self,
        before: time::OffsetDateTime,
        up_to: u64,
    ) -> Result<Option<crate::Pruned>> {
        let dir = self.dir.clone();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || prune_segments(&dir, &index, before, up_to))
            .await
            .map_err(|e| Error::Unavailable(format!("the prune task failed: {e}")))?
    }

    async fn import(&self, lines: Vec<String>) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Import(lines, tx))?;
        answer(rx).await
    }

    async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Close(tx))?;
        let result = answer(rx).await;
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ =
            tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())))
                .await;
        result
    }
}

impl Drop for FileAuditSink {
    fn drop(&mut self) {
        // Dropping the sender ends the sealing thread, which writes a final checkpoint and so
        // ends the syncing thread once that is durable.
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        for thread in std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = thread.join();
        }
    }
}

/// Shared between the two stages: set after a failed write or sync, when the chain head on
/// disk is unknown, so nothing more is accepted until the sealing stage has recovered (it
/// re-reads the last segment, cuts a torn tail and continues the chain from the last whole
/// record, at most once per [`RECOVERY_INTERVAL`]).
type Failed = Arc<Mutex<Option<String>>>;

fn failure(failed: &Failed) -> Option<String> {
    failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Work written by the sealing stage, waiting for the syncing stage to make it durable.
struct Pending {
    file: Arc<File>,
    path: PathBuf,
    records: Vec<(oneshot::Sender<Result<AuditRecord>>, AuditRecord)>,
    checkpoint: Option<Checkpoint>,
    checkpoint_replies: Vec<oneshot::Sender<Result<Option<Checkpoint>>>>,
    close: Option<oneshot::Sender<Result<()>>>,
}

/// The sealing stage: takes every queued command, seals records in order and writes them
/// (without waiting for the disk), then hands them to the syncing stage. While one fsync runs,
/// the next batch is already being written, so fsyncs run back to back and each covers
/// everything written meanwhile.
struct Writer {
    dir: PathBuf,
    config: FileAuditConfig,
    chain: Chain,
    file: Arc<File>,
    path: PathBuf,
    number: u64,
    bytes: u64,
    checkpointed_seq: u64,
    last_checkpoint: Instant,
    failed: Failed,
    index: Index,
    last_recovery: Option<Instant>,
    syncer: mpsc::Sender<Pending>,
    latest: Arc<Mutex<Option<Checkpoint>>>,
    head: Arc<Mutex<crate::AuditHead>>,
    _lock: File,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(64);
        loop {
            let mut wait =
                self.config.checkpoint_every.saturating_sub(self.last_checkpoint.elapsed());
            if failure(&self.failed).is_some() {
                // Retry recovery soon even when nobody writes, so health turns green again.
                wait = wait.min(RECOVERY_INTERVAL);
            }
            let first = match receiver.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    self.write(Vec::new(), true, Vec::new(), None);
                    self.last_checkpoint = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(Vec::new(), true, Vec::new(), None);
                    return;
                }
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::with_capacity(batch.len());
            let mut checkpoint_replies = Vec::new();
            let mut close = None;
            for command in batch.drain(..) {
                match command {
                    Command::Append(entry, reply) => appends.push((entry, reply)),
                    Command::Checkpoint(reply) => checkpoint_replies.push(reply),
                    Command::Close(reply) => close = Some(reply),
                    // Answered at once: an import only ever goes into an empty log.
                    Command::Import(lines, reply) => {
                        let _ = reply.send(self.import(lines));
                    }
                }
            }
            let due = self.chain.seq() + appends.len() as u64
                >= self.checkpointed_seq + self.config.checkpoint_every_records
                || self.last_checkpoint.elapsed() >= self.config.checkpoint_every;
            let want_checkpoint = due || !checkpoint_replies.is_empty() || close.is_some();
            let closing = close.is_some();
            self.write(appends, want_checkpoint, checkpoint_replies, close);
            if closing {
                return;
            }
        }
    }

    /// Seals and writes one batch, then passes it on (or fails it at once if the log failed).
    fn write(
        &mut self,
        appends: Vec<(AuditEntry, oneshot::Sender<Result<AuditRecord>>)>,
        checkpoint: bool,
        checkpoint_replies: Vec<oneshot::Sender<Result<Option<Checkpoint>>>>,
        close: Option<oneshot::Sender<Result<()>>>,
    ) {
        let mut pending = Pending {
            file: self.file.clone(),
            path: self.path.clone(),
            records: Vec::with_capacity(appends.len()),
            checkpoint: None,
            checkpoint_replies,
            close,
        };
        if let Some(reason) = failure(&self.failed) {
            let recovered = self.try_recover(&reason);
            if let Some(Err(e)) = &recovered {
                tracing::warn!(error = %e, "audit log still failing");
            }
            if !matches!(recovered, Some(Ok(()))) {
                fail(pending, appends.into_iter().map(|(_, reply)| reply).collect(), &reason);
                return;
            }
        }
        let mut buffer = Vec::with_capacity(appends.len() * 400 + 256);
        let mut encode_error = None;
        for (entry, reply) in appends {
            let record = self.chain.seal(entry);
            let offset = self.bytes + buffer.len() as u64;
            if record.seq.is_multiple_of(INDEX_STRIDE) || offset == 0 {
                self.index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(record.seq, (self.number, offset));
            }
            match to_line(&record) {
                Ok(line) => buffer.extend_from_slice(line.as_bytes()),
                Err(e) => encode_error = Some(e.to_string()),
            }
            pending.records.push((reply, record));
        }
        if checkpoint && self.chain.seq() > self.checkpointed_seq {
            match self
                .chain
                .checkpoint()
                .and_then(|cp| cp.map(|cp| to_line(&cp).map(|l| (cp, l))).transpose())
            {
                Ok(Some((cp, line))) => {
                    buffer.extend_from_slice(line.as_bytes());
                    self.checkpointed_seq = cp.seq;
                    self.last_checkpoint = Instant::now();
                    pending.checkpoint = Some(cp);
                }
                Ok(None) => {}
                Err(e) => encode_error = Some(e.to_string()),
            }
        }
        let written = match encode_error {
            Some(e) => Err(e),
            None => (&*self.file)
                .write_all(&buffer)
                .map_err(|e| format!("writing {}: {e}", self.path.display())),
        };
        if let Err(reason) = written {
            tracing::error!(error = %reason, "audit log write failed; refusing further records");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            fail(pending, Vec::new(), &reason);
            return;
        }
        self.bytes += buffer.len() as u64;
        let _ = self.syncer.send(pending);
        if self.bytes >= self.config.segment_max_bytes
            && let Err(e) = self.rotate()
        {
            let reason = e.to_string();
            tracing::error!(error = %reason, "audit segment rotation failed; refusing further records");
            *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        }
    }

    /// Writes imported lines into the empty log and syncs them, then continues their chain.
    fn import(&mut self, lines: Vec<String>) -> Result<u64> {
        if self.chain.seq() != 0 || self.bytes != 0 || failure(&self.failed).is_some() {
            return Err(Error::Unavailable("an import needs an empty audit log".into()));
        }
        let parsed = crate::sink::parse_import(&lines)?;
        let mut buffer = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in &lines {
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        (&*self.file).write_all(&buffer).map_err(Error::io(&self.path))?;
        self.file.sync_data().map_err(Error::io(&self.path))?;
        self.bytes += buffer.len() as u64;
        self.chain.reset(parsed.head.seq, parsed.head.hash);
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = parsed.head;
        if let Some(cp) = parsed.latest {
            self.checkpointed_seq = cp.seq;
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
        }
        Ok(lines.len() as u64)
    }

    /// Recovers from a failed write or sync, if the last attempt was long enough ago.
    fn try_recover(&mut self, reason: &str) -> Option<std::result::Result<(), String>> {
        if self.last_recovery.is_some_and(|t| t.elapsed() < RECOVERY_INTERVAL) {
            return None;
        }
        self.last_recovery = Some(Instant::now());
        Some(self.recover(reason).map_err(|e| e.to_string()))
    }

    /// Re-reads the current segment, cuts a torn tail (bytes of records never acknowledged),
    /// continues the chain from the last whole record, and proves the log writable again by
    /// writing and syncing an `audit.recovered` record; only then are records accepted again.
    /// Acknowledged records were synced before their answer, so none is lost, and the chain
    /// stays continuous.
    fn recover(&mut self, reason: &str) -> Result<()> {
        let (mut tail, torn) = scan(&self.path, true)?;
        if tail.seq == 0 && self.number > 1 {
            let (before, _) = scan(&segment_path(&self.dir, self.number - 1), false)?;
            tail = Tail { checkpoint: tail.checkpoint.or(before.checkpoint), ..before };
        }
        let file = open_segment(&self.path)?;
        let length = file.metadata().map_err(Error::io(&self.path))?.len();
        let dropped = self.chain.seq().saturating_sub(tail.seq);
        self.chain.reset(tail.seq, tail.head);
        // Positions of records that were never kept are forgotten.
        self.index.lock().unwrap_or_else(|p| p.into_inner()).retain(|seq, _| *seq <= tail.seq);
        let cut = torn.map_or(0, |r| r.discarded_bytes);
        let entry = recovery_entry(format!(
            "recovered after a failed write ({reason}); the chain continues after record {}; {dropped} unacknowledged records and {cut} torn bytes were dropped",
            tail.seq
        ));
        let record = self.chain.seal(entry);
        let line = to_line(&record)?;
        let probe = (&file)
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(Error::io(&self.path));
        if let Err(e) = probe {
            // Still failing: take the probe back off (best effort) and stay failed.
            let _ = file.set_len(length);
            self.chain.reset(tail.seq, tail.head);
            return Err(e);
        }
        self.file = Arc::new(file);
        self.bytes = length + line.len() as u64;
        self.checkpointed_seq = self.checkpointed_seq.min(tail.seq);
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!(seq = tail.seq, dropped, cut, "audit log recovered after a failed write");
        Ok(())
    }

    /// Starts the next segment with a signed checkpoint of the head as its first line, so
    /// retention can later remove every segment before it and leave that checkpoint as the
    /// log's anchor. (It is synced with the next batch; a crash before that loses only it.)
    fn rotate(&mut self) -> Result<()> {
        let number = self.number + 1;
        let path = segment_path(&self.dir, number);
        let file = open_segment(&path)?;
        let mut bytes = 0;
        if let Some(cp) = self.chain.checkpoint()? {
            let line = to_line(&cp)?;
            (&file).write_all(line.as_bytes()).map_err(Error::io(&path))?;
            bytes = line.len() as u64;
            self.checkpointed_seq = cp.seq;
            *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
        }
        self.file = Arc::new(file);
        self.path = path;
        self.number = number;
        self.bytes = bytes;
        Ok(())
    }
}

/// Answers everything in `pending` (and `extra` appends) with the failure.
fn fail(pending: Pending, extra: Vec<oneshot::Sender<Result<AuditRecord>>>, reason: &str) {
    let err = || Error::Unavailable(format!("an audit write failed ({reason}); reopen the log"));
    for (reply, _) in pending.records {
        let _ = reply.send(Err(err()));
    }
    for reply in extra {
        let _ = reply.send(Err(err()));
    }
    for reply in pending.checkpoint_replies {
        let _ = reply.send(Err(err()));
    }
    if let Some(reply) = pending.close {
        let _ = reply.send(Err(err()));
    }
}

/// The syncing stage: one fdatasync for everything written since the last, then the answers.
fn sync_loop(
    receiver: mpsc::Receiver<Pending>,
    latest: Arc<Mutex<Option<Checkpoint>>>,
    head: Arc<Mutex<crate::AuditHead>>,
    failed: Failed,
) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while let Ok(more) = receiver.try_recv() {
            group.push(more);
        }
        let mut result = failure(&failed).map_or(Ok(()), Err);
        if result.is_ok() {
            // Sync each distinct segment once, oldest first (a rotation may fall in the group).
            let mut synced: Vec<*const File> = Vec::new();
            for p in &group {
                let key = Arc::as_ptr(&p.file);
                if synced.contains(&key) {
                    continue;
                }
                if let Err(e) = p.file.sync_data() {
                    result = Err(format!("syncing {}: {e}", p.path.display()));
                    break;
                }
                synced.push(key);
            }
        }
        match result {
            Ok(()) => {
                let mut latest_now = latest.lock().unwrap_or_else(|p| p.into_inner());
                for p in &group {
                    if let Some(cp) = &p.checkpoint {
                        *latest_now = Some(cp.clone());
                    }
                }
                let current = latest_now.clone();
                drop(latest_now);
                if let Some((_, last)) = group.iter().rev().find_map(|p| p.records.last()) {
                    *head.lock().unwrap_or_else(|p| p.into_inner()) =
                        crate::AuditHead { seq: last.seq, hash: last.hash };
                }
                for p in group {
                    for (reply, record) in p.records {
                        let _ = reply.send(Ok(record));
                    }
                    for reply in p.checkpoint_replies {
                        let _ = reply.send(Ok(current.clone()));
                    }
                    if let Some(reply) = p.close {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Err(reason) => {
                tracing::error!(error = %reason, "audit log sync failed; refusing further records");
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                for p in group {
                    fail(p, Vec::new(), &reason);
                }
            }
        }
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:08}{SEGMENT_SUFFIX}"))
}

fn open_segment(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    }
    Ok(file)
}

/// The segments in `dir`, by number.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|rest| rest.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The head of a segment.
#[derive(Debug, Default)]
struct Tail {
    seq: u64,
    head: [u8; 32],
    checkpoint: Option<Checkpoint>,
}

/// The `audit.recovered` record a log writes about itself once it can be written again after
/// a failure (every sink records its recovery the same way).
pub fn recovery_entry(message: String) -> AuditEntry {
    let mut entry = AuditEntry::new(
        "system:audit",
        "audit.recovered",
        Outcome::Success,
        uuid::Uuid::now_v7().to_string(),
    );
    entry.message = Some(message);
    entry
}

/// The sequence number of a record line, read cheaply (the line's `"seq":` field).
fn record_seq(line: &[u8]) -> Option<u64> {
    if !line.starts_with(br#"{"type":"record","#) {
        return None;
    }
    let at = line.windows(6).position(|w| w == b"\"seq\":")? + 6;
    let digits: Vec<u8> =
        line.get(at..)?.iter().copied().take_while(u8::is_ascii_digit).take(20).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The first line of a file, without its newline (empty when it has none).
fn first_line(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line).map_err(Error::io(path))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        Ok(line)
    } else {
        Ok(Vec::new())
    }
}

/// Retention on segments: removes every segment before the latest one (never the segment
/// being written) that starts with a checkpoint allowed as an anchor.
fn prune_segments(
    dir: &Path,
    index: &Index,
    before: time::OffsetDateTime,
    up_to: u64,
) -> Result<Option<crate::Pruned>> {
    let all = segments(dir)?;
    let mut chosen = None;
    for (k, (_, path)) in all.iter().enumerate().take(all.len().saturating_sub(1)).skip(1) {
        if let Ok(crate::verify::Line::Checkpoint(cp)) =
            crate::verify::parse_line(&first_line(path)?)
            && crate::query::anchor_allowed(&cp, before, up_to)
        {
            chosen = Some((k, cp));
        }
    }
    let Some((keep, anchor)) = chosen else { return Ok(None) };
    let mut records = 0u64;
    let mut lines = 0u64;
    let mut first_seq = None;
    for (_, path) in &all[..keep] {
        let data = std::fs::read(path).map_err(Error::io(path))?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            if let Some(seq) = record_seq(line) {
                records += 1;
                first_seq.get_or_insert(seq);
            }
        }
    }
    for (_, path) in &all[..keep] {
        std::fs::remove_file(path).map_err(Error::io(path))?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
    index.lock().unwrap_or_else(|p| p.into_inner()).retain(|seq, _| *seq > anchor.seq);
    Ok(Some(crate::Pruned { first_seq: first_seq.unwrap_or(anchor.seq), anchor, records, lines }))
}

/// Where each segment's first record is (its first line), as index points.
fn first_records(segments: &[(u64, PathBuf)]) -> std::collections::BTreeMap<u64, (u64, u64)> {
    let mut points = std::collections::BTreeMap::new();
    for (number, path) in segments {
        let Ok(file) = File::open(path) else { continue };
        let mut line = Vec::new();
        if BufReader::new(file).read_until(b'\n', &mut line).is_ok()
            && let Some(seq) = record_seq(&line)
        {
            points.insert(seq, (*number, 0));
        }
    }
    points
}

/// Reads a segment's lines, checking that records link; with `repair`, cuts off a torn tail.
fn scan(path: &Path, repair: bool) -> Result<(Tail, Option<Recovery>)> {
    let data = std::fs::read(path).map_err(Error::io(path))?;
    let mut tail = Tail { head: GENESIS_HASH, ..Tail::default() };
    let mut offset = 0usize;
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    while offset < data.len() {
        let rest = &data[offset..];
        let Some(end) = rest.iter().position(|b| *b == b'\n') else { break };
        let line = &rest[..end];
        match crate::verify::parse_line(line) {
            Ok(crate::verify::Line::Record(record)) => {
                if tail.seq != 0 && (record.seq != tail.seq + 1 || record.prev_hash != tail.head) {
                    return Err(corrupt(
                        offset,
                        format!("record {} does not link to record {}", record.seq, tail.seq),
                    ));
                }
                tail.seq = record.seq;
                tail.head = record.hash;
            }
            Ok(crate::verify::Line::Checkpoint(cp)) => {
                // A checkpoint before any record is a segment's anchor: the chain continues
                // from the head it signs.
                if tail.seq == 0 {
                    tail.seq = cp.seq;
                    tail.head = cp.hash;
                }
                tail.checkpoint = Some(cp);
            }
            Err(_) => break,
        }
        offset += end + 1;
    }
    if offset == data.len() {
        return Ok((tail, None));
    }
    // Whatever follows the last good line must hold no further complete, valid line: a crash
    // tears only the end of the last write.
    let torn = &data[offset..];
    let later_valid = torn
        .split(|b| *b == b'\n')
        .skip(1)
        .any(|line| !line.is_empty() && crate::verify::parse_line(line).is_ok());
    if later_valid || !repair {
        return Err(corrupt(offset, "an unreadable line in the middle of the log".into()));
    }
    let file = OpenOptions::new().write(true).open(path).map_err(Error::io(path))?;
    file.set_len(offset as u64).map_err(Error::io(path))?;
    file.sync_all().map_err(Error::io(path))?;
    let recovery = Recovery {
        segment: path.to_path_buf(),
        offset: offset as u64,
        discarded_bytes: torn.len() as u64,
    };
    Ok((tail, Some(recovery)))
}
