//! Every kind of bad input gets its typed error, never a panic, and leaves the store exactly
//! as it was.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{ctx, hsm_on, snapshot};
use ferrohsm_core::{
    Algorithm, CreateKey, Error, Hsm, KeyId, KeyRef, RevocationReason, SignInput, SignatureScheme,
    Usage,
};
use ferrohsm_store::MemoryKeyStore;
use time::Duration;

struct Fixture {
    hsm: Hsm,
    aes: KeyRef,
    aes_encrypt_only: KeyRef,
    ec: KeyRef,
    ed: KeyRef,
    revoked: KeyRef,
    compromised: KeyRef,
    destroyed: KeyRef,
    ciphertext: String,
}

async fn fixture() -> Fixture {
    let hsm = Hsm::builder()
        .store(Arc::new(MemoryKeyStore::new()))
        .master_key(common::master(9))
        .max_payload(4096)
        .build()
        .await
        .unwrap();
    let mk = |req: CreateKey| {
        let hsm = hsm.clone();
        async move { KeyRef::Id(hsm.create_key(&ctx(), req).await.unwrap().id) }
    };
    let aes = mk(CreateKey::new(Algorithm::Aes256Gcm).name("aes")).await;
    let aes_encrypt_only =
        mk(CreateKey::new(Algorithm::Aes256Gcm).usages(&[Usage::Encrypt, Usage::Decrypt])).await;
    let ec = mk(CreateKey::new(Algorithm::EcP256)).await;
    let ed = mk(CreateKey::new(Algorithm::Ed25519)).await;
    let revoked = mk(CreateKey::new(Algorithm::Aes256Gcm)).await;
    hsm.revoke_key(&ctx(), &revoked, RevocationReason::CessationOfOperation, None).await.unwrap();
    let compromised = mk(CreateKey::new(Algorithm::Aes256Gcm)).await;
    hsm.revoke_key(&ctx(), &compromised, RevocationReason::Compromised, None).await.unwrap();
    let destroyed = mk(CreateKey::new(Algorithm::Aes256Gcm)).await;
    hsm.schedule_destruction(&ctx(), &destroyed, Some(Duration::ZERO)).await.unwrap();
    hsm.purge_due(&ctx(), time::OffsetDateTime::now_utc() + Duration::seconds(1)).await.unwrap();
    let ciphertext = hsm.encrypt(&ctx(), &aes, b"hello", b"right").await.unwrap().ciphertext;
    Fixture { hsm, aes, aes_encrypt_only, ec, ed, revoked, compromised, destroyed, ciphertext }
}

/// Runs `op`, checks its error code, and checks the store did not change.
async fn refused<T: std::fmt::Debug>(
    f: &Fixture,
    code: &str,
    op: impl std::future::Future<Output = Result<T, Error>>,
) {
    let before = snapshot(&f.hsm).await;
    let result = op.await;
    match &result {
        Err(e) => assert_eq!(e.code(), code, "wrong code for {e}"),
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
    }
    assert_eq!(snapshot(&f.hsm).await, before, "a refused operation changed the store");
}

#[tokio::test]
async fn wrong_algorithm_for_the_operation() {
    let f = fixture().await;
    let c = ctx();
    refused(&f, "unsupported", f.hsm.encrypt(&c, &f.ec, b"x", b"")).await;
    refused(&f, "unsupported", f.hsm.wrap(&c, &f.ed, b"x")).await;
    refused(&f, "unsupported", f.hsm.sign(&c, &f.aes, SignInput::Message(b"x"), None)).await;
    refused(&f, "unsupported", f.hsm.public_key(&c, &f.aes, None)).await;
    refused(&f, "unsupported", f.hsm.decrypt(&c, &f.ec, &f.ciphertext, b"right")).await;
    refused(
        &f,
        "invalid_request",
        f.hsm.sign(&c, &f.ec, SignInput::Message(b"x"), Some(SignatureScheme::RsaPssSha256)),
    )
    .await;
    refused(&f, "invalid_request", f.hsm.sign(&c, &f.ec, SignInput::Digest(&[0u8; 20]), None))
        .await;
    refused(&f, "unsupported", f.hsm.sign(&c, &f.ed, SignInput::Digest(&[0u8; 32]), None)).await;
}

