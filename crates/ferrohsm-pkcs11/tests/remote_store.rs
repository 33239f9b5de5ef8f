//! [`RemoteKeyStore`] on a file store and a real SoftHSM2 token: the whole key-store
//! conformance suite (vault-held versions generated in the token), and what only a store
//! paired with a vault promises: it never records material its vault lacks, and it destroys
//! material in the token only once the tombstone is stored, naming what it could not destroy.
//!
//! Each test runs itself again as a child process whose `SOFTHSM2_CONF` names a fresh token
//! (see `ferrohsm_pkcs11::testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use ferrohsm_crypto::{Algorithm, RemoteKeyVault};
use ferrohsm_pkcs11::{Pkcs11Config, Pkcs11Vault, testing};
use ferrohsm_store::conformance::{FileHarness, Harness, next, sample, tombstone};
use ferrohsm_store::{
    ApprovalStore, Error, ExternalMaterial, FileKeyStore, KeyRecord, KeyState, KeyStore,
    RemoteKeyStore,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

const LABEL: &str = "ferrohsm-remote";
const PIN: &str = "2468";

/// Whether a test body runs in this process: in the parent the test re-ran itself in a child
/// with a token (and passed), in the child it runs.
fn in_token(test: &str) -> bool {
    testing::rerun_with_token(test, LABEL, PIN, &[]).is_some()
}

fn vault() -> Arc<Pkcs11Vault> {
    Arc::new(
        Pkcs11Vault::open(Pkcs11Config {
            module: testing::SOFTHSM2_MODULE.into(),
            token_label: LABEL.into(),
            pin: Zeroizing::new(PIN.into()),
            max_idle_sessions: 4,
        })
        .expect("opening the test token"),
    )
}

/// A [`RemoteKeyStore`] over the file backend, its vault the test token.
struct RemoteHarness {
    files: FileHarness,
    vault: Arc<Pkcs11Vault>,
    /// The file store the last `open` made (weak, so dropping the store releases its lock).
    last: Mutex<Weak<FileKeyStore>>,
}

impl RemoteHarness {
    fn new() -> Self {
        RemoteHarness { files: FileHarness::new(), vault: vault(), last: Mutex::new(Weak::new()) }
    }
}

#[async_trait]
impl Harness for RemoteHarness {
    type Store = RemoteKeyStore;

    async fn open(&self) -> RemoteKeyStore {
        let files = Arc::new(self.files.open().await);
        *self.last.lock().unwrap() = Arc::downgrade(&files);
        RemoteKeyStore::new(files, self.vault.clone())
    }

    async fn leave_crash_debris(&self) {
        self.files.leave_crash_debris().await;
    }

    async fn approvals(&self) -> Arc<dyn ApprovalStore> {
        self.files.approvals().await
    }

    async fn second_handle(&self, _first: &RemoteKeyStore) -> Option<RemoteKeyStore> {
        let files = self.last.lock().unwrap().upgrade().expect("the first handle is open");
        self.files
            .second_handle(&files)
            .await
            .map(|s| RemoteKeyStore::new(Arc::new(s), self.vault.clone()))
    }

    async fn vault_material(
        &self,
        _n: u32,
        algorithm: Algorithm,
    ) -> (ExternalMaterial, Option<Vec<u8>>) {
        generate(&self.vault, algorithm)
    }
}

fn generate(vault: &Pkcs11Vault, algorithm: Algorithm) -> (ExternalMaterial, Option<Vec<u8>>) {
    let key = vault.generate(algorithm, "conformance").unwrap();
    (ExternalMaterial { custody: "pkcs11".into(), handle: key.handle }, key.public_key_der)
}

mod conformance {
    ferrohsm_store::conformance_tests!(super::RemoteHarness::new(), runs_here = super::in_token);
}

/// A key created with its material in the token, as the core creates one.
fn held(vault: &Pkcs11Vault, name: &str, algorithm: Algorithm) -> KeyRecord {
    let mut record = sample(Some(name), algorithm, &[]);
    let (material, public_key) = generate(vault, algorithm);
    record.custody = Some("pkcs11".into());
    record.versions[0].sealed = None;
    record.versions[0].external = Some(material);
    record.versions[0].public_key = public_key;
    record
}

fn holds(vault: &Pkcs11Vault, algorithm: Algorithm, handle: &str) -> bool {
    vault.load(algorithm, handle).is_ok()
}

async fn remote(dir: &Path, vault: &Arc<Pkcs11Vault>) -> RemoteKeyStore {
    RemoteKeyStore::new(Arc::new(FileKeyStore::open(dir).await.unwrap()), vault.clone())
}

/// A token-held key created in `store` and then scheduled for destruction: the created
/// record, the pending one, and its handle.
async fn pending(
    store: &RemoteKeyStore,
    vault: &Pkcs11Vault,
    name: &str,
    algorithm: Algorithm,
) -> (KeyRecord, KeyRecord, String) {
    let record = held(vault, name, algorithm);
    let handle = record.versions[0].external.clone().unwrap().handle;
    store.create(record.clone()).await.unwrap();
    let mut pending = next(&record);
    pending.state = KeyState::PendingDestruction;
    pending.destroy_after = Some(OffsetDateTime::now_utc());
    store.update(pending.clone()).await.unwrap();
    (record, pending, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_store_never_records_material_its_vault_does_not_hold() {
    if !in_token("a_remote_store_never_records_material_its_vault_does_not_hold") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vault = vault();
    let store = remote(dir.path(), &vault).await;
    let refused = |r: Result<Arc<KeyRecord>, Error>, why: &str| match r {
        Err(Error::InvalidRecord { reason, .. }) => reason,
        other => panic!("{why}: expected InvalidRecord, got {other:?}"),
    };

    let mut unknown = held(&vault, "unknown-handle", Algorithm::Aes256Gcm);
    unknown.versions[0].external.as_mut().unwrap().handle = "00".repeat(16);
    let reason = refused(store.create(unknown).await, "a handle the token lacks");
    assert!(reason.contains("holds no"), "{reason}");

    let mut elsewhere = held(&vault, "other-vault", Algorithm::Aes256Gcm);
    elsewhere.custody = Some("cloudkms".into());
    elsewhere.versions[0].external.as_mut().unwrap().custody = "cloudkms".into();
    let reason = refused(store.create(elsewhere).await, "another vault's custody");
    assert!(reason.contains("cloudkms"), "{reason}");

    // A handle of the token naming another key than the version records (a swapped handle).
    let mut swapped = held(&vault, "swapped", Algorithm::EcP256);
    let other = held(&vault, "donor", Algorithm::EcP256);
    swapped.versions[0].external = other.versions[0].external.clone();
    let reason = refused(store.create(swapped).await, "another key's handle");
    assert!(reason.contains("not the key"), "{reason}");
    let mut imported = held(&vault, "imported", Algorithm::EcP256);
    imported.versions[0].external.as_mut().unwrap().handle = "ab".repeat(16);
    refused(store.import(imported).await, "an import naming a missing handle");

    // Sealed keys and keys the token holds go through; a rotation to a handle the token lacks
    // does not, and leaves the stored key as it was.
    store.create(sample(Some("sealed"), Algorithm::Aes256Gcm, &[])).await.unwrap();
    let good = held(&vault, "good", Algorithm::Aes256Gcm);
    store.create(good.clone()).await.unwrap();
    let mut rotated = next(&good);
    let mut v2 = rotated.versions[0].clone();
    v2.version = 2;
    v2.external.as_mut().unwrap().handle = "cd".repeat(16);
    rotated.versions.push(v2);
    rotated.current_version = 2;
    refused(store.update(rotated).await, "a rotation to a missing handle");
    assert_eq!(*store.get(&good.id).await.unwrap().unwrap(), good);
    assert_eq!(store.count().await.unwrap(), 2, "nothing refused was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_destroys_token_material_only_after_its_tombstone_is_stored() {
    if !in_token("a_purge_destroys_token_material_only_after_its_tombstone_is_stored") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vault = vault();
    let store = remote(dir.path(), &vault).await;
    let (record, pending, handle) = pending(&store, &vault, "doomed", Algorithm::EcP384).await;

    // A purge that loses to a concurrent change (a stale revision) destroys nothing.
    let stale = tombstone(&record);
    assert!(matches!(store.purge_material(stale).await, Err(Error::Conflict { .. })));
    assert!(holds(&vault, Algorithm::EcP384, &handle), "the key survived the refused purge");

    let purged = store.purge_material(tombstone(&pending)).await.unwrap();
    assert_eq!((purged.destroyed, purged.left.len()), (1, 0));
    assert!(!holds(&vault, Algorithm::EcP384, &handle), "the token no longer holds it");
    assert_eq!(testing::objects_labelled(LABEL, PIN, "ferrohsm:doomed").unwrap(), 0);
    assert_eq!(store.get(&record.id).await.unwrap().unwrap().state, KeyState::Destroyed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_names_the_handles_a_lost_token_could_not_destroy() {
    let Some(token_dir) = testing::rerun_with_token(
        "a_purge_names_the_handles_a_lost_token_could_not_destroy",
        LABEL,
        PIN,
        &[],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vault = vault();
    let store = remote(dir.path(), &vault).await;
    let (record, pending, handle) = pending(&store, &vault, "stranded", Algorithm::Aes256Gcm).await;

    // The token goes away (a device reset, and it is not there when the module restarts).
    let tokens = token_dir.join("tokens");
    let away = token_dir.join("away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    testing::reset_module().unwrap();
    // Creating a key now is refused as unavailable (try later), not as a bad record.
    let mut meanwhile = sample(Some("meanwhile"), Algorithm::Aes256Gcm, &[]);
    meanwhile.custody = Some("pkcs11".into());
    meanwhile.versions[0].sealed = None;
    meanwhile.versions[0].external =
        Some(ExternalMaterial { custody: "pkcs11".into(), handle: handle.clone() });
    assert!(matches!(store.create(meanwhile).await, Err(Error::Unavailable { .. })));

    let purged = store.purge_material(tombstone(&pending)).await.unwrap();
    assert_eq!(purged.left, vec![handle.clone()], "the stranded handle is named");
    assert_eq!(store.get(&record.id).await.unwrap().unwrap().state, KeyState::Destroyed);

    // With the token back, the named handle is still there for the operator to remove.
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    assert!(holds(&vault, Algorithm::Aes256Gcm, &handle));
}
