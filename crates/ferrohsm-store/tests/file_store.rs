//! Behaviour specific to the filesystem backend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use ferrohsm_crypto::{Algorithm, b64};
use ferrohsm_store::conformance::{next, sample};
use ferrohsm_store::{Error, FileKeyStore, KeyState, KeyStore, VersionState};

#[tokio::test]
async fn a_data_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileKeyStore::open(dir.path()).await.unwrap();
    assert!(matches!(FileKeyStore::open(dir.path()).await, Err(Error::Locked(_))));
    drop(first);
    FileKeyStore::open(dir.path()).await.unwrap();
}

#[tokio::test]
async fn a_corrupt_record_is_quarantined_and_named_and_the_rest_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    let record = sample(Some("victim"), Algorithm::Aes256Gcm, &[]);
    store.create(record.clone()).await.unwrap();
    drop(store);
    let path = dir.path().join("keys").join(format!("{}.json", record.id));
    let original = std::fs::read(&path).unwrap();

    for corruption in [
        original[..original.len() / 2].to_vec(),
        b"not json".to_vec(),
        String::from_utf8(original.clone())
            .unwrap()
            .replace("\"revision\": 1", "\"revision\": 1, \"extra\": 1")
            .into_bytes(),
        String::from_utf8(original.clone())
            .unwrap()
            .replace("\"current_version\": 1", "\"current_version\": 5")
            .into_bytes(),
    ] {
        // Issue 11: the store still opens; the record is quarantined, named, and refused by id.
        std::fs::write(&path, &corruption).unwrap();
        let store = FileKeyStore::open(dir.path()).await.unwrap();
        let damaged = store.damaged();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].location, path.display().to_string());
        assert_eq!(damaged[0].id.as_deref(), Some(record.id.to_string().as_str()));
        match store.get(&record.id).await {
            Err(Error::Corrupt { record: named, .. }) => assert_eq!(named, record.id.to_string()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(store.count().await.unwrap(), 0);
    }
    // A record under another key's file name is damaged too.
    std::fs::write(&path, &original).unwrap();
    let renamed =
        dir.path().join("keys").join(format!("{}.json", ferrohsm_store::KeyId::generate()));
    std::fs::rename(&path, &renamed).unwrap();
    assert_eq!(FileKeyStore::open(dir.path()).await.unwrap().damaged().len(), 1);
    std::fs::rename(&renamed, &path).unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    assert_eq!(store.get(&record.id).await.unwrap().map(|r| (*r).clone()), Some(record));
}

#[tokio::test]
async fn purge_leaves_no_sealed_bytes_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    let record = sample(None, Algorithm::Aes256Gcm, &[]);
    store.create(record.clone()).await.unwrap();
    let sealed_text = b64::encode(&record.versions[0].sealed.as_ref().unwrap().ciphertext);

    let mut pending = next(&record);
    pending.state = KeyState::PendingDestruction;
    pending.destroy_after = Some(time::OffsetDateTime::now_utc());
    store.update(pending.clone()).await.unwrap();
    let mut dead = next(&pending);
    dead.state = KeyState::Destroyed;
    dead.destroy_after = None;
    dead.destroyed_at = Some(time::OffsetDateTime::now_utc());
    for v in &mut dead.versions {
        v.state = VersionState::Destroyed;
        v.sealed = None;
    }
    store.purge(dead).await.unwrap();

    let mut files = 0;
    for entry in std::fs::read_dir(dir.path().join("keys")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&sealed_text));
        files += 1;
    }
    assert_eq!(files, 1, "only the tombstone remains");
}

#[tokio::test]
async fn record_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    let record = sample(None, Algorithm::EcP256, &[]);
    store.create(record.clone()).await.unwrap();
    let path = dir.path().join("keys").join(format!("{}.json", record.id));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(dir.path().join("keys")).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// A crash after a purge linked the old record for wiping, but before the tombstone replaced
/// it: the next open must keep the live record, not wipe it (the purge never happened).
#[tokio::test]
async fn a_crash_before_a_purge_renames_keeps_the_live_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    let record = sample(Some("still-here"), Algorithm::Aes256Gcm, &[]);
    store.create(record.clone()).await.unwrap();
    drop(store);
    let live = dir.path().join("keys").join(format!("{}.json", record.id));
    std::fs::hard_link(&live, dir.path().join("keys").join(format!("{}.json.wipe", record.id)))
        .unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    assert_eq!(store.get(&record.id).await.unwrap().map(|r| (*r).clone()), Some(record.clone()));
    assert_eq!(
        std::fs::read_dir(dir.path().join("keys")).unwrap().count(),
        1,
        "the stale link is gone"
    );
    drop(store);
    // And it stays readable on the next open.
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    assert!(store.get(&record.id).await.unwrap().is_some());
}

/// Approval files written before approvals became opaque documents still open (an upgrade
/// keeps pending approvals), as documents whose body is the old file.
#[tokio::test]
async fn approval_files_from_before_documents_still_open() {
    use ferrohsm_store::ApprovalStore as _;
    let dir = tempfile::tempdir().unwrap();
    let id = "01900000-0000-7000-8000-0000000000aa";
    std::fs::create_dir_all(dir.path().join("approvals")).unwrap();
    let legacy = format!(
        "{{\n  \"id\": \"{id}\",\n  \"state\": \"pending\",\n  \"revision\": 3,\n  \"tag\": \"AAAA\"\n}}"
    );
    std::fs::write(dir.path().join("approvals").join(format!("{id}.json")), &legacy).unwrap();
    let store = FileKeyStore::open(dir.path()).await.unwrap();
    let approvals = store.approval_store().await.unwrap();
    assert!(approvals.damaged().is_empty());
    let doc = approvals.get(&id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((doc.revision, doc.open, doc.body.as_slice()), (3, true, legacy.as_bytes()));
}
