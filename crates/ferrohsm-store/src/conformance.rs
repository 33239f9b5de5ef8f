//! The conformance suite every [`KeyStore`] backend passes.
//!
//! A backend's test target runs the whole suite with one line:
//!
//! ```text
//! ferrohsm_store::conformance_tests!(ferrohsm_store::conformance::MemoryHarness::new());
//! ```
//!
//! Each case is its own `#[tokio::test]`, so the test crate needs `tokio` (with `macros` and
//! `rt-multi-thread`) as a dev-dependency.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: failures must stop the test"
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_crypto::{Algorithm, Usage};
use ferrohsm_seal::SealedMaterial;
use time::OffsetDateTime;

use crate::{
    ApprovalDocument, ApprovalStore, Cursor, Error, FileKeyStore, KeyId, KeyName, KeyRecord,
    KeyState, KeyStore, KeyVersion, ListQuery, MemoryKeyStore, Revocation, RevocationReason,
    VersionState,
};

/// Opens a backend on storage the harness owns, so the suite can reopen it.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend under test.
    type Store: KeyStore + 'static;

    /// Opens the store; a second call after dropping the first reopens the same storage.
    async fn open(&self) -> Self::Store;

    /// Leaves on the storage what a process killed mid-write would leave. Backends with
    /// nothing to leave do nothing.
    async fn leave_crash_debris(&self) {}

    /// Opens the backend's approval store (a second call after dropping the first reopens
    /// the same storage).
    async fn approvals(&self) -> Arc<dyn ApprovalStore>;

    /// A second handle on the same storage while `first` stays open, as a second replica
    /// would have; `None` for backends that allow one handle at a time (which must then
    /// refuse the second open, checked by the backend's own tests).
    async fn second_handle(&self, first: &Self::Store) -> Option<Self::Store>;

    /// Material for vault-held version `n` of an `algorithm` key: where it is held and its
    /// public key. The default names a handle no vault is asked about; a harness whose store
    /// checks handles against a vault ([`crate::RemoteKeyStore`]) generates the key there.
    async fn vault_material(
        &self,
        n: u32,
        algorithm: Algorithm,
    ) -> (crate::ExternalMaterial, Option<Vec<u8>>) {
        let material =
            crate::ExternalMaterial { custody: "pkcs11".into(), handle: format!("{n:032x}") };
        (material, version(n, algorithm).public_key)
    }
}

/// The memory backend: "reopening" returns the same shared store.
#[derive(Debug, Default)]
pub struct MemoryHarness(MemoryKeyStore, crate::MemoryApprovalStore);

impl MemoryHarness {
    /// A harness around a new, empty memory store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryKeyStore;

    async fn open(&self) -> MemoryKeyStore {
        self.0.clone()
    }

    async fn approvals(&self) -> Arc<dyn ApprovalStore> {
        Arc::new(self.1.clone())
    }

    async fn second_handle(&self, first: &MemoryKeyStore) -> Option<MemoryKeyStore> {
        Some(first.clone())
    }
}

/// The filesystem backend in a fresh temporary directory.
#[derive(Debug)]
pub struct FileHarness(tempfile::TempDir);

impl FileHarness {
    /// A harness around a new temporary directory.
    pub fn new() -> Self {
        FileHarness(tempfile::tempdir().expect("creating a temporary directory"))
    }
}

impl Default for FileHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Harness for FileHarness {
    type Store = FileKeyStore;

    async fn open(&self) -> FileKeyStore {
        FileKeyStore::open(self.0.path()).await.expect("opening the file store")
    }

    async fn leave_crash_debris(&self) {
        crate::file::leave_crash_debris(self.0.path()).expect("writing crash debris");
    }

    async fn approvals(&self) -> Arc<dyn ApprovalStore> {
        let store = self.open().await;
        Arc::new(store.approval_store().await.expect("opening the approval store"))
    }

    async fn second_handle(&self, _first: &FileKeyStore) -> Option<FileKeyStore> {
        let second = FileKeyStore::open(self.0.path()).await;
        assert!(matches!(second, Err(Error::Locked(_))), "a second handle must be refused");
        None
    }
}

/// Expands to one `#[tokio::test]` per conformance case for the given harness expression.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!($harness, runs_here = $crate::conformance::runs_here);
    };
    // `runs_here` is called with each test's name (`module::case`, as the test binary names
    // it) before the harness is made; when it answers false the case ran elsewhere (in a
    // child process that could set up an environment first) and passed.
    ($harness:expr, runs_here = $runs_here:expr) => {
        $crate::conformance_tests!(@guarded $harness; $runs_here;
            create_and_get_by_id_and_name,
            names_are_unique,
            creation_rules,
            versions_are_immutable,
            rotate_and_rollback,
            stale_writes_conflict,
            state_transitions,
            purge_wipes_and_is_final,
            list_filters_and_pages,
            pagination_under_concurrent_inserts,
            reopen_after_crash,
            approvals_create_get_list,
            approvals_update_is_compare_and_swap,
            approvals_prune_only_closed,
            approvals_survive_reopen,
            two_handles_share_one_store,
            import_keeps_a_record_as_it_is,
            concurrent_creates_of_one_name,
            vault_held_versions_keep_their_handles,
        );
    };
    (@guarded $harness:expr; $runs_here:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let path = module_path!();
                let module = path.split_once("::").map_or("", |(_, rest)| rest);
                let name = if module.is_empty() {
                    stringify!($case).to_owned()
                } else {
                    format!("{module}::{}", stringify!($case))
                };
                if ($runs_here)(name.as_str()) {
                    $crate::conformance::$case(&$harness).await;
                }
            }
        )+
    };
}

