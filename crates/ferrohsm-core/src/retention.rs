//! Retention (SPEC §9): how long closed approvals and old audit records are kept.
//!
//! [`Hsm::apply_retention`] runs as a background job (the server's scheduler calls it every
//! minute with the current time; tests call it with a later one). Each run:
//!
//! 1. writes the expiry of every open approval that passed its expiry (`approval.expired`), so
//!    expiry is in the log when it happens, not only computed on read;
//! 2. with an approval retention, removes closed approvals (executed, denied, expired) last
//!    changed before the cut, and records how many (`approval.pruned`); open ones never go;
//! 3. with an audit retention, removes the records written before the cut up to a signed
//!    checkpoint, which stays as the log's first line (its *anchor*: the verifier checks the
//!    rest of the log from it and still refuses any gap), and records the range, the count and
//!    the anchor (`audit.pruned`). By default it never cuts past the last checkpoint an
//!    auditor exported (`audit.exported`, written when `GET /v1/audit/export` completes), so
//!    nothing leaves the log before someone holds a copy; `audit_unexported` lifts that.

use time::{Duration, OffsetDateTime};

use ferrohsm_audit::{AuditEntry, AuditFilter, Outcome, Pruned};
use ferrohsm_policy::ApprovalState;

use crate::{Error, Hsm, RequestContext, Result};

/// The retention settings (all off by default: everything is kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Audit records older than this go (behind an anchor checkpoint).
    pub audit: Option<Duration>,
    /// Closed approvals last changed longer ago than this go.
    pub approvals: Option<Duration>,
    /// Also cut audit records no export has covered yet (off: keep them until exported).
    pub audit_unexported: bool,
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Approvals whose expiry was written.
    pub approvals_expired: u64,
    /// Closed approvals removed.
    pub approvals_removed: u64,
    /// The audit records removed, if any.
    pub audit: Option<Pruned>,
}

/// The actor of retention's records.
const ACTOR: &str = "system:retention";

/// The action of the record a completed export leaves.
const EXPORTED: &str = "audit.exported";

/// Approvals removed per store call.
const PRUNE_BATCH: usize = 1000;

/// How far the `audit.exported` records have been read, and the highest checkpoint they name.
#[derive(Debug, Default)]
pub(crate) struct ExportMark {
    after: u64,
    through: u64,
}

fn entry(action: &str, key_id: Option<String>, message: String) -> AuditEntry {
    let mut entry =
        AuditEntry::new(ACTOR, action, Outcome::Success, uuid::Uuid::now_v7().to_string());
    entry.key_id = key_id.filter(|k| !k.is_empty());
    entry.message = Some(message);
    entry
}

/// Records that an export of `lines` lines, complete through checkpoint `through`, reached
/// `ctx`'s caller.
pub(crate) async fn record_export(
    hsm: &Hsm,
    ctx: &RequestContext,
    lines: u64,
    through: u64,
) -> Result<()> {
    let mut e = AuditEntry::new(&ctx.actor, EXPORTED, Outcome::Success, ctx.request_id.clone());
    e.session = ctx.session.clone();
    e.source_ip = ctx.source_ip.map(|ip| ip.to_string());
    e.message = Some(format!("exported {lines} lines through checkpoint {through}"));
    hsm.audit_sink().append(e).await.map_err(Error::AuditUnavailable)?;
    Ok(())
}

impl Hsm {
    /// Applies the retention settings as of `now` (see the module documentation) and records
    /// what it did in the audit log.
    pub async fn apply_retention(&self, now: OffsetDateTime) -> Result<RetentionReport> {
        let settings = self.retention();
        let mut report = RetentionReport {
            approvals_expired: self.expire_approvals(now).await?,
            ..RetentionReport::default()
        };
        if let Some(keep) = settings.approvals {
            let cut = now - keep;
            loop {
                let removed = self.approval_store().prune_closed(cut, PRUNE_BATCH).await?;
                report.approvals_removed += removed;
                if removed < PRUNE_BATCH as u64 {
                    break;
                }
            }
            if report.approvals_removed > 0 {
                let message = format!(
                    "removed {} closed approvals last changed before {}",
                    report.approvals_removed,
                    crate::hsm::rfc3339(cut)
                );
                self.audit_sink()
                    .append(entry("approval.pruned", None, message))
                    .await
                    .map_err(Error::AuditUnavailable)?;
            }
        }
        if let Some(keep) = settings.audit {
            let cut = now - keep;
            let up_to =
                if settings.audit_unexported { u64::MAX } else { self.exported_through().await? };
            if up_to > 0
                && let Some(p) =
                    self.audit_sink().prune(cut, up_to).await.map_err(Error::AuditUnavailable)?
            {
                let message = format!(
                    "removed records {}..={} ({} records, {} lines) written before {}; the log now starts at the signed checkpoint of record {} (hash {})",
                    p.first_seq,
                    p.anchor.seq,
                    p.records,
                    p.lines,
                    crate::hsm::rfc3339(cut),
                    p.anchor.seq,
                    ferrohsm_audit::hex(&p.anchor.hash)
                );
                self.audit_sink()
                    .append(entry("audit.pruned", None, message))
                    .await
                    .map_err(Error::AuditUnavailable)?;
                report.audit = Some(p);
            }
        }
        Ok(report)
    }

    /// Writes the expiry of open approvals that passed it.
    async fn expire_approvals(&self, now: OffsetDateTime) -> Result<u64> {
        let mut expired = 0;
        for doc in self.approval_store().list(usize::MAX).await? {
            if !doc.open {
                continue;
            }
            // A damaged approval is reported by health and `check`; retention leaves it.
            let Ok(mut approval) = self.open_approval(&doc) else { continue };
            if approval.state_at(now) != ApprovalState::Expired
                || approval.state == ApprovalState::Expired
            {
                continue;
            }
            approval.state = ApprovalState::Expired;
            approval.revision += 1;
            match self.approval_store().update(self.seal_approval(&approval, now)?).await {
                Ok(()) => {}
                // Voted on or executed meanwhile: the next run looks again.
                Err(ferrohsm_store::Error::ApprovalConflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            let message = format!(
                "approval {} for {} expired at {} with {} of {} approvals",
                approval.id,
                approval.operation.as_str(),
                crate::hsm::rfc3339(approval.expires_at),
                approval.approvals(),
                approval.quorum
            );
            let key = Some(approval.key_id.clone());
            self.audit_sink()
                .append(entry("approval.expired", key, message))
                .await
                .map_err(Error::AuditUnavailable)?;
            expired += 1;
        }
        Ok(expired)
    }

    /// The highest checkpoint a completed export covered (0 when none), reading only the
    /// `audit.exported` records written since the last call.
    async fn exported_through(&self) -> Result<u64> {
        let filter = AuditFilter { action: Some(EXPORTED.into()), ..AuditFilter::default() };
        let (mut after, mut through) = {
            let mark = self.export_mark().lock().unwrap_or_else(|p| p.into_inner());
            (mark.after, mark.through)
        };
        loop {
            let page = self
                .audit_sink()
                .query(&filter, after, 1000)
                .await
                .map_err(Error::AuditUnavailable)?;
            for r in &page.records {
                after = r.seq;
                let named = r
                    .message
                    .as_deref()
                    .and_then(|m| m.rsplit(' ').next())
                    .and_then(|n| n.parse::<u64>().ok());
                through = through.max(named.unwrap_or(0));
            }
            if !page.more {
                break;
            }
        }
        *self.export_mark().lock().unwrap_or_else(|p| p.into_inner()) =
            ExportMark { after, through };
        Ok(through)
    }
}
