//! The `Hsm` facade: every key operation, with the state rules of SPEC §3.

use std::future::Future;
use std::sync::Arc;

use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, KeyMaterial, SecretBytes, SignInput, SignatureScheme,
    Usage, public_key_pem,
};
use ferrohsm_seal::{Binding, MasterKey, Sealer};
use ferrohsm_store::{
    KeyId, KeyRecord, KeyState, KeyStore, KeyVersion, ListQuery, Revocation, RevocationReason,
    VersionState,
};
use time::{Duration, OffsetDateTime};
use tracing::Instrument as _;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use ferrohsm_audit::{AuditEntry, AuditSink, Checkpoint, Outcome};
use ferrohsm_backends::{BackendConfig, Backends};
use ferrohsm_policy::{
    Approval, ApprovalError, ApprovalState, Decision, Parameter, Policy, PolicyEngine,
    PolicyRequest,
};
use ferrohsm_store::{
    ApprovalDocument, ApprovalStore, TokenMatch, TokenRevocation, TokenRevocationStore,
};
use zeroize::Zeroizing;

use crate::audit::{Audited, Purged, derive_audit_hmac_key, derive_audit_keys};
use crate::audit_read::{VerifyWriter, parse_query};
use crate::cache::{KeyCache, VerifiedKey};
use crate::policy::PolicyHandle;
use crate::refusals::Refusals;
use crate::token::TokenKey;
use crate::wire::{AuditPage, AuditQuery, AuditVerification, ComponentHealth, Health};
use crate::wire::{
    CreateKey, Decrypted, Encrypted, KeyInfo, KeyList, PublicKeyInfo, Signed, Unwrapped, Verified,
    Wrapped,
};
use crate::{Error, KeyRef, Operation, RequestContext, Result, format, params, validate};

/// The default limit on plaintexts, associated data, messages and key material: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// The default grace period before a key scheduled for destruction may be purged.
pub const DEFAULT_DESTRUCTION_GRACE: Duration = Duration::hours(24);
/// The longest destruction grace period a request or policy may set.
pub const MAX_DESTRUCTION_GRACE: Duration = Duration::days(36_525);
/// How many verified keys the cache holds by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// How often a write is retried when a concurrent writer changed the key first.
const WRITE_ATTEMPTS: usize = 3;
/// The default longest lifetime of a bearer token.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::hours(24);
/// The largest maximum token lifetime that can be configured.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::days(30);
/// How much longer than the maximum token lifetime a revocation is kept (covers clock skew).
const REVOCATION_MARGIN: Duration = Duration::minutes(5);

/// The embeddable HSM: composes a crypto provider, the sealer and a key store. Cheap to clone;
/// clones share everything.
#[derive(Debug, Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: Arc<dyn CryptoProvider>,
    sealer: Sealer,
    store: Arc<dyn KeyStore>,
    audit: Arc<dyn AuditSink>,
    audit_hmac_key: Zeroizing<[u8; 32]>,
    audit_public_pem: String,
    audit_public_der: Vec<u8>,
    token_key: TokenKey,
    audit_written: std::sync::atomic::AtomicU64,
    audit_failed: std::sync::atomic::AtomicU64,
    policy: PolicyHandle,
    approvals: Arc<dyn ApprovalStore>,
    revocations: Arc<dyn TokenRevocationStore>,
    /// The live revocations, checked on every request.
    revoked: std::sync::RwLock<RevokedSet>,
    max_token_lifetime: Duration,
    refusals: Refusals,
    nonce_budget: NonceBudget,
    /// AES-GCM encryptions per (key, version) since start (starting from the persisted
    /// reservation), and the versions whose automatic rotation has started.
    nonces: std::sync::Mutex<NonceTable>,
    cache: KeyCache,
    max_payload: usize,
    destruction_grace: Duration,
    retention: crate::retention::Retention,
    export_mark: std::sync::Mutex<crate::retention::ExportMark>,
}

/// Builds an [`Hsm`]. A store and a master key are required; without an audit sink, records
/// go to an in-memory sink (fine for tests and short-lived embedding, lost at exit).
#[derive(Debug)]
pub struct HsmBuilder {
    provider: Arc<dyn CryptoProvider>,
    store: Option<Arc<dyn KeyStore>>,
    audit: Option<Arc<dyn AuditSink>>,
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
}

