//! What the SQL backends (`ferrohsm-sqlite`, `ferrohsm-postgres`) share and no SQL dialect
//! shapes: the writes queued for a backend's single writer task, answers held until their
//! transaction commits, the checks a key write must pass before its SQL runs, and the parsing
//! of stored rows (key records, token revocations, audit lines) into what the store traits
//! return. The SQL itself stays in each backend.
//!
//! This crate must never run SQL, never answer a write before its transaction's outcome is
//! known, and never turn an unreadable row into a shorter answer (it is an error or a
//! reported damaged record, never silently dropped).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;

use ferrohsm_audit::{AuditEntry, AuditFilter, AuditRecord, Checkpoint, Line, RecordPage};
use ferrohsm_store::{ApprovalDocument, Cursor, Error, KeyRecord, KeyVersion, TokenRevocation};
use tokio::sync::oneshot;

/// The store crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a store write's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// Where an audit write's answer goes.
pub type AuditReply<T> = oneshot::Sender<ferrohsm_audit::Result<T>>;

/// The kinds of key write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrite {
    /// A new key.
    Create,
    /// A new revision of a stored key.
    Update,
    /// A stored key's material wiped (a tombstone remains).
    Purge,
    /// A key copied from another store as it is (migration).
    Import,
}

impl KeyWrite {
    /// Checks `record` as this kind of write over `old`, the stored record it replaces
    /// (read in the writer's transaction; `None` when there is none).
    pub fn check(self, old: Option<&KeyRecord>, record: &KeyRecord) -> Result<()> {
        match (self, old) {
            (KeyWrite::Import, _) => Ok(record.check_invariants()?),
            (KeyWrite::Create, _) => Ok(record.check_new()?),
            (_, None) => Err(Error::NotFound(record.id)),
            (KeyWrite::Update, Some(old)) => Ok(old.check_update(record)?),
            (KeyWrite::Purge, Some(old)) => Ok(old.check_purge(record)?),
        }
    }

    /// Whether the write replaces a stored record (which the writer must read first).
    pub fn replaces(self) -> bool {
        matches!(self, KeyWrite::Update | KeyWrite::Purge)
    }
}

/// One write queued for a backend's writer task.
pub enum Job {
    /// A key write.
    Key(KeyWrite, KeyRecord, Reply<Arc<KeyRecord>>),
    /// A new key and the audit record of its creation, committed together (or neither).
    CreateAudited(Box<(KeyRecord, AuditEntry)>, Reply<(Arc<KeyRecord>, AuditRecord)>),
    /// A new approval.
    CreateApproval(ApprovalDocument, Reply<()>),
    /// An approval copied from another store (migration).
    ImportApproval(ApprovalDocument, Reply<()>),
    /// A new revision of an approval.
    UpdateApproval(ApprovalDocument, Reply<()>),
    /// Completed approvals older than `before_ns` removed, at most `limit`.
    PruneApprovals {
        /// The cut, in Unix nanoseconds.
        before_ns: i64,
        /// The most removed at once.
        limit: i64,
        /// How many were removed.
        reply: Reply<u64>,
    },
    /// A token revocation stored (at `now`, Unix milliseconds).
    AddRevocation(TokenRevocation, i64, Reply<()>),
    /// An audit record appended.
    Append(AuditEntry, AuditReply<AuditRecord>),
    /// A signed checkpoint written (if anything came since the last).
    Checkpoint(AuditReply<Option<Checkpoint>>),
    /// Audit lines copied from another log (migration).
    Import(Vec<String>, AuditReply<u64>),
    /// Audit records before `before` and up to `up_to` removed behind a checkpoint.
    Prune {
        /// The cut, in Unix milliseconds.
        before_ms: i64,
        /// The cut.
        before: time::OffsetDateTime,
        /// The last sequence number that may go.
        up_to: u64,
        /// What was removed.
        reply: AuditReply<Option<ferrohsm_audit::Pruned>>,
    },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// An answer held back until the commit: called with `None` when it committed, or with the
/// commit's failure.
pub type Held = Box<dyn FnOnce(Option<&Error>) + Send>;

/// Holds a store write's answer until its transaction's outcome is known. When the
/// transaction failed, every write in it is answered with the failure, refusals included: a
/// refusal was decided on state the rollback undid (a name taken by an earlier write of the
/// same batch, a revision it moved), so it may not be true.
pub fn hold<T: Send + 'static>(reply: Reply<T>, value: Result<T>) -> Held {
    Box::new(move |failure| {
        let _ = reply.send(match (value, failure) {
            (_, Some(f)) => Err(retry_copy(f)),
            (value, None) => value,
        });
    })
}

