//! Building an [`Hsm`](super::Hsm): the builder, opening the backend, and the start-up checks and background tasks.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

/// Builds an [`Hsm`]. A store and a master key are required; without an audit sink, records
/// go to an in-memory sink (fine for tests and short-lived embedding, lost at exit).
#[derive(Debug)]
pub struct HsmBuilder {
    provider: Arc<dyn CryptoProvider>,
    store: Option<Arc<dyn KeyStore>>,
    audit: Option<Arc<dyn AuditSink>>,
    /// Set only while `store` and `audit` are the pair it commits together.
    joint: Option<Arc<dyn AuditedKeyWrites>>,
    leases: Option<Arc<dyn ferrohsm_store::JobLeases>>,
    rate_usage: Option<Arc<dyn ferrohsm_store::RateUsage>>,
    policy: Option<Policy>,
    policy_file: Option<PathBuf>,
    policy_poll: std::time::Duration,
    approvals: Option<Arc<dyn ApprovalStore>>,
    revocations: Option<Arc<dyn TokenRevocationStore>>,
    max_token_lifetime: Duration,
    refusal_interval: std::time::Duration,
    nonce_budget: NonceBudget,
    master_key: Option<MasterKey>,
    max_payload: usize,
    destruction_grace: Duration,
    cache_capacity: usize,
    backend: Option<BackendConfig>,
    retention: crate::retention::Retention,
    vault: Option<Arc<dyn RemoteKeyVault>>,
    vault_calls: usize,
    vault_wait: std::time::Duration,
    default_custody: Option<String>,
}

