//! A read sees one committed revision of a key: its row and its version rows come from the
//! same snapshot, however the writer commits around it. (Read as two statements outside a
//! transaction, a record could pair revision N with version rows of N+1, which the core's
//! integrity check then refused: found by 32 concurrent first encryptions on SQLite.)
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ferrohsm_crypto::Algorithm;
use ferrohsm_sqlite::SqliteBackend;
use ferrohsm_store::KeyStore as _;
use ferrohsm_store::conformance::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_mixes_two_revisions_of_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, audit_keys) = ferrohsm_audit::conformance::keys();
    let db =
        SqliteBackend::open(&dir.path().join("ferrohsm.db"), provider, audit_keys).await.unwrap();
    let keys = db.key_store();
    let first = sample(Some("torn"), Algorithm::Aes256Gcm, &[]);
    let id = first.id;
    keys.create(first.clone()).await.unwrap();
    // Each revision stores its own number, times ten, in the version row.
    let writer = {
        let keys = db.key_store();
        tokio::spawn(async move {
            let mut record = first;
            for _ in 0..300 {
                let mut next = record.clone();
                next.revision += 1;
                next.versions[0].encryptions_reserved = next.revision * 10;
                keys.update(next.clone()).await.unwrap();
                record = next;
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let record = keys.get(&id).await.unwrap().unwrap();
        let expected = if record.revision == 1 { 0 } else { record.revision * 10 };
        assert_eq!(
            record.versions[0].encryptions_reserved, expected,
            "revision {} read with another revision's version row",
            record.revision
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
}
