//! Reading records back: the filter of an indexed query, one page of matches, and the chain
//! head. A sink without its own index answers queries by streaming its export through
//! [`PageFilter`], so memory stays bounded by one page whatever the size of the log.

use std::io::Write;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::verify::{Line, parse_line};
use crate::{AuditRecord, Outcome};

/// Which records a query wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor's records.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only records about this key id.
    pub key_id: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only records of this request id.
    pub request_id: Option<String>,
    /// Only records written at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only records written before this time.
    pub until: Option<OffsetDateTime>,
}

impl AuditFilter {
    /// Whether `record` passes the filter.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == r.actor)
            && self.action.as_ref().is_none_or(|a| *a == r.action)
            && self.key_id.as_ref().is_none_or(|k| Some(k) == r.key_id.as_ref())
            && self.outcome.is_none_or(|o| o == r.outcome)
            && self.request_id.as_ref().is_none_or(|id| *id == r.request_id)
            && (self.since.is_none() && self.until.is_none() || self.in_window(&r.ts))
    }

    fn in_window(&self, ts: &str) -> bool {
        let Ok(at) = OffsetDateTime::parse(ts, &Rfc3339) else { return false };
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

/// The last acknowledged record of a log: its sequence number and hash (0 and the genesis
/// hash for an empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// The last record's sequence number.
    pub seq: u64,
    /// Its hash, which the next record links to.
    pub hash: [u8; 32],
}

impl Default for AuditHead {
    fn default() -> Self {
        AuditHead { seq: 0, hash: crate::GENESIS_HASH }
    }
}

/// What retention removed from the start of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The first record removed.
    pub first_seq: u64,
    /// The checkpoint the log now starts at (its anchor): every record up to `anchor.seq` was
    /// removed, and its signature vouches for the head they ended at.
    pub anchor: crate::Checkpoint,
    /// Records removed.
    pub records: u64,
    /// Lines removed (records and checkpoints).
    pub lines: u64,
}

/// Whether a checkpoint may become the anchor of a prune: it covers records up to `up_to` at
/// most and was signed before `before` (so every record it covers is older).
pub fn anchor_allowed(cp: &crate::Checkpoint, before: OffsetDateTime, up_to: u64) -> bool {
    cp.seq > 0
        && cp.seq <= up_to
        && OffsetDateTime::parse(&cp.ts, &Rfc3339).is_ok_and(|at| at < before)
}

/// One page of a query: matching records in sequence order, and whether more matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// Whether records beyond the last one also matched.
    pub more: bool,
}

/// Collects one page of matching records from a stream of log lines; once the page is full
/// it refuses further writes, which ends the export feeding it.
#[derive(Debug)]
pub struct PageFilter<'f> {
    filter: &'f AuditFilter,
    after: u64,
    limit: usize,
    partial: Vec<u8>,
    page: RecordPage,
}

impl<'f> PageFilter<'f> {
    /// A collector of up to `limit` records after `after` that pass `filter`.
    pub fn new(filter: &'f AuditFilter, after: u64, limit: usize) -> Self {
        PageFilter { filter, after, limit, partial: Vec::new(), page: RecordPage::default() }
    }

    /// Whether the page is full (and the export was cut short on purpose).
    pub fn is_full(&self) -> bool {
        self.page.more
    }

    /// The page (after feeding any unterminated last line).
    pub fn finish(mut self) -> RecordPage {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        self.page
    }

    fn line(&mut self, line: &[u8]) {
        if self.page.more {
            return;
        }
        if let Ok(Line::Record(record)) = parse_line(line)
            && record.seq > self.after
            && self.filter.matches(&record)
        {
            if self.page.records.len() == self.limit {
                self.page.more = true;
            } else {
                self.page.records.push(record);
            }
        }
    }
}

impl Write for PageFilter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let data = std::mem::take(&mut self.partial);
        let mut start = 0;
        while let Some(end) = data[start..].iter().position(|&b| b == b'\n') {
            self.line(&data[start..start + end]);
            start += end + 1;
        }
        self.partial = data[start..].to_vec();
        if self.page.more {
            // Full: tell the reader to stop (the caller knows this is not a failure).
            return Err(std::io::Error::other("the page is full"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