#[tokio::test]
async fn usage_the_key_does_not_allow() {
    let f = fixture().await;
    refused(&f, "invalid_usage", f.hsm.wrap(&ctx(), &f.aes_encrypt_only, b"key bytes")).await;
    refused(
        &f,
        "invalid_usage",
        f.hsm.unwrap(&ctx(), &f.aes_encrypt_only, "fhsm:v1:AAAAAAAAAAAAAAAAAAAAAA=="),
    )
    .await;
}

#[tokio::test]
async fn revoked_compromised_and_destroyed_keys() {
    let f = fixture().await;
    let c = ctx();
    refused(&f, "invalid_state", f.hsm.encrypt(&c, &f.revoked, b"x", b"")).await;
    refused(&f, "invalid_state", f.hsm.rotate_key(&c, &f.revoked)).await;
    refused(&f, "invalid_state", f.hsm.encrypt(&c, &f.compromised, b"x", b"")).await;
    let ct = f.ciphertext.clone();
    refused(&f, "invalid_state", f.hsm.decrypt(&c, &f.compromised, &ct, b"right")).await;
    refused(&f, "invalid_state", f.hsm.encrypt(&c, &f.destroyed, b"x", b"")).await;
    refused(&f, "invalid_state", f.hsm.decrypt(&c, &f.destroyed, &ct, b"right")).await;
    refused(&f, "invalid_state", f.hsm.rollback_key(&c, &f.destroyed, 1)).await;
    refused(&f, "invalid_state", f.hsm.cancel_destruction(&c, &f.aes)).await;
    refused(
        &f,
        "invalid_state",
        f.hsm.revoke_key(&c, &f.compromised, RevocationReason::Compromised, None),
    )
    .await;
}

#[tokio::test]
async fn malformed_truncated_and_foreign_ciphertexts() {
    let f = fixture().await;
    let c = ctx();
    let good = f.ciphertext.clone();
    let body_start = "fhsm:v1:".len();
    let cases = [
        String::new(),
        "garbage".to_string(),
        good.replacen("fhsm:v1:", "fhsm:v01:", 1),
        good.replacen("fhsm:", "vault:", 1),
        good[..body_start + 4].to_string(), // too short to hold nonce and tag
        good[..good.len() - 4].to_string(), // truncated body
        format!("{}!", &good),              // not base64
        good.replacen("fhsm:v1:", "fhsm:v9:", 1), // a version that does not exist
        good.replacen("fhsm:v1:", "fhsm:v0:", 1),
    ];
    for bad in &cases {
        refused(&f, "invalid_ciphertext", f.hsm.decrypt(&c, &f.aes, bad, b"right")).await;
    }
    // A flipped bit, the wrong AAD, or another key's ciphertext: opaque failure.
    let mut flipped = good.clone().into_bytes();
    let at = body_start + 20;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    refused(
        &f,
        "invalid_ciphertext",
        f.hsm.decrypt(&c, &f.aes, std::str::from_utf8(&flipped).unwrap(), b"right"),
    )
    .await;
    refused(&f, "invalid_ciphertext", f.hsm.decrypt(&c, &f.aes, &good, b"wrong")).await;
    refused(&f, "invalid_ciphertext", f.hsm.decrypt(&c, &f.aes, &good, b"")).await;
    refused(&f, "invalid_ciphertext", f.hsm.decrypt(&c, &f.aes_encrypt_only, &good, b"right"))
        .await;
    refused(&f, "invalid_ciphertext", f.hsm.unwrap(&c, &f.aes, &good)).await;
    refused(&f, "invalid_ciphertext", f.hsm.unwrap(&c, &f.aes, "fhsm:v1:AAAAAAAAAAAAAAAAAAAAAA=="))
        .await;
}

#[tokio::test]
async fn oversized_inputs() {
    let f = fixture().await;
    let c = ctx();
    let big = vec![0u8; 4097];
    refused(&f, "payload_too_large", f.hsm.encrypt(&c, &f.aes, &big, b"")).await;
    refused(&f, "payload_too_large", f.hsm.encrypt(&c, &f.aes, b"x", &big)).await;
    refused(&f, "payload_too_large", f.hsm.sign(&c, &f.ec, SignInput::Message(&big), None)).await;
    refused(&f, "payload_too_large", f.hsm.wrap(&c, &f.aes, &big)).await;
    let huge = format!("fhsm:v1:{}", "A".repeat(8192));
    refused(&f, "payload_too_large", f.hsm.decrypt(&c, &f.aes, &huge, b"")).await;
    // The limit itself is accepted.
    f.hsm.encrypt(&c, &f.aes, &big[..4096], b"").await.unwrap();
}

