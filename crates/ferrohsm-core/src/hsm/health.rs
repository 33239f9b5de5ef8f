//! Health, readiness, counters for metrics, and shutdown.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

/// How long a health check waits for the key vault to answer.
const VAULT_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Health checks of the key vault: at most one runs at a time (a vault that hangs holds one
/// thread, however many probes come), and every probe waits, without holding any lock, for a
/// check that finishes after it arrived, up to [`VAULT_CHECK_WAIT`]. A probe that gives up
/// (or is cancelled) leaves the check running; its result serves the next probes.
#[derive(Debug)]
pub(super) struct VaultProbe {
    running: Arc<std::sync::atomic::AtomicBool>,
    /// How many checks finished, and the last one's result.
    done: Arc<tokio::sync::watch::Sender<Finished>>,
}

/// How many vault checks finished, and the last one's result.
type Finished = (u64, Option<Result<(), String>>);

impl Default for VaultProbe {
    fn default() -> Self {
        VaultProbe {
            running: Default::default(),
            done: Arc::new(tokio::sync::watch::Sender::new((0, None))),
        }
    }
}

impl VaultProbe {
    /// The result of a check of `vault` that finished after this call began, or `None` if
    /// none did within the wait.
    async fn check(&self, vault: Arc<dyn RemoteKeyVault>) -> Option<Result<(), String>> {
        use std::sync::atomic::Ordering;
        let mut finished = self.done.subscribe();
        let before = finished.borrow().0;
        if !self.running.swap(true, Ordering::SeqCst) {
            let (running, done) = (self.running.clone(), self.done.clone());
            tokio::task::spawn_blocking(move || {
                let result = vault.check().map_err(|e| e.to_string());
                done.send_modify(|(count, last)| {
                    *count += 1;
                    *last = Some(result);
                });
                running.store(false, Ordering::SeqCst);
            });
        }
        let waited =
            tokio::time::timeout(VAULT_CHECK_WAIT, finished.wait_for(|(n, _)| *n > before));
        match waited.await {
            Ok(Ok(state)) => state.1.clone(),
            _ => None,
        }
    }
}

impl Hsm {
    /// The store backend's name, for health output.
    pub fn store_kind(&self) -> &'static str {
        self.inner.keys.store.kind()
    }

    /// The crypto provider's name.
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider.name()
    }

    /// The public fingerprint of the master key in use.
    pub fn master_key_fingerprint(&self) -> &str {
        self.inner.sealer.fingerprint()
    }

    /// The retention settings.
    pub fn retention(&self) -> crate::retention::Retention {
        self.inner.retention
    }

    /// The health of the store, the audit sink, the seal and the policy.
    pub async fn health(&self) -> Health {
        let ok = |detail: String| ComponentHealth { status: "ok".into(), detail };
        let bad = |detail: String| ComponentHealth { status: "error".into(), detail };
        let kind = self.inner.keys.store.kind();
        let damaged = self.damaged_records().len();
        let store = match self
            .inner
            .keys
            .store
            .list(&ListQuery { limit: 1, ..ListQuery::default() })
            .await
        {
            Ok(_) if damaged == 0 => ok(kind.to_owned()),
            Ok(_) => ComponentHealth {
                status: "degraded".into(),
                detail: format!(
                    "{kind}: {damaged} damaged records quarantined (their keys or approvals answer integrity; `ferrohsm-server check` names them)"
                ),
            },
            Err(e) => bad(format!("{kind}: {}", e.code())),
        };
        let audit_kind = self.inner.audit.sink.kind();
        let audit = match (self.audit_failure(), self.inner.audit.sink.latest_checkpoint().await) {
            (Some(reason), _) => bad(format!(
                "{audit_kind}: records cannot be written ({reason}); operations answer unavailable until a write succeeds"
            )),
            (None, Ok(_)) => ok(audit_kind.to_owned()),
            (None, Err(e)) => bad(format!("{audit_kind}: {e}")),
        };
        let seal = ok(format!("master key {}", self.master_key_fingerprint()));
        let since = rfc3339(self.inner.control.policy.in_force_since());
        let policy = match self.policy_error() {
            None => match self.inner.control.policy.staged() {
                None => ok(format!("in force since {since}")),
                Some(staged) => ok(format!(
                    "in force since {since}; a changed file (sha256 {}) awaits approval {}",
                    staged.candidate.sha256, staged.approval
                )),
            },
            Some(e) => {
                bad(format!("the policy of {since} stays in force; the changed file failed: {e}"))
            }
        };
        let vault = match self.inner.keys.vault.clone() {
            None => None,
            Some(vault) => {
                let custody = vault.custody();
                Some(match self.inner.keys.vault_probe.check(vault).await {
                    Some(Ok(())) => ok(format!("{custody}: reachable")),
                    Some(Err(e)) => bad(format!("{custody}: {e}")),
                    None => bad(format!(
                        "{custody}: the vault did not answer within {} s",
                        VAULT_CHECK_WAIT.as_secs()
                    )),
                })
            }
        };
        let healthy = [&store, &audit, &policy].iter().all(|c| c.status == "ok")
            && vault.as_ref().is_none_or(|v| v.status == "ok");
        Health {
            status: if healthy { "ok" } else { "degraded" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            store,
            audit,
            seal,
            policy,
            keyset: None,
            jobs: None,
            vault,
        }
    }

    /// Keys by state, for metrics (reads the store's index, not the key material).
    pub async fn key_counts(&self) -> Result<Vec<(KeyState, u64)>> {
        let mut counts = Vec::new();
        for state in
            [KeyState::Active, KeyState::Revoked, KeyState::PendingDestruction, KeyState::Destroyed]
        {
            let mut query = ListQuery {
                limit: ferrohsm_store::MAX_LIST_LIMIT,
                state: Some(state),
                ..ListQuery::default()
            };
            let mut n = 0u64;
            loop {
                let page = self.inner.keys.store.list(&query).await?;
                n += page.keys.len() as u64;
                match page.next_cursor {
                    Some(c) => query.cursor = Some(c),
                    None => break,
                }
            }
            counts.push((state, n));
        }
        Ok(counts)
    }

    /// The most recent approvals (up to 1000) by effective state, for metrics.
    pub async fn approval_counts(&self) -> Result<Vec<(ApprovalState, u64)>> {
        let now = OffsetDateTime::now_utc();
        let list = self.inner.control.approvals.list(ferrohsm_store::MAX_LIST_LIMIT).await?;
        let mut counts: BTreeMap<&'static str, (ApprovalState, u64)> = BTreeMap::new();
        for a in list.iter().filter_map(|d| self.open_approval(d).ok()) {
            let state = a.state_at(now);
            counts.entry(state.as_str()).or_insert((state, 0)).1 += 1;
        }
        Ok(counts.into_values().collect())
    }

    /// Stored key records and approvals that could not be read when the HSM opened: each is
    /// quarantined (left in place, refused with `integrity`) while everything else works.
    pub fn damaged_records(&self) -> Vec<ferrohsm_store::DamagedRecord> {
        let mut all = self.inner.keys.store.damaged();
        all.extend(self.inner.control.approvals.damaged());
        all
    }

    /// Whether the HSM can answer requests: the audit log accepts records and the store
    /// answers. (Damaged records or a rejected policy file degrade health but not readiness.)
    pub async fn ready(&self) -> bool {
        self.audit_failure().is_none()
            && self
                .inner
                .keys
                .store
                .list(&ListQuery { limit: 1, ..ListQuery::default() })
                .await
                .is_ok()
    }

    /// Why the audit sink refuses records right now, if it does (it retries by itself).
    pub fn audit_failure(&self) -> Option<String> {
        self.inner.audit.sink.failure()
    }

    /// Audit records written by operations, and records that could not be written, since start.
    pub fn audit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.audit.written.load(Relaxed), self.inner.audit.failed.load(Relaxed))
    }

    /// Key cache hits and misses since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.keys.cache.hits.load(Relaxed), self.inner.keys.cache.misses.load(Relaxed))
    }

    /// The public key that verifies audit checkpoints (PEM), for auditors.
    pub fn audit_public_key_pem(&self) -> &str {
        &self.inner.audit.public_pem
    }

    /// The audit HMAC key, for an auditor who verifies record HMACs offline. Anyone holding it
    /// can forge records that pass the HMAC check (but not checkpoint signatures).
    pub fn danger_audit_hmac_key(&self) -> SecretBytes {
        SecretBytes::copy_from(self.inner.audit.hmac_key.as_ref())
    }

    /// Checkpoints and closes the audit sink. Every later operation fails with `unavailable`.
    pub async fn shutdown(&self) -> Result<()> {
        flush_refusals(&self.inner).await;
        // Another replica may take the scheduled jobs at once rather than when the lease
        // expires. Failing to say so only delays that.
        if let Some(leases) = &self.inner.control.leases
            && let Err(e) = leases.release(&self.inner.control.holder).await
        {
            tracing::warn!(error = %e, "releasing the job leases failed; they expire by themselves");
        }
        self.inner.audit.sink.close().await.map_err(Error::AuditUnavailable)
    }
}
