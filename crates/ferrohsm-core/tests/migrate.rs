//! `migrate` refuses a damaged source before writing anything, and refuses a non-empty target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use ferrohsm_core::{
    Algorithm, BackendConfig, CreateKey, Hsm, MasterKey, MigrateMode, RequestContext, migrate,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_source_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = BackendConfig::filesystem(dir.path().join("src"));
    let master = || MasterKey::from_bytes(&[5; 32]).unwrap();
    let hsm = Hsm::builder().backend(source.clone()).master_key(master()).build().await.unwrap();
    let me = RequestContext::local("op");
    let key = hsm.create_key(&me, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    hsm.create_key(&me, CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    hsm.shutdown().await.unwrap();
    drop(hsm);
    // One key record damaged on disk.
    let file = dir.path().join("src/keys/keys").join(format!("{}.json", key.id));
    std::fs::write(&file, b"{not json").unwrap();

    let target = BackendConfig::sqlite(dir.path().join("dst"));
    for mode in [MigrateMode::DryRun, MigrateMode::Copy] {
        let err = migrate(&source, &target, &master(), mode).await.unwrap_err();
        assert_eq!(err.code(), "integrity", "{err}");
    }
    assert!(!dir.path().join("dst/ferrohsm.db").exists(), "nothing was written");

    // A wrong master key fails every tag: refused too.
    std::fs::remove_file(&file).unwrap();
    let wrong = MasterKey::from_bytes(&[6; 32]).unwrap();
    assert!(migrate(&source, &target, &wrong, MigrateMode::DryRun).await.is_err());
    // A good copy, then a second copy into the now non-empty target is refused.
    migrate(&source, &target, &master(), MigrateMode::Copy).await.unwrap();
    let again = migrate(&source, &target, &master(), MigrateMode::Copy).await.unwrap_err();
    assert!(again.to_string().contains("already holds data"), "{again}");
}