/// Every case runs in the test process itself (the guard of a plain `conformance_tests!`).
pub fn runs_here(_test: &str) -> bool {
    true
}

/// A record as a core would create it: active, version 1, dummy sealed material.
pub fn sample(name: Option<&str>, algorithm: Algorithm, tags: &[(&str, &str)]) -> KeyRecord {
    let now = OffsetDateTime::now_utc();
    let usages: BTreeSet<Usage> = algorithm.allowed_usages().iter().copied().collect();
    KeyRecord {
        id: KeyId::generate(),
        name: name.map(|n| KeyName::parse(n).expect("valid sample name")),
        description: "conformance".into(),
        algorithm,
        usages,
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        state: KeyState::Active,
        revocation: None,
        destroy_after: None,
        destroyed_at: None,
        current_version: 1,
        versions: vec![version(1, algorithm)],
        created_at: now,
        updated_at: now,
        created_by: "conformance".into(),
        custody: None,
        revision: 1,
        tag: None,
    }
}

fn version(n: u32, algorithm: Algorithm) -> KeyVersion {
    KeyVersion {
        version: n,
        created_at: OffsetDateTime::now_utc(),
        state: VersionState::Active,
        public_key: (!algorithm.is_symmetric()).then(|| vec![0x30, 0x03, 0x02, 0x01, n as u8]),
        sealed: Some(SealedMaterial {
            format: 1,
            ciphertext: vec![n as u8; 60],
            hmac: vec![7; 32],
        }),
        encryptions_reserved: 0,
        external: None,
    }
}

/// The successor of a record: same content, next revision.
pub fn next(record: &KeyRecord) -> KeyRecord {
    let mut next = record.clone();
    next.revision += 1;
    next.updated_at = OffsetDateTime::now_utc();
    next
}

fn revocation(reason: RevocationReason) -> Option<Revocation> {
    Some(Revocation { reason, comment: None, at: OffsetDateTime::now_utc() })
}

/// The destroyed successor of a key pending destruction, as a purge stores it.
pub fn tombstone(record: &KeyRecord) -> KeyRecord {
    let mut t = next(record);
    t.state = KeyState::Destroyed;
    t.destroy_after = None;
    t.destroyed_at = Some(OffsetDateTime::now_utc());
    for v in &mut t.versions {
        v.state = VersionState::Destroyed;
        v.sealed = None;
        v.external = None;
    }
    t
}

async fn stored(store: &impl KeyStore, id: &KeyId) -> KeyRecord {
    store.get(id).await.unwrap().map(|r| (*r).clone()).expect("record exists")
}

/// Create, then read back by id and by name; unknown ids and names are `None`.
pub async fn create_and_get_by_id_and_name(h: &impl Harness) {
    let store = h.open().await;
    let record = sample(Some("payments.prod"), Algorithm::Aes256Gcm, &[("env", "prod")]);
    let created = store.create(record.clone()).await.unwrap();
    assert_eq!(*created, record);
    assert_eq!(stored(&store, &record.id).await, record);
    let by_name = store.find_by_name(&KeyName::parse("payments.prod").unwrap()).await.unwrap();
    assert_eq!(by_name.map(|r| r.id), Some(record.id));
    assert!(store.get(&KeyId::generate()).await.unwrap().is_none());
    assert!(store.find_by_name(&KeyName::parse("nope").unwrap()).await.unwrap().is_none());
    assert_eq!(store.count().await.unwrap(), 1);
    let unknown = next(&sample(None, Algorithm::Aes256Gcm, &[]));
    assert!(matches!(store.update(unknown).await, Err(Error::NotFound(_))));
}

/// A name belongs to one key; unnamed keys are unlimited; a taken name changes nothing.
pub async fn names_are_unique(h: &impl Harness) {
    let store = h.open().await;
    store.create(sample(Some("signing"), Algorithm::EcP256, &[])).await.unwrap();
    let clash = sample(Some("signing"), Algorithm::Ed25519, &[]);
    assert!(matches!(store.create(clash.clone()).await, Err(Error::NameTaken(_))));
    assert!(store.get(&clash.id).await.unwrap().is_none());
    for _ in 0..3 {
        store.create(sample(None, Algorithm::EcP256, &[])).await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 4);
}

