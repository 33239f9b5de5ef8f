//! Issue 11: AES-GCM random nonces are counted per key version (persisted in reserved blocks,
//! so a crash loses at most a block, counted as used); the key rotates before the limit and
//! encryption is refused at it (NIST SP 800-38D: 2^32 random-nonce invocations per key).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{ctx, master};
use ferrohsm_core::{Algorithm, BackendConfig, CreateKey, Hsm, KeyRef, NonceBudget};
use ferrohsm_store::MemoryKeyStore;

async fn hsm_with(budget: NonceBudget) -> Hsm {
    Hsm::builder()
        .store(Arc::new(MemoryKeyStore::new()))
        .master_key(master(7))
        .nonce_budget(budget)
        .build()
        .await
        .unwrap()
}

async fn aes(hsm: &Hsm) -> KeyRef {
    let key = hsm.create_key(&ctx(), CreateKey::new(Algorithm::Aes256Gcm)).await.unwrap();
    KeyRef::Id(key.id)
}

#[tokio::test]
async fn encryption_is_refused_at_the_limit_and_decryption_still_works() {
    let hsm = hsm_with(NonceBudget { limit: 10, rotate_at: u64::MAX, reserve: 4 }).await;
    let k = aes(&hsm).await;
    let mut last = None;
    for _ in 0..10 {
        last = Some(hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap());
    }
    let err = hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap_err();
    assert_eq!(err.code(), "invalid_state");
    assert!(err.to_string().contains("used its 10 AES-GCM encryptions"), "{err}");
    let info = hsm.describe_key(&ctx(), &k).await.unwrap();
    assert_eq!(info.versions[0].encryptions, 10, "the whole budget is recorded");
    let ct = last.unwrap().ciphertext;
    assert_eq!(hsm.decrypt(&ctx(), &k, &ct, b"").await.unwrap().plaintext.expose(), b"x");
}

#[tokio::test]
async fn the_key_rotates_before_the_limit() {
    let hsm = hsm_with(NonceBudget { limit: 20, rotate_at: 12, reserve: 5 }).await;
    let k = aes(&hsm).await;
    for _ in 0..12 {
        hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap();
    }
    let mut rotated = false;
    for _ in 0..200 {
        if hsm.describe_key(&ctx(), &k).await.unwrap().current_version == 2 {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rotated, "no automatic rotation");
    let e = hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap();
    assert!(e.ciphertext.starts_with("fhsm:v2:"));
    let info = hsm.describe_key(&ctx(), &k).await.unwrap();
    assert!((12..=20).contains(&info.versions[0].encryptions), "{:?}", info.versions);
    assert!(hsm.nonce_budget_used() >= 0.6, "{}", hsm.nonce_budget_used());
}

#[tokio::test]
async fn counts_survive_a_restart_with_at_most_one_block_lost() {
    let dir = tempfile::tempdir().unwrap();
    let budget = NonceBudget { limit: 1000, rotate_at: u64::MAX, reserve: 8 };
    let open =
        || Hsm::builder().data_dir(dir.path()).master_key(master(8)).nonce_budget(budget).build();
    let hsm = open().await.unwrap();
    let k = aes(&hsm).await;
    for _ in 0..3 {
        hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap();
    }
    hsm.shutdown().await.unwrap();
    drop(hsm);
    // As if the process had crashed: what was reserved counts as used.
    let hsm = open().await.unwrap();
    let before = hsm.describe_key(&ctx(), &k).await.unwrap().versions[0].encryptions;
    assert!((3..=3 + 8).contains(&before), "{before}");
    hsm.encrypt(&ctx(), &k, b"x", b"").await.unwrap();
    let after = hsm.describe_key(&ctx(), &k).await.unwrap().versions[0].encryptions;
    assert!(after > before, "the count resumed from the reservation: {before} -> {after}");
}

/// Encrypts `n` messages at once under `k`: exactly `admitted` succeed (the others are refused
/// at the budget's limit, never as a conflict), each decrypts, and the stored reservation
/// covers every acknowledged encryption, by at most one block and never past the limit.
async fn encrypt_at_once(hsm: &Hsm, k: &KeyRef, budget: NonceBudget, n: u64, admitted: u64) {
    let before = hsm.describe_key(&ctx(), k).await.unwrap().versions[0].encryptions;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (hsm, k) = (hsm.clone(), k.clone());
            tokio::spawn(async move {
                let plaintext = format!("message {i}");
                let encrypted = hsm.encrypt(&ctx(), &k, plaintext.as_bytes(), b"").await;
                encrypted.map(|e| (plaintext, e.ciphertext))
            })
        })
        .collect();
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            Ok(pair) => done.push(pair),
            Err(e) => refused.push(e),
        }
    }
    assert_eq!(done.len() as u64, admitted, "refused: {refused:?}");
    assert!(refused.iter().all(|e| e.code() == "invalid_state"), "{refused:?}");
    for (plaintext, ciphertext) in &done {
        let back = hsm.decrypt(&ctx(), k, ciphertext, b"").await.unwrap();
        assert_eq!(back.plaintext.expose(), plaintext.as_bytes());
    }
    let recorded = hsm.describe_key(&ctx(), k).await.unwrap().versions[0].encryptions;
    let most = (before + admitted + budget.reserve).min(budget.limit);
    assert!((before + admitted..=most).contains(&recorded), "{before} + {admitted} -> {recorded}");
}

