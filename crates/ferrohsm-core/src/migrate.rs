//! Moving everything from one backend to another (`ferrohsm-server migrate`): keys with their
//! sealed bytes unchanged, approvals, live token revocations, and the audit log line for line,
//! so the chain continues on the target and verifies there.
//!
//! Everything is checked on the way: every key record's integrity tag, every approval's tag,
//! and the whole source audit log (chain, HMACs, checkpoint signatures). A damaged source is
//! refused before anything is written; a target that already holds data is refused. After the
//! copy the target is read back and compared with the source, then the migration itself is
//! recorded in the target's log (`store.migrated`).
//!
//! The source log is held in memory while it is copied, so a migration needs about as much
//! memory as the log is large.

use std::sync::Arc;

use ferrohsm_audit::{AuditEntry, Outcome, Verifier};
use ferrohsm_backends::{BackendConfig, Backends};
use ferrohsm_seal::{MasterKey, Sealer};
use ferrohsm_store::{ApprovalDocument, KeyRecord, ListQuery};
use time::OffsetDateTime;

use crate::audit_read::VerifyWriter;
use crate::cache::KeyCache;
use crate::{Error, Result};

/// What a migration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    /// Copy, then compare the target with the source.
    Copy,
    /// Read and check the source only; write nothing.
    DryRun,
    /// Compare an earlier migration's target with its source; write nothing.
    Verify,
}

/// What a migration found and moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Key records.
    pub keys: usize,
    /// Approvals.
    pub approvals: usize,
    /// Live token revocations.
    pub revocations: usize,
    /// Audit log lines (records and checkpoints).
    pub audit_lines: usize,
    /// Audit records verified in the source.
    pub audit_records: u64,
}

/// Everything a backend holds, read and checked.
struct Snapshot {
    keys: Vec<KeyRecord>,
    approvals: Vec<ApprovalDocument>,
    revocations: Vec<ferrohsm_store::TokenRevocation>,
    audit: Vec<String>,
    audit_records: u64,
}

/// Migrates (or dry-runs, or verifies) `from` into `to` under `master`.
pub async fn migrate(
    from: &BackendConfig,
    to: &BackendConfig,
    master: &MasterKey,
    mode: MigrateMode,
) -> Result<MigrateReport> {
    let provider = crate::default_provider();
    let sealer = Sealer::new(provider.clone(), master).map_err(Error::Setup)?;
    let audit_keys = Arc::new(crate::derive_audit_keys(provider.as_ref(), master)?);
    let hmac = crate::danger_derive_audit_hmac_key(provider.as_ref(), master)?;
    let verifier = Verifier::new(provider.clone())
        .hmac_key(hmac.expose())
        .public_key(audit_keys.public_key_der())
        .map_err(Error::Crypto)?;

    let source = from.open(provider.clone(), audit_keys.clone()).await.map_err(Error::Backend)?;
    let snapshot = read(&source, &sealer, &verifier).await?;
    let report = MigrateReport {
        keys: snapshot.keys.len(),
        approvals: snapshot.approvals.len(),
        revocations: snapshot.revocations.len(),
        audit_lines: snapshot.audit.len(),
        audit_records: snapshot.audit_records,
    };
    if mode == MigrateMode::DryRun {
        source.audit.close().await.map_err(Error::AuditUnavailable)?;
        return Ok(report);
    }
    let target = to.open(provider.clone(), audit_keys.clone()).await.map_err(Error::Backend)?;
    if mode == MigrateMode::Copy {
        let empty = target.keys.count().await? == 0
            && target.approvals.list(1).await?.is_empty()
            && target.audit.head().await.map_err(Error::AuditUnavailable)?.seq == 0;
        if !empty {
            return Err(Error::InvalidRequest(format!(
                "the target {} ({}) already holds data; migrate into an empty one",
                to.kind,
                to.location()
            )));
        }
        for record in &snapshot.keys {
            target.keys.import(record.clone()).await?;
        }
        for doc in &snapshot.approvals {
            target.approvals.import(doc.clone()).await?;
        }
        let now = OffsetDateTime::now_utc();
        for revocation in &snapshot.revocations {
            target.revocations.add(revocation.clone(), now).await?;
        }
        target.audit.import(snapshot.audit.clone()).await.map_err(Error::AuditUnavailable)?;
    }
    compare(&snapshot, &target, &sealer, &verifier).await?;
    if mode == MigrateMode::Copy {
        let mut entry = AuditEntry::new(
            "system:migrate",
            "store.migrated",
            Outcome::Success,
            uuid::Uuid::now_v7().to_string(),
        );
        entry.message = Some(format!(
            "copied {} keys, {} approvals, {} token revocations and {} audit lines from {} ({}); sealed bytes unchanged",
            report.keys,
            report.approvals,
            report.revocations,
            report.audit_lines,
            from.kind,
            from.location()
        ));
        target.audit.append(entry).await.map_err(Error::AuditUnavailable)?;
        target.audit.checkpoint().await.map_err(Error::AuditUnavailable)?;
    }
    target.audit.close().await.map_err(Error::AuditUnavailable)?;
    source.audit.close().await.map_err(Error::AuditUnavailable)?;
    Ok(report)
}