/// A new key is active, at revision 1, with exactly version 1; its id is new.
pub async fn creation_rules(h: &impl Harness) {
    let store = h.open().await;
    let good = sample(None, Algorithm::Aes256Gcm, &[]);
    store.create(good.clone()).await.unwrap();
    assert!(matches!(store.create(good.clone()).await, Err(Error::AlreadyExists(_))));

    let mut bad = Vec::new();
    let mut r = sample(None, Algorithm::Aes256Gcm, &[]);
    r.revision = 0;
    bad.push(r);
    let mut r = sample(None, Algorithm::Aes256Gcm, &[]);
    r.state = KeyState::Revoked;
    r.revocation = revocation(RevocationReason::Superseded);
    bad.push(r);
    let mut r = sample(None, Algorithm::Aes256Gcm, &[]);
    r.versions.push(version(2, Algorithm::Aes256Gcm));
    bad.push(r);
    let mut r = sample(None, Algorithm::Aes256Gcm, &[]);
    r.versions[0].sealed = None;
    bad.push(r);
    let mut r = sample(None, Algorithm::EcP256, &[]);
    r.versions[0].public_key = None;
    bad.push(r);
    let mut r = sample(None, Algorithm::Aes256Gcm, &[]);
    r.current_version = 2;
    bad.push(r);
    for record in bad {
        assert!(
            matches!(store.create(record.clone()).await, Err(Error::InvalidRecord { .. })),
            "{record:?}"
        );
        assert!(store.get(&record.id).await.unwrap().is_none());
    }
    assert_eq!(store.count().await.unwrap(), 1);
}

/// Existing versions never change or disappear; immutable fields never change.
pub async fn versions_are_immutable(h: &impl Harness) {
    let store = h.open().await;
    let record = sample(Some("immutable"), Algorithm::EcP384, &[]);
    store.create(record.clone()).await.unwrap();
    let mut attempts = Vec::new();
    let mut r = next(&record);
    r.versions[0].sealed =
        Some(SealedMaterial { format: 1, ciphertext: vec![9; 60], hmac: vec![9; 32] });
    attempts.push(r);
    let mut r = next(&record);
    r.versions[0].public_key = Some(vec![1, 2, 3]);
    attempts.push(r);
    let mut r = next(&record);
    r.versions[0].created_at = OffsetDateTime::UNIX_EPOCH;
    attempts.push(r);
    let mut r = next(&record);
    r.versions.clear();
    attempts.push(r);
    let mut r = next(&record);
    r.algorithm = Algorithm::EcP256;
    attempts.push(r);
    let mut r = next(&record);
    r.name = None;
    attempts.push(r);
    let mut r = next(&record);
    r.created_by = "someone else".into();
    attempts.push(r);
    let mut r = next(&record);
    r.versions.push(version(3, Algorithm::EcP384));
    attempts.push(r);
    for attempt in attempts {
        let result = store.update(attempt.clone()).await;
        assert!(matches!(result, Err(Error::InvalidRecord { .. })), "{result:?} for {attempt:?}");
        assert_eq!(stored(&store, &record.id).await, record, "a refused write changes nothing");
    }
    // Mutable metadata may change, and a version's encryption count may grow (issue 11)…
    let mut r = next(&record);
    r.description = "new description".into();
    r.tags.insert("team".into(), "payments".into());
    r.versions[0].encryptions_reserved = 1 << 20;
    store.update(r.clone()).await.unwrap();
    assert_eq!(stored(&store, &r.id).await, r);
    // …but never shrink.
    let mut shrunk = next(&r);
    shrunk.versions[0].encryptions_reserved = 5;
    let result = store.update(shrunk).await;
    assert!(matches!(result, Err(Error::InvalidRecord { .. })), "{result:?}");
    assert_eq!(stored(&store, &r.id).await, r);
}

/// Rotation appends a version and makes it current; rollback points back at an older one and
/// keeps history; a missing or destroyed version cannot become current.
pub async fn rotate_and_rollback(h: &impl Harness) {
    let store = h.open().await;
    let v1 = sample(None, Algorithm::Aes256Gcm, &[]);
    store.create(v1.clone()).await.unwrap();
    let mut v2 = next(&v1);
    v2.versions.push(version(2, Algorithm::Aes256Gcm));
    v2.current_version = 2;
    store.update(v2.clone()).await.unwrap();
    let mut rolled = next(&v2);
    rolled.current_version = 1;
    store.update(rolled.clone()).await.unwrap();
    let now = stored(&store, &v1.id).await;
    assert_eq!(now.current_version, 1);
    assert_eq!(now.versions.len(), 2, "history is kept");
    for missing in [0, 3] {
        let mut r = next(&rolled);
        r.current_version = missing;
        assert!(matches!(store.update(r).await, Err(Error::InvalidRecord { .. })), "{missing}");
    }
    assert_eq!(stored(&store, &v1.id).await, rolled);
}