/// 32 encryptions at once under a key just created all succeed: the first encryptions under a
/// version share one reservation write instead of racing to make one each (which refused 19
/// of 32 as `conflict`, "kept changing; try again"). The same after a restart, where counting
/// resumes at the stored reservation, with small blocks, and at the limit.
async fn concurrent_first_encryptions(backend: impl Fn(PathBuf) -> BackendConfig, durable: bool) {
    let dir = tempfile::tempdir().unwrap();
    let open = |config: BackendConfig, budget: NonceBudget| {
        Hsm::builder().backend(config).master_key(master(9)).nonce_budget(budget).build()
    };
    let default = NonceBudget::default();
    let hsm = open(backend(dir.path().join("default")), default).await.unwrap();
    let k = aes(&hsm).await;
    encrypt_at_once(&hsm, &k, default, 32, 32).await;
    hsm.shutdown().await.unwrap();
    drop(hsm);
    if durable {
        let hsm = open(backend(dir.path().join("default")), default).await.unwrap();
        encrypt_at_once(&hsm, &k, default, 32, 32).await;
        hsm.shutdown().await.unwrap();
    }
    // Blocks of 4: the 32 pass several reservations.
    let small = NonceBudget { limit: 1000, rotate_at: u64::MAX, reserve: 4 };
    let hsm = open(backend(dir.path().join("small")), small).await.unwrap();
    let k = aes(&hsm).await;
    encrypt_at_once(&hsm, &k, small, 32, 32).await;
    hsm.shutdown().await.unwrap();
    // A limit of 20: 20 succeed, 12 are refused at the limit, and the whole budget is recorded.
    let tight = NonceBudget { limit: 20, rotate_at: u64::MAX, reserve: 4 };
    let hsm = open(backend(dir.path().join("tight")), tight).await.unwrap();
    let k = aes(&hsm).await;
    encrypt_at_once(&hsm, &k, tight, 32, 20).await;
    hsm.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_encryptions_all_succeed_in_memory() {
    concurrent_first_encryptions(|_| BackendConfig::memory(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_encryptions_all_succeed_on_the_filesystem() {
    concurrent_first_encryptions(BackendConfig::filesystem, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_encryptions_all_succeed_on_sqlite() {
    concurrent_first_encryptions(BackendConfig::sqlite, true).await;
}

/// Two HSMs on one store (as replicas on one database) lease disjoint blocks: together they
/// never encrypt more than the budget, and the stored reservation covers every encryption
/// either made. (Counting each from the stored reservation, as one process may, would let
/// each use the whole budget.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_store_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget = NonceBudget { limit: 40, rotate_at: u64::MAX, reserve: 4 };
    let open = || {
        Hsm::builder()
            .backend(BackendConfig::sqlite(dir.path().to_owned()))
            .master_key(master(10))
            .nonce_budget(budget)
            .build()
    };
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    let k = aes(&a).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (hsm, k) = (if i % 2 == 0 { a.clone() } else { b.clone() }, k.clone());
            tokio::spawn(async move { hsm.encrypt(&ctx(), &k, b"x", b"").await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(e.code(), "invalid_state", "{e}"),
        }
    }
    assert!(admitted <= 40, "{admitted} encryptions under a budget of 40");
    assert!(admitted >= 30, "only {admitted} of 40 used (at most a block per process is lost)");
    let recorded = b.describe_key(&ctx(), &k).await.unwrap().versions[0].encryptions;
    assert!(recorded >= admitted, "{admitted} encryptions, {recorded} recorded");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
