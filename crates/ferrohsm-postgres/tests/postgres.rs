//! What the conformance suites do not cover: a key created together with its audit record,
//! token revocations, and the database going away and coming back (writes refused as
//! retryable meanwhile, then accepted, with the recovery recorded in one verifiable chain).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use ferrohsm_audit::{AuditEntry, AuditFilter, AuditSink as _, Outcome};
use ferrohsm_crypto::Algorithm;
use ferrohsm_postgres::PostgresBackend;
use ferrohsm_postgres::conformance::{PgServer, PostgresHarness};
use ferrohsm_store::conformance::sample;
use ferrohsm_store::{
    Error, JobLeases as _, KeyStore as _, RateUsage as _, TokenMatch, TokenRevocation,
    TokenRevocationStore as _,
};
use time::{Duration, OffsetDateTime};

async fn open(url: &str) -> PostgresBackend {
    let (provider, keys) = ferrohsm_audit::conformance::keys();
    PostgresBackend::open(url, provider, keys).await.unwrap()
}

fn revocation(value: &str, now: OffsetDateTime, lives: Duration) -> TokenRevocation {
    TokenRevocation {
        id: uuid::Uuid::now_v7(),
        matches: TokenMatch::Jti,
        value: value.into(),
        reason: None,
        revoked_by: "ada".into(),
        revoked_at: now,
        expires_at: now + lives,
        tag: None,
    }
}