/// A write based on a stale read is refused, and so is one that skips a revision.
pub async fn stale_writes_conflict(h: &impl Harness) {
    let store = h.open().await;
    let record = sample(None, Algorithm::Ed25519, &[]);
    store.create(record.clone()).await.unwrap();
    let mut first = next(&record);
    first.description = "first".into();
    let mut second = next(&record);
    second.description = "second".into();
    store.update(first.clone()).await.unwrap();
    assert!(matches!(store.update(second).await, Err(Error::Conflict { .. })));
    let mut skip = next(&next(&first));
    skip.description = "skip".into();
    assert!(matches!(store.update(skip).await, Err(Error::Conflict { .. })));
    assert_eq!(stored(&store, &record.id).await, first);
}

/// Every pair of states, legal and illegal, through `update`; refused changes leave the record
/// as it was.
pub async fn state_transitions(h: &impl Harness) {
    use KeyState::*;
    let store = h.open().await;

    // Builds a stored key in the given starting state through legal steps.
    async fn key_in(store: &impl KeyStore, start: &str) -> KeyRecord {
        let r = sample(None, Algorithm::Aes256Gcm, &[]);
        let mut cur = (*store.create(r).await.unwrap()).clone();
        let step = |cur: &KeyRecord, state: KeyState, reason: Option<RevocationReason>| {
            let mut n = next(cur);
            n.state = state;
            if let Some(reason) = reason {
                n.revocation = revocation(reason);
            }
            n.destroy_after = (state == PendingDestruction).then(OffsetDateTime::now_utc);
            n
        };
        let path: &[(KeyState, Option<RevocationReason>)] = match start {
            "active" => &[],
            "revoked" => &[(Revoked, Some(RevocationReason::Superseded))],
            "compromised" => &[(Revoked, Some(RevocationReason::Compromised))],
            "pending" => &[(PendingDestruction, None)],
            "revoked-pending" => {
                &[(Revoked, Some(RevocationReason::Superseded)), (PendingDestruction, None)]
            }
            "destroyed" => &[(PendingDestruction, None)],
            other => panic!("unknown start {other}"),
        };
        for (state, reason) in path {
            cur = (*store.update(step(&cur, *state, *reason)).await.unwrap()).clone();
        }
        if start == "destroyed" {
            cur = (*store.purge(tombstone(&cur)).await.unwrap()).clone();
        }
        cur
    }

    // (start, target state, revocation reason to set (None keeps), expected legal)
    let table: &[(&str, KeyState, Option<RevocationReason>, bool)] = &[
        ("active", Active, None, true),
        ("active", Revoked, Some(RevocationReason::Superseded), true),
        ("active", Revoked, None, false), // a revocation needs its details
        ("active", PendingDestruction, None, true),
        ("active", Destroyed, None, false), // only purge destroys
        ("revoked", Revoked, Some(RevocationReason::Compromised), true),
        ("revoked", Revoked, Some(RevocationReason::Unspecified), false),
        ("revoked", Active, None, false),
        ("revoked", PendingDestruction, None, true),
        ("compromised", Revoked, Some(RevocationReason::Superseded), false),
        ("compromised", Active, None, false),
        ("compromised", PendingDestruction, None, true),
        ("pending", Active, None, true),
        ("pending", Revoked, None, false),
        ("pending", PendingDestruction, None, true),
        ("pending", Destroyed, None, false),
        ("revoked-pending", Revoked, None, true),
        ("revoked-pending", Active, None, false),
        ("destroyed", Active, None, false),
        ("destroyed", Destroyed, None, false),
        ("destroyed", PendingDestruction, None, false),
    ];
    for (start, target, reason, legal) in table {
        let before = key_in(&store, start).await;
        let mut attempt = next(&before);
        attempt.state = *target;
        if let Some(reason) = reason {
            attempt.revocation = revocation(*reason);
        }
        attempt.destroy_after = (*target == PendingDestruction).then(OffsetDateTime::now_utc);
        if *target == Destroyed {
            attempt.destroyed_at = Some(OffsetDateTime::now_utc());
        }
        let result = store.update(attempt.clone()).await;
        assert_eq!(result.is_ok(), *legal, "{start} -> {target} ({reason:?}): {result:?}");
        if *legal {
            assert_eq!(stored(&store, &before.id).await, attempt);
        } else {
            assert!(
                matches!(
                    result,
                    Err(Error::IllegalTransition { .. } | Error::InvalidRecord { .. })
                ),
                "{start} -> {target}: {result:?}"
            );
            assert_eq!(
                stored(&store, &before.id).await,
                before,
                "{start} -> {target} changed the record"
            );
        }
    }
}

