//! Keyset and certificate reload while serving.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::harness::{AUDIENCE, Pki, TestServer, keyset_toml};

async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_keyset_is_picked_up_and_a_broken_one_ignored() {
    let server = TestServer::start().await;
    let new_secret: Vec<u8> = (100u8..140).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rotated".into());
    let claims = json!({"sub": "ci", "roles": ["operator"], "iss": "https://ci.example", "aud": AUDIENCE, "exp": now + 600, "iat": now});
    let token = encode(&header, &claims, &EncodingKey::from_secret(&new_secret)).unwrap();
    let get = || {
        let req = server.client().get(format!("{}/v1/keys", server.url)).bearer_auth(&token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get().await, 401);

    let mut text = keyset_toml(&server.signers, server.dir.path());
    text.push_str(&format!(
        "\n[[key]]\nkid = \"rotated\"\nalgorithm = \"HS256\"\nissuer = \"https://ci.example\"\nroles = [\"operator\"]\nsecret = \"{}\"\n",
        ferrohsm_core::b64::encode(&new_secret)
    ));
    std::fs::write(&server.keyset_path, &text).unwrap();
    assert!(eventually(async || get().await == 200).await, "the new key was not picked up");

    // A broken file leaves the previous keyset in force, and health says so (issue 11).
    std::fs::write(&server.keyset_path, "this is not toml [[[").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get().await, 200);
    let health = server.client().get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["keyset"]["status"], "error", "{health}");
    let detail = health["keyset"]["detail"].as_str().unwrap();
    assert!(detail.contains("stays in force") && detail.contains("keyset"), "{detail}");
    assert_eq!(health["jobs"]["status"], "error", "{health}");
    assert!(health["jobs"]["detail"].as_str().unwrap().contains("keyset-reload failed at"));

    // Removing the key revokes its tokens at once, although the server had verified (and
    // remembered) this one.
    std::fs::write(&server.keyset_path, keyset_toml(&server.signers, server.dir.path())).unwrap();
    assert!(eventually(async || get().await == 401).await, "the removed key still works");
    let healthy = async || {
        let url = format!("{}/healthz", server.url);
        server.client().get(url).send().await.unwrap().status() == 200
    };
    assert!(eventually(healthy).await, "health did not recover with a good keyset");
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    let server = TestServer::start().await;
    let token = server.token("ada", &["admin"]);
    // One client on the old certificate, connection kept alive.
    let old = server.client();
    let url = format!("{}/v1/keys", server.url);
    assert_eq!(old.get(&url).bearer_auth(&token).send().await.unwrap().status(), 200);

    // Replace the certificate with one from a new CA.
    let new_pki = Pki::new("rotated server CA");
    let (cert, key, _) = new_pki.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(&server.key_path, key).unwrap();
    std::fs::write(&server.cert_path, cert).unwrap();
    let ca = reqwest::Certificate::from_pem(new_pki.ca_pem.as_bytes()).unwrap();
    let fresh = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let picked_up = eventually(async || {
        matches!(fresh.get(&url).bearer_auth(&token).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(picked_up, "new connections did not get the new certificate");
    // The old connection still works (it was not dropped)…
    assert_eq!(old.get(&url).bearer_auth(&token).send().await.unwrap().status(), 200);
    // …while a new connection that trusts only the old CA is refused.
    let ca = reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap();
    let stale = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    assert!(stale.get(&url).bearer_auth(&token).send().await.is_err());
}
