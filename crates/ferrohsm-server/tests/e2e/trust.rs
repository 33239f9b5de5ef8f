//! Issue 10, the trust model, attacked as one admin with one token would: sock-puppet and
//! chained-minting approvals, approvals that show what they approve, approvers from named
//! issuers, token issuance under dual control, revocation on every route, issuer role lists,
//! maximum lifetimes and log injection.

use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::harness::{AUDIENCE, Api, Options, TestServer};

const POLICY: &str = r#"
version = 1
[[tag_policy]]
name = "production"
match = { env = "prod" }
[tag_policy.dual_control]
operations = ["schedule_destruction", "rollback_key"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "1h"

[[tag_policy]]
name = "idp-approved"
match = { env = "ops" }
[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 1
approver_roles = ["admin", "operator"]
expires_after = "1h"
approver_issuers = ["https://ops.example"]

[global_dual_control]
operations = ["issue_token"]
quorum = 1
approver_roles = ["admin"]
expires_after = "1h"
approver_issuers = ["bootstrap"]

[rate_limit]
capacity = 10000
refill_per_second = 10000
"#;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token from the `https://ops.example` identity provider (the keyset's EdDSA key).
fn ops_token(server: &TestServer, claims: Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ops-eddsa".into());
    let key = EncodingKey::from_ed_pem(server.signers.ed25519.serialize_pem().as_bytes()).unwrap();
    encode(&header, &claims, &key).unwrap()
}

fn ops_claims(sub: &str, roles: &[&str]) -> Value {
    json!({"sub": sub, "roles": roles, "iss": "https://ops.example", "aud": AUDIENCE,
           "exp": now() + 300, "iat": now()})
}

/// Mints a token through the API as `minter`; with global dual control on `issue_token`, the
/// minting is approved by `approver` first. Returns the token.
async fn mint(minter: &Api, approver: &Api, sub: &str, roles: &[&str]) -> String {
    let body = json!({"sub": sub, "roles": roles, "ttl_seconds": 600});
    let r = minter.post("/v1/auth/token", body.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = approver.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = minter.send("POST", "/v1/auth/token", Some(body), &[("x-approval-id", &id)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

async fn vote(api: &Api, id: &str) -> (u16, String) {
    let r = api.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await;
    (r.status, r.body["error"]["message"].as_str().unwrap_or("").to_owned())
}

fn param<'a>(approval: &'a Value, name: &str) -> &'a str {
    approval["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
        .unwrap_or_else(|| panic!("no parameter {name} in {approval}"))
}

#[tokio::test]
async fn one_admin_cannot_satisfy_a_quorum_with_tokens_it_minted() {
    let server =
        TestServer::start_with(Options { policy: Some(POLICY.into()), ..Options::default() }).await;
    let ada = server.api(&server.token("ada", &["admin"]));
    let root = server.api(&server.token("root", &["admin"]));
    ada.create(json!({"algorithm": "aes-256-gcm", "name": "vault", "tags": {"env": "prod"}})).await;

    // The attack: destroy at once, then have sock puppets approve.
    let r = ada.post("/v1/keys/vault/destroy", json!({"grace_seconds": 0})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // The approval shows exactly what will run, in the 202 body and to every approver.
    assert_eq!(param(&r.body, "grace_seconds"), "0 (purged at the next scheduler run; requested)");
    assert_eq!(param(&r.body, "key_name"), "vault");
    assert_eq!(param(&r.body, "key_tags"), "env=prod");
    assert!(r.body["summary"].as_str().unwrap().contains("grace_seconds=0"), "{}", r.body);

    // Minting itself needs one bootstrap admin's approval here (root approves); the minted
    // tokens still lead back to ada.
    let puppet_1 = server.api(&mint(&ada, &root, "puppet-1", &["operator"]).await);
    let puppet_2 = server.api(&mint(&ada, &root, "puppet-2", &["operator"]).await);
    for puppet in [&puppet_1, &puppet_2] {
        let (status, message) = vote(puppet, &id).await;
        assert_eq!(status, 403, "{message}");
        assert!(
            message.contains("ada") && message.contains("nobody in the voter's mint chain"),
            "{message}"
        );
    }
    // Chained minting: ada mints relay (admin), relay mints puppet-3; ada is still behind it.
    let relay = server.api(&mint(&ada, &root, "relay", &["admin"]).await);
    let puppet_3 = server.api(&mint(&relay, &root, "puppet-3", &["operator"]).await);
    let (status, message) = vote(&puppet_3, &id).await;
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("ada"), "{message}");
    let chain = puppet_3.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(chain.body["approvals"], 0, "{}", chain.body);
    let r = ada
        .send(
            "POST",
            "/v1/keys/vault/destroy",
            Some(json!({"grace_seconds": 0})),
            &[("x-approval-id", &id)],
        )
        .await;
    assert_eq!(r.status, 409, "not approved: {}", r.body);
    // The refusals are audited as denied.
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let records = auditor.get("/v1/audit?action=approve&outcome=denied").await;
    assert!(records.body["records"].as_array().unwrap().len() >= 3, "{}", records.body);

    // Two real people still can.
    let bob = server.api(&server.token("bob", &["operator"]));
    let carl = server.api(&server.token("carl", &["admin"]));
    assert_eq!(vote(&bob, &id).await.0, 200);
    assert_eq!(vote(&carl, &id).await.0, 200);
    let r = ada
        .send(
            "POST",
            "/v1/keys/vault/destroy",
            Some(json!({"grace_seconds": 0})),
            &[("x-approval-id", &id)],
        )
        .await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("pending_destruction")));
}

#[tokio::test]
async fn approvers_from_a_named_issuer_only() {
    let server =
        TestServer::start_with(Options { policy: Some(POLICY.into()), ..Options::default() }).await;
    let olga = server.api(&server.token("olga", &["operator"]));
    olga.create(json!({"algorithm": "ec-p256", "name": "ops-key", "tags": {"env": "ops"}})).await;
    let r = olga.post("/v1/keys/ops-key/destroy", json!({"grace_seconds": 86400})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["approver_issuers"], json!(["https://ops.example"]));

    // A bootstrap admin does not count here.
    let ada = server.api(&server.token("ada", &["admin"]));
    let (status, message) = vote(&ada, &id).await;
    assert_eq!(status, 403);
    assert!(message.contains("https://ops.example"), "{message}");
    // An approver from the identity provider does.
    let oscar = server.api(&ops_token(&server, ops_claims("oscar", &["operator"])));
    assert_eq!(vote(&oscar, &id).await.0, 200);
    let shown = ada.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(shown.body["votes"][0]["source"], "https://ops.example", "{}", shown.body);
}

#[tokio::test]
async fn revoked_tokens_are_refused_on_every_route_at_once() {
    let server = TestServer::start().await;
    let root = server.api(&server.token("root", &["admin"]));
    // A token issued through the API (its jti and sid come back), used once so it is cached.
    let r = root.post("/v1/auth/token", json!({"sub": "temp", "roles": ["admin"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let temp = server.api(r.body["token"].as_str().unwrap());
    let jti = r.body["jti"].as_str().unwrap().to_owned();
    temp.create(json!({"algorithm": "aes-256-gcm", "name": "k1"})).await;
    assert_eq!(temp.get("/v1/keys").await.status, 200);

    // Revoking needs admin.
    let olga = server.api(&server.token("olga", &["operator"]));
    assert_eq!(olga.post("/v1/auth/revoke", json!({"jti": jti})).await.status, 403);
    assert_eq!(root.post("/v1/auth/revoke", json!({})).await.status, 400);
    assert_eq!(root.post("/v1/auth/revoke", json!({"jti": "a", "sid": "b"})).await.status, 400);
    assert_eq!(root.post("/v1/auth/revoke", json!({"jti": "bad\nvalue"})).await.status, 400);
    let r = root.post("/v1/auth/revoke", json!({"jti": jti, "reason": "laptop lost"})).await;
    assert_eq!((r.status, r.body["matches"].as_str()), (200, Some("jti")), "{}", r.body);

    let routes: &[(&str, &str, Option<Value>)] = &[
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", Some(json!({"algorithm": "aes-256-gcm"}))),
        ("GET", "/v1/keys/k1", None),
        ("POST", "/v1/keys/k1/rotate", None),
        ("POST", "/v1/keys/k1/encrypt", Some(json!({"plaintext": "aGk="}))),
        ("POST", "/v1/keys/k1/destroy", Some(json!({"grace_seconds": 60}))),
        ("GET", "/v1/approvals", None),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/audit/verify", None),
        ("GET", "/v1/audit/export", None),
        ("POST", "/v1/auth/token", Some(json!({"sub": "x", "roles": ["admin"]}))),
        ("POST", "/v1/auth/revoke", Some(json!({"sid": "s"}))),
    ];
    for (method, path, body) in routes {
        let r = temp.send(method, path, body.clone(), &[]).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
    }
    // Other tokens are unaffected; the refusals are audited with the reason.
    assert_eq!(root.get("/v1/keys").await.status, 200);
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let records = auditor.get("/v1/audit?action=authenticate").await;
    assert!(records.body.to_string().contains("unauthenticated: revoked"), "{}", records.body);

    // By session: a keyset token with a sid, cached, then its session revoked.
    let mut claims = ops_claims("oscar", &["operator"]);
    claims["sid"] = json!("session-77");
    let oscar = server.api(&ops_token(&server, claims));
    assert_eq!(oscar.get("/v1/keys").await.status, 200);
    assert_eq!(root.post("/v1/auth/revoke", json!({"sid": "session-77"})).await.status, 200);
    assert_eq!(oscar.get("/v1/keys").await.status, 401);
}

#[tokio::test]
async fn issuers_grant_only_their_roles_and_lifetimes_are_bounded() {
    let server = TestServer::start().await;
    // The ops IdP may grant admin and operator, not auditor.
    let auditor = server.api(&ops_token(&server, ops_claims("ivan", &["auditor"])));
    assert_eq!(auditor.get("/v1/keys").await.status, 401);
    let both = server.api(&ops_token(&server, ops_claims("ivan", &["operator", "service"])));
    assert_eq!(both.get("/v1/keys").await.status, 401);
    let fine = server.api(&ops_token(&server, ops_claims("ivan", &["operator"])));
    assert_eq!(fine.get("/v1/keys").await.status, 200);

    // Longer-lived than 24 hours, or without iat: refused.
    let mut long = ops_claims("ivan", &["operator"]);
    long["exp"] = json!(now() + 3 * 86_400);
    assert_eq!(server.api(&ops_token(&server, long)).get("/v1/keys").await.status, 401);
    let mut no_iat = ops_claims("ivan", &["operator"]);
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_eq!(server.api(&ops_token(&server, no_iat)).get("/v1/keys").await.status, 401);
    // A keyset token may not carry a mint chain (only the server records those).
    let mut chained = ops_claims("ivan", &["operator"]);
    chained["minted_by"] = json!([{"iss": "x", "sub": "y"}]);
    assert_eq!(server.api(&ops_token(&server, chained)).get("/v1/keys").await.status, 401);

    let admin = server.api(&server.token("root", &["admin"]));
    let reasons = server.api(&server.token("audrey", &["auditor"])).get("/v1/audit").await;
    let text = reasons.body.to_string();
    for reason in ["role_not_granted", "lifetime_too_long", "missing_claim", "malformed_token"] {
        assert!(text.contains(reason), "{reason} not audited: {text}");
    }
    // The server issues no token longer-lived than the maximum either.
    let r = admin
        .post("/v1/auth/token", json!({"sub": "x", "roles": ["admin"], "ttl_seconds": 90_000}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

/// Captures the text log of the test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn newlines_in_subjects_are_refused_at_minting_and_escaped_from_keysets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // A process-wide subscriber: a thread-local one misses events whose call sites other
    // test threads registered first. Only this test installs one; the others' lines land in
    // the same buffer, which only makes the check below stricter.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let server = TestServer::start().await;
    let root = server.api(&server.token("root", &["admin"]));
    let forged = "eve\n2026-12-01T00:00:00.000000Z  INFO forged: admin granted to mallory";
    let r = root.post("/v1/auth/token", json!({"sub": forged, "roles": ["operator"]})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("invalid_request")));

    // From a trusted issuer it is accepted, but every log line stays one line.
    let eve = server.api(&ops_token(&server, ops_claims(forged, &["operator"])));
    assert_eq!(eve.get("/v1/keys").await.status, 200);
    // A refused operation logs a line inside the operation's span, which names the actor.
    assert_eq!(eve.get("/v1/keys/no-such-key").await.status, 404);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(r#"eve\n2026-12-01"#), "the subject is not in the log escaped: {log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
        "a forged line reached the log: {log}"
    );
}
