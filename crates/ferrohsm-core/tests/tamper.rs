//! Metadata edited on disk is detected, not obeyed (SPEC §4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{ctx, hsm_on};
use ferrohsm_core::{Algorithm, CreateKey, Error, Hsm, KeyId, KeyRef, RevocationReason, SignInput};
use ferrohsm_store::FileKeyStore;

fn record_path(dir: &Path, id: KeyId) -> std::path::PathBuf {
    dir.join("keys").join(format!("{id}.json"))
}

/// Edits one key's JSON on disk with `edit`, reopens, and returns the HSM.
async fn reopen_after_edit(dir: &Path, id: KeyId, edit: impl Fn(&mut serde_json::Value)) -> Hsm {
    let path = record_path(dir, id);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    hsm_on(Arc::new(FileKeyStore::open(dir).await.unwrap()), 5).await
}

#[tokio::test]
async fn reviving_a_revoked_key_on_disk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (key, good) = {
        let hsm = hsm_on(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()), 5).await;
        // A second, untouched key keeps start-up working: one bad record must not stop the HSM.
        let good = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        hsm.revoke_key(&ctx(), &KeyRef::Id(key.id), RevocationReason::Compromised, None)
            .await
            .unwrap();
        (key, good)
    };
    let hsm = reopen_after_edit(dir.path(), key.id, |json| {
        json["state"] = "active".into();
        json["revocation"] = serde_json::Value::Null;
    })
    .await;
    let k = KeyRef::Id(key.id);
    for result in [
        hsm.encrypt(&ctx(), &k, b"x", b"").await.map(|_| ()),
        hsm.describe_key(&ctx(), &k).await.map(|_| ()),
        hsm.rotate_key(&ctx(), &k).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::Integrity(id)) if id == key.id), "{result:?}");
    }
    assert_eq!(hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap_err().code(), "integrity");
    // Listing refuses to present the forged record; the untouched key still works.
    assert!(matches!(hsm.list_keys(&ctx(), &Default::default()).await, Err(Error::Integrity(_))));
    hsm.encrypt(&ctx(), &KeyRef::Id(good.id), b"x", b"").await.unwrap();
}

/// An edit of a record's JSON.
type Edit = dyn Fn(&mut serde_json::Value);

#[tokio::test]
async fn every_governing_field_is_covered() {
    let edits: Vec<(&str, Box<Edit>)> = vec![
        ("usages", Box::new(|j| j["usages"] = serde_json::json!(["sign"]))),
        ("tags", Box::new(|j| j["tags"]["env"] = "prod".into())),
        ("current_version", Box::new(|j| j["current_version"] = 1.into())),
        ("description", Box::new(|j| j["description"] = "edited".into())),
        ("created_by", Box::new(|j| j["created_by"] = "mallory".into())),
        (
            "public key",
            Box::new(|j| {
                let other = j["versions"][1]["public_key"].clone();
                j["versions"][0]["public_key"] = other;
            }),
        ),
        (
            "swapped material",
            Box::new(|j| {
                let (a, b) =
                    (j["versions"][0]["sealed"].clone(), j["versions"][1]["sealed"].clone());
                j["versions"][0]["sealed"] = b;
                j["versions"][1]["sealed"] = a;
            }),
        ),
    ];
    for (what, edit) in edits {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let hsm = hsm_on(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()), 5).await;
            hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
            let key = hsm
                .create_key(&ctx(), CreateKey::new(Algorithm::EcP256).tag("env", "dev"))
                .await
                .unwrap();
            hsm.rotate_key(&ctx(), &KeyRef::Id(key.id)).await.unwrap();
            key
        };
        let hsm = reopen_after_edit(dir.path(), key.id, edit).await;
        let result = hsm.sign(&ctx(), &KeyRef::Id(key.id), SignInput::Message(b"m"), None).await;
        assert!(matches!(result, Err(Error::Integrity(_))), "{what}: {result:?}");
    }
}

#[tokio::test]
async fn material_sealed_for_one_key_does_not_open_under_another() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let hsm = hsm_on(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()), 5).await;
        let a = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        let b = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        (a, b)
    };
    // Copy A's sealed material into B and re-use B's tag: the tag no longer matches, and even
    // a forger who could re-tag would fail the seal's key-id binding.
    let a_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path(dir.path(), a.id)).unwrap()).unwrap();
    let hsm = reopen_after_edit(dir.path(), b.id, |j| {
        j["versions"][0]["sealed"] = a_json["versions"][0]["sealed"].clone()
    })
    .await;
    assert!(matches!(
        hsm.encrypt(&ctx(), &KeyRef::Id(b.id), b"x", b"").await,
        Err(Error::Integrity(_))
    ));
    hsm.encrypt(&ctx(), &KeyRef::Id(a.id), b"x", b"").await.unwrap();
}
