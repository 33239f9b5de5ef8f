//! Token revocations (issue 10): both backends keep them until they expire, persist them
//! across a reopen, and refuse more than the bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use ferrohsm_store::{
    FileKeyStore, MAX_TOKEN_REVOCATIONS, MemoryTokenRevocationStore, TokenMatch, TokenRevocation,
    TokenRevocationStore,
};
use time::{Duration, OffsetDateTime};

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

async fn expiry_is_kept(store: &dyn TokenRevocationStore) {
    let now = OffsetDateTime::now_utc();
    store.add(revocation("short", now, Duration::seconds(10)), now).await.unwrap();
    store.add(revocation("long", now, Duration::hours(1)), now).await.unwrap();
    let live = |at| async move {
        let mut v: Vec<String> =
            store.live(at).await.unwrap().into_iter().map(|r| r.value).collect();
        v.sort();
        v
    };
    assert_eq!(live(now).await, ["long", "short"]);
    assert_eq!(live(now + Duration::minutes(1)).await, ["long"]);
    assert!(live(now + Duration::hours(2)).await.is_empty());
}

#[tokio::test]
async fn memory_revocations_expire_and_are_bounded() {
    let store = MemoryTokenRevocationStore::new();
    expiry_is_kept(&store).await;
    let now = OffsetDateTime::now_utc();
    let full = MemoryTokenRevocationStore::new();
    for i in 0..MAX_TOKEN_REVOCATIONS {
        full.add(revocation(&i.to_string(), now, Duration::hours(1)), now).await.unwrap();
    }
    let err = full.add(revocation("one-more", now, Duration::hours(1)), now).await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    // Once they expire there is room again.
    let later = now + Duration::hours(2);
    full.add(revocation("one-more", later, Duration::hours(1)), later).await.unwrap();
}

#[tokio::test]
async fn file_revocations_survive_a_reopen_and_expired_files_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    {
        let keys = FileKeyStore::open(dir.path()).await.unwrap();
        let store = keys.token_revocation_store().await.unwrap();
        expiry_is_kept(&store).await;
    }
    let keys = FileKeyStore::open(dir.path()).await.unwrap();
    let store = keys.token_revocation_store().await.unwrap();
    let values: Vec<String> = store.live(now).await.unwrap().into_iter().map(|r| r.value).collect();
    assert_eq!(values.len(), 2, "{values:?}");
    // Adding after both expired prunes their files.
    let later = now + Duration::hours(2);
    store.add(revocation("new", later, Duration::hours(1)), later).await.unwrap();
    let files = std::fs::read_dir(dir.path().join("revocations")).unwrap().count();
    assert_eq!(files, 1);
    // A damaged file is reported (the core then refuses to start: revocations fail closed).
    let damaged = dir.path().join("revocations").join("x.json");
    std::fs::write(&damaged, b"{").unwrap();
    drop(store);
    drop(keys);
    let keys = FileKeyStore::open(dir.path()).await.unwrap();
    let store = keys.token_revocation_store().await.unwrap();
    let reported = store.damaged();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].location, damaged.display().to_string());
}
