//! Creating a key writes exactly one audit record, the same one on every backend, whether the
//! backend commits the key and its record together (SQLite) or one after the other
//! (filesystem); a refused create is recorded once as a refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ferrohsm_core::wire::AuditQuery;
use ferrohsm_core::{Algorithm, BackendConfig, CreateKey, Error, Hsm, MasterKey, RequestContext};

async fn records(config: BackendConfig) -> Vec<(String, String, Option<u32>, Option<String>)> {
    let hsm = Hsm::builder()
        .backend(config)
        .master_key(MasterKey::from_bytes(&[5; 32]).unwrap())
        .build()
        .await
        .unwrap();
    let mut ctx = RequestContext::remote("olga", &["operator"]);
    ctx.request_id = "req-create".into();
    let key = hsm
        .create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm).name("payments").tag("env", "prod"))
        .await
        .unwrap();
    ctx.request_id = "req-again".into();
    let e = hsm
        .create_key(&ctx, CreateKey::new(Algorithm::Aes256Gcm).name("payments"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    let query = AuditQuery { limit: Some(100), ..AuditQuery::default() };
    let page = hsm.audit_records(&RequestContext::local("auditor"), query).await.unwrap();
    let created: Vec<_> = page.records.iter().filter(|r| r.action == "create_key").collect();
    assert_eq!(created.len(), 2, "one record per request: {created:?}");
    assert_eq!(created[0].key_id.as_deref(), Some(key.id.to_string().as_str()));
    created
        .iter()
        .map(|r| {
            (
                format!("{} {} {}", r.actor, r.request_id, r.outcome.as_str()),
                // Ids differ between the two runs; whether one is named does not.
                r.key_id.as_ref().map_or("no key".into(), |_| "a key".into()),
                r.key_version,
                r.message.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_recorded_once_and_alike_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = records(BackendConfig::sqlite(dir.path().join("sqlite"))).await;
    let filesystem = records(BackendConfig::filesystem(dir.path().join("fs"))).await;
    assert_eq!(sqlite, filesystem);
    assert_eq!(sqlite[0].0, "olga req-create success");
    assert_eq!(sqlite[0].2, Some(1));
    assert_eq!(sqlite[0].3.as_deref(), Some("state active"));
    assert!(sqlite[1].0.starts_with("olga req-again "), "{:?}", sqlite[1]);
    assert!(sqlite[1].3.as_deref().is_some_and(|m| m.starts_with("conflict:")), "{:?}", sqlite[1]);
}
