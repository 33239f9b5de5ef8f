//! The key lifecycle and every operation, on both built-in stores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::sync::Arc;

use common::{ctx, hsm_on, hsms, master};
use ferrohsm_core::{
    Algorithm, AwsLcProvider, CreateKey, CryptoProvider, Error, Hsm, KeyRef, KeyState, ListQuery,
    RevocationReason, SignInput, SignatureScheme, Usage, VersionState,
};
use ferrohsm_store::FileKeyStore;
use time::{Duration, OffsetDateTime};

fn id_ref(info: &ferrohsm_core::KeyInfo) -> KeyRef {
    KeyRef::Id(info.id)
}

#[tokio::test]
async fn create_describe_and_list_by_id_and_name() {
    let dir = tempfile::tempdir().unwrap();
    for hsm in hsms(dir.path()).await {
        let key = hsm
            .create_key(
                &ctx(),
                CreateKey::new(Algorithm::Aes256Gcm).name("payments").tag("env", "prod"),
            )
            .await
            .unwrap();
        assert_eq!(key.state, KeyState::Active);
        assert_eq!(key.current_version, 1);
        assert_eq!(key.created_by, "tester");
        assert_eq!(key.usages, vec![Usage::Encrypt, Usage::Decrypt, Usage::Wrap, Usage::Unwrap]);
        assert_eq!(hsm.describe_key(&ctx(), &"payments".parse().unwrap()).await.unwrap(), key);
        assert_eq!(hsm.describe_key(&ctx(), &id_ref(&key)).await.unwrap(), key);
        let listed = hsm
            .list_keys(
                &ctx(),
                &ListQuery { tags: vec![("env".into(), "prod".into())], ..ListQuery::default() },
            )
            .await
            .unwrap();
        assert_eq!(listed.keys, vec![key.clone()]);
        let clash =
            hsm.create_key(&ctx(), CreateKey::new(Algorithm::EcP256).name("payments")).await;
        assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
        assert_eq!(clash.unwrap_err().code(), "conflict");
    }
}

#[tokio::test]
async fn rotate_then_old_ciphertexts_still_decrypt_and_rollback_switches_back() {
    let dir = tempfile::tempdir().unwrap();
    for hsm in hsms(dir.path()).await {
        let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        let k = id_ref(&key);
        let v1 = hsm.encrypt(&ctx(), &k, b"first", b"aad").await.unwrap();
        assert!(v1.ciphertext.starts_with("fhsm:v1:"));
        let rotated = hsm.rotate_key(&ctx(), &k).await.unwrap();
        assert_eq!(rotated.current_version, 2);
        assert_eq!(rotated.versions.len(), 2);
        let v2 = hsm.encrypt(&ctx(), &k, b"second", b"").await.unwrap();
        assert_eq!(v2.key_version, 2);
        assert!(v2.ciphertext.starts_with("fhsm:v2:"));
        assert_eq!(
            hsm.decrypt(&ctx(), &k, &v1.ciphertext, b"aad").await.unwrap().plaintext.expose(),
            b"first"
        );
        assert_eq!(
            hsm.decrypt(&ctx(), &k, &v2.ciphertext, b"").await.unwrap().plaintext.expose(),
            b"second"
        );
        let rolled = hsm.rollback_key(&ctx(), &k, 1).await.unwrap();
        assert_eq!(rolled.current_version, 1);
        assert_eq!(rolled.versions.len(), 2, "history is kept");
        assert_eq!(hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap().key_version, 1);
        assert_eq!(hsm.decrypt(&ctx(), &k, &v2.ciphertext, b"").await.unwrap().key_version, 2);
    }
}

