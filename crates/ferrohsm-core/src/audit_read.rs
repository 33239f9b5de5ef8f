//! Reading the HSM's own audit log: a filtered page of records (the sink's indexed query), and
//! a full verification, which streams the sink's export through a writer, so memory stays
//! bounded by one verification block whatever the size of the log.

use std::io::Write;

use ferrohsm_audit::{AuditFilter, Failure, Outcome, Verification};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::wire::AuditQuery;
use crate::{Error, Result};

/// How much complete-line data is buffered before it is handed to the verifier.
const VERIFY_CHUNK: usize = 4 << 20;

/// An [`AuditQuery`] checked and parsed: the sink's filter, the cursor and the page size.
pub(crate) fn parse_query(query: &AuditQuery) -> Result<(AuditFilter, u64, usize)> {
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
    let outcome = match query.outcome.as_deref() {
        None => None,
        Some("success") => Some(Outcome::Success),
        Some("denied") => Some(Outcome::Denied),
        Some("error") => Some(Outcome::Error),
        Some(o) => return Err(Error::InvalidRequest(format!("unknown outcome {o:?}"))),
    };
    let time = |field: &str, value: &Option<String>| -> Result<Option<OffsetDateTime>> {
        value
            .as_deref()
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339)
                    .map_err(|_| Error::InvalidRequest(format!("{field} must be an RFC 3339 time")))
            })
            .transpose()
    };
    let filter = AuditFilter {
        actor: query.actor.clone(),
        action: query.action.clone(),
        key_id: query.key_id.clone(),
        outcome,
        request_id: query.request_id.clone(),
        since: time("since", &query.since)?,
        until: time("until", &query.until)?,
    };
    Ok((filter, after, limit))
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