impl HsmBuilder {
    /// Uses `provider` instead of the default aws-lc-rs provider.
    pub fn provider(mut self, provider: Arc<dyn CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The key store.
    pub fn store(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The audit sink. Open durable sinks with [`crate::derive_audit_keys`] so that the keys
    /// this HSM exports for auditors are the ones that seal its records.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
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
        if let Some(config) = self.backend.take() {
            let opened = config
                .open(self.provider.clone(), audit_keys.clone())
                .await
                .map_err(Error::Backend)?;
            self.store.get_or_insert(opened.keys);
            self.approvals.get_or_insert(opened.approvals);
            self.revocations.get_or_insert(opened.revocations);
            self.audit.get_or_insert(opened.audit);
        }
        let store =
            self.store.ok_or_else(|| Error::InvalidRequest("an Hsm needs a key store".into()))?;
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
                store,
                audit,
                audit_hmac_key,
                audit_public_pem: audit_keys.public_key_pem(),
                audit_public_der: audit_keys.public_key_der().to_vec(),
                token_key,
                audit_written: Default::default(),
                audit_failed: Default::default(),
                policy,
                approvals,
                revocations,
                revoked: Default::default(),
                max_token_lifetime: self.max_token_lifetime,
                refusals: Refusals::new(self.refusal_interval),
                nonce_budget: self.nonce_budget,
                nonces: Default::default(),
                cache: KeyCache::new(self.cache_capacity),
                max_payload: self.max_payload,
                destruction_grace: self.destruction_grace,
                retention: self.retention,
                export_mark: Default::default(),
            }),
        };
        hsm.refresh_token_revocations().await?;
        record_quarantine(&hsm).await?;
        {
            // Writes aggregated refusals; ends when the last handle to the HSM is dropped.
            let weak = Arc::downgrade(&hsm.inner);
            let every = hsm.inner.refusals.interval;
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
        let sample = hsm.inner.store.list(&ListQuery { limit: 16, ..ListQuery::default() }).await?;
        let any_verifies =
            sample.keys.iter().any(|r| hsm.inner.cache.check(&hsm.inner.sealer, r).is_ok());
        if !sample.keys.is_empty() && !any_verifies {
            return Err(Error::MasterKeyMismatch);
        }
        if hsm.inner.policy.has_file() && !self.policy_poll.is_zero() {
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
                        inner.policy.set_error(format!("the policy file check failed: {e}"));
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
        }
    }

    /// The store backend's name, for health output.
    pub fn store_kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// The crypto provider's name.
    pub fn provider_name(&self) -> &'static str {
        self.inner.provider.name()
    }

    /// The public fingerprint of the master key in use.
    pub fn master_key_fingerprint(&self) -> &str {
        self.inner.sealer.fingerprint()
    }

    // ----- Lifecycle -----------------------------------------------------------------------

    /// Creates a key with fresh material as version 1.
    pub async fn create_key(&self, ctx: &RequestContext, request: CreateKey) -> Result<KeyInfo> {
        self.run(ctx, Operation::CreateKey, None, async {
            let name = validate::name(request.name.as_deref())?;
            let description = validate::description(request.description.as_deref())?;
            validate::tags(&request.tags)?;
            let usages = validate::usages(request.algorithm, request.usages.as_deref())?;
            let params = || {
                let usages: Vec<&str> = usages.iter().map(|u| u.as_str()).collect();
                vec![
                    Parameter::new("algorithm", request.algorithm.to_string()),
                    params::optional("name", request.name.as_deref()),
                    Parameter::new("tags", params::tags(&request.tags)),
                    Parameter::new("usages", usages.join(", ")),
                ]
            };
            self.authorize(ctx, Operation::CreateKey, None, Some(&request.tags), params).await?;
            if let Some(name) = &name
                && self.inner.store.find_by_name(name).await?.is_some()
            {
                return Err(Error::Conflict(format!("the name {name} is already taken")));
            }
            let id = KeyId::generate();
            let (material, public_key) = self.generate(request.algorithm).await?;
            let now = OffsetDateTime::now_utc();
            let record = KeyRecord {
                id,
                name,
                description,
                algorithm: request.algorithm,
                usages,
                tags: request.tags,
                state: KeyState::Active,
                revocation: None,
                destroy_after: None,
                destroyed_at: None,
                current_version: 1,
                versions: vec![self.new_version(id, 1, &material, public_key, now)?],
                created_at: now,
                updated_at: now,
                created_by: ctx.actor.clone(),
                revision: 1,
                tag: None,
            };
            let stored = self.inner.store.create(self.tagged(record)).await?;
            Ok(KeyInfo::from(stored.as_ref()))
        })
        .await
    }

    /// One page of keys, each integrity-checked.
    pub async fn list_keys(&self, ctx: &RequestContext, query: &ListQuery) -> Result<KeyList> {
        self.run(ctx, Operation::ListKeys, None, async {
            self.authorize(ctx, Operation::ListKeys, None, None, Vec::new).await?;
            let page = self.inner.store.list(query).await?;
            let engine = self.inner.policy.engine();
            let mut keys = Vec::with_capacity(page.keys.len());
            for record in &page.keys {
                self.inner.cache.check(&self.inner.sealer, record)?;
                // Keys whose tag policies exclude the caller are left out of the page (which may
                // then hold fewer than `limit` keys; the cursor still continues correctly).
                let request = PolicyRequest {
                    actor: &ctx.actor,
                    roles: &ctx.roles,
                    operation: Operation::ListKeys,
                    key_tags: Some(&record.tags),
                };
                if engine.decide(&request) == Decision::Allow {
                    keys.push(KeyInfo::from(record.as_ref()));
                }
            }
            Ok(KeyList { keys, next_cursor: page.next_cursor.map(|c| c.to_string()) })
        })
        .await
    }

    /// A key's metadata.
    pub async fn describe_key(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.run(ctx, Operation::DescribeKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::DescribeKey, Some(&verified.record), None, Vec::new)
                .await?;
            Ok(KeyInfo::from(verified.record.as_ref()))
        })
        .await
    }

    /// Adds a version with fresh material and makes it current. The key must be active.
    pub async fn rotate_key(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.run(ctx, Operation::RotateKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::RotateKey, Some(&verified.record), None, Vec::new)
                .await?;
            let algorithm = verified.record.algorithm;
            let (material, public_key) = self.generate(algorithm).await?;
            self.modify(key, |old, next| {
                require_state(old, Operation::RotateKey, &[KeyState::Active])?;
                let version = u32::try_from(old.versions.len() + 1)
                    .map_err(|_| Error::InvalidRequest("the key has too many versions".into()))?;
                next.versions.push(self.new_version(
                    old.id,
                    version,
                    &material,
                    public_key.clone(),
                    next.updated_at,
                )?);
                next.current_version = version;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Makes `version` current again. History is kept; the key must be active and the version
    /// not destroyed.
    pub async fn rollback_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        version: u32,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::RollbackKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::RollbackKey, Some(&verified.record), None, || {
                let current = verified.record.current_version.to_string();
                vec![
                    Parameter::new("current_version", current),
                    Parameter::new("version", version.to_string()),
                ]
            })
            .await?;
            self.modify(key, |old, next| {
                require_state(old, Operation::RollbackKey, &[KeyState::Active])?;
                let target =
                    old.version(version).ok_or(Error::VersionNotFound { key: old.id, version })?;
                if target.state == VersionState::Destroyed {
                    return Err(version_destroyed(old, version, Operation::RollbackKey));
                }
                next.current_version = version;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Revokes a key. An active key may be revoked for any reason; a revoked key may only be
    /// revoked again to escalate its reason to `compromised`.
    pub async fn revoke_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        reason: RevocationReason,
        comment: Option<String>,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::RevokeKey, Some(key), async {
            if let Some(c) = &comment {
                validate::description(Some(c))?;
            }
            let verified = self.load(key).await?;
            let params = || {
                vec![
                    Parameter::new("reason", reason.to_string()),
                    params::optional("comment", comment.as_deref()),
                ]
            };
            self.authorize(ctx, Operation::RevokeKey, Some(&verified.record), None, params).await?;
            self.modify(key, |old, next| {
                let escalation = old.state == KeyState::Revoked
                    && reason == RevocationReason::Compromised
                    && old
                        .revocation
                        .as_ref()
                        .is_some_and(|r| r.reason != RevocationReason::Compromised);
                if old.state != KeyState::Active && !escalation {
                    return Err(invalid_state(old, Operation::RevokeKey));
                }
                next.state = KeyState::Revoked;
                next.revocation =
                    Some(Revocation { reason, comment: comment.clone(), at: next.updated_at });
                Ok(())
            })
            .await
        })
        .await
    }

    /// Schedules destruction after `grace` (else the key's tag policy's grace, else the
    /// configured default). The key must be active or revoked; until it is purged it can be
    /// cancelled, and it refuses every cryptographic use.
    pub async fn schedule_destruction(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        grace: Option<Duration>,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::ScheduleDestruction, Some(key), async {
            if grace.is_some_and(|g| g.is_negative() || g > MAX_DESTRUCTION_GRACE) {
                return Err(Error::InvalidRequest(
                    "the destruction grace period must be between zero and 100 years".into(),
                ));
            }
            let verified = self.load(key).await?;
            // The request's grace, else the key's tag policy, else the configured default:
            // decided before approval so approvers see the period that will apply.
            let policy_grace = self.inner.policy.engine().destruction_grace(&verified.record.tags);
            let (grace, origin) = match (grace, policy_grace) {
                (Some(g), _) => (g, "requested"),
                (None, Some(g)) => (g, "the key's tag policy"),
                (None, None) => (self.inner.destruction_grace, "the server default"),
            };
            self.authorize(
                ctx,
                Operation::ScheduleDestruction,
                Some(&verified.record),
                None,
                || vec![params::grace(grace, origin)],
            )
            .await?;
            self.modify(key, |old, next| {
                require_state(
                    old,
                    Operation::ScheduleDestruction,
                    &[KeyState::Active, KeyState::Revoked],
                )?;
                next.state = KeyState::PendingDestruction;
                let after = next.updated_at.checked_add(grace).ok_or_else(|| {
                    Error::InvalidRequest("the destruction grace period is out of range".into())
                })?;
                next.destroy_after = Some(after);
                Ok(())
            })
            .await
        })
        .await
    }

    /// Cancels a scheduled destruction, returning the key to the state it had.
    pub async fn cancel_destruction(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.run(ctx, Operation::CancelDestruction, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(
                ctx,
                Operation::CancelDestruction,
                Some(&verified.record),
                None,
                Vec::new,
            )
            .await?;
            self.modify(key, |old, next| {
                require_state(old, Operation::CancelDestruction, &[KeyState::PendingDestruction])?;
                next.state =
                    if old.revocation.is_some() { KeyState::Revoked } else { KeyState::Active };
                next.destroy_after = None;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Purges every key whose destruction grace period ended at or before `now`: its material
    /// is wiped and a tombstone with its metadata remains. Returns the purged ids.
    pub async fn purge_due(&self, ctx: &RequestContext, now: OffsetDateTime) -> Result<Vec<KeyId>> {
        // Refuse (and record) a caller who may not purge at all, even when nothing is due.
        let roles_only = PolicyRequest {
            actor: &ctx.actor,
            roles: &ctx.roles,
            operation: Operation::PurgeKey,
            key_tags: None,
        };
        if let Decision::Deny(reason) = self.inner.policy.engine().decide(&roles_only) {
            let refused = async { Err::<Purged, _>(Error::Forbidden(reason)) };
            return self.run(ctx, Operation::PurgeKey, None, refused).await.map(|_| Vec::new());
        }
        let mut due = Vec::new();
        let mut query = ListQuery {
            limit: ferrohsm_store::MAX_LIST_LIMIT,
            state: Some(KeyState::PendingDestruction),
            ..ListQuery::default()
        };
        loop {
            let page = self.inner.store.list(&query).await?;
            due.extend(
                page.keys
                    .iter()
                    .filter(|r| r.destroy_after.is_some_and(|t| t <= now))
                    .map(|r| r.id),
            );
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut purged = Vec::with_capacity(due.len());
        for id in due {
            // One key that cannot be purged (refused by policy, tampered, changed meanwhile)
            // is audited by `run` and skipped; it must not stop the others.
            let key = KeyRef::Id(id);
            match self.run(ctx, Operation::PurgeKey, Some(&key), self.purge(ctx, id, now)).await {
                Ok(_) => purged.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "purge skipped"),
            }
        }
        Ok(purged)
    }

    /// Rotates every active key whose current version is older than the maximum age its tag
    /// policies set (retention), as of `now`. Returns the rotated ids. Rotation goes through
    /// [`Hsm::rotate_key`], so it is authorized and audited like any other.
    pub async fn rotate_due(
        &self,
        ctx: &RequestContext,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyId>> {
        let engine = self.inner.policy.engine();
        let mut due = Vec::new();
        let mut query = ListQuery {
            limit: ferrohsm_store::MAX_LIST_LIMIT,
            state: Some(KeyState::Active),
            ..ListQuery::default()
        };
        loop {
            let page = self.inner.store.list(&query).await?;
            for record in &page.keys {
                let Some(max_age) = engine.max_age(&record.tags) else { continue };
                let current = record.version(record.current_version).map(|v| v.created_at);
                if current.is_some_and(|created| created + max_age <= now) {
                    due.push(record.id);
                }
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut rotated = Vec::with_capacity(due.len());
        for id in due {
            // As for purges: a key that cannot be rotated now is audited and skipped.
            match self.rotate_key(ctx, &KeyRef::Id(id)).await {
                Ok(_) => rotated.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "rotation skipped"),
            }
        }
        Ok(rotated)
    }

    async fn purge(&self, ctx: &RequestContext, id: KeyId, now: OffsetDateTime) -> Result<Purged> {
        let verified = self.load(&KeyRef::Id(id)).await?;
        let old = &verified.record;
        self.authorize(ctx, Operation::PurgeKey, Some(old), None, Vec::new).await?;
        require_state(old, Operation::PurgeKey, &[KeyState::PendingDestruction])?;
        if old.destroy_after.is_none_or(|t| t > now) {
            return Err(invalid_state(old, Operation::PurgeKey));
        }
        let mut next = successor(old);
        next.state = KeyState::Destroyed;
        next.destroy_after = None;
        next.destroyed_at = Some(next.updated_at);
        for v in &mut next.versions {
            v.state = VersionState::Destroyed;
            v.sealed = None;
        }
        let versions = u32::try_from(next.versions.len()).unwrap_or(u32::MAX);
        self.inner.cache.remove(&id);
        self.inner.store.purge(self.tagged(next)).await?;
        self.inner.cache.remove(&id);
        Ok(Purged { key_id: id, versions })
    }

    // ----- Cryptographic operations --------------------------------------------------------

    /// Encrypts with the current version under AES-256-GCM, binding `aad`.
    pub async fn encrypt(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Encrypted> {
        self.run(ctx, Operation::Encrypt, Some(key), async {
            self.limit("plaintext", plaintext.len())?;
            self.limit("aad", aad.len())?;
            let sealer = &self.inner.sealer;
            let provider = self.inner.provider.as_ref();
            let params = || {
                let mut list = params::secret(sealer, "plaintext", plaintext).to_vec();
                list.extend(params::public(provider, "aad", aad));
                list
            };
            let (verified, version) =
                self.usable(ctx, key, Operation::Encrypt, Usage::Encrypt, None, params).await?;
            if let Some(target) = self.take_nonce(&verified.record, version)? {
                self.reserve_nonces(verified.record.id, version, target).await?;
            }
            let secret = self.secret(&verified, version)?;
            let body = secret.encrypt(plaintext, aad).map_err(crypto_error(Operation::Encrypt))?;
            Ok(Encrypted {
                key_id: verified.record.id,
                key_version: version,
                ciphertext: format::format(version, &body),
            })
        })
        .await
    }

    /// Decrypts a `fhsm:v<N>:` ciphertext with the version it names.
    pub async fn decrypt(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<Decrypted> {
        self.run(ctx, Operation::Decrypt, Some(key), async {
            self.limit("ciphertext", ciphertext.len() / 4 * 3)?;
            self.limit("aad", aad.len())?;
            let (version, body) = format::parse(ciphertext)?;
            let provider = self.inner.provider.as_ref();
            let params = || {
                let mut list =
                    params::public(provider, "ciphertext", ciphertext.as_bytes()).to_vec();
                list.extend(params::public(provider, "aad", aad));
                list
            };
            let (verified, version) = self
                .usable(ctx, key, Operation::Decrypt, Usage::Decrypt, Some(version), &params)
                .await?;
            let secret = self.secret(&verified, version)?;
            let plaintext = secret.decrypt(&body, aad).map_err(|_| {
                Error::InvalidCiphertext("it does not decrypt under this key and associated data")
            })?;
            Ok(Decrypted { key_id: verified.record.id, key_version: version, plaintext })
        })
        .await
    }

    /// Signs a message (hashed here) or a pre-computed digest with the current version.
    /// `scheme` defaults to the algorithm's default scheme.
    pub async fn sign(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        input: SignInput<'_>,
        scheme: Option<SignatureScheme>,
    ) -> Result<Signed> {
        self.run(ctx, Operation::Sign, Some(key), async {
            self.limit_input(input)?;
            let params = || params::signed(self.inner.provider.as_ref(), input, scheme);
            let (verified, version) =
                self.usable(ctx, key, Operation::Sign, Usage::Sign, None, params).await?;
            let scheme = scheme_for(&verified.record, scheme)?;
            let secret = self.secret(&verified, version)?;
            let signature = secret.sign(scheme, input).map_err(crypto_error(Operation::Sign))?;
            Ok(Signed {
                key_id: verified.record.id,
                key_version: version,
                algorithm: scheme,
                signature,
            })
        })
        .await
    }

    /// Verifies a signature with `version` (the current version when `None`). Needs only the
    /// authenticated public key, never the private material.
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        input: SignInput<'_>,
        signature: &[u8],
        scheme: Option<SignatureScheme>,
        version: Option<u32>,
    ) -> Result<Verified> {
        self.run(ctx, Operation::Verify, Some(key), async {
            self.limit_input(input)?;
            self.limit("signature", signature.len())?;
            let params = || {
                let provider = self.inner.provider.as_ref();
                let mut list = params::signed(provider, input, scheme);
                list.extend(params::public(provider, "signature", signature));
                list.push(params::optional(
                    "key_version",
                    version.map(|v| v.to_string()).as_deref(),
                ));
                list
            };
            let (verified, version) =
                self.usable(ctx, key, Operation::Verify, Usage::Verify, version, params).await?;
            let scheme = scheme_for(&verified.record, scheme)?;
            let public = verified.public(self.inner.provider.as_ref(), version)?;
            let valid =
                public.verify(scheme, input, signature).map_err(crypto_error(Operation::Verify))?;
            Ok(Verified {
                key_id: verified.record.id,
                key_version: version,
                algorithm: scheme,
                valid,
            })
        })
        .await
    }

    /// Wraps key material with the current version (AES key wrap with padding, RFC 5649).
    pub async fn wrap(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        key_material: &[u8],
    ) -> Result<Wrapped> {
        self.run(ctx, Operation::Wrap, Some(key), async {
            self.limit("key material", key_material.len())?;
            if key_material.is_empty() {
                return Err(Error::InvalidRequest("key material to wrap cannot be empty".into()));
            }
            let params =
                || params::secret(&self.inner.sealer, "key_material", key_material).to_vec();
            let (verified, version) =
                self.usable(ctx, key, Operation::Wrap, Usage::Wrap, None, params).await?;
            let secret = self.secret(&verified, version)?;
            let body = secret.wrap(key_material).map_err(crypto_error(Operation::Wrap))?;
            Ok(Wrapped {
                key_id: verified.record.id,
                key_version: version,
                wrapped: format::format(version, &body),
            })
        })
        .await
    }

    /// Unwraps a `fhsm:v<N>:` wrapped key with the version it names.
    pub async fn unwrap(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        wrapped: &str,
    ) -> Result<Unwrapped> {
        self.run(ctx, Operation::Unwrap, Some(key), async {
            self.limit("wrapped key", wrapped.len() / 4 * 3)?;
            let (version, body) = format::parse(wrapped)?;
            let params = || {
                params::public(self.inner.provider.as_ref(), "wrapped", wrapped.as_bytes()).to_vec()
            };
            let (verified, version) = self
                .usable(ctx, key, Operation::Unwrap, Usage::Unwrap, Some(version), &params)
                .await?;
            let secret = self.secret(&verified, version)?;
            let key_material = secret
                .unwrap(&body)
                .map_err(|_| Error::InvalidCiphertext("it does not unwrap under this key"))?;
            Ok(Unwrapped { key_id: verified.record.id, key_version: version, key_material })
        })
        .await
    }

    /// The public key of `version` (the current version when `None`) as PEM and DER.
    pub async fn public_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        version: Option<u32>,
    ) -> Result<PublicKeyInfo> {
        self.run(ctx, Operation::ExportPublicKey, Some(key), async {
            let verified = self.load(key).await?;
            let record = &verified.record;
            self.authorize(ctx, Operation::ExportPublicKey, Some(record), None, || {
                vec![params::optional("version", version.map(|v| v.to_string()).as_deref())]
            })
            .await?;
            if record.algorithm.is_symmetric() {
                return Err(Error::Unsupported {
                    operation: Operation::ExportPublicKey,
                    algorithm: record.algorithm,
                });
            }
            let version = self.check_use(record, Operation::ExportPublicKey, version)?;
            let der = record
                .version(version)
                .and_then(|v| v.public_key.clone())
                .ok_or(Error::Integrity(record.id))?;
            Ok(PublicKeyInfo {
                key_id: record.id,
                key_version: version,
                algorithm: record.algorithm,
                pem: public_key_pem(&der),
                jwk: crate::jwk::from_spki(record.algorithm, &der),
                der,
            })
        })
        .await
    }

    // ----- Dual control and policy ----------------------------------------------------------

    /// Up to `limit` approvals, newest first, with their effective state.
    pub async fn list_approvals(
        &self,
        ctx: &RequestContext,
        limit: usize,
    ) -> Result<Vec<Approval>> {
        self.run(ctx, Operation::ListApprovals, None, async {
            self.authorize(ctx, Operation::ListApprovals, None, None, Vec::new).await?;
            let now = OffsetDateTime::now_utc();
            let stored =
                self.inner.approvals.list(limit.clamp(1, ferrohsm_store::MAX_LIST_LIMIT)).await?;
            let mut list = Vec::with_capacity(stored.len());
            for document in &stored {
                let mut a = self.open_approval(document)?;
                a.state = a.state_at(now);
                list.push(a);
            }
            Ok(list)
        })
        .await
    }

    /// One approval, with its effective state.
    pub async fn describe_approval(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
    ) -> Result<Approval> {
        self.run(ctx, Operation::DescribeApproval, None, async {
            self.authorize(ctx, Operation::DescribeApproval, None, None, Vec::new).await?;
            let mut a = self.load_approval(id).await?;
            a.state = a.state_at(OffsetDateTime::now_utc());
            Ok(a)
        })
        .await
    }

    /// Approves a pending request. The caller must hold an approver role and must not be the
    /// requester; each approver counts once.
    pub async fn approve(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
    ) -> Result<Approval> {
        // The context names the approval so its audit record does, whatever the outcome.
        let ctx = &RequestContext { approval_id: Some(id), ..ctx.clone() };
        self.run(ctx, Operation::Approve, None, self.vote(ctx, id, comment, true)).await
    }

    /// Denies a pending request (one denial rejects it).
    pub async fn deny(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
    ) -> Result<Approval> {
        let ctx = &RequestContext { approval_id: Some(id), ..ctx.clone() };
        self.run(ctx, Operation::DenyApproval, None, self.vote(ctx, id, comment, false)).await
    }

    async fn vote(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
        approve: bool,
    ) -> Result<Approval> {
        let operation = if approve { Operation::Approve } else { Operation::DenyApproval };
        self.authorize(ctx, operation, None, None, Vec::new).await?;
        if let Some(c) = &comment {
            validate::description(Some(c))?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut a = self.load_approval(id).await?;
            let now = OffsetDateTime::now_utc();
            let voted = if approve {
                a.approve(&ctx.caller(), comment.clone(), now)
            } else {
                a.deny(&ctx.caller(), comment.clone(), now)
            };
            voted.map_err(Error::Approval)?;
            match self.inner.approvals.update(self.seal_approval(&a, now)?).await {
                Ok(()) => {
                    if a.operation == Operation::ManagePolicy
                        && a.state == ApprovalState::Approved
                        && let Err(e) = self.apply_staged_policy(a.id).await
                    {
                        tracing::error!(approval = %a.id, error = %e, "applying the approved policy file failed");
                    }
                    return Ok(a);
                }
                Err(ferrohsm_store::Error::ApprovalConflict(_)) if attempt < WRITE_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reloads the policy file now, and records the outcome in the audit log. On error the
    /// previous policy stays in force.
    /// When the policy in force puts `manage_policy` under global dual control, the file is
    /// not applied: an approval is opened and the file applies once it is approved.
    pub async fn reload_policy(&self) -> Result<()> {
        self.policy_file_changed(true).await.map(|_| ())
    }

    /// Reads the policy file if it changed (always, with `force`) and puts it in force, or,
    /// when the policy in force puts `manage_policy` under global dual control, opens an
    /// approval (requester `system:policy`; parameters: the file, its SHA-256 and size) and
    /// keeps the new file staged until the approval reaches its quorum. Every outcome is
    /// recorded in the audit log. Returns whether a new policy is in force.
    async fn policy_file_changed(&self, force: bool) -> Result<bool> {
        let inner = &self.inner;
        let candidate = match inner.policy.read_candidate(inner.provider.as_ref(), force) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(false),
            Err(e) => {
                let message = format!("policy file rejected, previous policy kept: {e}");
                record_policy_event(inner, Outcome::Error, message).await;
                return Err(Error::InvalidPolicy(e));
            }
        };
        let engine = inner.policy.engine();
        let dual = engine
            .policy()
            .global_dual_control
            .as_ref()
            .filter(|d| d.operations.contains(&Operation::ManagePolicy));
        let Some(dual) = dual else {
            inner.policy.install(candidate);
            record_policy_event(inner, Outcome::Success, "policy file reloaded".into()).await;
            return Ok(true);
        };
        if inner.policy.staged().is_some_and(|s| s.candidate.sha256 == candidate.sha256) {
            return Ok(false);
        }
        let rule = ferrohsm_policy::ApprovalRule {
            policy: ferrohsm_policy::GLOBAL_POLICY_NAME.into(),
            quorum: dual.quorum,
            approver_roles: dual.approver_roles.clone(),
            expires_after: dual.expires_after,
            approver_issuers: dual.approver_issuers.clone(),
            require_certificate: dual.require_certificate,
        };
        let path = inner.policy.path().map(|p| p.display().to_string()).unwrap_or_default();
        let parameters = params::describe(
            Operation::ManagePolicy,
            None,
            vec![
                Parameter::new("policy_file", path),
                Parameter::new("sha256", candidate.sha256.clone()),
                Parameter::new("size", candidate.size.to_string()),
            ],
        );
        let digest = params::digest(&inner.sealer, &parameters);
        let ctx = RequestContext::local(POLICY_ACTOR);
        let now = OffsetDateTime::now_utc();
        let approval = Approval::new(
            &rule,
            Operation::ManagePolicy,
            String::new(),
            parameters,
            digest,
            &ctx.caller(),
            now,
        );
        inner.approvals.create(self.seal_approval(&approval, now)?).await?;
        inner.policy.stage(crate::policy::Staged { candidate, approval: approval.id });
        let message = format!(
            "approval_required: the changed policy file waits for approval {} ({} of {} approvals): {}",
            approval.id,
            approval.approvals(),
            approval.quorum,
            approval.summary()
        );
        record_policy_event(inner, Outcome::Denied, message).await;
        Ok(false)
    }

    /// Puts the staged policy file in force once its approval `id` is approved, marking the
    /// approval executed.
    async fn apply_staged_policy(&self, id: uuid::Uuid) -> Result<()> {
        let Some(staged) = self.inner.policy.staged().filter(|s| s.approval == id) else {
            return Ok(());
        };
        let mut approval = self.load_approval(id).await?;
        let digest = approval.params_digest.clone();
        let now = OffsetDateTime::now_utc();
        approval
            .execute(POLICY_ACTOR, Operation::ManagePolicy, "", &digest, now)
            .map_err(Error::Approval)?;
        self.inner.approvals.update(self.seal_approval(&approval, now)?).await?;
        self.inner.policy.install(staged.candidate);
        let message = format!("policy file reloaded after approval {id}");
        record_policy_event(&self.inner, Outcome::Success, message).await;
        Ok(())
    }

    /// Why the policy file was last rejected, while it stays broken.
    pub fn policy_error(&self) -> Option<String> {
        self.inner.policy.last_error()
    }

    /// Applies the policy to one request. A dual-controlled operation without an approval id
    /// opens an approval and fails with `ApprovalRequired`; with an approved approval bound to
    /// the same operation, key and parameters, the approval is consumed (persisted as executed
    /// before the operation runs, so it can never run twice).
    async fn authorize(
        &self,
        ctx: &RequestContext,
        operation: Operation,
        key: Option<&KeyRecord>,
        tags: Option<&BTreeMap<String, String>>,
        params: impl FnOnce() -> Vec<Parameter>,
    ) -> Result<()> {
        let engine = self.inner.policy.engine();
        let request = PolicyRequest {
            actor: &ctx.actor,
            roles: &ctx.roles,
            operation,
            key_tags: key.map(|k| &k.tags).or(tags),
        };
        let rule = match engine.decide(&request) {
            Decision::Allow => return Ok(()),
            Decision::Deny(reason) => return Err(Error::Forbidden(reason)),
            Decision::RequireApproval(rule) => rule,
            _ => return Err(Error::Forbidden("the policy engine gave no decision".into())),
        };
        let key_id = key.map(|k| k.id.to_string()).unwrap_or_default();
        let parameters = params::describe(operation, key, params());
        let digest = params::digest(&self.inner.sealer, &parameters);
        let now = OffsetDateTime::now_utc();
        let Some(id) = ctx.approval_id else {
            let approval =
                Approval::new(&rule, operation, key_id, parameters, digest, &ctx.caller(), now);
            self.inner.approvals.create(self.seal_approval(&approval, now)?).await?;
            return Err(Error::ApprovalRequired(Box::new(approval)));
        };
        let mut approval = self.load_approval(id).await?;
        approval.execute(&ctx.actor, operation, &key_id, &digest, now).map_err(Error::Approval)?;
        match self.inner.approvals.update(self.seal_approval(&approval, now)?).await {
            Ok(()) => Ok(()),
            // Someone executed it in between.
            Err(ferrohsm_store::Error::ApprovalConflict(_)) => {
                Err(Error::Approval(ApprovalError::AlreadyExecuted))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn rate_limit(&self, ctx: &RequestContext, operation: Operation) -> Result<()> {
        if !ctx.remote {
            return Ok(());
        }
        let key = match (ctx.actor.is_empty(), ctx.source_ip) {
            (false, _) => format!("actor:{}", ctx.actor),
            (true, Some(ip)) => format!("ip:{ip}"),
            (true, None) => "anonymous".to_owned(),
        };
        self.inner
            .policy
            .limiter
            .check(&key, operation, std::time::Instant::now())
            .map_err(|retry_after| Error::RateLimited { retry_after })
    }

    /// The stored form of `approval`: its encoding with an integrity tag inside, plus what the
    /// store needs to see (revision, whether it is still open, when it changed).
    pub(crate) fn seal_approval(
        &self,
        approval: &Approval,
        now: OffsetDateTime,
    ) -> Result<ApprovalDocument> {
        let mut approval = approval.clone();
        approval.tag = None;
        let tag = self.inner.sealer.authenticate(&approval.canonical_bytes());
        approval.tag = Some(ferrohsm_crypto::b64::encode(&tag.0));
        let body = serde_json::to_vec(&approval)
            .map_err(|e| Error::Store(ferrohsm_store::Error::backend("encoding an approval", e)))?;
        Ok(ApprovalDocument {
            id: approval.id,
            revision: approval.revision,
            open: matches!(
                approval.state_at(now),
                ApprovalState::Pending | ApprovalState::Approved
            ),
            updated_at: now,
            body,
        })
    }

    /// The approval in a stored document, if its integrity tag and its id check out.
    pub(crate) fn open_approval(&self, document: &ApprovalDocument) -> Result<Approval> {
        open_approval(&self.inner.sealer, document)
    }

    async fn load_approval(&self, id: uuid::Uuid) -> Result<Approval> {
        let document = match self.inner.approvals.get(&id).await {
            Err(ferrohsm_store::Error::Corrupt { .. }) => {
                return Err(Error::Forbidden(format!("approval {id} failed its integrity check")));
            }
            other => other?.ok_or(Error::ApprovalNotFound(id))?,
        };
        self.open_approval(&document)
    }

    // ----- Audit ---------------------------------------------------------------------------

    /// Writes a signed checkpoint of the audit chain now and returns the latest checkpoint.
    pub async fn checkpoint_audit(&self, ctx: &RequestContext) -> Result<Option<Checkpoint>> {
        self.run(ctx, Operation::CheckpointAudit, None, async {
            self.authorize(ctx, Operation::CheckpointAudit, None, None, Vec::new).await?;
            self.inner.audit.checkpoint().await.map_err(Error::AuditUnavailable)
        })
        .await
    }

    /// The latest signed checkpoint, without writing one.
    pub async fn latest_checkpoint(&self, ctx: &RequestContext) -> Result<Option<Checkpoint>> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            self.inner.audit.latest_checkpoint().await.map_err(Error::AuditUnavailable)
        })
        .await
    }

    /// Writes the whole audit log as NDJSON (what `ferrohsm-audit-verify` checks) and returns
    /// the number of lines. The export's own record follows it, so the next export holds it.
    pub async fn export_audit(
        &self,
        ctx: &RequestContext,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            // Everything up to the checkpoint current now is in the export once it completes:
            // recorded, so retention knows an auditor holds it (see `apply_retention`).
            let through =
                self.inner.audit.latest_checkpoint().await.map_err(Error::AuditUnavailable)?;
            let lines = self.inner.audit.export(out).await.map_err(Error::AuditUnavailable)?;
            if let Some(cp) = through {
                crate::retention::record_export(self, ctx, lines, cp.seq).await?;
            }
            Ok(lines)
        })
        .await
    }

    /// A page of audit records matching `query`, oldest first. The read itself is recorded.
    pub async fn audit_records(
        &self,
        ctx: &RequestContext,
        query: AuditQuery,
    ) -> Result<AuditPage> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            let (filter, after, limit) = parse_query(&query)?;
            let page = self
                .inner
                .audit
                .query(&filter, after, limit)
                .await
                .map_err(Error::AuditUnavailable)?;
            let next_cursor =
                page.more.then(|| page.records.last().map(|r| r.seq.to_string())).flatten();
            Ok(AuditPage { next_cursor, records: page.records })
        })
        .await
    }

    /// Verifies the whole audit log as an auditor would (chain, HMACs, checkpoint signatures)
    /// and reports the first bad record. A memory sink holds only recent records, so its log
    /// is checked as an excerpt.
    pub async fn verify_audit(&self, ctx: &RequestContext) -> Result<AuditVerification> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            let partial = self.inner.audit.kind() == "memory";
            let verifier = ferrohsm_audit::Verifier::new(self.inner.provider.clone())
                .hmac_key(self.inner.audit_hmac_key.as_ref())
                .public_key(&self.inner.audit_public_der)
                .map_err(Error::Crypto)?
                .allow_partial(partial);
            let mut writer = VerifyWriter::new(verifier.start());
            self.inner.audit.export(&mut writer).await.map_err(Error::AuditUnavailable)?;
            let _ = std::io::Write::flush(&mut writer);
            let result = match writer.failure {
                Some(failure) => Err(failure),
                None => writer.verification.finish(),
            };
            Ok(match result {
                Ok(report) => AuditVerification {
                    valid: true,
                    records: report.records,
                    signatures_checked: report.signatures_checked,
                    first_seq: Some(report.first_seq),
                    last_seq: Some(report.last_seq),
                    partial,
                    failure: None,
                },
                Err(failure) => AuditVerification {
                    valid: false,
                    records: 0,
                    signatures_checked: 0,
                    first_seq: None,
                    last_seq: None,
                    partial,
                    failure: Some(failure.to_string()),
                },
            })
        })
        .await
    }

    /// Records a request that failed authentication (the frontend decided; the core keeps the
    /// record). `ctx` carries what is known: source IP, request id, perhaps a claimed subject.
    /// Failures count against the source's rate limit (by IP for a remote caller with no
    /// actor); beyond it this returns `RateLimited` without writing a record, so a flood of bad
    /// credentials cannot grow the audit log without bound.
    pub async fn record_authentication_failure(
        &self,
        ctx: &RequestContext,
        reason: &str,
    ) -> Result<()> {
        let source = source_key(ctx);
        let limited = self.inner.refusals.failure(&source);
        let reason = format!("unauthenticated: {reason}");
        if !self.inner.refusals.admit(&source) {
            self.inner.refusals.count(&source, "authenticate", &reason);
            return limited.map_err(|retry_after| Error::RateLimited { retry_after });
        }
        let entry = AuditEntry {
            actor: ctx.actor.clone(),
            action: "authenticate".to_owned(),
            key_id: None,
            key_version: None,
            outcome: Outcome::Denied,
            request_id: ctx.request_id.clone(),
            session: ctx.session.clone(),
            client_fingerprint: ctx.client_fingerprint.clone(),
            source_ip: ctx.source_ip.map(|ip| ip.to_string()),
            message: Some(reason),
        };
        let written = self.inner.audit.append(entry).await;
        let counter =
            if written.is_ok() { &self.inner.audit_written } else { &self.inner.audit_failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        written.map_err(Error::AuditUnavailable)?;
        limited.map_err(|retry_after| Error::RateLimited { retry_after })
    }

    /// The key this HSM signs bearer tokens with (for publishing and checking them).
    pub fn token_key(&self) -> &TokenKey {
        &self.inner.token_key
    }

    /// Signs a token's JWS signing input with the token key: the audited way to issue a
    /// token (`issue_token`, admin only, and under dual control when the policy says so).
    /// `grant` is what the token says; the frontend builds `signing_input` from it and from
    /// the caller's mint chain ([`RequestContext::minted_by`] plus the caller).
    pub async fn issue_token(
        &self,
        ctx: &RequestContext,
        grant: &TokenGrant,
        signing_input: &[u8],
    ) -> Result<Vec<u8>> {
        let issued = self
            .run(ctx, Operation::IssueToken, None, async {
                if grant.ttl > self.inner.max_token_lifetime || grant.ttl <= Duration::ZERO {
                    return Err(Error::InvalidRequest(format!(
                        "the lifetime must be between 1 and {} seconds",
                        self.inner.max_token_lifetime.whole_seconds()
                    )));
                }
                self.authorize(ctx, Operation::IssueToken, None, None, || {
                    let mut chain: Vec<String> =
                        ctx.minted_by.iter().map(|p| format!("{} ({})", p.sub, p.iss)).collect();
                    chain.push(format!("{} ({})", ctx.actor, ctx.issuer));
                    vec![
                        Parameter::new("sub", grant.subject.clone()),
                        Parameter::new("roles", grant.roles.join(", ")),
                        Parameter::new("ttl_seconds", grant.ttl.whole_seconds().to_string()),
                        params::optional("cert_sha256", grant.cert_sha256.as_deref()),
                        Parameter::new("minted_by", chain.join(" -> ")),
                    ]
                })
                .await?;
                let signature = self.inner.token_key.sign(signing_input)?;
                Ok(IssuedToken { subject: grant.subject.clone(), signature })
            })
            .await?;
        Ok(issued.signature)
    }

    /// Revokes every token whose `jti` (or `sid`) is `value`, from now until the longest
    /// lifetime a token may have has passed. Audited as `revoke_token` (admin only).
    pub async fn revoke_token(
        &self,
        ctx: &RequestContext,
        matches: TokenMatch,
        value: &str,
        reason: Option<String>,
    ) -> Result<TokenRevocation> {
        self.run(ctx, Operation::RevokeToken, None, async {
            validate::token_field(matches.as_str(), value)?;
            if let Some(r) = &reason {
                validate::description(Some(r))?;
            }
            self.authorize(ctx, Operation::RevokeToken, None, None, || {
                vec![
                    Parameter::new(matches.as_str(), value),
                    params::optional("reason", reason.as_deref()),
                ]
            })
            .await?;
            let now = OffsetDateTime::now_utc();
            let mut revocation = TokenRevocation {
                id: uuid::Uuid::now_v7(),
                matches,
                value: value.to_owned(),
                reason: reason.clone(),
                revoked_by: ctx.actor.clone(),
                revoked_at: now,
                expires_at: now + self.inner.max_token_lifetime + REVOCATION_MARGIN,
                tag: None,
            };
            let tag = self.inner.sealer.authenticate(&revocation.canonical_bytes());
            revocation.tag = Some(ferrohsm_crypto::b64::encode(&tag.0));
            self.inner.revocations.add(revocation.clone(), now).await?;
            {
                let mut revoked = self.inner.revoked.write().unwrap_or_else(|p| p.into_inner());
                revoked.0.insert((matches, value.to_owned()));
                revoked.1.insert(revocation.id);
            }
            Ok(RevokedToken(revocation))
        })
        .await
        .map(|r| r.0)
    }

    /// Whether a token with this `jti` and `sid` is revoked (a set lookup; call it on every
    /// request, cached verification or not).
    pub fn is_token_revoked(&self, jti: Option<&str>, sid: Option<&str>) -> bool {
        let revoked = &self.inner.revoked.read().unwrap_or_else(|p| p.into_inner()).0;
        if revoked.is_empty() {
            return false;
        }
        let hit = |m: TokenMatch, v: Option<&str>| {
            v.is_some_and(|v| revoked.contains(&(m, v.to_owned())))
        };
        hit(TokenMatch::Jti, jti) || hit(TokenMatch::Sid, sid)
    }

    /// Re-reads the live revocations from the store (so revocations made by another replica
    /// take effect here), dropping expired ones and any whose integrity tag fails.
    pub async fn refresh_token_revocations(&self) -> Result<()> {
        if let Some(d) = self.inner.revocations.damaged().first() {
            // Fail closed: forgetting a revocation could let a revoked token back in.
            return Err(Error::Store(ferrohsm_store::Error::Corrupt {
                record: format!("token revocation {}", d.location),
                reason: d.reason.clone(),
            }));
        }
        let live = self.inner.revocations.live(OffsetDateTime::now_utc()).await?;
        let known = self.inner.revoked.read().unwrap_or_else(|p| p.into_inner()).1.clone();
        let mut set = HashSet::with_capacity(live.len());
        let mut ids = HashSet::with_capacity(live.len());
        for r in live {
            // Checked once per revocation. One that fails its tag is reported but still
            // honoured: a forged revocation can only cut a token off, never let one in.
            if !known.contains(&r.id) {
                let genuine = r
                    .tag
                    .as_deref()
                    .and_then(|t| ferrohsm_crypto::b64::decode(t).ok())
                    .is_some_and(|tag| {
                        let tag = ferrohsm_seal::MetadataTag(tag);
                        self.inner.sealer.verify(&r.canonical_bytes(), &tag).is_ok()
                    });
                if !genuine {
                    tracing::error!(revocation = %r.id, "a stored token revocation failed its integrity check; honoured anyway");
                }
            }
            ids.insert(r.id);
            set.insert((r.matches, r.value));
        }
        *self.inner.revoked.write().unwrap_or_else(|p| p.into_inner()) = (set, ids);
        Ok(())
    }

    /// The retention settings.
    pub fn retention(&self) -> crate::retention::Retention {
        self.inner.retention
    }

    pub(crate) fn approval_store(&self) -> &Arc<dyn ApprovalStore> {
        &self.inner.approvals
    }

    pub(crate) fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    pub(crate) fn export_mark(&self) -> &std::sync::Mutex<crate::retention::ExportMark> {
        &self.inner.export_mark
    }

    /// The longest a bearer token may live.
    pub fn max_token_lifetime(&self) -> Duration {
        self.inner.max_token_lifetime
    }

    /// The health of the store, the audit sink, the seal and the policy.
    pub async fn health(&self) -> Health {
        let ok = |detail: String| ComponentHealth { status: "ok".into(), detail };
        let bad = |detail: String| ComponentHealth { status: "error".into(), detail };
        let kind = self.inner.store.kind();
        let damaged = self.damaged_records().len();
        let store = match self
            .inner
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
        let audit_kind = self.inner.audit.kind();
        let audit = match (self.audit_failure(), self.inner.audit.latest_checkpoint().await) {
            (Some(reason), _) => bad(format!(
                "{audit_kind}: records cannot be written ({reason}); operations answer unavailable until a write succeeds"
            )),
            (None, Ok(_)) => ok(audit_kind.to_owned()),
            (None, Err(e)) => bad(format!("{audit_kind}: {e}")),
        };
        let seal = ok(format!("master key {}", self.master_key_fingerprint()));
        let since = rfc3339(self.inner.policy.in_force_since());
        let policy = match self.policy_error() {
            None => match self.inner.policy.staged() {
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
        let healthy = [&store, &audit, &policy].iter().all(|c| c.status == "ok");
        Health {
            status: if healthy { "ok" } else { "degraded" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            store,
            audit,
            seal,
            policy,
            keyset: None,
            jobs: None,
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
                let page = self.inner.store.list(&query).await?;
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
        let list = self.inner.approvals.list(ferrohsm_store::MAX_LIST_LIMIT).await?;
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
        let mut all = self.inner.store.damaged();
        all.extend(self.inner.approvals.damaged());
        all
    }

    /// Whether the HSM can answer requests: the audit log accepts records and the store
    /// answers. (Damaged records or a rejected policy file degrade health but not readiness.)
    pub async fn ready(&self) -> bool {
        self.audit_failure().is_none()
            && self.inner.store.list(&ListQuery { limit: 1, ..ListQuery::default() }).await.is_ok()
    }

    /// Why the audit sink refuses records right now, if it does (it retries by itself).
    pub fn audit_failure(&self) -> Option<String> {
        self.inner.audit.failure()
    }

    /// Audit records written by operations, and records that could not be written, since start.
    pub fn audit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.audit_written.load(Relaxed), self.inner.audit_failed.load(Relaxed))
    }

    /// Key cache hits and misses since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.inner.cache.hits.load(Relaxed), self.inner.cache.misses.load(Relaxed))
    }

    /// The public key that verifies audit checkpoints (PEM), for auditors.
    pub fn audit_public_key_pem(&self) -> &str {
        &self.inner.audit_public_pem
    }

    /// The audit HMAC key, for an auditor who verifies record HMACs offline. Anyone holding it
    /// can forge records that pass the HMAC check (but not checkpoint signatures).
    pub fn danger_audit_hmac_key(&self) -> SecretBytes {
        SecretBytes::copy_from(self.inner.audit_hmac_key.as_ref())
    }

    /// Checkpoints and closes the audit sink. Every later operation fails with `unavailable`.
    pub async fn shutdown(&self) -> Result<()> {
        flush_refusals(&self.inner).await;
        self.inner.audit.close().await.map_err(Error::AuditUnavailable)
    }

    // ----- Internals -----------------------------------------------------------------------

    /// The one path every public operation takes: a span with the caller and key, then one
    /// audit record of the outcome, durable before the caller gets the answer. If the record
    /// cannot be written, the answer is withheld and the caller gets `unavailable`. Policy
    /// decisions attach here too (a later issue).
    async fn run<T: Audited>(
        &self,
        ctx: &RequestContext,
        operation: Operation,
        key: Option<&KeyRef>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::info_span!(
            "hsm",
            operation = operation.as_str(),
            // Debug-escaped: a subject from a keyset token may hold newlines or escapes.
            actor = ?ctx.actor,
            request_id = %ctx.request_id,
            key = key.map(tracing::field::display),
        );
        let named = match key {
            Some(KeyRef::Id(id)) => Some(*id),
            _ => None,
        };
        // If the caller stops waiting (its future is dropped) after the work may have taken
        // effect, the guard still writes a record saying so.
        let mut guard = AbandonGuard { audit: &self.inner.audit, ctx, operation, key, armed: true };
        let result = match self.rate_limit(ctx, operation) {
            Ok(()) => work.instrument(span.clone()).await,
            Err(e) => {
                let source = source_key(ctx);
                if !self.inner.refusals.admit(&source) {
                    // Beyond the source's budget: counted for the next aggregated record.
                    guard.armed = false;
                    self.inner.refusals.count(&source, operation.as_str(), e.code());
                    return Err(e);
                }
                Err(e)
            }
        };
        let (outcome, key_id, key_version, message) = match &result {
            Ok(value) => (Outcome::Success, value.key().or(named), value.version(), value.note()),
            Err(e) => {
                tracing::info!(parent: &span, code = e.code(), actor = ?ctx.actor, error = %e, "operation refused");
                let (key_id, version) = e.key().map_or((named, None), |(k, v)| (Some(k), v));
                let mut message = format!("{}: {e}", e.code());
                if key_id.is_none()
                    && let Some(key) = key
                {
                    message.push_str(&format!(" (key {key})"));
                }
                (e.outcome(), key_id, version, Some(message))
            }
        };
        let message = match ctx.approval_id {
            Some(id) => Some(
                format!("{} (approval {id})", message.unwrap_or_default()).trim_start().to_owned(),
            ),
            None => message,
        };
        let entry = AuditEntry {
            actor: ctx.actor.clone(),
            action: operation.as_str().to_owned(),
            key_id: key_id.map(|k| k.to_string()),
            key_version,
            outcome,
            request_id: ctx.request_id.clone(),
            session: ctx.session.clone(),
            client_fingerprint: ctx.client_fingerprint.clone(),
            source_ip: ctx.source_ip.map(|ip| ip.to_string()),
            message,
        };
        // From here the record below is written even if this future is dropped: both sinks
        // take the entry on the first poll.
        guard.armed = false;
        match self.inner.audit.append(entry).await {
            Ok(_) => {
                self.inner.audit_written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                result
            }
            Err(e) => {
                self.inner.audit_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(parent: &span, error = %e, "audit record not written; withholding the result");
                Err(Error::AuditUnavailable(e))
            }
        }
    }

    /// Reads and integrity-checks a key.
    async fn load(&self, key: &KeyRef) -> Result<Arc<VerifiedKey>> {
        let record = match key {
            // A quarantined record answers `integrity`, like one whose tag fails.
            KeyRef::Id(id) => self.inner.store.get(id).await.map_err(|e| match e {
                ferrohsm_store::Error::Corrupt { .. } => Error::Integrity(*id),
                other => other.into(),
            })?,
            KeyRef::Name(name) => self.inner.store.find_by_name(name).await?,
        }
        .ok_or_else(|| Error::NotFound(key.to_string()))?;
        self.inner.cache.verify(&self.inner.sealer, record)
    }

    /// Loads a key for a cryptographic operation and checks algorithm, usage, state and
    /// version. Returns the version to use.
    async fn usable(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        operation: Operation,
        usage: Usage,
        version: Option<u32>,
        params: impl FnOnce() -> Vec<Parameter>,
    ) -> Result<(Arc<VerifiedKey>, u32)> {
        let verified = self.load(key).await?;
        let record = &verified.record;
        self.authorize(ctx, operation, Some(record), None, params).await?;
        if !record.algorithm.allowed_usages().contains(&usage) {
            return Err(Error::Unsupported { operation, algorithm: record.algorithm });
        }
        if !record.usages.contains(&usage) {
            return Err(Error::UsageNotAllowed { key: record.id, usage });
        }
        let version = self.check_use(record, operation, version)?;
        Ok((verified, version))
    }

    /// The state rules of SPEC §3 for using a key: creating operations need an active key and
    /// the current version; reading operations (decrypt, verify, unwrap, public key) also work
    /// on a revoked key unless it was compromised, with any non-destroyed version. A key
    /// pending destruction refuses every use.
    fn check_use(
        &self,
        record: &KeyRecord,
        operation: Operation,
        version: Option<u32>,
    ) -> Result<u32> {
        let creates = matches!(operation, Operation::Encrypt | Operation::Sign | Operation::Wrap);
        let compromised =
            record.revocation.as_ref().is_some_and(|r| r.reason == RevocationReason::Compromised);
        let allowed = match record.state {
            KeyState::Active => true,
            KeyState::Revoked => !creates && !compromised,
            _ => false,
        };
        if !allowed {
            return Err(invalid_state(record, operation));
        }
        let version = version.unwrap_or(record.current_version);
        let stored = record.version(version).ok_or(match operation {
            Operation::Decrypt | Operation::Unwrap => {
                Error::InvalidCiphertext("it names a key version that does not exist")
            }
            _ => Error::VersionNotFound { key: record.id, version },
        })?;
        if stored.state == VersionState::Destroyed {
            return Err(version_destroyed(record, version, operation));
        }
        Ok(version)
    }

    fn secret(
        &self,
        verified: &VerifiedKey,
        version: u32,
    ) -> Result<Arc<dyn ferrohsm_crypto::SecretKey>> {
        verified.secret(self.inner.provider.as_ref(), &self.inner.sealer, version)
    }

    /// Generates material off the async runtime (RSA generation can take seconds) and returns
    /// it with its public key.
    async fn generate(&self, algorithm: Algorithm) -> Result<(KeyMaterial, Option<Vec<u8>>)> {
        let provider = self.inner.provider.clone();
        tokio::task::spawn_blocking(move || {
            let material = provider.generate(algorithm).map_err(Error::Crypto)?;
            let public = provider
                .load(&material)
                .map_err(Error::Crypto)?
                .public_key_der()
                .map(<[u8]>::to_vec);
            Ok((material, public))
        })
        .await
        .map_err(|e| {
            Error::Crypto(ferrohsm_crypto::Error::InvalidInput(format!(
                "key generation task failed: {e}"
            )))
        })?
    }

    fn new_version(
        &self,
        id: KeyId,
        version: u32,
        material: &KeyMaterial,
        public_key: Option<Vec<u8>>,
        now: OffsetDateTime,
    ) -> Result<KeyVersion> {
        let key_id = id.to_string();
        let binding = Binding { key_id: &key_id, version, algorithm: material.algorithm() };
        let sealed = self.inner.sealer.seal(&binding, material).map_err(Error::Setup)?;
        Ok(KeyVersion {
            version,
            created_at: now,
            state: VersionState::Active,
            public_key,
            sealed: Some(sealed),
            encryptions_reserved: 0,
        })
    }

    fn tagged(&self, mut record: KeyRecord) -> KeyRecord {
        record.tag = None;
        record.tag = Some(self.inner.sealer.authenticate(&record.canonical_bytes()));
        record
    }

    /// Read-modify-write with optimistic concurrency: `change` edits a successor of the stored
    /// record; a concurrent change makes it start again from a fresh read.
    async fn modify(
        &self,
        key: &KeyRef,
        change: impl Fn(&KeyRecord, &mut KeyRecord) -> Result<()>,
    ) -> Result<KeyInfo> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let verified = self.load(key).await?;
            let mut next = successor(&verified.record);
            change(&verified.record, &mut next)?;
            match self.inner.store.update(self.tagged(next)).await {
                Ok(stored) => return Ok(KeyInfo::from(stored.as_ref())),
                Err(ferrohsm_store::Error::Conflict { .. }) if attempt < WRITE_ATTEMPTS => continue,
                Err(ferrohsm_store::Error::Conflict { id, .. }) => {
                    return Err(Error::Conflict(format!("key {id} kept changing; try again")));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Counts one AES-GCM encryption (one random nonce) under `version`: refused at the
    /// budget's limit, a new block reserved in the stored record before the count passes
    /// what is reserved (so a crash loses at most a block, counted as used), and an automatic
    /// rotation started when the count reaches `rotate_at`. The count itself is synchronous;
    /// only the rare reservation awaits a write.
    fn take_nonce(&self, record: &KeyRecord, version: u32) -> Result<Option<u64>> {
        let budget = self.inner.nonce_budget;
        let reserved = record.version(version).map_or(0, |v| v.encryptions_reserved);
        let key = (record.id, version);
        let (count, rotate) = {
            let mut nonces = self.inner.nonces.lock().unwrap_or_else(|p| p.into_inner());
            let count = nonces.0.entry(key).or_insert(reserved);
            if *count >= budget.limit {
                return Err(Error::InvalidState {
                    key: record.id,
                    state: record.state,
                    detail: format!(
                        " (version {version} used its {} AES-GCM encryptions; rotate the key)",
                        budget.limit
                    ),
                    operation: Operation::Encrypt,
                });
            }
            *count += 1;
            let count = *count;
            let rotate = count >= budget.rotate_at && nonces.1.insert(key);
            (count, rotate)
        };
        if rotate {
            let hsm = self.clone();
            let id = record.id;
            tokio::spawn(async move {
                let ctx = RequestContext::local("system:nonce-budget");
                if let Err(e) = hsm.rotate_key(&ctx, &KeyRef::Id(id)).await {
                    tracing::error!(key = %id, error = %e, "rotating a key near its AES-GCM nonce budget failed");
                    hsm.inner.nonces.lock().unwrap_or_else(|p| p.into_inner()).1.remove(&key);
                }
            });
        }
        Ok((count > reserved).then(|| count.saturating_add(budget.reserve).min(budget.limit)))
    }

    /// Persists a reservation of `target` encryptions for `version` (never lowering one).
    fn reserve_nonces(
        &self,
        id: KeyId,
        version: u32,
        target: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<KeyInfo>> + Send + '_>> {
        Box::pin(async move {
            self.modify(&KeyRef::Id(id), |old, next| {
                let stored = old.version(version).map_or(0, |v| v.encryptions_reserved);
                if let Some(v) = next.versions.iter_mut().find(|v| v.version == version) {
                    v.encryptions_reserved = stored.max(target);
                }
                Ok(())
            })
            .await
        })
    }

    /// The largest share of its AES-GCM nonce budget any key version has used (0 to 1), for
    /// metrics.
    pub fn nonce_budget_used(&self) -> f64 {
        let nonces = self.inner.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let max = nonces.0.values().copied().max().unwrap_or(0);
        max as f64 / self.inner.nonce_budget.limit.max(1) as f64
    }

    fn limit(&self, what: &'static str, actual: usize) -> Result<()> {
        if actual > self.inner.max_payload {
            return Err(Error::PayloadTooLarge { what, actual, limit: self.inner.max_payload });
        }
        Ok(())
    }

    fn limit_input(&self, input: SignInput<'_>) -> Result<()> {
        match input {
            SignInput::Message(m) => self.limit("message", m.len()),
            SignInput::Digest(d) => self.limit("digest", d.len()),
        }
    }
}

/// The approval in a stored document, if its integrity tag, id and revision check out.
pub(crate) fn open_approval(sealer: &Sealer, document: &ApprovalDocument) -> Result<Approval> {
    let id = document.id;
    let broken = || Error::Forbidden(format!("approval {id} failed its integrity check"));
    let approval: Approval = serde_json::from_slice(&document.body).map_err(|_| broken())?;
    if approval.id != id || approval.revision != document.revision {
        return Err(broken());
    }
    let tag = approval
        .tag
        .as_deref()
        .and_then(|t| ferrohsm_crypto::b64::decode(t).ok())
        .ok_or_else(broken)?;
    sealer
        .verify(&approval.canonical_bytes(), &ferrohsm_seal::MetadataTag(tag))
        .map_err(|_| broken())?;
    Ok(approval)
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
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
        hsm.inner.audit.append(entry).await.map_err(Error::AuditUnavailable)?;
    }
    Ok(())
}

/// Who a refusal is charged to: the actor, else the source address.
fn source_key(ctx: &RequestContext) -> String {
    match (ctx.actor.is_empty(), ctx.source_ip) {
        (false, _) => format!("actor:{}", ctx.actor),
        (true, Some(ip)) => format!("ip:{ip}"),
        (true, None) => "anonymous".to_owned(),
    }
}

/// Writes one record per (source, action, reason) counted since the last flush.
async fn flush_refusals(inner: &Inner) {
    let seconds = inner.refusals.interval.as_secs_f64();
    for a in inner.refusals.drain() {
        let (actor, source_ip) = match a.source.split_once(':') {
            Some(("ip", ip)) => (String::new(), Some(ip.to_owned())),
            Some(("actor", actor)) => (actor.to_owned(), None),
            _ => (String::new(), None),
        };
        let mut entry = AuditEntry::new(
            actor,
            a.action.clone(),
            Outcome::Denied,
            uuid::Uuid::now_v7().to_string(),
        );
        entry.source_ip = source_ip;
        entry.message = Some(format!(
            "aggregated: {} refusals ({}) from {} in the last {seconds} s",
            a.count, a.reason, a.source
        ));
        if let Err(e) = inner.audit.append(entry).await {
            tracing::error!(error = %e, "could not record aggregated refusals");
        }
    }
}

/// The actor policy file changes are recorded under (and request their approvals as).
const POLICY_ACTOR: &str = "system:policy";

/// Records a policy file event (by the watcher, [`Hsm::reload_policy`] or an approval): a
/// change of who may do what is itself audited.
async fn record_policy_event(inner: &Inner, outcome: Outcome, message: String) {
    let mut entry = AuditEntry::new(
        POLICY_ACTOR,
        Operation::ManagePolicy.as_str(),
        outcome,
        uuid::Uuid::now_v7().to_string(),
    );
    entry.message = Some(message);
    if let Err(e) = inner.audit.append(entry).await {
        tracing::error!(error = %e, "could not record a policy file event");
    }
}

/// Writes an "abandoned" audit record if dropped while armed. It borrows everything, so an
/// operation that completes pays nothing for it.
struct AbandonGuard<'a> {
    audit: &'a Arc<dyn AuditSink>,
    ctx: &'a RequestContext,
    operation: Operation,
    key: Option<&'a KeyRef>,
    armed: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ctx = self.ctx;
        let entry = AuditEntry {
            actor: ctx.actor.clone(),
            action: self.operation.as_str().to_owned(),
            key_id: match self.key {
                Some(KeyRef::Id(id)) => Some(id.to_string()),
                _ => None,
            },
            key_version: None,
            outcome: Outcome::Error,
            request_id: ctx.request_id.clone(),
            session: ctx.session.clone(),
            client_fingerprint: ctx.client_fingerprint.clone(),
            source_ip: ctx.source_ip.map(|ip| ip.to_string()),
            message: Some(format!(
                "abandoned: the caller stopped waiting; the operation may have taken effect{}",
                self.key.map(|k| format!(" (key {k})")).unwrap_or_default()
            )),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let audit = self.audit.clone();
                runtime.spawn(async move {
                    if let Err(e) = audit.append(entry).await {
                        tracing::error!(error = %e, "could not record an abandoned operation");
                    }
                });
            }
            Err(_) => {
                tracing::error!(action = %entry.action, "an operation was abandoned outside a runtime; no record written")
            }
        }
    }
}