/// Holds an audit write's answer until its transaction's outcome is known (as [`hold`]).
pub fn hold_audit<T: Send + 'static>(
    reply: AuditReply<T>,
    value: ferrohsm_audit::Result<T>,
) -> Held {
    Box::new(move |failure| {
        let _ = reply.send(match (value, failure) {
            (_, Some(f)) => Err(audit_error(retry_copy(f))),
            (value, None) => value,
        });
    })
}

/// The batch's failure, for one of its writes (errors are not `Clone`).
pub fn retry_copy(e: &Error) -> Error {
    let what = format!("the transaction failed: {e}");
    if e.is_retryable() {
        Error::Unavailable { what, cause: None }
    } else {
        Error::Backend { what, cause: e.to_string().into() }
    }
}

/// The audit crate's view of a store error.
pub fn audit_error(e: Error) -> ferrohsm_audit::Error {
    match e {
        Error::Unavailable { what, cause } => ferrohsm_audit::Error::Unavailable(match cause {
            Some(c) => format!("{what}: {c}"),
            None => what,
        }),
        other => ferrohsm_audit::Error::Backend {
            what: "the audit database failed".into(),
            cause: Box::new(other),
        },
    }
}

/// Milliseconds since the Unix epoch (saturating; times before 1970 are 0).
pub fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX).max(0)
}

/// Nanoseconds since the Unix epoch (saturating; exact until the year 2262).
pub fn nanos(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos())
        .unwrap_or(if t.year() < 1970 { 0 } else { i64::MAX })
        .max(0)
}

/// A key record row (without its versions), checked to be the row of `id`.
pub fn parse_record(id: &str, text: &str) -> std::result::Result<KeyRecord, String> {
    let record: KeyRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if record.id.to_string() != id {
        return Err(format!("the row's id does not match the record's id {}", record.id));
    }
    Ok(record)
}

/// A key record row with its version rows (in version order), checked as a whole.
pub fn assemble_record(
    id: &str,
    text: &str,
    versions: &[String],
) -> std::result::Result<KeyRecord, String> {
    let mut record = parse_record(id, text)?;
    for body in versions {
        let version = serde_json::from_str::<KeyVersion>(body)
            .map_err(|e| format!("a version row is unreadable: {e}"))?;
        record.versions.push(version);
    }
    record.check_invariants().map_err(|e| e.to_string())?;
    Ok(record)
}

/// The cursor of a listing page whose rows ended at `ids`' last, when there are more.
pub fn next_cursor(ids: &[String], more: bool) -> Option<Cursor> {
    if !more {
        return None;
    }
    ids.last().and_then(|id| id.parse::<uuid::Uuid>().ok()).map(|u| Cursor::after(u.into()))
}