#[tokio::test]
async fn every_signing_algorithm_signs_verifies_and_exports_its_public_key() {
    let hsm = common::memory_hsm().await;
    for algorithm in Algorithm::ALL.iter().filter(|a| !a.is_symmetric()) {
        let key = hsm.create_key(&ctx(), CreateKey::new(*algorithm)).await.unwrap();
        let k = id_ref(&key);
        let msg = b"artefact bytes";
        let signed = hsm.sign(&ctx(), &k, SignInput::Message(msg), None).await.unwrap();
        assert_eq!(Some(signed.algorithm), algorithm.default_scheme());
        let ok = hsm
            .verify(&ctx(), &k, SignInput::Message(msg), &signed.signature, None, None)
            .await
            .unwrap();
        assert!(ok.valid, "{algorithm}");
        let bad = hsm
            .verify(&ctx(), &k, SignInput::Message(b"other"), &signed.signature, None, None)
            .await
            .unwrap();
        assert!(!bad.valid, "{algorithm}");

        // The exported public key verifies the signature outside the HSM.
        let public = hsm.public_key(&ctx(), &k, None).await.unwrap();
        assert!(public.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let der = ferrohsm_crypto::decode_pem(&public.pem, "PUBLIC KEY").unwrap();
        assert_eq!(der, public.der);
        let outside = AwsLcProvider.load_public(*algorithm, &der).unwrap();
        assert!(
            outside.verify(signed.algorithm, SignInput::Message(msg), &signed.signature).unwrap()
        );

        // Every other scheme of the algorithm works too, by message and (with a hash) by digest.
        for scheme in SignatureScheme::ALL.iter().filter(|s| algorithm.supports_scheme(**s)) {
            let s = hsm.sign(&ctx(), &k, SignInput::Message(msg), Some(*scheme)).await.unwrap();
            assert!(
                hsm.verify(&ctx(), &k, SignInput::Message(msg), &s.signature, Some(*scheme), None)
                    .await
                    .unwrap()
                    .valid
            );
            if let Some(hash) = scheme.hash() {
                let digest = sha(hash, msg);
                let d =
                    hsm.sign(&ctx(), &k, SignInput::Digest(&digest), Some(*scheme)).await.unwrap();
                assert!(
                    hsm.verify(
                        &ctx(),
                        &k,
                        SignInput::Message(msg),
                        &d.signature,
                        Some(*scheme),
                        None
                    )
                    .await
                    .unwrap()
                    .valid
                );
            }
        }
    }
}

fn sha(hash: ferrohsm_core::HashAlgorithm, msg: &[u8]) -> Vec<u8> {
    use aws_lc_rs::digest;
    let alg = match hash {
        ferrohsm_core::HashAlgorithm::Sha256 => &digest::SHA256,
        ferrohsm_core::HashAlgorithm::Sha384 => &digest::SHA384,
        _ => &digest::SHA512,
    };
    digest::digest(alg, msg).as_ref().to_vec()
}

#[tokio::test]
async fn signatures_verify_with_older_versions_after_rotation() {
    let hsm = common::memory_hsm().await;
    let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Ed25519)).await.unwrap();
    let k = id_ref(&key);
    let old = hsm.sign(&ctx(), &k, SignInput::Message(b"m"), None).await.unwrap();
    hsm.rotate_key(&ctx(), &k).await.unwrap();
    let now_current =
        hsm.verify(&ctx(), &k, SignInput::Message(b"m"), &old.signature, None, None).await.unwrap();
    assert!(!now_current.valid && now_current.key_version == 2);
    let with_v1 = hsm
        .verify(&ctx(), &k, SignInput::Message(b"m"), &old.signature, None, Some(1))
        .await
        .unwrap();
    assert!(with_v1.valid);
    assert_ne!(
        hsm.public_key(&ctx(), &k, Some(1)).await.unwrap().der,
        hsm.public_key(&ctx(), &k, None).await.unwrap().der
    );
}

#[tokio::test]
async fn wrap_and_unwrap() {
    let hsm = common::memory_hsm().await;
    let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let k = id_ref(&key);
    let data_key = [0x42u8; 32];
    let wrapped = hsm.wrap(&ctx(), &k, &data_key).await.unwrap();
    assert!(wrapped.wrapped.starts_with("fhsm:v1:"));
    hsm.rotate_key(&ctx(), &k).await.unwrap();
    let back = hsm.unwrap(&ctx(), &k, &wrapped.wrapped).await.unwrap();
    assert_eq!(back.key_material.expose(), &data_key);
    assert_eq!(back.key_version, 1);
}