impl HsmBuilder {
    /// Keeps the material of keys created with this vault's custody (`"custody": "pkcs11"`)
    /// in `vault` instead of sealing it in the store.
    pub fn vault(mut self, vault: Arc<dyn RemoteKeyVault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// How many operations on vault-held keys may run at once (default 64), and how long one
    /// waits for a turn before it answers that the vault is unavailable (default 5 s). A vault
    /// that hangs holds at most `calls` threads.
    pub fn vault_limits(mut self, calls: usize, wait: std::time::Duration) -> Self {
        self.vault_calls = calls.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self.vault_wait = wait;
        self
    }

    /// The custody of keys created without one: [`crate::SEALED`] (the default) or the
    /// vault's custody name.
    pub fn default_custody(mut self, custody: impl Into<String>) -> Self {
        self.default_custody = Some(custody.into());
        self
    }

    /// Uses `provider` instead of the default aws-lc-rs provider.
    pub fn provider(mut self, provider: Arc<dyn CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The key store.
    pub fn store(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.store = Some(store);
        self.joint = None;
        self
    }

    /// The audit sink. Open durable sinks with [`crate::derive_audit_keys`] so that the keys
    /// this HSM exports for auditors are the ones that seal its records.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self.joint = None;
        self
    }

    /// A fixed policy (the role matrix alone when neither this nor a file is given).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A policy file (TOML, see `docs/policy.md`), which must load now, and is reloaded when it
    /// changes (checked every `poll`; zero disables the check, leaving [`Hsm::reload_policy`]).
    pub fn policy_file(mut self, path: impl Into<PathBuf>, poll: std::time::Duration) -> Self {
        self.policy_file = Some(path.into());
        self.policy_poll = poll;
        self
    }

    /// Where dual-control approvals persist (in memory when not given).
    pub fn approvals(mut self, store: Arc<dyn ApprovalStore>) -> Self {
        self.approvals = Some(store);
        self
    }

    /// Where token revocations persist (in memory when not given).
    pub fn token_revocations(mut self, store: Arc<dyn TokenRevocationStore>) -> Self {
        self.revocations = Some(store);
        self
    }

    /// The longest a bearer token may live (default 24 hours): frontends refuse tokens that
    /// would live longer, and a revocation is kept that long.
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// How often refusals beyond each source's small budget of individual audit records are
    /// written as one aggregated record per (source, action, reason) with their count
    /// (default one minute).
    pub fn refusal_interval(mut self, interval: std::time::Duration) -> Self {
        self.refusal_interval = interval.max(std::time::Duration::from_millis(10));
        self
    }

    /// The AES-GCM random-nonce budget (default: NIST SP 800-38D's 2^32 invocations per key
    /// version). Tests use small budgets.
    pub fn nonce_budget(mut self, budget: NonceBudget) -> Self {
        self.nonce_budget = budget;
        self
    }

    /// Keeps everything on the filesystem under `dir`: keys in `dir/keys`, approvals beside
    /// them, and the audit log in `dir/audit` (a durable, group-committed file sink). The same
    /// as `.backend(BackendConfig::filesystem(dir))`.
    pub fn data_dir(self, dir: impl Into<PathBuf>) -> Self {
        self.backend(BackendConfig::filesystem(dir))
    }

    /// Opens every store from one backend configuration at build time (filesystem, SQLite or
    /// memory). Stores set explicitly with `.store`, `.approvals`, `.token_revocations` or
    /// `.audit` take precedence over the backend's.
    pub fn backend(mut self, config: BackendConfig) -> Self {
        self.backend = Some(config);
        self
    }

    /// Uses already opened stores (an embedding program's own `dyn` implementations, or
    /// ones opened with [`BackendConfig::open`]).
    pub fn backends(mut self, backends: Backends) -> Self {
        self.store = Some(backends.keys);
        self.approvals = Some(backends.approvals);
        self.revocations = Some(backends.revocations);
        self.audit = Some(backends.audit);
        self.joint = backends.joint;
        self.leases = backends.leases;
        self.rate_usage = backends.rate_usage;
        self
    }

    /// The master key that seals all key material.
    pub fn master_key(mut self, master_key: MasterKey) -> Self {
        self.master_key = Some(master_key);
        self
    }

    /// The largest plaintext, associated data, message or key material accepted.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The grace period used when a destruction request names none.
    pub fn destruction_grace(mut self, grace: Duration) -> Self {
        self.destruction_grace = grace;
        self
    }

    /// How long closed approvals and audit records are kept (everything, by default); applied
    /// by [`Hsm::apply_retention`].
    pub fn retention(mut self, retention: crate::retention::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How many keys the verified-key cache holds.
    pub fn cache_capacity(mut self, keys: usize) -> Self {
        self.cache_capacity = keys.max(1);
        self
    }

    /// Builds the HSM and checks that the master key matches the store: if the store holds
    /// keys, at least one of the first few must pass its integrity check. (A single tampered
    /// record is refused when used; it does not stop the HSM.)
    pub async fn build(mut self) -> Result<Hsm> {
        let master_key = self
            .master_key
            .take()
            .ok_or_else(|| Error::InvalidRequest("an Hsm needs a master key".into()))?;
        let audit_keys = Arc::new(derive_audit_keys(self.provider.as_ref(), &master_key)?);
        let default_custody = self.default_custody.take().unwrap_or_else(|| crate::SEALED.into());
        let vault_custody = self.vault.as_ref().map(|v| v.custody());
        if default_custody != crate::SEALED && Some(default_custody.as_str()) != vault_custody {
            return Err(Error::InvalidRequest(format!(
                "the default custody {default_custody:?} names no configured key vault"
            )));
        }
        if let Some(config) = self.backend.take() {
            let opened = config
                .open(self.provider.clone(), audit_keys.clone())
                .await
                .map_err(Error::Backend)?;
            if self.store.is_none() && self.audit.is_none() {
                self.joint = opened.joint;
            }
            if self.leases.is_none() {
                self.leases = opened.leases;
            }
            if self.rate_usage.is_none() {
                self.rate_usage = opened.rate_usage;
            }
            self.store.get_or_insert(opened.keys);
            self.approvals.get_or_insert(opened.approvals);
            self.revocations.get_or_insert(opened.revocations);
            self.audit.get_or_insert(opened.audit);
        }
        let mut store =
            self.store.ok_or_else(|| Error::InvalidRequest("an Hsm needs a key store".into()))?;
        // Records stay in the store; material of vault-held versions lives in the vault.
        let remote =
            self.vault.as_ref().map(|vault| RemoteKeyStore::new(store.clone(), vault.clone()));
        if let Some(remote) = &remote {
            store = Arc::new(remote.clone());
        }
        let sealer = Sealer::new(self.provider.clone(), &master_key).map_err(Error::Setup)?;
        let audit_hmac_key = derive_audit_hmac_key(self.provider.as_ref(), &master_key)?;
        let token_key = TokenKey::derive(self.provider.as_ref(), &master_key)?;
        // Whatever the key store, stores left unset live in memory (lost at exit).
        let (audit, approvals, revocations) = match (self.audit, self.approvals, self.revocations) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            (a, b, c) => {
                let m = BackendConfig::memory()
                    .open(self.provider.clone(), audit_keys.clone())
                    .await
                    .map_err(Error::Backend)?;
                (a.unwrap_or(m.audit), b.unwrap_or(m.approvals), c.unwrap_or(m.revocations))
            }
        };
        let policy = match (&self.policy_file, self.policy) {
            (Some(path), _) => PolicyHandle::from_file(path).map_err(Error::InvalidPolicy)?,
            (None, Some(policy)) => PolicyHandle::fixed(policy),
            (None, None) => PolicyHandle::fixed(Policy::default()),
        };
        if self.max_token_lifetime <= Duration::ZERO || self.max_token_lifetime > MAX_TOKEN_LIFETIME
        {
            return Err(Error::InvalidRequest(
                "the maximum token lifetime must be between one second and 30 days".into(),
            ));
        }
        let hsm = Hsm {
            inner: Arc::new(Inner {
                provider: self.provider,
                sealer,
                keys: Keys {
                    store,
                    joint: self.joint,
                    cache: KeyCache::new(self.cache_capacity),
                    nonce_budget: self.nonce_budget,
                    nonces: Default::default(),
                    reservations: Default::default(),
                    max_payload: self.max_payload,
                    destruction_grace: self.destruction_grace,
                    vault: self.vault,
                    remote,
                    vault_calls: tokio::sync::Semaphore::new(self.vault_calls),
                    vault_wait: self.vault_wait,
                    vault_probe: Default::default(),
                    default_custody,
                },
                audit: Audit {
                    sink: audit,
                    hmac_key: audit_hmac_key,
                    public_pem: audit_keys.public_key_pem(),
                    public_der: audit_keys.public_key_der().to_vec(),
                    written: Default::default(),
                    failed: Default::default(),
                    refusals: Refusals::new(self.refusal_interval),
                    export_mark: Default::default(),
                },
                control: Control {
                    policy,
                    approvals,
                    leases: self.leases,
                    rate_usage: self.rate_usage,
                    holder: uuid::Uuid::now_v7().to_string(),
                },
                tokens: Tokens {
                    key: token_key,
                    revocations,
                    revoked: Default::default(),
                    max_lifetime: self.max_token_lifetime,
                },
                retention: self.retention,
            }),
        };
        // A log whose newest record our audit key did not seal belongs to another master key
        // (a replica deployed with the wrong key file): appending to it would break the chain
        // for every replica sharing it, so refuse before writing anything.
        let head = hsm.inner.audit.sink.head().await.map_err(Error::AuditUnavailable)?;
        if head.seq > 0 {
            let newest = hsm
                .inner
                .audit
                .sink
                .query(&ferrohsm_audit::AuditFilter::default(), head.seq - 1, 1)
                .await
                .map_err(Error::AuditUnavailable)?;
            if newest.records.first().is_some_and(|r| !audit_keys.sealed(r)) {
                return Err(Error::MasterKeyMismatch);
            }
        }
        hsm.refresh_token_revocations().await?;
        record_quarantine(&hsm).await?;
        {
            // Writes aggregated refusals; ends when the last handle to the HSM is dropped.
            let weak = Arc::downgrade(&hsm.inner);
            let every = hsm.inner.audit.refusals.interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { break };
                    let flush = tokio::spawn(async move { flush_refusals(&inner).await });
                    if let Err(e) = flush.await {
                        tracing::error!(error = %e, "writing aggregated refusals panicked; it runs again");
                    }
                }
            });
        }
        let sample =
            hsm.inner.keys.store.list(&ListQuery { limit: 16, ..ListQuery::default() }).await?;
        let any_verifies =
            sample.keys.iter().any(|r| hsm.inner.keys.cache.check(&hsm.inner.sealer, r).is_ok());
        if !sample.keys.is_empty() && !any_verifies {
            return Err(Error::MasterKeyMismatch);
        }
        if hsm.inner.control.policy.has_file() && !self.policy_poll.is_zero() {
            // Reload on change; the task ends when the last handle to the HSM is dropped.
            let weak = Arc::downgrade(&hsm.inner);
            let poll = self.policy_poll;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(poll).await;
                    let Some(inner) = weak.upgrade() else { break };
                    // Failures are recorded and shown in health; each check is its own task,
                    // so even a panic is reported and the watcher keeps going.
                    let check = tokio::spawn({
                        let hsm = Hsm { inner: inner.clone() };
                        async move { hsm.policy_file_changed(false).await }
                    });
                    if let Err(e) = check.await {
                        tracing::error!(error = %e, "the policy file check panicked; it runs again");
                        inner
                            .control
                            .policy
                            .set_error(format!("the policy file check failed: {e}"));
                    }
                }
            });
        }
        Ok(hsm)
    }
}