/// Purge turns a key pending destruction into a tombstone without material; nothing else can
/// be purged, a purge cannot smuggle other changes, and a tombstone is final.
pub async fn purge_wipes_and_is_final(h: &impl Harness) {
    let store = h.open().await;
    let active = sample(Some("doomed"), Algorithm::EcP256, &[]);
    store.create(active.clone()).await.unwrap();
    assert!(matches!(store.purge(tombstone(&active)).await, Err(Error::IllegalTransition { .. })));

    let mut pending = next(&active);
    pending.state = KeyState::PendingDestruction;
    pending.destroy_after = Some(OffsetDateTime::now_utc());
    store.update(pending.clone()).await.unwrap();

    let mut sneaky = tombstone(&pending);
    sneaky.versions[0].public_key = Some(vec![1]);
    assert!(store.purge(sneaky).await.is_err());
    let mut keeps_material = tombstone(&pending);
    keeps_material.versions[0].sealed = pending.versions[0].sealed.clone();
    assert!(store.purge(keeps_material).await.is_err());
    assert_eq!(stored(&store, &active.id).await, pending);

    let dead = tombstone(&pending);
    store.purge(dead.clone()).await.unwrap();
    let now = stored(&store, &active.id).await;
    assert_eq!(now, dead);
    assert!(now.versions.iter().all(|v| v.sealed.is_none() && v.state == VersionState::Destroyed));
    assert_eq!(
        now.versions[0].public_key, active.versions[0].public_key,
        "tombstone keeps metadata"
    );

    let mut revive = next(&dead);
    revive.state = KeyState::Active;
    revive.destroyed_at = None;
    assert!(store.update(revive).await.is_err());
    assert!(store.purge(tombstone(&dead)).await.is_err());
    // The name stays taken by the tombstone.
    assert!(matches!(
        store.create(sample(Some("doomed"), Algorithm::EcP256, &[])).await,
        Err(Error::NameTaken(_))
    ));
}

/// Filters by algorithm, state, tags and name prefix, with limits and cursors.
pub async fn list_filters_and_pages(h: &impl Harness) {
    let store = h.open().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let alg = if i % 3 == 0 { Algorithm::EcP256 } else { Algorithm::Aes256Gcm };
        let env = if i % 2 == 0 { "prod" } else { "dev" };
        let team = format!("t{}", i % 5);
        let name = format!("key-{i:02}");
        let r = sample(Some(&name), alg, &[("env", env), ("team", &team)]);
        ids.push(r.id);
        store.create(r).await.unwrap();
    }
    let all = store.list(&ListQuery { limit: 1000, ..ListQuery::default() }).await.unwrap();
    assert_eq!(all.keys.iter().map(|r| r.id).collect::<Vec<_>>(), ids, "id order");
    assert!(all.next_cursor.is_none());

    let check = |q: ListQuery, expected: usize| {
        let store = &store;
        async move {
            let page = store.list(&q).await.unwrap();
            assert_eq!(page.keys.len(), expected, "{q:?}");
            assert!(page.keys.iter().all(|r| q.matches(r)), "{q:?}");
        }
    };
    check(ListQuery { algorithm: Some(Algorithm::EcP256), ..ListQuery::default() }, 10).await;
    check(ListQuery { tags: vec![("env".into(), "prod".into())], ..ListQuery::default() }, 15)
        .await;
    check(
        ListQuery {
            tags: vec![("env".into(), "prod".into()), ("team".into(), "t0".into())],
            ..ListQuery::default()
        },
        3,
    )
    .await;
    check(ListQuery { tags: vec![("env".into(), "nowhere".into())], ..ListQuery::default() }, 0)
        .await;
    check(ListQuery { name_prefix: Some("key-1".into()), ..ListQuery::default() }, 10).await;
    check(ListQuery { state: Some(KeyState::Revoked), ..ListQuery::default() }, 0).await;
    check(ListQuery { state: Some(KeyState::Active), limit: 7, ..ListQuery::default() }, 7).await;

    // Paging with a filter visits every match exactly once.
    let q =
        ListQuery { limit: 4, tags: vec![("env".into(), "prod".into())], ..ListQuery::default() };
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = store.list(&ListQuery { cursor, ..q.clone() }).await.unwrap();
        assert!(page.keys.len() <= 4);
        seen.extend(page.keys.iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c.to_string().parse().unwrap()),
            None => break,
        }
    }
    let expected: Vec<_> =
        ids.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, id)| *id).collect();
    assert_eq!(seen, expected);

    // Tag changes move a key between filtered listings.
    let first = stored(&store, &ids[0]).await;
    let mut moved = next(&first);
    moved.tags.insert("env".into(), "dev".into());
    store.update(moved).await.unwrap();
    check(ListQuery { tags: vec![("env".into(), "prod".into())], ..ListQuery::default() }, 14)
        .await;

    for limit in [0, 1001] {
        assert!(matches!(
            store.list(&ListQuery { limit, ..ListQuery::default() }).await,
            Err(Error::InvalidQuery(_))
        ));
    }
}

