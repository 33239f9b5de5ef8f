//! An offline check of a backend's data (`ferrohsm-server check`): every key record (its
//! integrity tag and every version's sealed material), every approval (its integrity tag),
//! every token revocation, and the audit log (chain, HMACs, checkpoint signatures), naming
//! whatever is damaged.
//!
//! It needs the master key, and the server should be stopped (the filesystem backend's lock
//! enforces it). It opens the backend as the server would, so the only changes it makes are
//! the ones a start makes: cleaning up unfinished writes and recording a crash recovery.

use ferrohsm_audit::Verifier;
use ferrohsm_backends::BackendConfig;
use ferrohsm_seal::{MasterKey, Sealer};
use ferrohsm_store::{ListQuery, VersionState};

use crate::audit_read::VerifyWriter;
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

/// Checks everything the backend `config` holds with `master`.
pub async fn check_backend(config: &BackendConfig, master: &MasterKey) -> Result<CheckReport> {
    let provider = crate::default_provider();
    let sealer = Sealer::new(provider.clone(), master).map_err(Error::Setup)?;
    let audit_keys = std::sync::Arc::new(crate::derive_audit_keys(provider.as_ref(), master)?);
    let mut report = CheckReport::default();
    let backends =
        config.open(provider.clone(), audit_keys.clone()).await.map_err(Error::Backend)?;

    for d in backends.keys.damaged() {
        report.problems.push(format!("key record {}: {}", d.location, d.reason));
    }
    let cache = KeyCache::new(0);
    let mut query = ListQuery { limit: ferrohsm_store::MAX_LIST_LIMIT, ..ListQuery::default() };
    loop {
        let page = backends.keys.list(&query).await?;
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
                // Material a key vault holds is not in the store; its handle is covered by the
                // record's integrity tag checked above.
                if version.state == VersionState::Destroyed || version.external.is_some() {
                    continue;
                }
                report.versions += 1;
                if verified.secret(provider.as_ref(), &sealer, None, version.version).is_err() {
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

    for d in backends.approvals.damaged() {
        report.problems.push(format!("approval {}: {}", d.location, d.reason));
    }
    for doc in backends.approvals.list(usize::MAX).await? {
        report.approvals += 1;
        if crate::hsm::open_approval(&sealer, &doc).is_err() {
            report.problems.push(format!("approval {}: it fails its integrity tag", doc.id));
        }
    }

    // A damaged revocation stops the server (revocations fail closed): name it here. (A
    // database backend finds damaged rows as it reads them.)
    match backends.revocations.live(time::OffsetDateTime::now_utc()).await {
        Ok(_) | Err(ferrohsm_store::Error::Corrupt { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for d in backends.revocations.damaged() {
        report.problems.push(format!("token revocation {}: {}", d.location, d.reason));
    }

    let hmac = crate::danger_derive_audit_hmac_key(provider.as_ref(), master)?;
    let verifier = Verifier::new(provider.clone())
        .hmac_key(hmac.expose())
        .public_key(audit_keys.public_key_der())
        .map_err(Error::Crypto)?;
    let mut writer = VerifyWriter::new(verifier.start());
    backends.audit.export(&mut writer).await.map_err(Error::AuditUnavailable)?;
    let _ = std::io::Write::flush(&mut writer);
    let result = match writer.failure {
        Some(failure) => Err(failure),
        None => writer.verification.finish(),
    };
    match result {
        Ok(r) => report.audit_records = r.records,
        // A log with no records yet has nothing to verify.
        Err(_) if backends.audit.head().await.map_err(Error::AuditUnavailable)?.seq == 0 => {}
        Err(f) => report.problems.push(format!("audit log: {f}")),
    }
    backends.audit.close().await.map_err(Error::AuditUnavailable)?;
    Ok(report)
}