#[tokio::test]
async fn invalid_names_tags_and_requests() {
    let f = fixture().await;
    let c = ctx();
    for name in [
        "",
        "UPPER",
        "-lead",
        "has space",
        "0190a5c4-1111-7000-8000-000000000001",
        &"x".repeat(129),
    ] {
        refused(
            &f,
            "invalid_request",
            f.hsm.create_key(&c, CreateKey::new(Algorithm::Aes256Gcm).name(name)),
        )
        .await;
    }
    refused(
        &f,
        "invalid_request",
        f.hsm.create_key(&c, CreateKey::new(Algorithm::Aes256Gcm).tag("a:b", "x")),
    )
    .await;
    let many: BTreeMap<String, String> = (0..51).map(|i| (format!("t{i}"), "v".into())).collect();
    refused(
        &f,
        "invalid_request",
        f.hsm.create_key(&c, CreateKey { tags: many, ..CreateKey::new(Algorithm::Aes256Gcm) }),
    )
    .await;
    refused(
        &f,
        "invalid_request",
        f.hsm.create_key(&c, CreateKey::new(Algorithm::EcP256).usages(&[Usage::Encrypt])),
    )
    .await;
    refused(
        &f,
        "invalid_request",
        f.hsm.create_key(&c, CreateKey::new(Algorithm::EcP256).usages(&[])),
    )
    .await;
    refused(&f, "conflict", f.hsm.create_key(&c, CreateKey::new(Algorithm::EcP256).name("aes")))
        .await;
    refused(&f, "invalid_request", f.hsm.wrap(&c, &f.aes, b"")).await;
    assert_eq!("Bad Name".parse::<KeyRef>().unwrap_err().code(), "invalid_request");
    // Unknown keys, by id and by name.
    refused(&f, "not_found", f.hsm.describe_key(&c, &KeyRef::Id(KeyId::generate()))).await;
    refused(&f, "not_found", f.hsm.encrypt(&c, &"no-such-key".parse().unwrap(), b"x", b"")).await;
}

#[tokio::test]
async fn rollback_to_a_missing_version() {
    let f = fixture().await;
    for version in [0, 2, u32::MAX] {
        refused(&f, "not_found", f.hsm.rollback_key(&ctx(), &f.aes, version)).await;
    }
    refused(
        &f,
        "not_found",
        f.hsm.verify(&ctx(), &f.ec, SignInput::Message(b"m"), &[0u8; 70], None, Some(5)),
    )
    .await;
    refused(&f, "not_found", f.hsm.public_key(&ctx(), &f.ec, Some(2))).await;
}

#[tokio::test]
async fn garbage_signatures_are_invalid_not_errors() {
    let f = fixture().await;
    for sig in [&[][..], &[0u8; 1][..], &[0x30u8; 72][..], &[0xffu8; 4096][..]] {
        let v =
            f.hsm.verify(&ctx(), &f.ec, SignInput::Message(b"m"), sig, None, None).await.unwrap();
        assert!(!v.valid);
        let v =
            f.hsm.verify(&ctx(), &f.ed, SignInput::Message(b"m"), sig, None, None).await.unwrap();
        assert!(!v.valid);
    }
}

#[tokio::test]
async fn an_hsm_needs_a_store_and_a_master_key() {
    assert_eq!(
        Hsm::builder().master_key(common::master(1)).build().await.unwrap_err().code(),
        "invalid_request"
    );
    assert_eq!(
        Hsm::builder().store(Arc::new(MemoryKeyStore::new())).build().await.unwrap_err().code(),
        "invalid_request"
    );
    let _ = hsm_on(Arc::new(MemoryKeyStore::new()), 2).await;
}

#[tokio::test]
async fn an_out_of_range_grace_period_is_refused() {
    let f = fixture().await;
    for grace in [time::Duration::MAX, time::Duration::days(40_000), time::Duration::seconds(-1)] {
        refused(&f, "invalid_request", f.hsm.schedule_destruction(&ctx(), &f.aes, Some(grace)))
            .await;
    }
}
