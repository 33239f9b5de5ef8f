//! Keys held by a PKCS#11 token (SoftHSM2 in a temporary directory) through REST: created
//! with `"custody": "pkcs11"`, used, rotated (a new handle), destroyed (the handle destroyed
//! in the token), signatures checked by openssl, and the vault in health and audit.
//!
//! Each test runs itself again in a child process with `SOFTHSM2_CONF` set
//! (`ferrohsm_pkcs11::testing`).

use std::process::Command;

use ferrohsm_core::{PinSource, RequestContext, VaultConfig};
use ferrohsm_pkcs11::testing;
use serde_json::json;

use crate::harness::{Options, TestServer, b64, unb64};

const LABEL: &str = "ferrohsm-e2e";
const PIN: &str = "2468";

fn vault_options() -> Options {
    Options {
        vault: Some(VaultConfig {
            module: testing::SOFTHSM2_MODULE.into(),
            token_label: LABEL.into(),
            pin: PinSource::Env("FERROHSM_TEST_PKCS11_PIN".into()),
        }),
        ..Options::default()
    }
}

#[tokio::test]
async fn token_held_keys_work_through_rest_and_are_destroyed_in_the_token() {
    let test = "pkcs11::token_held_keys_work_through_rest_and_are_destroyed_in_the_token";
    let env = [("FERROHSM_TEST_PKCS11_PIN", PIN)];
    let Some(dir) = testing::rerun_with_token(test, LABEL, PIN, &env) else { return };
    let server = TestServer::start_with(vault_options()).await;
    let olive = server.api(&server.token("olive", &["operator"]));

    // AES-256-GCM in the token: encrypt, decrypt, wrap, unwrap, rotate.
    let r = olive
        .post(
            "/v1/keys",
            json!({"algorithm": "aes-256-gcm", "name": "in-token", "custody": "pkcs11"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["custody"], "pkcs11");
    let aes = r.body["id"].as_str().unwrap().to_owned();
    let enc = olive
        .post(
            &format!("/v1/keys/{aes}/encrypt"),
            json!({"plaintext": b64(b"card 4111"), "aad": b64(b"order-7")}),
        )
        .await;
    assert_eq!(enc.status, 200, "{}", enc.body);
    let v1 = enc.body["ciphertext"].as_str().unwrap().to_owned();
    let dec = olive
        .post(&format!("/v1/keys/{aes}/decrypt"), json!({"ciphertext": v1, "aad": b64(b"order-7")}))
        .await;
    assert_eq!(unb64(dec.body["plaintext"].as_str().unwrap()), b"card 4111");
    let bad = olive
        .post(&format!("/v1/keys/{aes}/decrypt"), json!({"ciphertext": v1, "aad": b64(b"order-8")}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let data_key = [9u8; 32];
    let wrapped =
        olive.post(&format!("/v1/keys/{aes}/wrap"), json!({"key_material": b64(&data_key)})).await;
    assert_eq!(wrapped.status, 200, "{}", wrapped.body);
    let unwrapped = olive
        .post(&format!("/v1/keys/{aes}/unwrap"), json!({"wrapped": wrapped.body["wrapped"]}))
        .await;
    assert_eq!(unb64(unwrapped.body["key_material"].as_str().unwrap()), data_key);
    let odd =
        olive.post(&format!("/v1/keys/{aes}/wrap"), json!({"key_material": b64(&[1; 31])})).await;
    assert_eq!(odd.status, 400, "the token wraps multiples of 8 bytes: {}", odd.body);
    let rotated = olive.post(&format!("/v1/keys/{aes}/rotate"), json!({})).await;
    assert_eq!(rotated.body["current_version"], 2, "{}", rotated.body);
    let dec = olive
        .post(&format!("/v1/keys/{aes}/decrypt"), json!({"ciphertext": v1, "aad": b64(b"order-7")}))
        .await;
    assert_eq!(dec.status, 200, "version 1 still decrypts after rotation: {}", dec.body);
    let enc2 =
        olive.post(&format!("/v1/keys/{aes}/encrypt"), json!({"plaintext": b64(b"x")})).await;
    assert!(enc2.body["ciphertext"].as_str().unwrap().starts_with("fhsm:v2:"));

    // Signatures made in the token verify with openssl against the exported public key.
    for (algorithm, digest) in
        [("ec-p256", "-sha256"), ("ec-p384", "-sha384"), ("rsa-2048", "-sha256")]
    {
        let r = olive.post("/v1/keys", json!({"algorithm": algorithm, "custody": "pkcs11"})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let message = format!("release built by {algorithm}");
        let signed = olive
            .post(&format!("/v1/keys/{id}/sign"), json!({"message": b64(message.as_bytes())}))
            .await;
        assert_eq!(signed.status, 200, "{}", signed.body);
        let public = olive.get(&format!("/v1/keys/{id}/public")).await;
        let (pem, msg, sig) = (dir.join("public.pem"), dir.join("message"), dir.join("signature"));
        std::fs::write(&pem, public.body["pem"].as_str().unwrap()).unwrap();
        std::fs::write(&msg, &message).unwrap();
        std::fs::write(&sig, unb64(signed.body["signature"].as_str().unwrap())).unwrap();
        let out = Command::new("openssl")
            .args(["dgst", digest, "-verify"])
            .arg(&pem)
            .arg("-signature")
            .arg(&sig)
            .arg(&msg)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let verified = olive
            .post(
                &format!("/v1/keys/{id}/verify"),
                json!({"message": b64(message.as_bytes()), "signature": signed.body["signature"]}),
            )
            .await;
        assert_eq!(verified.body["valid"], true, "{}", verified.body);
    }

    // What the token cannot hold is refused when the key is created; sealed keys still work.
    let ed = olive.post("/v1/keys", json!({"algorithm": "ed25519", "custody": "pkcs11"})).await;
    assert_eq!(ed.status, 400, "{}", ed.body);
    let unknown = olive.post("/v1/keys", json!({"algorithm": "ed25519", "custody": "cloud"})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let sealed = olive.post("/v1/keys", json!({"algorithm": "ed25519"})).await;
    assert_eq!(sealed.body["custody"], "sealed", "{}", sealed.body);

    // Health names the vault; the audit record of the creation names the custody.
    let health = olive.get("/healthz").await;
    assert_eq!(health.body["vault"]["status"], "ok", "{}", health.body);
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let records = auditor.get(&format!("/v1/audit?action=create_key&key_id={aes}")).await;
    let message = records.body["records"][0]["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("custody pkcs11"), "{}", records.body);
    // So do the records of the operations the token performed.
    for action in ["encrypt", "decrypt", "wrap", "unwrap", "sign"] {
        let query = format!("/v1/audit?action={action}&outcome=success&limit=1");
        let records = auditor.get(&query).await;
        let message = records.body["records"][0]["message"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("custody pkcs11"), "{action}: {}", records.body);
    }

    // A key whose token objects were deleted behind FerroHSM's back answers an integrity
    // failure (the record names material that is gone), not a bad request.
    let r = olive
        .post(
            "/v1/keys",
            json!({"algorithm": "aes-256-gcm", "name": "vanishing", "custody": "pkcs11"}),
        )
        .await;
    let vanishing = r.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{vanishing}/encrypt");
    assert_eq!(olive.post(&path, json!({"plaintext": b64(b"x")})).await.status, 200);
    assert_eq!(testing::destroy_labelled(LABEL, PIN, "ferrohsm:vanishing").unwrap(), 1);
    let gone = olive.post(&path, json!({"plaintext": b64(b"x")})).await;
    assert_eq!((gone.status, gone.code()), (500, "integrity"), "{}", gone.body);

    // Destruction: the purge destroys both versions' handles in the token.
    assert_eq!(
        testing::objects_labelled(LABEL, PIN, "ferrohsm:in-token").unwrap(),
        2,
        "two versions"
    );
    let scheduled =
        olive.post(&format!("/v1/keys/{aes}/destroy"), json!({"grace_seconds": 0})).await;
    assert_eq!(scheduled.status, 200, "{}", scheduled.body);
    let hsm = server.hsm();
    let purged = hsm
        .purge_due(&RequestContext::local("scheduler"), time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    let info = olive.get(&format!("/v1/keys/{aes}")).await;
    assert_eq!(info.body["state"], "destroyed");
    assert_eq!(info.body["custody"], "pkcs11", "custody stays on the tombstone");
    let records = auditor.get(&format!("/v1/audit?action=purge_key&key_id={aes}")).await;
    let attestation = records.body["records"][0]["message"].as_str().unwrap_or("").to_owned();
    assert!(attestation.contains("destroyed in the pkcs11 key vault"), "{}", records.body);
    let left = testing::objects_labelled(LABEL, PIN, "ferrohsm:in-token").unwrap();
    assert_eq!(left, 0, "both versions' keys are gone from the token");
}

#[tokio::test]
async fn a_missing_token_is_a_clear_error_at_start_up_and_a_degraded_server_mid_run() {
    let test = "pkcs11::a_missing_token_is_a_clear_error_at_start_up_and_a_degraded_server_mid_run";
    let env = [("FERROHSM_TEST_PKCS11_PIN", PIN)];
    let Some(dir) = testing::rerun_with_token(test, LABEL, PIN, &env) else { return };
    // At start-up: what the server would open fails with a message naming the token.
    let mut wrong = vault_options().vault.unwrap();
    wrong.token_label = "not-plugged-in".into();
    let message = wrong.open().map(|_| ()).unwrap_err().to_string();
    assert!(message.contains("not-plugged-in"), "{message}");
    let mut no_pin = vault_options().vault.unwrap();
    no_pin.pin = PinSource::Env("FERROHSM_TEST_NO_SUCH_PIN".into());
    assert!(no_pin.open().is_err());

    let server = TestServer::start_with(vault_options()).await;
    let olive = server.api(&server.token("olive", &["operator"]));
    let held =
        olive.post("/v1/keys", json!({"algorithm": "aes-256-gcm", "custody": "pkcs11"})).await;
    let held = held.body["id"].as_str().unwrap().to_owned();
    let sealed = olive.create(json!({"algorithm": "aes-256-gcm"})).await;
    let encrypt = |key: String| {
        let olive = olive.clone();
        async move {
            olive.post(&format!("/v1/keys/{key}/encrypt"), json!({"plaintext": b64(b"x")})).await
        }
    };
    assert_eq!(encrypt(held.clone()).await.status, 200);

    // Mid-run the token goes away (its module is reset and the token is gone when it starts).
    let (tokens, away) = (dir.join("tokens"), dir.join("away"));
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    testing::reset_module().unwrap();
    let r = encrypt(held.clone()).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.body);
    assert_eq!(encrypt(sealed.clone()).await.status, 200, "sealed keys keep working");
    let health = olive.get("/healthz").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.body["status"], "degraded");
    assert_ne!(health.body["vault"]["status"], "ok", "{}", health.body);

    // It comes back: the server recovers without a restart.
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    assert_eq!(encrypt(held.clone()).await.status, 200);
    let health = olive.get("/healthz").await;
    assert_eq!(health.body["vault"]["status"], "ok", "{}", health.body);
    assert_eq!(health.status, 200, "{}", health.body);
}
