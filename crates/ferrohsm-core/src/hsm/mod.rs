//! The `Hsm` facade: every key operation, with the state rules of SPEC §3.
//!
//! This module holds the shared state and the request pipeline every operation passes
//! (`run`: rate limit, audit record, abandonment guard; `authorize`: policy and approvals;
//! `load`/`usable`: the verified key and its state checks). Each concern's operations live in
//! a submodule: `builder`, `lifecycle`, `crypto_ops`, `dual_control`, `audit_reads`,
//! `maintenance`, `tokens`, `health`.

use std::future::Future;
use std::sync::Arc;

use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, KeyMaterial, RemoteKeyVault, SecretBytes, SignInput,
    SignatureScheme, Usage, VaultKey, public_key_pem,
};
use ferrohsm_seal::{Binding, MasterKey, Sealer};
use ferrohsm_store::{
    ExternalMaterial, KeyId, KeyRecord, KeyState, KeyStore, KeyVersion, ListQuery, RemoteKeyStore,
    Revocation, RevocationReason, VersionState,
};
use time::{Duration, OffsetDateTime};
use tracing::Instrument as _;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use ferrohsm_audit::{AuditEntry, AuditSink, Checkpoint, Outcome};
use ferrohsm_backends::{AuditedKeyWrites, BackendConfig, Backends};
use ferrohsm_policy::{
    Approval, ApprovalError, ApprovalState, Decision, Parameter, Policy, PolicyEngine,
    PolicyRequest,
};
use ferrohsm_store::{
    ApprovalDocument, ApprovalStore, TokenMatch, TokenRevocation, TokenRevocationStore,
};
use zeroize::Zeroizing;

use crate::audit::{Audited, Purged, Recorded, derive_audit_hmac_key, derive_audit_keys};
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

/// Everything an HSM holds, grouped by concern. Each `hsm` module reaches only the groups its
/// concern needs (`xtask/tests/tidy.rs` keeps the list): tokens never see the audit log's
/// keys, audit reads never see the key store, and so on.
#[derive(Debug)]
struct Inner {
    /// The crypto primitives (stateless; every concern may use them).
    provider: Arc<dyn CryptoProvider>,
    /// The master key's only holder: seals key material and tags whatever a store keeps
    /// (records, approvals, revocations) against tampering.
    sealer: Sealer,
    keys: Keys,
    audit: Audit,
    control: Control,
    tokens: Tokens,
    retention: crate::retention::Retention,
}

/// Keys: the key store, the cache of verified records, and the limits operations run under.
#[derive(Debug)]
struct Keys {
    store: Arc<dyn KeyStore>,
    /// Commits a new key with its audit record when the store and the audit sink are one
    /// database (see [`Hsm::create_key`]).
    joint: Option<Arc<dyn AuditedKeyWrites>>,
    cache: KeyCache,
    nonce_budget: NonceBudget,
    /// AES-GCM encryptions counted per (key, version), with the end of the block this
    /// process leased, and the versions whose automatic rotation has started.
    nonces: std::sync::Mutex<NonceTable>,
    /// Per key version, the lock that lets one reservation write at a time (see
    /// `Hsm::lease_nonces`).
    reservations: std::sync::Mutex<ReservationSlots>,
    max_payload: usize,
    destruction_grace: Duration,
    /// The key vault holding the material of keys whose custody is its name.
    vault: Option<Arc<dyn RemoteKeyVault>>,
    /// With a vault, `store` is this: the store paired with the vault, which refuses records
    /// naming material the vault lacks and destroys material once a purge is stored.
    remote: Option<RemoteKeyStore>,
    /// Turns for operations on vault-held keys (see `Hsm::with_secret`), and how long an
    /// operation waits for one.
    vault_calls: tokio::sync::Semaphore,
    vault_wait: std::time::Duration,
    /// Health checks of the vault, one at a time.
    vault_probe: health::VaultProbe,
    /// The custody of keys created without one (`sealed` or the vault's name).
    default_custody: String,
}

/// The audit log: its sink, the keys auditors verify with, counters, refusal aggregation and
/// the export mark retention reads.
#[derive(Debug)]
struct Audit {
    sink: Arc<dyn AuditSink>,
    hmac_key: Zeroizing<[u8; 32]>,
    public_pem: String,
    public_der: Vec<u8>,
    written: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    refusals: Refusals,
    export_mark: std::sync::Mutex<crate::retention::ExportMark>,
}

/// Policy and dual control.
#[derive(Debug)]
struct Control {
    policy: PolicyHandle,
    approvals: Arc<dyn ApprovalStore>,
    /// Leases on scheduled jobs when several processes share the store.
    leases: Option<Arc<dyn ferrohsm_store::JobLeases>>,
    /// Rate-limit usage exchanged with the other processes sharing the store.
    rate_usage: Option<Arc<dyn ferrohsm_store::RateUsage>>,
    /// This HSM's name as a lease holder (unique per process start).
    holder: String,
}

/// Bearer tokens: the signing key and the revocations.
#[derive(Debug)]
struct Tokens {
    key: TokenKey,
    revocations: Arc<dyn TokenRevocationStore>,
    /// The live revocations, checked on every request.
    revoked: std::sync::RwLock<RevokedSet>,
    max_lifetime: Duration,
}

mod audit_reads;
mod builder;
mod crypto_ops;
mod dual_control;
mod health;
mod lifecycle;
mod maintenance;
mod tokens;

pub use builder::HsmBuilder;

