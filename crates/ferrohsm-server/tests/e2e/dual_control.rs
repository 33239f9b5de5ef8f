//! Dual control and rate limiting over HTTP (SPEC §6, §7).

use serde_json::json;

use crate::harness::{Options, TestServer};

const POLICY: &str = r#"
version = 1
[[tag_policy]]
name = "production"
match = { env = "prod" }
[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "1h"

[rate_limit]
capacity = 1000
refill_per_second = 1000
"#;

#[tokio::test]
async fn destruction_needs_two_other_approvers_and_runs_once() {
    let server =
        TestServer::start_with(Options { policy: Some(POLICY.into()), ..Options::default() }).await;
    let olga = server.api(&server.token("olga", &["operator"]));
    let ada = server.api(&server.token("ada", &["admin"]));
    let bob = server.api(&server.token("bob", &["operator"]));
    let eve = server.api(&server.token("eve", &["operator"]));
    olga.create(json!({"algorithm": "aes-256-gcm", "name": "prod-key", "tags": {"env": "prod"}}))
        .await;

    // The request opens an approval: 202, Location and X-Approval-Id.
    let r = olga.post("/v1/keys/prod-key/destroy", json!({"grace_seconds": 3600})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["location"], format!("/v1/approvals/{id}").as_str());
    assert_eq!(r.headers["x-approval-id"], id.as_str());
    assert_eq!((r.body["state"].as_str(), r.body["quorum"].as_u64()), (Some("pending"), Some(2)));

    let with_id = |api: &crate::harness::Api, body: serde_json::Value| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.send("POST", "/v1/keys/prod-key/destroy", Some(body), &[("x-approval-id", &id)])
                .await
        }
    };
    // Not yet approved.
    assert_eq!(with_id(&olga, json!({"grace_seconds": 3600})).await.status, 409);
    // The requester cannot approve; an approver counts once; approvals are visible.
    assert_eq!(
        olga.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await.code(),
        "forbidden"
    );
    assert_eq!(
        ada.post(&format!("/v1/approvals/{id}/approve"), json!({"comment": "ok"})).await.status,
        200
    );
    assert_eq!(
        ada.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await.status,
        409
    );
    let r = bob.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("approved")));
    assert_eq!(ada.get(&format!("/v1/approvals/{id}")).await.body["approvals"], 2);
    assert_eq!(ada.get("/v1/approvals").await.body["approvals"][0]["id"], id.as_str());

    // Someone else cannot use it; other parameters are refused; the requester runs it once.
    assert_eq!(with_id(&eve, json!({"grace_seconds": 3600})).await.status, 403);
    assert_eq!(with_id(&olga, json!({"grace_seconds": 60})).await.status, 400);
    let r = with_id(&olga, json!({"grace_seconds": 3600})).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("pending_destruction")),
        "{}",
        r.body
    );
    let r = with_id(&olga, json!({"grace_seconds": 3600})).await;
    assert_eq!(r.status, 409, "a replay must be refused: {}", r.body);
    assert_eq!(
        olga.send("POST", "/v1/keys/prod-key/destroy", None, &[("x-approval-id", "nope")])
            .await
            .status,
        400
    );

    // A denial rejects a new request.
    olga.send("POST", "/v1/keys/prod-key/cancel-destroy", None, &[]).await;
    let r = olga.send("POST", "/v1/keys/prod-key/destroy", None, &[]).await;
    let second = r.body["id"].as_str().unwrap().to_owned();
    let r =
        bob.post(&format!("/v1/approvals/{second}/deny"), json!({"comment": "not today"})).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("denied")));
    let r =
        olga.send("POST", "/v1/keys/prod-key/destroy", None, &[("x-approval-id", &second)]).await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let policy = "version = 1\n[rate_limit]\ncapacity = 5\nrefill_per_second = 0.2\n";
    let server =
        TestServer::start_with(Options { policy: Some(policy.into()), ..Options::default() }).await;
    let api = server.api(&server.token("greedy", &["operator"]));
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = api.get("/v1/keys").await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited");
            let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=10).contains(&retry), "{retry}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    // Requests without a valid token are limited per source address, whatever the policy's
    // limits: a burst of 100, then 10 per second; the ones over the limit are refused with 429
    // (and counted, not each audited).
    let client = server.client();
    let mut anonymous = Vec::new();
    for _ in 0..2000 {
        let r = client.get(format!("{}/v1/keys", server.url)).send().await.unwrap();
        anonymous.push(r.status().as_u16());
        if r.status() == 429 {
            break;
        }
    }
    assert!(anonymous[..100].iter().all(|s| *s == 401), "{anonymous:?}");
    assert_eq!(anonymous.last(), Some(&429), "never limited");
    // Another actor has its own bucket.
    let other = server.api(&server.token("patient", &["operator"]));
    assert_eq!(other.get("/v1/keys").await.status, 200);
    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ferrohsm_rate_limited_total"), "{metrics}");
}

/// Any operation on a key can be put under dual control, and its 202 answer is the approval the
/// contract types describe; the repeat with `X-Approval-Id` answers as the contract says.
#[tokio::test]
async fn a_dual_controlled_encrypt_answers_202_with_a_typed_approval() {
    let policy =
        POLICY.replace(r#"operations = ["schedule_destruction"]"#, r#"operations = ["encrypt"]"#);
    let server =
        TestServer::start_with(Options { policy: Some(policy), ..Options::default() }).await;
    let olga = server.api(&server.token("olga", &["operator"]));
    let ada = server.api(&server.token("ada", &["admin"]));
    let bob = server.api(&server.token("bob", &["operator"]));
    olga.create(json!({"algorithm": "aes-256-gcm", "name": "prod-enc", "tags": {"env": "prod"}}))
        .await;
    let body = json!({"plaintext": "aGVsbG8="});
    let r = olga.post("/v1/keys/prod-enc/encrypt", body.clone()).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let approval: ferrohsm_api::ApprovalInfo = serde_json::from_value(r.body.clone()).unwrap();
    assert_eq!(approval.operation, ferrohsm_api::Operation::Encrypt);
    assert_eq!(approval.state, ferrohsm_api::ApprovalState::Pending);
    let id = approval.id.to_string();
    assert_eq!(r.headers["x-approval-id"], id.as_str());
    for approver in [&ada, &bob] {
        let r = approver.send("POST", &format!("/v1/approvals/{id}/approve"), None, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r =
        olga.send("POST", "/v1/keys/prod-enc/encrypt", Some(body), &[("x-approval-id", &id)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let encrypted: ferrohsm_api::Encrypted = serde_json::from_value(r.body).unwrap();
    assert!(encrypted.ciphertext.starts_with("fhsm:v1:"));
}
