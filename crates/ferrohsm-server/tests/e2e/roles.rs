//! The role matrix over HTTP: every role on every route, checked against `Role::allows`.

use ferrohsm_core::{Operation, Role};
use serde_json::{Value, json};

use crate::harness::{Options, TestServer, b64};

const POLICY: &str = r#"
version = 1
[[tag_policy]]
name = "team-a"
match = { team = "a" }
services = ["svc"]
"#;

#[tokio::test]
async fn every_role_on_every_route() {
    let server =
        TestServer::start_with(Options { policy: Some(POLICY.into()), ..Options::default() }).await;
    let admin = server.api(&server.token("ada", &["admin"]));
    admin.create(json!({"algorithm": "aes-256-gcm", "name": "sym", "tags": {"team": "a"}})).await;
    admin.create(json!({"algorithm": "ec-p256", "name": "asym", "tags": {"team": "a"}})).await;
    let ct = admin.post("/v1/keys/sym/encrypt", json!({"plaintext": b64(b"x")})).await.body["ciphertext"].clone();
    let wrapped = admin
        .post("/v1/keys/sym/wrap", json!({"key_material": b64(&[1; 16])}))
        .await
        .body["wrapped"]
        .clone();
    let sig =
        admin.post("/v1/keys/asym/sign", json!({"message": b64(b"m")})).await.body["signature"]
            .clone();
    let approval = uuid::Uuid::now_v7();

    // (method, path, body, operation). Mutating routes run on throwaway keys per role.
    let routes: Vec<(&str, String, Option<Value>, Operation)> = vec![
        (
            "POST",
            "/v1/keys".into(),
            Some(json!({"algorithm": "aes-256-gcm", "tags": {"team": "a"}})),
            Operation::CreateKey,
        ),
        ("GET", "/v1/keys".into(), None, Operation::ListKeys),
        ("GET", "/v1/keys/sym".into(), None, Operation::DescribeKey),
        ("POST", "/v1/keys/{victim}/rotate".into(), None, Operation::RotateKey),
        (
            "POST",
            "/v1/keys/{victim}/rollback".into(),
            Some(json!({"version": 1})),
            Operation::RollbackKey,
        ),
        (
            "POST",
            "/v1/keys/{victim}/revoke".into(),
            Some(json!({"reason": "superseded"})),
            Operation::RevokeKey,
        ),
        ("POST", "/v1/keys/{victim}/destroy".into(), None, Operation::ScheduleDestruction),
        ("POST", "/v1/keys/{victim}/cancel-destroy".into(), None, Operation::CancelDestruction),
        (
            "POST",
            "/v1/keys/sym/encrypt".into(),
            Some(json!({"plaintext": b64(b"x")})),
            Operation::Encrypt,
        ),
        (
            "POST",
            "/v1/keys/sym/decrypt".into(),
            Some(json!({"ciphertext": ct})),
            Operation::Decrypt,
        ),
        ("POST", "/v1/keys/asym/sign".into(), Some(json!({"message": b64(b"m")})), Operation::Sign),
        (
            "POST",
            "/v1/keys/asym/verify".into(),
            Some(json!({"message": b64(b"m"), "signature": sig})),
            Operation::Verify,
        ),
        (
            "POST",
            "/v1/keys/sym/wrap".into(),
            Some(json!({"key_material": b64(&[1; 16])})),
            Operation::Wrap,
        ),
        (
            "POST",
            "/v1/keys/sym/unwrap".into(),
            Some(json!({"wrapped": wrapped})),
            Operation::Unwrap,
        ),
        ("GET", "/v1/keys/asym/public".into(), None, Operation::ExportPublicKey),
        ("GET", "/v1/approvals".into(), None, Operation::ListApprovals),
        ("GET", format!("/v1/approvals/{approval}"), None, Operation::DescribeApproval),
        ("POST", format!("/v1/approvals/{approval}/approve"), None, Operation::Approve),
        ("POST", format!("/v1/approvals/{approval}/deny"), None, Operation::DenyApproval),
        ("GET", "/v1/audit".into(), None, Operation::ReadAudit),
        ("GET", "/v1/audit/verify".into(), None, Operation::ReadAudit),
        ("GET", "/v1/audit/checkpoint".into(), None, Operation::ReadAudit),
        ("GET", "/v1/audit/export".into(), None, Operation::ReadAudit),
        ("POST", "/v1/audit/checkpoint".into(), None, Operation::CheckpointAudit),
        (
            "POST",
            "/v1/auth/token".into(),
            Some(json!({"sub": "x", "roles": ["service"]})),
            Operation::IssueToken,
        ),
        (
            "POST",
            "/v1/auth/revoke".into(),
            Some(json!({"sid": "no-such-session"})),
            Operation::RevokeToken,
        ),
    ];
    for role in Role::ALL {
        let actor = if *role == Role::Service {
            "svc".to_owned()
        } else {
            format!("{}-user", role.as_str())
        };
        let api = server.api(&server.token(&actor, &[role.as_str()]));
        let victim = admin.create(json!({"algorithm": "aes-256-gcm", "tags": {"team": "a"}})).await;
        // Give the victim a second version and a pending destruction where the route needs it.
        for (method, path, body, operation) in &routes {
            let path = path.replace("{victim}", &victim);
            if *operation == Operation::CancelDestruction {
                admin.send("POST", &format!("/v1/keys/{victim}/destroy"), None, &[]).await;
            }
            let r = api.send(method, &path, body.clone(), &[]).await;
            let allowed = role.allows(*operation);
            if allowed {
                assert_ne!(r.status, 403, "{role:?} {method} {path}: {}", r.body);
                assert_ne!(r.status, 401);
            } else {
                assert_eq!(
                    (r.status, r.code()),
                    (403, "forbidden"),
                    "{role:?} {method} {path}: {}",
                    r.body
                );
            }
        }
    }

    // A service is refused keys its tags do not grant it.
    admin
        .create(json!({"algorithm": "aes-256-gcm", "name": "team-b", "tags": {"team": "b"}}))
        .await;
    let svc = server.api(&server.token("svc", &["service"]));
    let r = svc.post("/v1/keys/team-b/encrypt", json!({"plaintext": b64(b"x")})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let other = server.api(&server.token("other-svc", &["service"]));
    assert_eq!(
        other.post("/v1/keys/sym/encrypt", json!({"plaintext": b64(b"x")})).await.status,
        403
    );
}