fn entry(request: &str) -> AuditEntry {
    AuditEntry::new("ada", "create_key", Outcome::Success, request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_and_its_record_commit_together_and_a_refusal_records_nothing() {
    let harness = PostgresHarness::new();
    let db = harness.backend().await;
    let keys = db.key_store();
    let record = sample(Some("joint"), Algorithm::Aes256Gcm, &[("env", "prod")]);
    let (stored, audit) = keys.create_audited(record.clone(), entry("r-1")).await.unwrap();
    assert_eq!(*stored, record);
    assert_eq!(audit.seq, 1);
    let same_name = sample(Some("joint"), Algorithm::Aes256Gcm, &[]);
    let e = keys.create_audited(same_name, entry("r-2")).await.unwrap_err();
    assert!(matches!(e, Error::NameTaken(_)), "{e:?}");
    let e = keys.create_audited(record.clone(), entry("r-3")).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}");
    // A second replica sees both, and one record.
    let other = harness.backend().await;
    assert_eq!(*other.key_store().get(&record.id).await.unwrap().unwrap(), record);
    let page = other.audit_sink().query(&AuditFilter::default(), 0, 10).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].hash, audit.hash);
    ferrohsm_audit::conformance::verify(&other.audit_sink()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revocations_are_shared_expire_and_fail_closed_when_unreadable() {
    let harness = PostgresHarness::new();
    let a = harness.backend().await.token_revocation_store();
    let b = harness.backend().await.token_revocation_store();
    let now = OffsetDateTime::now_utc();
    let live = revocation("live-token", now, Duration::hours(1));
    let expired = revocation("old-token", now, Duration::seconds(-1));
    a.add(live.clone(), now).await.unwrap();
    a.add(expired, now).await.unwrap();
    // The other replica sees the live one only.
    assert_eq!(b.live(now).await.unwrap(), vec![live.clone()]);
    // Revoking the same token again keeps one row.
    b.add(live.clone(), now).await.unwrap();
    assert_eq!(a.live(now).await.unwrap().len(), 1);
    // A revocation added later through one replica is seen by the other at its next read
    // (the change counter moved), and reads without a change are answered from memory.
    let later = revocation("later-token", now, Duration::hours(1));
    b.add(later.clone(), now).await.unwrap();
    assert_eq!(a.live(now).await.unwrap(), vec![live.clone(), later.clone()]);
    // A row damaged behind the store's back: the set read before stays in force until the
    // next change, and then the damage is an error, never a shorter list.
    harness.sql("UPDATE token_revocations SET body = 'not json'");
    assert_eq!(a.live(now).await.unwrap().len(), 2);
    harness.sql("UPDATE revocations_changed SET version = version + 1");
    assert!(matches!(a.live(now).await, Err(Error::Corrupt { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_unavailable_while_the_database_is_down_and_resume_after() {
    let server = PgServer::start();
    let url = server.create_database();
    let db = open(&url).await;
    let keys = db.key_store();
    let audit = db.audit_sink();
    let before = sample(Some("before"), Algorithm::Aes256Gcm, &[]);
    keys.create(before.clone()).await.unwrap();
    audit.append(entry("r-before")).await.unwrap();

    server.stop();
    let during = sample(Some("during"), Algorithm::Aes256Gcm, &[]);
    let e = keys.create(during.clone()).await.unwrap_err();
    assert!(e.is_retryable(), "a write while the database is down is retryable: {e:?}");
    let e = audit.append(entry("r-during")).await.unwrap_err();
    assert_eq!(e.code(), "unavailable", "{e:?}");
    assert!(audit.failure().is_some(), "health sees the failure");
    let e = keys.get(&before.id).await.unwrap_err();
    assert!(e.is_retryable(), "a read while the database is down is retryable: {e:?}");

    server.launch();
    // The writer reconnects by itself; the next writes go in, and the recovery is recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match keys.create(during.clone()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(std::time::Instant::now() < deadline, "no recovery within 30 s: {e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    audit.append(entry("r-after")).await.unwrap();
    assert!(audit.failure().is_none());
    assert_eq!(*keys.get(&before.id).await.unwrap().unwrap(), before);
    let page = audit.query(&AuditFilter::default(), 0, 10).await.unwrap();
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["create_key", "audit.recovered", "create_key"], "{actions:?}");
    ferrohsm_audit::conformance::verify(&audit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_at_a_time_holds_a_job_lease_until_it_expires() {
    let harness = PostgresHarness::new();
    let (a, b) = (harness.backend().await.job_leases(), harness.backend().await.job_leases());
    let ttl = std::time::Duration::from_secs(1);
    assert!(a.acquire("scheduler", "replica-a", ttl).await.unwrap());
    assert!(!b.acquire("scheduler", "replica-b", ttl).await.unwrap(), "held by a");
    assert!(a.acquire("scheduler", "replica-a", ttl).await.unwrap(), "a renews its own");
    // Other jobs have their own leases.
    assert!(b.acquire("retention", "replica-b", ttl).await.unwrap());
    // Once a's lease expires (a died), b takes over, and a no longer holds it.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert!(b.acquire("scheduler", "replica-b", ttl).await.unwrap());
    assert!(!a.acquire("scheduler", "replica-a", ttl).await.unwrap());
    // A replica shutting down gives its leases up: the other takes them at once.
    let long = std::time::Duration::from_secs(600);
    assert!(b.acquire("scheduler", "replica-b", long).await.unwrap());
    assert!(b.acquire("retention", "replica-b", long).await.unwrap());
    assert!(!a.acquire("retention", "replica-a", long).await.unwrap());
    b.release("replica-b").await.unwrap();
    assert!(a.acquire("scheduler", "replica-a", long).await.unwrap());
    assert!(a.acquire("retention", "replica-a", long).await.unwrap(), "b's other lease too");
    // Many replicas racing for a free lease: exactly one wins.
    let mut racers = Vec::new();
    for i in 0..8 {
        let leases = harness.backend().await.job_leases();
        racers.push(tokio::spawn(async move {
            leases
                .acquire("race", &format!("replica-{i}"), std::time::Duration::from_secs(60))
                .await
        }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap().unwrap());
    }
    assert_eq!(winners, 1);
}

/// Rate-limit usage: each replica reads what the others reported since its last exchange,
/// never its own, once; on its first exchange it reads what is still kept (a few seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_exchange_rate_usage_once_and_never_their_own() {
    let harness = PostgresHarness::new();
    let (a, b) = (harness.backend().await.rate_usage(), harness.backend().await.rate_usage());
    let usage = |pairs: &[(&str, f64)]| -> Vec<(String, f64)> {
        pairs.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect()
    };
    // Reports older than the kept window are not replayed to a replica that starts...
    a.exchange("a", &usage(&[("actor:old", 5.0)])).await.unwrap();
    harness.sql("UPDATE rate_usage SET at = at - interval '1 minute'");
    // ...but those made just before it started are: they still count against the caller.
    a.exchange("a", &usage(&[("actor:recent", 2.0)])).await.unwrap();
    assert_eq!(b.exchange("b", &[]).await.unwrap(), usage(&[("actor:recent", 2.0)]));
    a.exchange("a", &usage(&[("actor:x", 3.0), ("ip:10.0.0.1", 1.0)])).await.unwrap();
    a.exchange("a", &usage(&[("actor:x", 2.0)])).await.unwrap();
    let mut seen = b.exchange("b", &usage(&[("actor:x", 7.0)])).await.unwrap();
    seen.sort_by(|l, r| l.0.cmp(&r.0));
    assert_eq!(seen, usage(&[("actor:x", 5.0), ("ip:10.0.0.1", 1.0)]));
    assert!(b.exchange("b", &[]).await.unwrap().is_empty(), "each report is read once");
    assert_eq!(a.exchange("a", &[]).await.unwrap(), usage(&[("actor:x", 7.0)]));
    // Old reports are pruned as exchanges go on, so the table stays small.
    harness.sql("UPDATE rate_usage SET at = at - interval '1 hour'");
    for _ in 0..8 {
        a.exchange("a", &[]).await.unwrap();
    }
    let left = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM rate_usage")
        .fetch_one(&sqlx::PgPool::connect(harness.url()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A CA and a certificate for `localhost` signed by it: (CA PEM, chain PEM, key PEM).
fn localhost_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// With `sslmode=verify-full` the backend talks to PostgreSQL over TLS (rustls with aws-lc-rs)
/// that checks the server's certificate against `sslrootcert`: the session is encrypted, and
/// a server whose certificate another CA signed is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_is_reached_over_tls_that_verifies_the_server() {
    let server = PgServer::start();
    let (ca, chain, key) = localhost_certificate();
    server.enable_tls(&chain, &key);
    let database = server.create_database_named();
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, ca).unwrap();
    let url = |root: &std::path::Path| {
        format!(
            "postgres://ferrohsm@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
            server.port(),
            root.display()
        )
    };
    let backend = open(&url(&trusted)).await;
    let record = sample(Some("over-tls"), Algorithm::Aes256Gcm, &[]);
    backend.key_store().create(record.clone()).await.unwrap();
    assert!(backend.key_store().get(&record.id).await.unwrap().is_some());
    let (options, _) = ferrohsm_postgres::connect_options(&url(&trusted)).unwrap();
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the session is not encrypted");

    let (other_ca, _, _) = localhost_certificate();
    let untrusted = dir.path().join("other-ca.pem");
    std::fs::write(&untrusted, other_ca).unwrap();
    let (provider, keys) = ferrohsm_audit::conformance::keys();
    let refused = PostgresBackend::open(&url(&untrusted), provider, keys).await;
    assert!(refused.is_err(), "a server the trusted CA did not sign was accepted");
}
