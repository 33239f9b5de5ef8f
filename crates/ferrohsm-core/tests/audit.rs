//! Every operation leaves exactly one audit record, before its answer, with the caller's
//! context and never a secret; the exported log verifies with the keys the HSM exports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::sync::Arc;

use common::master;
use ferrohsm_audit::{AuditRecord, Line, Verifier, parse_line};
use ferrohsm_audit::{FileAuditConfig, FileAuditSink};
use ferrohsm_core::{
    Algorithm, AwsLcProvider, CreateKey, CryptoProvider, Hsm, KeyRef, RequestContext,
    RevocationReason, SignInput, derive_audit_keys,
};
use ferrohsm_store::FileKeyStore;

fn caller() -> RequestContext {
    RequestContext {
        actor: "ci-pipeline".into(),
        roles: vec!["admin".into()],
        session: Some("sess-1".into()),
        client_fingerprint: Some("ab12".into()),
        source_ip: Some("10.1.2.3".parse().unwrap()),
        request_id: "build-4711".into(),
        ..RequestContext::default()
    }
}

async fn records(hsm: &Hsm) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    hsm.export_audit(&RequestContext::local("auditor"), &mut out).await.unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| match parse_line(l.as_bytes()).unwrap() {
            Line::Record(r) => Some(r),
            Line::Checkpoint(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn each_operation_success_and_error_is_recorded_once_with_context() {
    let hsm = common::memory_hsm().await;
    let ctx = caller();
    let key =
        hsm.create_key(&ctx, CreateKey::new(Algorithm::EcP256).name("ci-signing")).await.unwrap();
    let k = KeyRef::Id(key.id);
    hsm.sign(&ctx, &"ci-signing".parse().unwrap(), SignInput::Message(b"artefact"), None)
        .await
        .unwrap();
    let bad = hsm.encrypt(&ctx, &k, b"nope", b"").await.unwrap_err();
    assert_eq!(bad.code(), "unsupported");
    hsm.rotate_key(&ctx, &k).await.unwrap();
    hsm.revoke_key(&ctx, &k, RevocationReason::Superseded, None).await.unwrap();
    let missing = hsm.describe_key(&ctx, &"no-such".parse().unwrap()).await.unwrap_err();
    assert_eq!(missing.code(), "not_found");

    let log = records(&hsm).await;
    let actions: Vec<(&str, &str)> =
        log.iter().map(|r| (r.action.as_str(), r.outcome.as_str())).collect();
    assert_eq!(
        actions,
        vec![
            ("create_key", "success"),
            ("sign", "success"),
            ("encrypt", "error"),
            ("rotate_key", "success"),
            ("revoke_key", "success"),
            ("describe_key", "error"),
        ]
    );
    for r in &log {
        assert_eq!(r.actor, "ci-pipeline");
        assert_eq!(r.request_id, "build-4711", "the correlation id is carried");
        assert_eq!(r.session.as_deref(), Some("sess-1"));
        assert_eq!(r.client_fingerprint.as_deref(), Some("ab12"));
        assert_eq!(r.source_ip.as_deref(), Some("10.1.2.3"));
    }
    let id = key.id.to_string();
    assert_eq!(
        log[1].key_id.as_deref(),
        Some(id.as_str()),
        "a key named by name is recorded by id"
    );
    assert_eq!(log[1].key_version, Some(1));
    assert_eq!(log[3].key_version, Some(2), "rotation records the new version");
    assert!(log[2].message.as_deref().unwrap().starts_with("unsupported:"));
    assert!(log[5].message.as_deref().unwrap().contains("no-such"));
    assert_eq!(log[5].key_id, None);
}

#[tokio::test]
async fn no_secret_ever_reaches_the_log() {
    let hsm = common::memory_hsm().await;
    let ctx = caller();
    let aes = hsm.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let k = KeyRef::Id(aes.id);
    let plaintext = b"TOP-SECRET-PLAINTEXT-0123456789";
    let ct = hsm.encrypt(&ctx, &k, plaintext, b"AAD-VALUE-XYZ").await.unwrap();
    hsm.decrypt(&ctx, &k, &ct.ciphertext, b"AAD-VALUE-XYZ").await.unwrap();
    let material = b"WRAPPED-KEY-MATERIAL-ABCDEFGHIJK";
    let wrapped = hsm.wrap(&ctx, &k, material).await.unwrap();
    hsm.unwrap(&ctx, &k, &wrapped.wrapped).await.unwrap();
    hsm.decrypt(&ctx, &k, &ct.ciphertext, b"wrong aad").await.unwrap_err();

    let mut out = Vec::new();
    hsm.export_audit(&ctx, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    for secret in [&plaintext[..], b"AAD-VALUE-XYZ", &material[..]] {
        let s = std::str::from_utf8(secret).unwrap();
        assert!(!text.contains(s), "{s} leaked");
        assert!(!text.contains(&ferrohsm_core::b64::encode(secret)), "{s} leaked as base64");
    }
    assert!(!text.contains(&ct.ciphertext[8..]), "ciphertext leaked");
    assert!(!text.contains(&wrapped.wrapped[8..]), "wrapped key leaked");
}

#[tokio::test]
async fn the_export_verifies_with_the_keys_the_hsm_hands_to_auditors() {
    let hsm = common::memory_hsm().await;
    let ctx = caller();
    for _ in 0..5 {
        hsm.create_key(&ctx, CreateKey::new(Algorithm::Ed25519)).await.unwrap();
    }
    let cp = hsm.checkpoint_audit(&ctx).await.unwrap().unwrap();
    assert_eq!(cp.seq, 5);
    let mut out = Vec::new();
    hsm.export_audit(&ctx, &mut out).await.unwrap();
    let der = ferrohsm_crypto::decode_pem(hsm.audit_public_key_pem(), "PUBLIC KEY").unwrap();
    let report = Verifier::new(Arc::new(AwsLcProvider))
        .hmac_key(hsm.danger_audit_hmac_key().expose())
        .public_key(&der)
        .unwrap()
        .trusted_checkpoint(cp)
        .verify_reader("export", out.as_slice())
        .unwrap();
    // 5 creates and the checkpoint request (recorded after the checkpoint it made).
    assert_eq!((report.records, report.signatures_checked), (6, 1));
}

#[tokio::test]
async fn a_durable_log_survives_restarts_and_a_closed_log_withholds_answers() {
    let dir = tempfile::tempdir().unwrap();
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let open = |seed: u8| {
        let provider = provider.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let keys = Arc::new(derive_audit_keys(provider.as_ref(), &master(seed)).unwrap());
            let sink = FileAuditSink::open(FileAuditConfig::new(dir.join("audit")), provider, keys)
                .unwrap();
            Hsm::builder()
                .store(Arc::new(FileKeyStore::open(dir.join("keys")).await.unwrap()))
                .audit(Arc::new(sink))
                .master_key(master(seed))
                .build()
                .await
                .unwrap()
        }
    };
    let ctx = caller();
    let hsm = open(6).await;
    let key = hsm.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let k = KeyRef::Id(key.id);
    hsm.encrypt(&ctx, &k, b"x", b"").await.unwrap();
    hsm.shutdown().await.unwrap();
    // After shutdown nothing is answered without its record.
    let refused = hsm.encrypt(&ctx, &k, b"x", b"").await.unwrap_err();
    assert_eq!(refused.code(), "unavailable");
    drop(hsm);

    let hsm = open(6).await;
    hsm.encrypt(&ctx, &k, b"y", b"").await.unwrap();
    hsm.shutdown().await.unwrap();
    let hmac = hsm.danger_audit_hmac_key();
    drop(hsm);
    let keys = derive_audit_keys(provider.as_ref(), &master(6)).unwrap();
    let verifier = Verifier::new(provider.clone())
        .hmac_key(hmac.expose())
        .public_key(keys.public_key_der())
        .unwrap();
    let mut run = verifier.start();
    for file in ferrohsm_audit::segment_files(&dir.path().join("audit")).unwrap() {
        run.feed("segment", std::io::BufReader::new(std::fs::File::open(file).unwrap())).unwrap();
    }
    let report = run.finish().unwrap();
    assert_eq!(report.records, 3, "create, encrypt, encrypt (the refused one left no record)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_the_caller_abandons_is_still_recorded() {
    let hsm = common::memory_hsm().await;
    let ctx = caller();
    // RSA-4096 generation takes far longer than the caller is willing to wait.
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(5),
        hsm.create_key(&ctx, CreateKey::new(Algorithm::Rsa4096)),
    )
    .await;
    assert!(gave_up.is_err(), "the call should not have finished in 5 ms");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = records(&hsm).await;
        if let Some(r) = log.iter().find(|r| r.action == "create_key") {
            assert_eq!(r.outcome.as_str(), "error");
            assert!(r.message.as_deref().unwrap().starts_with("abandoned"), "{:?}", r.message);
            assert_eq!(r.request_id, "build-4711");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no record of the abandoned call");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