impl Hsm {
    /// Starts building an HSM with the default provider and limits.
    pub fn builder() -> HsmBuilder {
        HsmBuilder {
            provider: Arc::new(AwsLcProvider),
            store: None,
            audit: None,
            joint: None,
            leases: None,
            rate_usage: None,
            policy: None,
            policy_file: None,
            policy_poll: std::time::Duration::from_secs(2),
            approvals: None,
            revocations: None,
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            refusal_interval: crate::refusals::DEFAULT_REFUSAL_INTERVAL,
            nonce_budget: NonceBudget::default(),
            master_key: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            destruction_grace: DEFAULT_DESTRUCTION_GRACE,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            backend: None,
            retention: Default::default(),
            vault: None,
            vault_calls: 64,
            vault_wait: std::time::Duration::from_secs(5),
            default_custody: None,
        }
    }
}

/// The most damaged records named one by one in the audit log at start-up.
const MAX_QUARANTINE_RECORDS: usize = 100;

/// Records every damaged record found at start-up (bounded; the rest in one summary).
async fn record_quarantine(hsm: &Hsm) -> Result<()> {
    let damaged = hsm.damaged_records();
    let mut entries = Vec::new();
    for d in damaged.iter().take(MAX_QUARANTINE_RECORDS) {
        let mut entry = AuditEntry::new(
            "system:store",
            "store.quarantined",
            Outcome::Error,
            uuid::Uuid::now_v7().to_string(),
        );
        entry.key_id = d.id.clone().filter(|id| id.parse::<KeyId>().is_ok());
        entry.message = Some(format!("quarantined {}: {}", d.location, d.reason));
        entries.push(entry);
    }
    if damaged.len() > MAX_QUARANTINE_RECORDS {
        let mut entry = AuditEntry::new(
            "system:store",
            "store.quarantined",
            Outcome::Error,
            uuid::Uuid::now_v7().to_string(),
        );
        entry.message = Some(format!(
            "{} more damaged records quarantined; `ferrohsm-server check` names them",
            damaged.len() - MAX_QUARANTINE_RECORDS
        ));
        entries.push(entry);
    }
    for entry in entries {
        hsm.inner.audit.sink.append(entry).await.map_err(Error::AuditUnavailable)?;
    }
    Ok(())
}
