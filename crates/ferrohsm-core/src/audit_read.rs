//! Reading the HSM's own audit log: a filtered page of records, and a full verification. Both
//! stream the sink's export through a writer, so memory stays bounded by one page (or one
//! verification block) whatever the size of the log.

use std::io::Write;

use ferrohsm_audit::{AuditRecord, Failure, Line, Verification};

use crate::wire::AuditQuery;
use crate::{Error, Result};

/// How much complete-line data is buffered before it is handed to the verifier.
const VERIFY_CHUNK: usize = 4 << 20;

/// The filters of an [`AuditQuery`], parsed.
pub(crate) struct PageWriter {
    after: u64,
    limit: usize,
    query: AuditQuery,
    partial: Vec<u8>,
    pub(crate) records: Vec<AuditRecord>,
    pub(crate) more: bool,
}

impl PageWriter {
    pub(crate) fn new(query: AuditQuery) -> Result<Self> {
        let after = match query.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| Error::InvalidRequest("the audit cursor is not valid".into()))?,
        };
        let limit = query.limit.unwrap_or(ferrohsm_store::DEFAULT_LIST_LIMIT);
        if !(1..=ferrohsm_store::MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::InvalidRequest(format!(
                "limit must be between 1 and {}",
                ferrohsm_store::MAX_LIST_LIMIT
            )));
        }
        if let Some(o) = &query.outcome
            && !["success", "denied", "error"].contains(&o.as_str())
        {
            return Err(Error::InvalidRequest(format!("unknown outcome {o:?}")));
        }
        Ok(PageWriter {
            after,
            limit,
            query,
            partial: Vec::new(),
            records: Vec::new(),
            more: false,
        })
    }

    /// The cursor's record: the page starts after it.
    pub(crate) fn after(&self) -> u64 {
        self.after
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let q = &self.query;
        r.seq > self.after
            && q.actor.as_ref().is_none_or(|a| *a == r.actor)
            && q.action.as_ref().is_none_or(|a| *a == r.action)
            && q.key_id.as_ref().is_none_or(|k| Some(k) == r.key_id.as_ref())
            && q.outcome.as_ref().is_none_or(|o| o == r.outcome.as_str())
            && q.request_id.as_ref().is_none_or(|id| *id == r.request_id)
    }

    fn line(&mut self, line: &[u8]) {
        if self.more {
            return;
        }
        if let Ok(Line::Record(record)) = ferrohsm_audit::parse_line(line)
            && self.matches(&record)
        {
            if self.records.len() == self.limit {
                self.more = true;
            } else {
                self.records.push(record);
            }
        }
    }

    /// The cursor of the next page, when more records matched.
    pub(crate) fn next_cursor(&self) -> Option<String> {
        self.more.then(|| self.records.last().map(|r| r.seq.to_string())).flatten()
    }
}

impl Write for PageWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let mut start = 0;
        let data = std::mem::take(&mut self.partial);
        while let Some(end) = data[start..].iter().position(|&b| b == b'\n') {
            self.line(&data[start..start + end]);
            start += end + 1;
        }
        self.partial = data[start..].to_vec();
        if self.more {
            // Full: tell the reader to stop (the caller knows this is not a failure).
            return Err(std::io::Error::other("the page is full"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        Ok(())
    }
}

/// Feeds an export to a verifier in chunks of whole lines, keeping the first failure.
pub(crate) struct VerifyWriter<'v> {
    pub(crate) verification: Verification<'v>,
    pending: Vec<u8>,
    chunk: u64,
    pub(crate) failure: Option<Failure>,
}

impl<'v> VerifyWriter<'v> {
    pub(crate) fn new(verification: Verification<'v>) -> Self {
        VerifyWriter { verification, pending: Vec::new(), chunk: 0, failure: None }
    }

    fn feed(&mut self, upto: usize) {
        let data: Vec<u8> = self.pending.drain(..upto).collect();
        if self.failure.is_some() {
            return;
        }
        self.chunk += 1;
        let source = format!("export chunk {}", self.chunk);
        if let Err(e) = self.verification.feed(&source, data.as_slice()) {
            self.failure = Some(e);
        }
    }
}

impl Write for VerifyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= VERIFY_CHUNK
            && let Some(last) = self.pending.iter().rposition(|&b| b == b'\n')
        {
            self.feed(last + 1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let all = self.pending.len();
        if all > 0 {
            self.feed(all);
        }
        Ok(())
    }
}