/// While one task pages through the keys, another inserts new ones: every key that existed
/// when paging began is seen exactly once, and nothing is seen twice.
pub async fn pagination_under_concurrent_inserts<H: Harness>(h: &H) {
    let store = Arc::new(h.open().await);
    let mut original = HashSet::new();
    for _ in 0..120 {
        let r = sample(None, Algorithm::Aes256Gcm, &[("batch", "a")]);
        original.insert(r.id);
        store.create(r).await.unwrap();
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..120 {
                store.create(sample(None, Algorithm::Aes256Gcm, &[("batch", "a")])).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    for q in [
        ListQuery::default(),
        ListQuery { tags: vec![("batch".into(), "a".into())], ..ListQuery::default() },
    ] {
        seen.clear();
        loop {
            let page = store.list(&ListQuery { limit: 7, cursor, ..q.clone() }).await.unwrap();
            seen.extend(page.keys.iter().map(|r| r.id));
            tokio::task::yield_now().await;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        cursor = None;
        let unique: HashSet<_> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a key was listed twice");
        assert!(original.is_subset(&unique), "a key that existed before paging was skipped");
    }
    writer.await.unwrap();
}

/// Everything acknowledged survives a reopen, and crash debris (half-written temporary files,
/// interrupted wipes) is cleaned up rather than loaded.
pub async fn reopen_after_crash(h: &impl Harness) {
    let store = h.open().await;
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let r = sample(Some(&format!("durable-{i}")), Algorithm::Ed25519, &[("n", &i.to_string())]);
        let r = (*store.create(r).await.unwrap()).clone();
        let r = if i % 4 == 0 {
            let mut rotated = next(&r);
            rotated.versions.push(version(2, Algorithm::Ed25519));
            rotated.current_version = 2;
            (*store.update(rotated).await.unwrap()).clone()
        } else {
            r
        };
        expected.insert(r.id, r);
    }
    drop(store);
    h.leave_crash_debris().await;
    let store = h.open().await;
    assert_eq!(store.count().await.unwrap(), expected.len());
    for (id, record) in &expected {
        assert_eq!(&stored(&store, id).await, record);
    }
    let page = store.list(&ListQuery { limit: 1000, ..ListQuery::default() }).await.unwrap();
    assert_eq!(page.keys.len(), expected.len());
    // The store is writable after recovery, and a second reopen is just as clean.
    store.create(sample(Some("after-crash"), Algorithm::Ed25519, &[])).await.unwrap();
    drop(store);
    let store = h.open().await;
    assert_eq!(store.count().await.unwrap(), expected.len() + 1);
}

// ----- Approvals ---------------------------------------------------------------------------

/// A new approval document: revision 1, open, an opaque body.
pub fn approval(body: &[u8]) -> ApprovalDocument {
    ApprovalDocument {
        id: uuid::Uuid::now_v7(),
        revision: 1,
        open: true,
        updated_at: OffsetDateTime::now_utc(),
        body: body.to_vec(),
    }
}

fn successor(doc: &ApprovalDocument, body: &[u8], open: bool) -> ApprovalDocument {
    ApprovalDocument {
        revision: doc.revision + 1,
        open,
        updated_at: OffsetDateTime::now_utc(),
        body: body.to_vec(),
        ..doc.clone()
    }
}

/// Created approvals read back byte for byte; the list is newest first and bounded; an id
/// is created once, at revision 1.
pub async fn approvals_create_get_list(h: &impl Harness) {
    let store = h.approvals().await;
    let mut made = Vec::new();
    for i in 0..5u8 {
        let doc = approval(&[i, 0, 255, b'{']);
        store.create(doc.clone()).await.unwrap();
        made.push(doc);
    }
    for doc in &made {
        assert_eq!(store.get(&doc.id).await.unwrap().as_ref(), Some(doc));
    }
    assert!(store.get(&uuid::Uuid::now_v7()).await.unwrap().is_none());
    let listed: Vec<_> = store.list(3).await.unwrap().into_iter().map(|d| d.id).collect();
    let newest: Vec<_> = made.iter().rev().take(3).map(|d| d.id).collect();
    assert_eq!(listed, newest);
    assert!(matches!(store.create(made[0].clone()).await, Err(Error::ApprovalConflict(_))));
    let mut late = approval(b"x");
    late.revision = 2;
    assert!(matches!(store.create(late.clone()).await, Err(Error::ApprovalConflict(_))));
    assert!(store.get(&late.id).await.unwrap().is_none());
}

/// An update must be the stored revision plus one: stale and repeated writes conflict, an
/// unknown id is not found, and of two concurrent updates exactly one wins.
pub async fn approvals_update_is_compare_and_swap(h: &impl Harness) {
    let store = h.approvals().await;
    let doc = approval(b"v1");
    store.create(doc.clone()).await.unwrap();
    let v2 = successor(&doc, b"v2", true);
    store.update(v2.clone()).await.unwrap();
    assert_eq!(store.get(&doc.id).await.unwrap(), Some(v2.clone()));
    assert!(matches!(store.update(v2.clone()).await, Err(Error::ApprovalConflict(_))));
    assert!(matches!(
        store.update(successor(&doc, b"stale", true)).await,
        Err(Error::ApprovalConflict(_))
    ));
    let mut skip = successor(&v2, b"skip", true);
    skip.revision += 1;
    assert!(matches!(store.update(skip).await, Err(Error::ApprovalConflict(_))));
    assert!(matches!(
        store.update(successor(&approval(b"ghost"), b"x", true)).await,
        Err(Error::ApprovalNotFound(_))
    ));
    let (a, b) = tokio::join!(
        store.update(successor(&v2, b"a", false)),
        store.update(successor(&v2, b"b", false))
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "exactly one concurrent update wins");
    assert_eq!(store.get(&doc.id).await.unwrap().unwrap().revision, 3);
}

/// Pruning removes closed approvals older than the cut, at most `limit` per call, and never
/// an open one however old.
pub async fn approvals_prune_only_closed(h: &impl Harness) {
    let store = h.approvals().await;
    let old = OffsetDateTime::now_utc() - time::Duration::days(40);
    let mut closed_old = Vec::new();
    for i in 0..3u8 {
        let mut doc = approval(&[i]);
        doc.updated_at = old;
        store.create(doc.clone()).await.unwrap();
        let mut done = successor(&doc, b"executed", false);
        done.updated_at = old;
        store.update(done.clone()).await.unwrap();
        closed_old.push(done);
    }
    let mut open_old = approval(b"pending");
    open_old.updated_at = old;
    store.create(open_old.clone()).await.unwrap();
    let recent = approval(b"recent");
    store.create(recent.clone()).await.unwrap();
    store.update(successor(&recent, b"denied", false)).await.unwrap();

    let cut = OffsetDateTime::now_utc() - time::Duration::days(30);
    assert_eq!(store.prune_closed(cut, 2).await.unwrap(), 2);
    assert_eq!(store.prune_closed(cut, 100).await.unwrap(), 1);
    assert_eq!(store.prune_closed(cut, 100).await.unwrap(), 0);
    for doc in &closed_old {
        assert!(store.get(&doc.id).await.unwrap().is_none());
    }
    assert!(store.get(&open_old.id).await.unwrap().is_some(), "open approvals are never pruned");
    assert!(store.get(&recent.id).await.unwrap().is_some(), "recent ones are kept");
}

/// Acknowledged approvals survive a reopen.
pub async fn approvals_survive_reopen(h: &impl Harness) {
    let store = h.approvals().await;
    let doc = approval(b"durable");
    store.create(doc.clone()).await.unwrap();
    let v2 = successor(&doc, b"durable-2", false);
    store.update(v2.clone()).await.unwrap();
    drop(store);
    let store = h.approvals().await;
    assert_eq!(store.get(&doc.id).await.unwrap(), Some(v2));
}

// ----- Two handles -------------------------------------------------------------------------

/// Two handles on one store (as two replicas would hold): each sees the other's
/// acknowledged writes at once, a write based on a stale read conflicts, and of concurrent
/// updates from both exactly one wins.
pub async fn two_handles_share_one_store(h: &impl Harness) {
    let a = h.open().await;
    let Some(b) = h.second_handle(&a).await else { return };
    let record = sample(Some("shared.key"), Algorithm::Aes256Gcm, &[("team", "x")]);
    a.create(record.clone()).await.unwrap();
    assert_eq!(stored(&b, &record.id).await, record);
    assert!(matches!(
        b.create(sample(Some("shared.key"), Algorithm::Aes256Gcm, &[])).await,
        Err(Error::NameTaken(_))
    ));
    let mut tagged = next(&record);
    tagged.tags.insert("team".into(), "y".into());
    b.update(tagged.clone()).await.unwrap();
    assert_eq!(stored(&a, &record.id).await, tagged);
    // `a` writes from its stale copy: refused.
    assert!(matches!(a.update(next(&record)).await, Err(Error::Conflict { .. })));
    let (x, y) = tokio::join!(a.update(next(&tagged)), b.update(next(&tagged)));
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "exactly one concurrent update wins");
    let page = b
        .list(&ListQuery { tags: vec![("team".into(), "y".into())], ..ListQuery::default() })
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 1);
}