/// Reads everything from `backends`, refusing anything that fails its check.
async fn read(backends: &Backends, sealer: &Sealer, verifier: &Verifier) -> Result<Snapshot> {
    if let Some(d) = backends
        .keys
        .damaged()
        .into_iter()
        .chain(backends.approvals.damaged())
        .chain(backends.revocations.damaged())
        .next()
    {
        return Err(Error::Store(ferrohsm_store::Error::Corrupt {
            record: d.location,
            reason: format!("{}; repair or remove it before migrating", d.reason),
        }));
    }
    let cache = KeyCache::new(0);
    let mut keys = Vec::new();
    let mut query = ListQuery { limit: ferrohsm_store::MAX_LIST_LIMIT, ..ListQuery::default() };
    loop {
        let page = backends.keys.list(&query).await?;
        for record in page.keys {
            let id = record.id;
            let verified = cache.verify(sealer, record).map_err(|_| Error::Integrity(id))?;
            keys.push((*verified.record).clone());
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    let approvals = backends.approvals.list(usize::MAX).await?;
    for doc in &approvals {
        crate::hsm::open_approval(sealer, doc)?;
    }
    let revocations = backends.revocations.live(OffsetDateTime::now_utc()).await?;
    let (audit, audit_records) = export(backends, verifier).await?;
    Ok(Snapshot { keys, approvals, revocations, audit, audit_records })
}

/// The whole audit log as lines, verified; an empty log is zero lines.
async fn export(backends: &Backends, verifier: &Verifier) -> Result<(Vec<String>, u64)> {
    let mut bytes = Vec::new();
    backends.audit.export(&mut bytes).await.map_err(Error::AuditUnavailable)?;
    if bytes.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut writer = VerifyWriter::new(verifier.start());
    std::io::Write::write_all(&mut writer, &bytes)
        .and_then(|()| std::io::Write::flush(&mut writer))
        .map_err(|e| Error::InvalidRequest(format!("reading the audit log: {e}")))?;
    let report = match writer.failure {
        Some(failure) => Err(failure),
        None => writer.verification.finish(),
    }
    .map_err(|f| Error::InvalidRequest(format!("the audit log does not verify: {f}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidRequest("the audit log is not UTF-8".into()))?;
    Ok((text.lines().map(str::to_owned).collect(), report.records))
}

/// Checks that `target` holds exactly what `snapshot` read from the source (plus, for the
/// log, records appended after it).
async fn compare(
    snapshot: &Snapshot,
    target: &Backends,
    sealer: &Sealer,
    verifier: &Verifier,
) -> Result<()> {
    let differs = |what: String| Err(Error::Conflict(format!("the target differs: {what}")));
    if target.keys.count().await? != snapshot.keys.len() {
        return differs("key count".into());
    }
    for record in &snapshot.keys {
        match target.keys.get(&record.id).await? {
            Some(stored) if *stored == *record => {}
            _ => return differs(format!("key {}", record.id)),
        }
    }
    for doc in &snapshot.approvals {
        match target.approvals.get(&doc.id).await? {
            Some(stored) if stored.body == doc.body && stored.revision == doc.revision => {
                crate::hsm::open_approval(sealer, &stored)?;
            }
            _ => return differs(format!("approval {}", doc.id)),
        }
    }
    let live = target.revocations.live(OffsetDateTime::now_utc()).await?;
    for r in &snapshot.revocations {
        if !live.iter().any(|l| l.id == r.id) {
            return differs(format!("token revocation {}", r.id));
        }
    }
    // The source's records must begin the target's log, line for line. (Checkpoints may
    // differ after the copy: closing a log signs its head, and the target records the
    // migration.)
    let (lines, _) = export(target, verifier).await?;
    let source = records(&snapshot.audit);
    let copied = records(&lines);
    if copied.len() < source.len() || copied[..source.len()] != source[..] {
        return differs("the audit log".into());
    }
    Ok(())
}

/// The record lines of a log.
fn records(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| {
            matches!(ferrohsm_audit::parse_line(l.as_bytes()), Ok(ferrohsm_audit::Line::Record(_)))
        })
        .map(String::as_str)
        .collect()
}