fn successor(record: &KeyRecord) -> KeyRecord {
    let mut next = record.clone();
    next.revision += 1;
    next.updated_at = OffsetDateTime::now_utc().max(record.updated_at);
    next.tag = None;
    next
}

fn require_state(record: &KeyRecord, operation: Operation, allowed: &[KeyState]) -> Result<()> {
    if allowed.contains(&record.state) { Ok(()) } else { Err(invalid_state(record, operation)) }
}

fn invalid_state(record: &KeyRecord, operation: Operation) -> Error {
    let detail = match (&record.state, &record.revocation) {
        (KeyState::Revoked, Some(r)) => format!(" ({})", r.reason),
        (KeyState::PendingDestruction, _) => record
            .destroy_after
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .map(|t| format!(" (destroyed after {t})"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    Error::InvalidState { key: record.id, state: record.state, detail, operation }
}

fn version_destroyed(record: &KeyRecord, version: u32, operation: Operation) -> Error {
    Error::InvalidState {
        key: record.id,
        state: record.state,
        detail: format!(" (version {version} is destroyed)"),
        operation,
    }
}

fn scheme_for(record: &KeyRecord, scheme: Option<SignatureScheme>) -> Result<SignatureScheme> {
    let scheme = scheme
        .or(record.algorithm.default_scheme())
        .ok_or(Error::Unsupported { operation: Operation::Sign, algorithm: record.algorithm })?;
    if !record.algorithm.supports_scheme(scheme) {
        return Err(Error::InvalidRequest(format!(
            "{scheme} cannot be used with a {} key",
            record.algorithm
        )));
    }
    Ok(scheme)
}

/// Maps a provider error during `operation`: caller mistakes keep their meaning, anything
/// else is an internal failure.
fn crypto_error(operation: Operation) -> impl Fn(ferrohsm_crypto::Error) -> Error {
    move |e| match e {
        ferrohsm_crypto::Error::InvalidInput(msg) => Error::InvalidRequest(msg),
        ferrohsm_crypto::Error::Unsupported { algorithm, .. } => {
            Error::Unsupported { operation, algorithm }
        }
        other => Error::Crypto(other),
    }
}

/// What live revocations match, and the revocations already checked.
type RevokedSet = (HashSet<(TokenMatch, String)>, HashSet<uuid::Uuid>);

/// Encryptions counted per key version, and the versions whose rotation has started.
type NonceTable = (HashMap<(KeyId, u32), u64>, HashSet<(KeyId, u32)>);

/// How many AES-GCM encryptions (random 96-bit nonces) one key version may perform. NIST SP
/// 800-38D caps random-nonce use at 2^32 invocations per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceBudget {
    /// Encryptions are refused at this count.
    pub limit: u64,
    /// The key is rotated automatically when a version reaches this count.
    pub rotate_at: u64,
    /// How many encryptions are reserved (persisted) at a time.
    pub reserve: u64,
}

impl Default for NonceBudget {
    fn default() -> Self {
        NonceBudget { limit: 1 << 32, rotate_at: (1 << 32) - (1 << 26), reserve: 1 << 20 }
    }
}

/// What a token the HSM issues says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The subject.
    pub subject: String,
    /// The roles.
    pub roles: Vec<String>,
    /// The lifetime.
    pub ttl: Duration,
    /// The client certificate it is bound to (SHA-256, hex), if any.
    pub cert_sha256: Option<String>,
}

/// A revocation, audited with what it matches.
struct RevokedToken(TokenRevocation);

impl Audited for RevokedToken {
    fn note(&self) -> Option<String> {
        Some(format!("tokens with {} {} revoked", self.0.matches.as_str(), self.0.value))
    }
}

/// A token signature, audited with its subject.
struct IssuedToken {
    subject: String,
    signature: Vec<u8>,
}

impl Audited for IssuedToken {
    fn note(&self) -> Option<String> {
        Some(format!("token issued for {}", self.subject))
    }
}