// ----- Import ------------------------------------------------------------------------------

/// `import` stores a record with its history as it is (a migration), once; a record that
/// breaks an invariant is refused; an imported approval keeps its revision.
pub async fn import_keeps_a_record_as_it_is(h: &impl Harness) {
    let store = h.open().await;
    let mut record = sample(Some("imported"), Algorithm::Aes256Gcm, &[("from", "elsewhere")]);
    record.versions.push(version(2, Algorithm::Aes256Gcm));
    record.current_version = 2;
    record.revision = 7;
    record.state = KeyState::Revoked;
    record.revocation = revocation(RevocationReason::Superseded);
    assert_eq!(*store.import(record.clone()).await.unwrap(), record);
    assert_eq!(stored(&store, &record.id).await, record);
    assert!(matches!(store.import(record.clone()).await, Err(Error::AlreadyExists(_))));
    let mut clash = sample(Some("imported"), Algorithm::Aes256Gcm, &[]);
    assert!(matches!(store.import(clash.clone()).await, Err(Error::NameTaken(_))));
    clash.name = None;
    clash.current_version = 3;
    assert!(matches!(store.import(clash).await, Err(Error::InvalidRecord { .. })));
    // The imported key goes on like any other.
    store.update(next(&record)).await.unwrap();
    drop(store);

    let approvals = h.approvals().await;
    let mut doc = approval(b"imported approval");
    doc.revision = 4;
    doc.open = false;
    approvals.import(doc.clone()).await.unwrap();
    assert_eq!(approvals.get(&doc.id).await.unwrap(), Some(doc.clone()));
    assert!(matches!(approvals.import(doc.clone()).await, Err(Error::ApprovalConflict(_))));
    approvals.update(successor(&doc, b"next", false)).await.unwrap();
}

