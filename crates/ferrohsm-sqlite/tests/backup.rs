//! Online backup (`VACUUM INTO`) while the backend serves, and opening the copy.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ferrohsm_audit::AuditSink as _;
use ferrohsm_crypto::Algorithm;
use ferrohsm_sqlite::SqliteBackend;
use ferrohsm_store::KeyStore as _;
use ferrohsm_store::conformance::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_a_complete_database() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, keys) = ferrohsm_audit::conformance::keys();
    let live = SqliteBackend::open(&dir.path().join("live.db"), provider.clone(), keys.clone())
        .await
        .unwrap();
    let record = sample(Some("backed-up"), Algorithm::Aes256Gcm, &[("env", "prod")]);
    live.key_store().create(record.clone()).await.unwrap();
    let sink = live.audit_sink();
    sink.append(ferrohsm_audit::AuditEntry::new(
        "a",
        "create_key",
        ferrohsm_audit::Outcome::Success,
        "r1",
    ))
    .await
    .unwrap();
    let copy = dir.path().join("copy.db");
    live.backup(&copy).await.unwrap();
    // The live database keeps serving; the copy opens on its own with everything in it.
    live.key_store().create(sample(None, Algorithm::Aes256Gcm, &[])).await.unwrap();
    let restored = SqliteBackend::open(&copy, provider, keys).await.unwrap();
    let got = restored.key_store().get(&record.id).await.unwrap().unwrap();
    assert_eq!(*got, record);
    assert_eq!(restored.key_store().count().await.unwrap(), 1);
    assert_eq!(restored.audit_sink().head().await.unwrap().seq, 1);
    ferrohsm_audit::conformance::verify(&restored.audit_sink()).await;
    // A target that exists already is refused, not overwritten.
    assert!(live.backup(&copy).await.is_err());
}
