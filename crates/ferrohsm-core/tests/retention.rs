//! Retention with a controllable clock (`apply_retention(now)` takes the time), on both durable
//! backends: approval expiry is written when it happens, closed approvals and old audit
//! records go, open approvals and unexported records stay, and the pruned log verifies from its
//! anchor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use ferrohsm_core::wire::AuditQuery;
use ferrohsm_core::{
    Algorithm, BackendConfig, CreateKey, Error, Hsm, KeyRef, MasterKey, Policy, RequestContext,
    Retention,
};
use time::{Duration, OffsetDateTime};

const POLICY: &str = r#"
version = 1

[[tag_policy]]
name = "production"
match = { env = "prod" }

[tag_policy.dual_control]
operations = ["rollback_key"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "24h"
"#;

fn who(actor: &str, role: &str) -> RequestContext {
    RequestContext::remote(actor, &[role])
}

async fn open(config: BackendConfig) -> Hsm {
    Hsm::builder()
        .backend(config)
        .master_key(MasterKey::from_bytes(&[9; 32]).unwrap())
        .policy(Policy::from_toml(POLICY).unwrap())
        .retention(Retention {
            audit: Some(Duration::days(30)),
            approvals: Some(Duration::days(30)),
            audit_unexported: false,
        })
        .build()
        .await
        .unwrap()
}

async fn actions(hsm: &Hsm, action: &str) -> Vec<ferrohsm_core::AuditRecord> {
    let query =
        AuditQuery { action: Some(action.into()), limit: Some(1000), ..AuditQuery::default() };
    hsm.audit_records(&RequestContext::local("auditor"), query).await.unwrap().records
}

async fn retention_on(config: BackendConfig) {
    let hsm = open(config).await;
    let olga = who("olga", "operator");
    let key = hsm
        .create_key(&olga, CreateKey::new(Algorithm::Aes256Gcm).tag("env", "prod"))
        .await
        .unwrap();
    let k = KeyRef::Id(key.id);
    hsm.rotate_key(&olga, &k).await.unwrap();
    for i in 0..300u32 {
        hsm.encrypt(&olga, &k, format!("record {i}").as_bytes(), &[7; 64]).await.unwrap();
        if i % 60 == 59 {
            hsm.checkpoint_audit(&RequestContext::local("ops")).await.unwrap();
        }
    }
    // One approval left pending, one denied.
    let Error::ApprovalRequired(pending) = hsm.rollback_key(&olga, &k, 1).await.unwrap_err() else {
        panic!("rollback needs approval")
    };
    let Error::ApprovalRequired(denied) = hsm.rollback_key(&olga, &k, 1).await.unwrap_err() else {
        panic!("rollback needs approval")
    };
    hsm.deny(&who("pat", "operator"), denied.id, Some("not now".into())).await.unwrap();

    // Today: nothing is old enough, nothing expired.
    let now = OffsetDateTime::now_utc();
    let report = hsm.apply_retention(now).await.unwrap();
    assert_eq!(
        (report.approvals_expired, report.approvals_removed, report.audit.is_some()),
        (0, 0, false)
    );

    // 40 days on: the pending approval's expiry is written, the denied one goes, and the audit
    // log keeps everything because no auditor has exported it yet.
    let later = now + Duration::days(40);
    let report = hsm.apply_retention(later).await.unwrap();
    assert_eq!(report.approvals_expired, 1);
    assert_eq!(report.approvals_removed, 1);
    assert!(report.audit.is_none(), "unexported records are kept");
    let expired = actions(&hsm, "approval.expired").await;
    assert_eq!(expired.len(), 1);
    assert!(expired[0].message.as_deref().unwrap().contains(&pending.id.to_string()));
    let admin = RequestContext::local("admin");
    assert_eq!(
        hsm.describe_approval(&admin, pending.id).await.unwrap().state,
        ferrohsm_core::ApprovalState::Expired
    );
    assert!(matches!(
        hsm.describe_approval(&admin, denied.id).await,
        Err(Error::ApprovalNotFound(_))
    ));
    assert_eq!(actions(&hsm, "approval.pruned").await.len(), 1);

    // An auditor exports the log; now retention cuts behind an anchor checkpoint.
    let mut export = Vec::new();
    hsm.export_audit(&RequestContext::local("auditor"), &mut export).await.unwrap();
    let report = hsm.apply_retention(later).await.unwrap();
    let pruned = report.audit.expect("the exported, old records go");
    assert!(pruned.records > 100, "{pruned:?}");
    let verification = hsm.verify_audit(&admin).await.unwrap();
    assert!(verification.valid, "{verification:?}");
    assert_eq!(verification.first_seq, Some(pruned.anchor.seq + 1));
    let recorded = actions(&hsm, "audit.pruned").await;
    assert_eq!(recorded.len(), 1);
    let message = recorded[0].message.clone().unwrap();
    assert!(
        message.contains(&format!("{}..={}", pruned.first_seq, pruned.anchor.seq)),
        "{message}"
    );
    assert!(message.contains(&ferrohsm_audit::hex(&pruned.anchor.hash)), "{message}");
    // The key and its data are untouched by audit retention.
    hsm.encrypt(&olga, &k, b"still here", b"").await.unwrap();

    // 40 more days: the expired approval is now old and closed, and goes too.
    let report = hsm.apply_retention(later + Duration::days(40)).await.unwrap();
    assert_eq!(report.approvals_removed, 1);
    assert!(matches!(
        hsm.describe_approval(&admin, pending.id).await,
        Err(Error::ApprovalNotFound(_))
    ));
    hsm.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    retention_on(BackendConfig::sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BackendConfig::filesystem(dir.path());
    // Small segments: the filesystem log is cut at segment boundaries.
    config.audit_segment_bytes = Some(16 << 10);
    retention_on(config).await;
}