impl Hsm {
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
        let engine = self.inner.control.policy.engine();
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
            self.inner.control.approvals.create(self.seal_approval(&approval, now)?).await?;
            return Err(Error::ApprovalRequired(Box::new(approval)));
        };
        let mut approval = self.load_approval(id).await?;
        approval.execute(&ctx.actor, operation, &key_id, &digest, now).map_err(Error::Approval)?;
        match self.inner.control.approvals.update(self.seal_approval(&approval, now)?).await {
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
            .control
            .policy
            .limiter
            .check(&key, operation, std::time::Instant::now())
            .map_err(|retry_after| Error::RateLimited { retry_after })
    }

    pub(crate) fn approval_store(&self) -> &Arc<dyn ApprovalStore> {
        &self.inner.control.approvals
    }

    pub(crate) fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit.sink
    }

    pub(crate) fn export_mark(&self) -> &std::sync::Mutex<crate::retention::ExportMark> {
        &self.inner.audit.export_mark
    }

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
        // If the caller stops waiting (its future is dropped) after the work may have taken
        // effect, the guard still writes a record saying so. With a joint write (the work
        // commits its own record) the log can then hold both that record and the guard's,
        // in either order: the write happened, and its caller never saw the answer.
        let mut guard =
            AbandonGuard { audit: &self.inner.audit.sink, ctx, operation, key, armed: true };
        let result = match self.rate_limit(ctx, operation) {
            Ok(()) => work.instrument(span.clone()).await,
            Err(e) => {
                let source = source_key(ctx);
                if !self.inner.audit.refusals.admit(&source) {
                    // Beyond the source's budget: counted for the next aggregated record.
                    guard.armed = false;
                    self.inner.audit.refusals.count(&source, operation.as_str(), e.code());
                    return Err(e);
                }
                Err(e)
            }
        };
        if let Ok(value) = &result
            && value.recorded()
        {
            // The work committed its own record with its write (one transaction).
            guard.armed = false;
            self.inner.audit.written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return result;
        }
        if let Err(e) = &result {
            tracing::info!(parent: &span, code = e.code(), actor = ?ctx.actor, error = %e, "operation refused");
        }
        let entry = audit_entry(ctx, operation, key, &result);
        // From here the record below is written even if this future is dropped: both sinks
        // take the entry on the first poll.
        guard.armed = false;
        match self.inner.audit.sink.append(entry).await {
            Ok(_) => {
                self.inner.audit.written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                result
            }
            Err(e) => {
                self.inner.audit.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(parent: &span, error = %e, "audit record not written; withholding the result");
                Err(Error::AuditUnavailable(e))
            }
        }
    }

    /// Reads and integrity-checks a key.
    async fn load(&self, key: &KeyRef) -> Result<Arc<VerifiedKey>> {
        let record = match key {
            // A quarantined record answers `integrity`, like one whose tag fails.
            KeyRef::Id(id) => self.inner.keys.store.get(id).await.map_err(|e| match e {
                ferrohsm_store::Error::Corrupt { .. } => Error::Integrity(*id),
                other => other.into(),
            })?,
            KeyRef::Name(name) => self.inner.keys.store.find_by_name(name).await?,
        }
        .ok_or_else(|| Error::NotFound(key.to_string()))?;
        self.inner.keys.cache.verify(&self.inner.sealer, record)
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
        verified.secret(
            self.inner.provider.as_ref(),
            &self.inner.sealer,
            self.inner.keys.vault.as_deref(),
            version,
        )
    }

    fn limit(&self, what: &'static str, actual: usize) -> Result<()> {
        if actual > self.inner.keys.max_payload {
            return Err(Error::PayloadTooLarge {
                what,
                actual,
                limit: self.inner.keys.max_payload,
            });
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

/// Writes one record per (source, action, reason) counted since the last flush.
async fn flush_refusals(inner: &Inner) {
    let seconds = inner.audit.refusals.interval.as_secs_f64();
    for a in inner.audit.refusals.drain() {
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
        if let Err(e) = inner.audit.sink.append(entry).await {
            tracing::error!(error = %e, "could not record aggregated refusals");
        }
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

/// What live revocations match, and the revocations already checked.
type RevokedSet = (HashSet<(TokenMatch, String)>, HashSet<uuid::Uuid>);

/// Encryptions counted per key version, and the versions whose rotation has started.
type NonceTable = (HashMap<(KeyId, u32), NonceCount>, HashSet<(KeyId, u32)>);

/// One key version's AES-GCM encryptions as this process sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NonceCount {
    /// Encryptions counted as used by anyone: everything below the block this process
    /// leased last, plus what it counted in that block.
    pub(crate) count: u64,
    /// The end of the block this process leased last: it may count up to here.
    pub(crate) ceiling: u64,
}

/// Per key version: one reservation write at a time.
type ReservationSlots = HashMap<(KeyId, u32), Arc<tokio::sync::Mutex<()>>>;

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

/// Who a refusal is charged to: the actor, else the source address.
fn source_key(ctx: &RequestContext) -> String {
    match (ctx.actor.is_empty(), ctx.source_ip) {
        (false, _) => format!("actor:{}", ctx.actor),
        (true, Some(ip)) => format!("ip:{ip}"),
        (true, None) => "anonymous".to_owned(),
    }
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

/// The audit record of one request's `result`.
pub(crate) fn audit_entry<T: Audited>(
    ctx: &RequestContext,
    operation: Operation,
    key: Option<&KeyRef>,
    result: &Result<T>,
) -> AuditEntry {
    let named = match key {
        Some(KeyRef::Id(id)) => Some(*id),
        _ => None,
    };
    let (outcome, key_id, key_version, message) = match result {
        Ok(value) => (Outcome::Success, value.key().or(named), value.version(), value.note()),
        Err(e) => {
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
        Some(id) => {
            Some(format!("{} (approval {id})", message.unwrap_or_default()).trim_start().to_owned())
        }
        None => message,
    };
    AuditEntry {
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
    }
}
