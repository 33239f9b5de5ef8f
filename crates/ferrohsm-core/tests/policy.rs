//! Policy through the core: roles, tag grants, dual control across actors and a restart,
//! rate limits, and policy reload.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::master;
use ferrohsm_core::{
    Algorithm, ApprovalState, CreateKey, Error, Hsm, KeyRef, KeyState, Policy, RequestContext,
    SignInput, TokenMatch,
};
use ferrohsm_store::FileKeyStore;

const POLICY: &str = r#"
version = 1

[[tag_policy]]
name = "production"
match = { env = "prod" }

[tag_policy.dual_control]
operations = ["schedule_destruction", "rollback_key"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "24h"

[tag_policy.retention]
destruction_grace = "7d"

[[tag_policy]]
name = "ci-signing"
match = { purpose = "ci-signing" }
services = ["ci-pipeline"]
"#;

const TIGHT_RATE: &str = r#"
[rate_limit]
capacity = 3
refill_per_second = 1
"#;

fn who(actor: &str, role: &str) -> RequestContext {
    RequestContext::remote(actor, &[role])
}

async fn hsm_with(policy: &str) -> Hsm {
    Hsm::builder()
        .store(Arc::new(ferrohsm_store::MemoryKeyStore::new()))
        .master_key(master(1))
        .policy(Policy::from_toml(policy).unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn roles_are_enforced_and_refusals_audited() {
    let hsm = hsm_with("version = 1").await;
    let key = hsm
        .create_key(&who("olga", "operator"), CreateKey::new(Algorithm::Aes256Gcm))
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);
    for (ctx, result) in [
        (
            who("eve", "auditor"),
            hsm.encrypt(&who("eve", "auditor"), &k, b"x", b"").await.map(|_| ()),
        ),
        (
            who("svc", "service"),
            hsm.create_key(&who("svc", "service"), CreateKey::new(Algorithm::EcP256))
                .await
                .map(|_| ()),
        ),
        (
            who("olga", "operator"),
            hsm.purge_due(&who("olga", "operator"), time::OffsetDateTime::now_utc())
                .await
                .map(|_| ()),
        ),
        (who("nobody", "guest"), hsm.describe_key(&who("nobody", "guest"), &k).await.map(|_| ())),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.code(), "forbidden", "{} {err}", ctx.actor);
    }
    // A service with no tag grant cannot use the key; an auditor can read it.
    assert_eq!(
        hsm.encrypt(&who("svc", "service"), &k, b"x", b"").await.unwrap_err().code(),
        "forbidden"
    );
    hsm.describe_key(&who("eve", "auditor"), &k).await.unwrap();
    let mut out = Vec::new();
    hsm.export_audit(&who("eve", "auditor"), &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""actor":"eve","action":"encrypt""#), "{text}");
    assert!(text.contains(r#""outcome":"denied""#));
    assert_eq!(
        hsm.export_audit(&who("olga", "operator"), &mut Vec::new()).await.unwrap_err().code(),
        "forbidden"
    );
}

#[tokio::test]
async fn a_ci_signing_key_is_usable_only_by_its_service() {
    let hsm = hsm_with(POLICY).await;
    let admin = RequestContext::local("bootstrap");
    let key = hsm
        .create_key(
            &admin,
            CreateKey::new(Algorithm::EcP256).name("ci-release").tag("purpose", "ci-signing"),
        )
        .await
        .unwrap();
    let k: KeyRef = "ci-release".parse().unwrap();
    let signed = hsm
        .sign(&who("ci-pipeline", "service"), &k, SignInput::Message(b"artefact"), None)
        .await
        .unwrap();
    assert_eq!(signed.key_id, key.id);
    assert_eq!(
        hsm.sign(&who("web-frontend", "service"), &k, SignInput::Message(b"x"), None)
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    hsm.public_key(&who("ci-pipeline", "service"), &k, None).await.unwrap();
}

async fn open_durable(dir: &Path) -> Hsm {
    let store = FileKeyStore::open(dir).await.unwrap();
    let approvals = store.approval_store().await.unwrap();
    Hsm::builder()
        .store(Arc::new(store))
        .approvals(Arc::new(approvals))
        .master_key(master(2))
        .policy(Policy::from_toml(POLICY).unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn dual_control_across_three_actors_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (olga, ada, bob) = (who("olga", "operator"), who("ada", "admin"), who("bob", "operator"));
    let hsm = open_durable(dir.path()).await;
    let key = hsm
        .create_key(&olga, CreateKey::new(Algorithm::Aes256Gcm).tag("env", "prod"))
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);

    let approval = match hsm.schedule_destruction(&olga, &k, None).await.unwrap_err() {
        Error::ApprovalRequired(a) => *a,
        other => panic!("{other}"),
    };
    assert_eq!(
        (approval.quorum, approval.state, approval.requester.as_str()),
        (2, ApprovalState::Pending, "olga")
    );
    assert_eq!(
        hsm.describe_key(&olga, &k).await.unwrap().state,
        KeyState::Active,
        "nothing happened yet"
    );
    assert_eq!(
        hsm.approve(&olga, approval.id, None).await.unwrap_err().code(),
        "forbidden",
        "own request"
    );
    assert_eq!(
        hsm.approve(&who("svc", "service"), approval.id, None).await.unwrap_err().code(),
        "forbidden"
    );
    hsm.approve(&ada, approval.id, Some("checked the ticket".into())).await.unwrap();
    assert_eq!(
        hsm.approve(&ada, approval.id, None).await.unwrap_err().code(),
        "conflict",
        "one approver counts once"
    );
    // Executing before the quorum is refused.
    let early = RequestContext { approval_id: Some(approval.id), ..olga.clone() };
    assert_eq!(hsm.schedule_destruction(&early, &k, None).await.unwrap_err().code(), "conflict");

    drop(hsm);
    let hsm = open_durable(dir.path()).await;
    let kept = hsm.describe_approval(&bob, approval.id).await.unwrap();
    assert_eq!(
        (kept.approvals(), kept.state),
        (1, ApprovalState::Pending),
        "state kept across the restart"
    );
    let approved = hsm.approve(&bob, approval.id, None).await.unwrap();
    assert_eq!(approved.state, ApprovalState::Approved);

    let with_id = RequestContext { approval_id: Some(approval.id), ..olga.clone() };
    // Different parameters than approved: refused, and the approval is not used up.
    let changed =
        hsm.schedule_destruction(&with_id, &k, Some(time::Duration::hours(1))).await.unwrap_err();
    assert_eq!(changed.code(), "invalid_request", "{changed}");
    // Someone else cannot use it.
    let thief = RequestContext { approval_id: Some(approval.id), ..ada.clone() };
    assert_eq!(hsm.schedule_destruction(&thief, &k, None).await.unwrap_err().code(), "forbidden");
    let done = hsm.schedule_destruction(&with_id, &k, None).await.unwrap();
    assert_eq!(done.state, KeyState::PendingDestruction);
    assert_eq!(
        done.destroy_after.unwrap() - done.updated_at,
        time::Duration::days(7),
        "the tag policy's grace"
    );
    // Replaying the executed approval does nothing more.
    hsm.cancel_destruction(&olga, &k).await.unwrap();
    assert_eq!(hsm.schedule_destruction(&with_id, &k, None).await.unwrap_err().code(), "conflict");
    assert_eq!(hsm.describe_key(&olga, &k).await.unwrap().state, KeyState::Active);

    let mut out = Vec::new();
    hsm.export_audit(&RequestContext::local("auditor"), &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let approval_lines = text.lines().filter(|l| l.contains(&approval.id.to_string())).count();
    assert!(approval_lines >= 6, "every step of the approval is audited:\n{text}");
}

#[tokio::test]
async fn a_tampered_approval_on_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let olga = who("olga", "operator");
    let (key, approval) = {
        let hsm = open_durable(dir.path()).await;
        let key = hsm
            .create_key(&olga, CreateKey::new(Algorithm::Aes256Gcm).tag("env", "prod"))
            .await
            .unwrap();
        let Error::ApprovalRequired(a) =
            hsm.rollback_key(&olga, &KeyRef::Id(key.id), 1).await.unwrap_err()
        else {
            panic!()
        };
        (key, *a)
    };
    let path = dir.path().join("approvals").join(format!("{}.json", approval.id));
    // The store keeps the approval as an opaque body: forge the state inside it.
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let body = ferrohsm_core::b64::decode(stored["body"].as_str().unwrap()).unwrap();
    let forged_body =
        String::from_utf8(body).unwrap().replace(r#""state":"pending""#, r#""state":"approved""#);
    assert!(forged_body.contains(r#""state":"approved""#));
    stored["body"] = ferrohsm_core::b64::encode(forged_body.as_bytes()).into();
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let hsm = open_durable(dir.path()).await;
    let forged = RequestContext { approval_id: Some(approval.id), ..olga };
    let err = hsm.rollback_key(&forged, &KeyRef::Id(key.id), 1).await.unwrap_err();
    assert!(err.to_string().contains("integrity"), "{err}");
}

#[tokio::test]
async fn remote_callers_are_rate_limited_per_actor() {
    let hsm = hsm_with(&format!("{POLICY}{TIGHT_RATE}")).await;
    let key = hsm
        .create_key(&RequestContext::local("setup"), CreateKey::new(Algorithm::Aes256Gcm))
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);
    let olga = who("olga", "operator");
    for _ in 0..3 {
        hsm.encrypt(&olga, &k, b"x", b"").await.unwrap();
    }
    match hsm.encrypt(&olga, &k, b"x", b"").await.unwrap_err() {
        Error::RateLimited { retry_after } => {
            assert!(retry_after > StdDuration::ZERO && retry_after <= StdDuration::from_secs(1))
        }
        other => panic!("{other}"),
    }
    hsm.encrypt(&who("bob", "operator"), &k, b"x", b"").await.unwrap();
    for _ in 0..10 {
        hsm.encrypt(&RequestContext::local("batch-job"), &k, b"x", b"").await.unwrap();
    }
}

#[tokio::test]
async fn policy_changes_apply_without_restart_and_a_broken_file_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let grant = |service: &str| {
        format!(
            "version = 1\n[[tag_policy]]\nname = \"app\"\nmatch = {{ app = \"x\" }}\nservices = [\"{service}\"]\n"
        )
    };
    std::fs::write(&path, grant("svc-a")).unwrap();
    let hsm = Hsm::builder()
        .store(Arc::new(ferrohsm_store::MemoryKeyStore::new()))
        .master_key(master(3))
        .policy_file(&path, StdDuration::from_millis(50))
        .build()
        .await
        .unwrap();
    let key = hsm
        .create_key(
            &RequestContext::local("setup"),
            CreateKey::new(Algorithm::Aes256Gcm).tag("app", "x"),
        )
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);
    hsm.encrypt(&who("svc-a", "service"), &k, b"x", b"").await.unwrap();
    assert_eq!(
        hsm.encrypt(&who("svc-b", "service"), &k, b"x", b"").await.unwrap_err().code(),
        "forbidden"
    );

    // A valid change is picked up by the watcher.
    std::fs::write(&path, grant("svc-b")).unwrap();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
    while hsm.encrypt(&who("svc-b", "service"), &k, b"x", b"").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the new policy was never applied");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(
        hsm.encrypt(&who("svc-a", "service"), &k, b"x", b"").await.unwrap_err().code(),
        "forbidden"
    );

    // A broken file is rejected with its line and field, and the old policy stays.
    std::fs::write(&path, "version = 1\n[[tag_policy]]\nname = \"app\"\nmatch = { app = \"x\" }\nroles = [\"root\"]\n").unwrap();
    let err = hsm.reload_policy().await.unwrap_err();
    assert!(err.to_string().contains("line 5, tag_policy[0].roles"), "{err}");
    assert!(hsm.policy_error().unwrap().contains("unknown role"));
    let health = hsm.health().await.policy;
    assert_eq!(health.status, "error");
    assert!(health.detail.contains("stays in force; the changed file failed"), "{health:?}");
    hsm.encrypt(&who("svc-b", "service"), &k, b"x", b"").await.unwrap();
    std::fs::write(&path, grant("svc-a")).unwrap();
    hsm.reload_policy().await.unwrap();
    assert!(hsm.policy_error().is_none());
    // Each reload, accepted or rejected, is in the audit log.
    let mut out = Vec::new();
    hsm.export_audit(&RequestContext::local("auditor"), &mut out).await.unwrap();
    let log = String::from_utf8(out).unwrap();
    assert!(log.contains("policy file rejected, previous policy kept: line 5"), "{log}");
    assert!(log.matches("policy file reloaded").count() >= 2, "{log}");
    // A file that is broken from the start stops start-up with the same detail.
    std::fs::write(&path, "version = 3").unwrap();
    let start = Hsm::builder()
        .store(Arc::new(ferrohsm_store::MemoryKeyStore::new()))
        .master_key(master(3))
        .policy_file(&path, StdDuration::ZERO)
        .build()
        .await;
    assert!(start.unwrap_err().to_string().contains("line 1, version"));
}

#[tokio::test]
async fn keys_past_their_maximum_age_are_rotated() {
    let hsm = hsm_with("version = 1\n[[tag_policy]]\nname = \"short-lived\"\nmatch = { ttl = \"short\" }\n[tag_policy.retention]\nmax_age = \"30d\"\n").await;
    let ctx = RequestContext::local("scheduler");
    let short = hsm
        .create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm).tag("ttl", "short"))
        .await
        .unwrap();
    let plain = hsm.create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(hsm.rotate_due(&ctx, now + time::Duration::days(29)).await.unwrap().is_empty());
    assert_eq!(hsm.rotate_due(&ctx, now + time::Duration::days(31)).await.unwrap(), vec![short.id]);
    assert_eq!(hsm.describe_key(&ctx, &KeyRef::Id(short.id)).await.unwrap().current_version, 2);
    assert_eq!(hsm.describe_key(&ctx, &KeyRef::Id(plain.id)).await.unwrap().current_version, 1);
    // Age counts from the current version: the fresh one is not due within its own 30 days.
    assert!(hsm.rotate_due(&ctx, now + time::Duration::days(20)).await.unwrap().is_empty());
}

#[tokio::test]
async fn listings_leave_out_keys_a_tag_policy_withholds() {
    let hsm = hsm_with("version = 1\n[[tag_policy]]\nname = \"vault\"\nmatch = { env = \"prod\" }\nroles = [\"admin\"]\n").await;
    let admin = RequestContext::local("ada");
    let secret = hsm
        .create_key(&admin, CreateKey::new(Algorithm::Aes256Gcm).tag("env", "prod"))
        .await
        .unwrap();
    let open = hsm.create_key(&admin, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    let ids =
        |list: ferrohsm_core::KeyList| list.keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    let all = ferrohsm_core::ListQuery::default();
    assert_eq!(ids(hsm.list_keys(&who("eve", "auditor"), &all).await.unwrap()), vec![open.id]);
    assert_eq!(ids(hsm.list_keys(&admin, &all).await.unwrap()), vec![secret.id, open.id]);
    assert_eq!(
        hsm.describe_key(&who("eve", "auditor"), &KeyRef::Id(secret.id)).await.unwrap_err().code(),
        "forbidden"
    );
}

#[tokio::test]
async fn the_schedulers_skip_a_key_they_may_not_touch_and_go_on() {
    // Only operators may act on "team" keys, so the admin scheduler cannot purge that one.
    let hsm = hsm_with("version = 1\n[[tag_policy]]\nname = \"team\"\nmatch = { owner = \"team\" }\nroles = [\"operator\"]\n").await;
    let scheduler = RequestContext::local("scheduler");
    let olga = who("olga", "operator");
    let theirs = hsm
        .create_key(&olga, CreateKey::new(Algorithm::Aes256Gcm).tag("owner", "team"))
        .await
        .unwrap();
    let ours = hsm.create_key(&scheduler, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    hsm.schedule_destruction(&olga, &KeyRef::Id(theirs.id), Some(time::Duration::ZERO))
        .await
        .unwrap();
    hsm.schedule_destruction(&scheduler, &KeyRef::Id(ours.id), Some(time::Duration::ZERO))
        .await
        .unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    assert_eq!(hsm.purge_due(&scheduler, later).await.unwrap(), vec![ours.id]);
    assert_eq!(
        hsm.describe_key(&olga, &KeyRef::Id(theirs.id)).await.unwrap().state,
        KeyState::PendingDestruction
    );
}

/// Issue 10: with `manage_policy` under global dual control, a changed policy file waits for
/// its approvers (who see its SHA-256), and the policy in force decides, so a file that drops
/// dual control still needs approval.
#[tokio::test]
async fn a_policy_change_under_dual_control_waits_for_its_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let guarded = |service: &str| {
        format!(
            "version = 1\n[[tag_policy]]\nname = \"app\"\nmatch = {{ app = \"x\" }}\nservices = [\"{service}\"]\n\
             [global_dual_control]\noperations = [\"manage_policy\"]\nquorum = 2\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"\n"
        )
    };
    std::fs::write(&path, guarded("svc-a")).unwrap();
    let hsm = Hsm::builder()
        .store(Arc::new(ferrohsm_store::MemoryKeyStore::new()))
        .master_key(master(3))
        .policy_file(&path, StdDuration::ZERO)
        .build()
        .await
        .unwrap();
    let key = hsm
        .create_key(
            &RequestContext::local("setup"),
            CreateKey::new(Algorithm::Aes256Gcm).tag("app", "x"),
        )
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);
    let svc_b = who("svc-b", "service");
    assert_eq!(hsm.encrypt(&svc_b, &k, b"x", b"").await.unwrap_err().code(), "forbidden");

    // The new file (granting svc-b, and dropping dual control) is staged, not applied.
    let unguarded = "version = 1\n[[tag_policy]]\nname = \"app\"\nmatch = { app = \"x\" }\nservices = [\"svc-b\"]\n";
    std::fs::write(&path, unguarded).unwrap();
    hsm.reload_policy().await.unwrap();
    assert_eq!(hsm.encrypt(&svc_b, &k, b"x", b"").await.unwrap_err().code(), "forbidden");
    let ada = who("ada", "admin");
    let pending = hsm.list_approvals(&ada, 10).await.unwrap();
    let approval =
        pending.iter().find(|a| a.operation.as_str() == "manage_policy").unwrap().clone();
    assert_eq!(approval.requester, "system:policy");
    let sha = ferrohsm_crypto_hex_sha256(unguarded.as_bytes());
    assert!(approval.summary().contains(&format!("sha256={sha}")), "{}", approval.summary());
    assert!(hsm.health().await.policy.detail.contains(&approval.id.to_string()));
    // Reading the same file again opens no second approval.
    hsm.reload_policy().await.unwrap();
    assert_eq!(hsm.list_approvals(&ada, 10).await.unwrap().len(), 1);

    hsm.approve(&ada, approval.id, None).await.unwrap();
    assert_eq!(hsm.encrypt(&svc_b, &k, b"x", b"").await.unwrap_err().code(), "forbidden");
    hsm.approve(&who("bob", "admin"), approval.id, None).await.unwrap();
    hsm.encrypt(&svc_b, &k, b"x", b"").await.unwrap();
    let executed = hsm.describe_approval(&ada, approval.id).await.unwrap();
    assert_eq!(executed.state, ApprovalState::Executed);
    let mut out = Vec::new();
    hsm.export_audit(&RequestContext::local("auditor"), &mut out).await.unwrap();
    let log = String::from_utf8(out).unwrap();
    assert!(log.contains(&format!("policy file reloaded after approval {}", approval.id)), "{log}");
    assert!(log.contains("the changed policy file waits for approval"), "{log}");
}

fn ferrohsm_crypto_hex_sha256(bytes: &[u8]) -> String {
    let digest = ferrohsm_core::default_provider().sha256(bytes);
    ferrohsm_core::hex::encode(&digest)
}

/// Issue 10: token revocations are persisted beside the keys and survive a restart.
#[tokio::test]
async fn token_revocations_survive_a_restart_and_need_admin() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Hsm::builder().data_dir(dir.path()).master_key(master(4)).build();
    let hsm = open().await.unwrap();
    let olga = who("olga", "operator");
    let err = hsm.revoke_token(&olga, TokenMatch::Jti, "abc", None).await.unwrap_err();
    assert_eq!(err.code(), "forbidden");
    let bad = hsm.revoke_token(&who("ada", "admin"), TokenMatch::Sid, "a\nb", None).await;
    assert_eq!(bad.unwrap_err().code(), "invalid_request");
    let revoked = hsm
        .revoke_token(&who("ada", "admin"), TokenMatch::Jti, "abc", Some("lost".into()))
        .await
        .unwrap();
    assert!(revoked.expires_at > revoked.revoked_at + time::Duration::hours(24));
    assert!(hsm.is_token_revoked(Some("abc"), None));
    assert!(!hsm.is_token_revoked(Some("abd"), Some("abc")), "a jti revocation is not a sid");
    hsm.shutdown().await.unwrap();
    drop(hsm);
    let hsm = open().await.unwrap();
    assert!(hsm.is_token_revoked(Some("abc"), None), "lost across a restart");
    hsm.revoke_token(&RequestContext::local("ops"), TokenMatch::Sid, "s-1", None).await.unwrap();
    assert!(hsm.is_token_revoked(None, Some("s-1")));
}