#[tokio::test]
async fn revocation_rules() {
    let hsm = common::memory_hsm().await;
    let aes = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let ec = hsm.create_key(&ctx(), CreateKey::new(Algorithm::EcP384)).await.unwrap();
    let (a, e) = (id_ref(&aes), id_ref(&ec));
    let ct = hsm.encrypt(&ctx(), &a, b"secret", b"").await.unwrap();
    let sig = hsm.sign(&ctx(), &e, SignInput::Message(b"m"), None).await.unwrap();

    for k in [&a, &e] {
        let revoked = hsm
            .revoke_key(&ctx(), k, RevocationReason::Superseded, Some("replaced".into()))
            .await
            .unwrap();
        assert_eq!(revoked.state, KeyState::Revoked);
        assert_eq!(
            revoked.revocation.as_ref().map(|r| r.reason),
            Some(RevocationReason::Superseded)
        );
    }
    // New protection refused; existing data still readable.
    assert!(matches!(hsm.encrypt(&ctx(), &a, b"x", b"").await, Err(Error::InvalidState { .. })));
    assert!(matches!(hsm.wrap(&ctx(), &a, b"x").await, Err(Error::InvalidState { .. })));
    assert!(matches!(
        hsm.sign(&ctx(), &e, SignInput::Message(b"m"), None).await,
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(hsm.rotate_key(&ctx(), &a).await, Err(Error::InvalidState { .. })));
    assert_eq!(
        hsm.decrypt(&ctx(), &a, &ct.ciphertext, b"").await.unwrap().plaintext.expose(),
        b"secret"
    );
    assert!(
        hsm.verify(&ctx(), &e, SignInput::Message(b"m"), &sig.signature, None, None)
            .await
            .unwrap()
            .valid
    );
    // Revoking again is refused unless it escalates to compromised.
    assert!(matches!(
        hsm.revoke_key(&ctx(), &a, RevocationReason::Unspecified, None).await,
        Err(Error::InvalidState { .. })
    ));
    for k in [&a, &e] {
        hsm.revoke_key(&ctx(), k, RevocationReason::Compromised, None).await.unwrap();
    }
    let err = hsm.decrypt(&ctx(), &a, &ct.ciphertext, b"").await.unwrap_err();
    assert_eq!(err.code(), "invalid_state");
    assert!(err.to_string().contains("compromised"), "{err}");
    assert!(matches!(
        hsm.verify(&ctx(), &e, SignInput::Message(b"m"), &sig.signature, None, None).await,
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(hsm.public_key(&ctx(), &e, None).await, Err(Error::InvalidState { .. })));
    // A compromised key can still be described and destroyed.
    assert_eq!(hsm.describe_key(&ctx(), &a).await.unwrap().state, KeyState::Revoked);
    let pending = hsm.schedule_destruction(&ctx(), &a, None).await.unwrap();
    assert_eq!(pending.state, KeyState::PendingDestruction);
    let back = hsm.cancel_destruction(&ctx(), &a).await.unwrap();
    assert_eq!(back.state, KeyState::Revoked, "cancel returns to the state before");
}

#[tokio::test]
async fn destruction_grace_cancel_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    for hsm in hsms(dir.path()).await {
        let key = hsm
            .create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm).name("temp"))
            .await
            .unwrap();
        let other = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
        let k = id_ref(&key);
        let ct = hsm.encrypt(&ctx(), &k, b"bye", b"").await.unwrap();

        let pending = hsm.schedule_destruction(&ctx(), &k, None).await.unwrap();
        let after = pending.destroy_after.unwrap();
        let expected = pending.updated_at + Duration::hours(24);
        assert_eq!(after, expected, "default grace is 24 h");
        assert!(matches!(
            hsm.decrypt(&ctx(), &k, &ct.ciphertext, b"").await,
            Err(Error::InvalidState { .. })
        ));
        assert!(matches!(
            hsm.schedule_destruction(&ctx(), &k, None).await,
            Err(Error::InvalidState { .. })
        ));
        assert_eq!(hsm.cancel_destruction(&ctx(), &k).await.unwrap().state, KeyState::Active);
        assert_eq!(
            hsm.decrypt(&ctx(), &k, &ct.ciphertext, b"").await.unwrap().plaintext.expose(),
            b"bye"
        );

        hsm.schedule_destruction(&ctx(), &k, Some(Duration::hours(1))).await.unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(
            hsm.purge_due(&ctx(), now).await.unwrap().is_empty(),
            "not before the grace period"
        );
        let purged = hsm.purge_due(&ctx(), now + Duration::hours(2)).await.unwrap();
        assert_eq!(purged, vec![key.id]);

        let tomb = hsm.describe_key(&ctx(), &k).await.unwrap();
        assert_eq!(tomb.state, KeyState::Destroyed);
        assert!(tomb.destroyed_at.is_some());
        assert!(tomb.versions.iter().all(|v| v.state == VersionState::Destroyed));
        assert_eq!(tomb.name.as_ref().map(|n| n.as_str()), Some("temp"));
        for result in [
            hsm.decrypt(&ctx(), &k, &ct.ciphertext, b"").await.map(|_| ()),
            hsm.encrypt(&ctx(), &k, b"x", b"").await.map(|_| ()),
            hsm.cancel_destruction(&ctx(), &k).await.map(|_| ()),
            hsm.rotate_key(&ctx(), &k).await.map(|_| ()),
            hsm.revoke_key(&ctx(), &k, RevocationReason::Compromised, None).await.map(|_| ()),
        ] {
            assert!(matches!(result, Err(Error::InvalidState { .. })), "{result:?}");
        }
        assert!(hsm.purge_due(&ctx(), now + Duration::days(30)).await.unwrap().is_empty());
        // Other keys are untouched.
        assert_eq!(
            hsm.describe_key(&ctx(), &id_ref(&other)).await.unwrap().state,
            KeyState::Active
        );
        assert!(matches!(
            hsm.schedule_destruction(&ctx(), &id_ref(&other), Some(Duration::seconds(-1))).await,
            Err(Error::InvalidRequest(_))
        ));
    }
}