/// Many concurrent creates (as a loaded server issues them): distinct keys all land, and of
/// several creates racing for one name exactly one wins.
pub async fn concurrent_creates_of_one_name(h: &impl Harness) {
    let store = Arc::new(h.open().await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = if i % 2 == 0 { "contested".to_owned() } else { format!("free-{i}") };
            store.create(sample(Some(&name), Algorithm::Aes256Gcm, &[])).await
        }));
    }
    let mut won = 0;
    let mut free = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(r) if r.name.as_ref().is_some_and(|n| n.as_str() == "contested") => won += 1,
            Ok(_) => free += 1,
            Err(Error::NameTaken(_)) => assert_eq!(i % 2, 0, "only the contested name is taken"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((won, free), (1, 32));
    assert_eq!(store.count().await.unwrap(), 33);
}

/// Versions whose material a key vault holds (a handle instead of sealed bytes) are stored,
/// listed, rotated and purged like sealed ones, the handle kept exactly; a version with both
/// or neither is refused.
pub async fn vault_held_versions_keep_their_handles(h: &impl Harness) {
    let store = h.open().await;
    let mut held = Vec::new();
    for n in 1..=2 {
        held.push(h.vault_material(n, Algorithm::EcP384).await);
    }
    let external = |n: u32| {
        let mut v = version(n, Algorithm::EcP384);
        let (material, public_key) = held[n as usize - 1].clone();
        v.sealed = None;
        v.external = Some(material);
        v.public_key = public_key;
        v
    };
    let mut record = sample(Some("in-token"), Algorithm::EcP384, &[("custody", "pkcs11")]);
    record.custody = Some("pkcs11".into());
    record.versions = vec![external(1)];
    store.create(record.clone()).await.unwrap();
    assert_eq!(stored(&store, &record.id).await, record);

    let mut both = sample(Some("both"), Algorithm::EcP384, &[]);
    both.versions[0].external = external(1).external;
    assert!(store.create(both).await.is_err(), "sealed and vault-held at once");
    let mut neither = sample(Some("neither"), Algorithm::EcP384, &[]);
    neither.versions[0].sealed = None;
    assert!(store.create(neither).await.is_err(), "an active version without material");
    let mut undeclared = sample(Some("undeclared"), Algorithm::EcP384, &[]);
    undeclared.versions = vec![external(1)];
    assert!(store.create(undeclared).await.is_err(), "vault-held without the key's custody");
    let mut mixed = next(&record);
    mixed.versions.push(version(2, Algorithm::EcP384));
    mixed.current_version = 2;
    assert!(store.update(mixed).await.is_err(), "a sealed version in a vault-held key");
    let mut sealed_now = next(&record);
    sealed_now.custody = None;
    assert!(store.update(sealed_now).await.is_err(), "custody is immutable");

    let mut rotated = next(&record);
    rotated.versions.push(external(2));
    rotated.current_version = 2;
    store.update(rotated.clone()).await.unwrap();
    let mut moved = next(&rotated);
    moved.versions[0].external =
        Some(crate::ExternalMaterial { custody: "pkcs11".into(), handle: "another".into() });
    assert!(store.update(moved).await.is_err(), "a version's handle is immutable");
    drop(store);
    let reopened = h.open().await;
    assert_eq!(stored(&reopened, &record.id).await, rotated);

    let mut pending = next(&rotated);
    pending.state = KeyState::PendingDestruction;
    pending.destroy_after = Some(OffsetDateTime::now_utc());
    reopened.update(pending.clone()).await.unwrap();
    let mut keeps_handle = tombstone(&pending);
    keeps_handle.versions[1].external = pending.versions[1].external.clone();
    assert!(reopened.purge(keeps_handle).await.is_err());
    reopened.purge(tombstone(&pending)).await.unwrap();
    let dead = stored(&reopened, &record.id).await;
    assert!(dead.versions.iter().all(|v| v.external.is_none() && v.sealed.is_none()));
}
