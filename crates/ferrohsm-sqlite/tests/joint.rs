//! A new key and the audit record of its creation commit together: both or neither, and a
//! refused create (taken name or id, invalid record) leaves no record, even when it loses a
//! race inside one group commit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ferrohsm_audit::{AuditEntry, AuditFilter, AuditSink as _, Outcome};
use ferrohsm_crypto::Algorithm;
use ferrohsm_sqlite::SqliteBackend;
use ferrohsm_store::conformance::sample;
use ferrohsm_store::{Error, KeyStore as _};

async fn open(dir: &std::path::Path) -> SqliteBackend {
    let (provider, keys) = ferrohsm_audit::conformance::keys();
    SqliteBackend::open(&dir.join("ferrohsm.db"), provider, keys).await.unwrap()
}

fn entry(request: &str) -> AuditEntry {
    AuditEntry::new("ada", "create_key", Outcome::Success, request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_and_its_record_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let keys = db.key_store();
    let record = sample(Some("joint"), Algorithm::Aes256Gcm, &[("env", "prod")]);
    let (stored, audit) = keys.create_audited(record.clone(), entry("r-1")).await.unwrap();
    assert_eq!(*stored, record);
    assert_eq!(audit.seq, 1);
    assert_eq!(audit.request_id, "r-1");
    // Both are there after a reopen, and the chain verifies.
    db.audit_sink().close().await.unwrap();
    let db = open(dir.path()).await;
    assert_eq!(*db.key_store().get(&record.id).await.unwrap().unwrap(), record);
    let page = db.audit_sink().query(&AuditFilter::default(), 0, 10).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].hash, audit.hash);
    ferrohsm_audit::conformance::verify(&db.audit_sink()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_leaves_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let keys = db.key_store();
    let first = sample(Some("taken"), Algorithm::Aes256Gcm, &[]);
    keys.create_audited(first.clone(), entry("r-1")).await.unwrap();
    // The same name, the same id, and an invalid record are each refused with their error.
    let same_name = sample(Some("taken"), Algorithm::Aes256Gcm, &[]);
    let e = keys.create_audited(same_name, entry("r-2")).await.unwrap_err();
    assert!(matches!(e, Error::NameTaken(_)), "{e:?}");
    let e = keys.create_audited(first.clone(), entry("r-3")).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}");
    let mut invalid = sample(None, Algorithm::Aes256Gcm, &[]);
    invalid.revision = 7;
    let e = keys.create_audited(invalid, entry("r-4")).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRecord { .. }), "{e:?}");
    let head = db.audit_sink().head().await.unwrap();
    assert_eq!(head.seq, 1, "only the first create is recorded");
    assert_eq!(keys.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_in_one_commit_record_only_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let keys = db.key_store();
    // 64 creates of one name plus 64 of distinct names, all at once: they share commits.
    let mut tasks = Vec::new();
    for i in 0..128 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let name = if i % 2 == 0 { "contested".to_owned() } else { format!("own-{i}") };
            let record = sample(Some(&name), Algorithm::Aes256Gcm, &[("n", &i.to_string())]);
            keys.create_audited(record, entry(&format!("r-{i}"))).await
        }));
    }
    let mut won = 0;
    let mut recorded = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok((stored, audit)) => {
                won += usize::from(i % 2 == 0);
                assert_eq!(audit.request_id, format!("r-{i}"));
                assert!(stored.name.is_some());
                recorded.push(audit.seq);
            }
            Err(e) => {
                assert_eq!(i % 2, 0, "a distinct name was refused: {e}");
                assert!(matches!(e, Error::NameTaken(_)), "{e:?}");
            }
        }
    }
    assert_eq!(won, 1, "exactly one create of the contested name wins");
    assert_eq!(recorded.len(), 65);
    recorded.sort_unstable();
    assert_eq!(recorded, (1..=65).collect::<Vec<u64>>(), "one record per key, no gaps");
    assert_eq!(keys.count().await.unwrap(), 65);
    ferrohsm_audit::conformance::verify(&db.audit_sink()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_id_in_one_commit_store_the_one_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let keys = db.key_store();
    keys.create(sample(Some("taken"), Algorithm::Aes256Gcm, &[])).await.unwrap();
    // 32 writes of one id at once (as an import might send): half with a taken name.
    let base = sample(None, Algorithm::Aes256Gcm, &[]);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let keys = keys.clone();
        let mut record = sample(
            Some(&if i % 2 == 0 { "taken".to_owned() } else { format!("free-{i}") }),
            Algorithm::Aes256Gcm,
            &[],
        );
        record.id = base.id;
        tasks.push(tokio::spawn(async move { keys.create(record).await }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => answered.push(stored),
            Err(e) => assert!(matches!(e, Error::NameTaken(_) | Error::AlreadyExists(_)), "{e:?}"),
        }
    }
    assert_eq!(answered.len(), 1, "exactly one write of the id is accepted");
    let stored = keys.get(&base.id).await.unwrap().unwrap();
    assert_eq!(stored, answered[0], "the stored record is the one that was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_creates_splits_into_bounded_statements_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let keys = db.key_store();
    // 1,500 at once: batches beyond one statement's rows (500 keys, 1,000 versions or tags,
    // 500 audit rows), each key with two tags, half with their audit record.
    let tasks: Vec<_> = (0..1500)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let n = i.to_string();
                let record =
                    sample(Some(&format!("k-{i}")), Algorithm::Aes256Gcm, &[("n", &n), ("t", "x")]);
                let stored = if i % 2 == 0 {
                    keys.create_audited(record.clone(), entry(&n)).await.map(|(k, _)| k)
                } else {
                    keys.create(record.clone()).await
                };
                (record, stored)
            })
        })
        .collect();
    for task in tasks {
        let (record, stored) = task.await.unwrap();
        assert_eq!(*stored.unwrap(), record);
    }
    assert_eq!(keys.count().await.unwrap(), 1500);
    assert_eq!(db.audit_sink().head().await.unwrap().seq, 750);
    ferrohsm_audit::conformance::verify(&db.audit_sink()).await;
    let tagged = ferrohsm_store::ListQuery {
        tags: vec![("t".into(), "x".into())],
        limit: 1000,
        ..ferrohsm_store::ListQuery::default()
    };
    assert_eq!(keys.list(&tagged).await.unwrap().keys.len(), 1000);
}