/// Token revocation rows; one that cannot be read fails the whole read (closed: the caller
/// stops rather than forget a revocation).
pub fn parse_revocations(bodies: &[String]) -> Result<Vec<TokenRevocation>> {
    bodies
        .iter()
        .map(|b| {
            serde_json::from_str(b).map_err(|e| Error::Corrupt {
                record: "a token revocation row".into(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A page of at most `limit` audit records from `lines` (fetched in sequence order, one
/// beyond the limit), keeping those `filter` matches exactly (the indexed columns hold
/// milliseconds; the record's own time decides). An unreadable line is an error.
pub fn audit_page(
    lines: &[String],
    filter: &AuditFilter,
    limit: usize,
) -> ferrohsm_audit::Result<RecordPage> {
    let mut page = RecordPage::default();
    for line in lines {
        if page.records.len() == limit {
            page.more = true;
            break;
        }
        match ferrohsm_audit::parse_line(line.as_bytes()) {
            Ok(Line::Record(record)) if filter.matches(&record) => page.records.push(record),
            Ok(_) => {}
            Err(e) => {
                return Err(ferrohsm_audit::Error::Unavailable(format!(
                    "an audit row cannot be read: {e}"
                )));
            }
        }
    }
    Ok(page)
}

/// Lines exported per page.
pub const EXPORT_PAGE: i64 = 2000;

/// Writes one page of an export (`rows`: line positions and lines, in order) to `out`, and
/// returns the position to continue from, or `None` when this was the last page. The first
/// page may start anywhere (a pruned log starts at its anchor); every later page must start
/// exactly at `expected`, or the log was pruned while it was exported and the export fails
/// (a retryable error) rather than hand out a log with a gap.
pub fn export_page(
    rows: &[(i64, String)],
    expected: Option<i64>,
    out: &mut (dyn std::io::Write + Send),
) -> ferrohsm_audit::Result<Option<i64>> {
    let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    if expected.is_some_and(|pos| pos != *first) {
        return Err(ferrohsm_audit::Error::Unavailable(
            "the log was pruned while it was exported; export it again".into(),
        ));
    }
    for (_, line) in rows {
        let written = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n"));
        written.map_err(|e| ferrohsm_audit::Error::Unavailable(format!("export: {e}")))?;
    }
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= EXPORT_PAGE;
    Ok(full.then_some(last + 1))
}

/// Exports the log from position `pos` on, one page of [`EXPORT_PAGE`] rows at a time from
/// `fetch(pos)` (the dialect's `SELECT pos, line … WHERE pos >= ? ORDER BY pos LIMIT ?`),
/// through [`export_page`], so a page that does not start where the last one ended fails the
/// export. Returns the number of lines written.
pub async fn export<F, Fut>(
    mut pos: i64,
    out: &mut (dyn std::io::Write + Send),
    mut fetch: F,
) -> ferrohsm_audit::Result<u64>
where
    F: FnMut(i64) -> Fut + Send,
    Fut: std::future::Future<Output = ferrohsm_audit::Result<Vec<(i64, String)>>> + Send,
{
    let mut lines = 0;
    let mut expected = None;
    loop {
        let rows = fetch(pos).await?;
        let next = export_page(&rows, expected, out)?;
        lines += rows.len() as u64;
        match next {
            Some(next) => {
                pos = next;
                expected = Some(next);
            }
            None => return Ok(lines),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_answers_each_write_with_a_copy_of_its_failure() {
        let (tx, rx) = oneshot::channel::<Result<u32>>();
        let failure = Error::Unavailable { what: "gone".into(), cause: None };
        hold(tx, Ok(7))(Some(&failure));
        let answer = rx.blocking_recv().unwrap_or_else(|_| Ok(0));
        assert!(matches!(answer, Err(Error::Unavailable { .. })), "{answer:?}");
        // A refusal decided inside a transaction that then failed may rest on state the
        // rollback undid: it is answered with the failure too.
        let (tx, rx) = oneshot::channel::<Result<u32>>();
        hold(tx, Err(Error::InvalidQuery("taken".into())))(Some(&failure));
        assert!(matches!(rx.blocking_recv(), Ok(Err(Error::Unavailable { .. }))));
        // After a commit, answers are what the writes found.
        let (tx, rx) = oneshot::channel::<Result<u32>>();
        hold(tx, Err(Error::InvalidQuery("taken".into())))(None);
        assert!(matches!(rx.blocking_recv(), Ok(Err(Error::InvalidQuery(_)))));
        let (tx, rx) = oneshot::channel::<Result<u32>>();
        hold(tx, Ok(7))(None);
        assert!(matches!(rx.blocking_recv(), Ok(Ok(7))));
    }

    #[test]
    fn an_export_with_a_gap_between_pages_fails() {
        let page = |from: i64, n: i64| -> Vec<(i64, String)> {
            (from..from + n).map(|p| (p, format!("line {p}"))).collect()
        };
        let mut out = Vec::new();
        // A full first page from an anchor: continue after it.
        let next = export_page(&page(5, EXPORT_PAGE), None, &mut out).ok().flatten();
        assert_eq!(next, Some(5 + EXPORT_PAGE));
        // The next page starts later than expected: pruned meanwhile.
        assert!(export_page(&page(7 + EXPORT_PAGE, 3), next, &mut out).is_err());
        // A short page in order ends the export.
        assert_eq!(export_page(&page(5 + EXPORT_PAGE, 3), next, &mut out).ok(), Some(None));
        assert_eq!(export_page(&[], next, &mut out).ok(), Some(None));
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(text.lines().count() as i64, EXPORT_PAGE + 3);
    }

    #[test]
    fn rows_that_do_not_parse_are_refused_with_a_reason() {
        assert!(parse_record("x", "not json").is_err());
        assert!(parse_revocations(&["{".to_owned()]).is_err());
        assert!(next_cursor(&["not-a-uuid".to_owned()], true).is_none());
        assert!(next_cursor(&[], false).is_none());
    }
}