#[tokio::test]
async fn keys_survive_a_restart_and_need_the_same_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, ct) = {
        let hsm = hsm_on(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()), 3).await;
        let key = hsm
            .create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm).name("durable"))
            .await
            .unwrap();
        let ct = hsm.encrypt(&ctx(), &id_ref(&key), b"persisted", b"").await.unwrap();
        (key, ct)
    };
    let wrong = Hsm::builder()
        .store(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()))
        .master_key(master(4))
        .build()
        .await;
    assert!(matches!(wrong, Err(Error::MasterKeyMismatch)), "{wrong:?}");
    let hsm = hsm_on(Arc::new(FileKeyStore::open(dir.path()).await.unwrap()), 3).await;
    // The one encryption leased the first block of the version's nonce budget (issue 11).
    let got = hsm.describe_key(&ctx(), &id_ref(&key)).await.unwrap();
    let mut expected = key.clone();
    expected.versions[0].encryptions = 1 << 20;
    expected.updated_at = got.updated_at;
    assert_eq!(got, expected);
    assert_eq!(
        hsm.decrypt(&ctx(), &"durable".parse().unwrap(), &ct.ciphertext, b"")
            .await
            .unwrap()
            .plaintext
            .expose(),
        b"persisted"
    );
}

#[tokio::test]
async fn concurrent_rotations_all_land() {
    let hsm = common::memory_hsm().await;
    let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let hsm = hsm.clone();
        let k = id_ref(&key);
        tasks.push(tokio::spawn(async move { hsm.rotate_key(&ctx(), &k).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), "conflict", "{e}"),
        }
    }
    let info = hsm.describe_key(&ctx(), &id_ref(&key)).await.unwrap();
    assert_eq!(
        info.versions.len(),
        1 + ok,
        "every acknowledged rotation is kept, numbered in sequence"
    );
    assert_eq!(info.current_version as usize, info.versions.len());
}

/// A log sealed under another master key is refused before anything is appended to it, even
/// when no key exists yet to tell (replicas sharing one database must share the master key,
/// or their records would break the chain for all of them).
#[tokio::test]
async fn an_audit_log_sealed_under_another_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = |n: u8| {
        Hsm::builder()
            .backend(ferrohsm_core::BackendConfig::sqlite(dir.path().to_owned()))
            .master_key(master(n))
            .build()
    };
    let hsm = open(5).await.unwrap();
    hsm.list_keys(&ctx(), &ferrohsm_core::ListQuery::default()).await.unwrap();
    hsm.shutdown().await.unwrap();
    drop(hsm);
    let wrong = open(6).await;
    assert!(matches!(wrong, Err(Error::MasterKeyMismatch)), "{wrong:?}");
    // The refused one appended nothing: the log still verifies under the right key.
    let hsm = open(5).await.unwrap();
    let verification = hsm.verify_audit(&ctx()).await.unwrap();
    assert!(verification.valid, "{verification:?}");
    hsm.shutdown().await.unwrap();
}
