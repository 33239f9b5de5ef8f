//! An offline check of a data directory (`ferrohsm-server check`): every key record (its
//! integrity tag and every version's sealed material), every approval (its integrity tag) and
//! every audit segment (chain, HMACs, checkpoint signatures), naming whatever is damaged.
//!
//! It needs the master key and the directory's lock (so the server must be stopped). It
//! reads; the only change it makes is the key store's usual clean-up of unfinished writes.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use ferrohsm_audit::Verifier;
use ferrohsm_seal::{MasterKey, Sealer};
use ferrohsm_store::{ApprovalStore as _, FileKeyStore, KeyStore as _, ListQuery, VersionState};

use crate::cache::KeyCache;
use crate::{Error, Result};

/// What [`check_data_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Key records read.
    pub keys: usize,
    /// Key versions whose sealed material was checked.
    pub versions: usize,
    /// Approvals read.
    pub approvals: usize,
    /// Audit records verified.
    pub audit_records: u64,
    /// Everything damaged, one line each, naming the file or record.
    pub problems: Vec<String>,
}

/// Checks everything under `dir` (the layout `HsmBuilder::data_dir` uses) with `master`.
pub async fn check_data_dir(dir: &Path, master: &MasterKey) -> Result<CheckReport> {
    let provider = crate::default_provider();
    let sealer = Sealer::new(provider.clone(), master).map_err(Error::Setup)?;
    let mut report = CheckReport::default();

    let store = FileKeyStore::open(dir.join("keys")).await?;
    for d in store.damaged() {
        report.problems.push(format!("key record {}: {}", d.path.display(), d.reason));
    }
    let cache = KeyCache::new(0);
    let mut query = ListQuery { limit: ferrohsm_store::MAX_LIST_LIMIT, ..ListQuery::default() };
    loop {
        let page = store.list(&query).await?;
        for record in page.keys {
            report.keys += 1;
            let id = record.id;
            let verified = match cache.verify(&sealer, record) {
                Ok(v) => v,
                Err(_) => {
                    report.problems.push(format!("key {id}: its metadata fails the integrity tag"));
                    continue;
                }
            };
            for version in &verified.record.versions {
                if version.state == VersionState::Destroyed {
                    continue;
                }
                report.versions += 1;
                if verified.secret(provider.as_ref(), &sealer, version.version).is_err() {
                    report.problems.push(format!(
                        "key {id} version {}: its sealed material does not unseal",
                        version.version
                    ));
                }
            }
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }

    let approvals = store.approval_store().await?;
    for d in approvals.damaged() {
        report.problems.push(format!("approval {}: {}", d.path.display(), d.reason));
    }
    for a in approvals.list(usize::MAX).await? {
        report.approvals += 1;
        let genuine =
            a.tag.as_deref().and_then(|t| ferrohsm_crypto::b64::decode(t).ok()).is_some_and(
                |tag| sealer.verify(&a.canonical_bytes(), &ferrohsm_seal::MetadataTag(tag)).is_ok(),
            );
        if !genuine {
            report.problems.push(format!("approval {}: it fails its integrity tag", a.id));
        }
    }

    // A damaged revocation stops the server (it fails closed): name it here.
    if let Err(e) = store.token_revocation_store().await {
        match e {
            ferrohsm_store::Error::Corrupt { path, reason } => {
                report.problems.push(format!("token revocation {}: {reason}", path.display()));
            }
            other => return Err(other.into()),
        }
    }

    let segments = audit_segments(&dir.join("audit"))?;
    // A log that was opened but never written holds nothing to verify.
    let written = segments.iter().any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
    if written {
        let keys = crate::derive_audit_keys(provider.as_ref(), master)?;
        let hmac = crate::danger_derive_audit_hmac_key(provider.as_ref(), master)?;
        let verifier = Verifier::new(provider.clone())
            .hmac_key(hmac.expose())
            .public_key(keys.public_key_der())
            .map_err(Error::Crypto)?;
        let mut run = verifier.start();
        let mut failed = None;
        for path in &segments {
            let file = std::fs::File::open(path).map_err(|e| {
                Error::Store(ferrohsm_store::Error::Io { path: path.clone(), source: e })
            })?;
            if let Err(f) = run.feed(&path.display().to_string(), BufReader::new(file)) {
                failed = Some(f);
                break;
            }
        }
        match failed.map_or_else(|| run.finish(), Err) {
            Ok(r) => report.audit_records = r.records,
            Err(f) => report.problems.push(format!("audit log: {f}")),
        }
    }
    Ok(report)
}

/// The audit segments in `dir`, oldest first (none when there is no log yet).
fn audit_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Store(ferrohsm_store::Error::Io { path: dir.into(), source: e }));
        }
    };
    let mut segments: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".ndjson"))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_audit_directory_has_no_segments() {
        let dir = tempfile_dir();
        assert!(audit_segments(&dir.join("nope")).unwrap_or_default().is_empty());
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("ferrohsm-check-{}", uuid::Uuid::now_v7()))
    }
}
