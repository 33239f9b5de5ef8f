//! A key vault that stops answering (a hung network HSM) costs a bounded number of threads:
//! operations on its keys wait a bounded time for a turn and then answer 503, sealed keys keep
//! working meanwhile, and health probes reuse one outstanding check instead of piling up.
//!
//! SoftHSM2 (used by the PKCS#11 tests) cannot be made to hang, so the vault here is a test
//! double whose calls block until the test opens a gate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ferrohsm_core::{CreateKey, Error, Hsm, KeyRef};
use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, RemoteKeyVault, Result, SecretBytes, SecretKey,
    SignInput, SignatureScheme, VaultKey,
};
use ferrohsm_store::MemoryKeyStore;

/// Calls wait here while it is closed.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Calls that reached the gate.
    entered: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A vault whose key operations (and, when `hang_checks`, health checks) block at the gate.
#[derive(Debug)]
struct HangingVault {
    gate: Arc<Gate>,
    hang_checks: bool,
    checks: AtomicUsize,
}

impl RemoteKeyVault for HangingVault {
    fn custody(&self) -> &'static str {
        "test-vault"
    }
    fn supports(&self, algorithm: Algorithm) -> bool {
        algorithm == Algorithm::Aes256Gcm
    }
    fn generate(&self, _algorithm: Algorithm, _label: &str) -> Result<VaultKey> {
        Ok(VaultKey { handle: "k1".into(), public_key_der: None })
    }
    fn load(&self, _algorithm: Algorithm, _handle: &str) -> Result<Arc<dyn SecretKey>> {
        let material = AwsLcProvider.generate(Algorithm::Aes256Gcm)?;
        Ok(Arc::new(HangingKey { gate: self.gate.clone(), inner: AwsLcProvider.load(&material)? }))
    }
    fn destroy(&self, _handle: &str) -> Result<()> {
        Ok(())
    }
    fn check(&self) -> Result<()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.hang_checks {
            self.gate.pass();
        }
        Ok(())
    }
}

#[derive(Debug)]
struct HangingKey {
    gate: Arc<Gate>,
    inner: Arc<dyn SecretKey>,
}

impl SecretKey for HangingKey {
    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }
    fn public_key_der(&self) -> Option<&[u8]> {
        None
    }
    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.gate.pass();
        self.inner.encrypt(plaintext, aad)
    }
    fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        self.gate.pass();
        self.inner.decrypt(sealed, aad)
    }
    fn wrap(&self, key_material: &[u8]) -> Result<Vec<u8>> {
        self.inner.wrap(key_material)
    }
    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        self.inner.unwrap(wrapped)
    }
    fn sign(&self, scheme: SignatureScheme, input: SignInput<'_>) -> Result<Vec<u8>> {
        self.inner.sign(scheme, input)
    }
    fn verify(&self, scheme: SignatureScheme, input: SignInput<'_>, sig: &[u8]) -> Result<bool> {
        self.inner.verify(scheme, input, sig)
    }
}

async fn hsm_with(vault: Arc<HangingVault>, calls: usize) -> Hsm {
    ferrohsm_core::Hsm::builder()
        .store(Arc::new(MemoryKeyStore::new()))
        .master_key(common::master(1))
        .vault(vault)
        .vault_limits(calls, Duration::from_millis(300))
        .build()
        .await
        .unwrap()
}

async fn create(hsm: &Hsm, custody: &str) -> KeyRef {
    let mut request = CreateKey::new(Algorithm::Aes256Gcm);
    request.custody = Some(custody.into());
    KeyRef::Id(hsm.create_key(&common::ctx(), request).await.unwrap().id)
}

/// Ends the test process if the test is not done within `limit`: a runtime whose workers are
/// all stalled cannot fail the test on its own, so it would hang instead.
fn watchdog(test: &'static str, limit: Duration) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        if !finished.load(Ordering::SeqCst) {
            eprintln!("{test}: not done after {limit:?}; the async workers are stalled");
            std::process::exit(101);
        }
    });
    done
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vault_holds_a_bounded_number_of_threads_and_sealed_keys_keep_working() {
    let done = watchdog("a_hung_vault_holds_a_bounded_number_of_threads", Duration::from_secs(30));
    let gate = Arc::new(Gate::default());
    let vault = Arc::new(HangingVault { gate: gate.clone(), hang_checks: false, checks: 0.into() });
    let hsm = hsm_with(vault, 2).await;
    let held = create(&hsm, "test-vault").await;
    let sealed = create(&hsm, "sealed").await;

    // Two operations hang inside the vault: as many as there are turns, and as many workers
    // as the runtime has.
    let hung: Vec<_> = (0..2)
        .map(|_| {
            let (hsm, held) = (hsm.clone(), held.clone());
            tokio::spawn(async move { hsm.encrypt(&common::ctx(), &held, b"x", b"").await })
        })
        .collect();
    wait_for("two calls inside the vault", || gate.entered.load(Ordering::SeqCst) == 2).await;

    // A third waits for a turn, then answers that the vault is unavailable.
    let refused = hsm.encrypt(&common::ctx(), &held, b"x", b"").await;
    assert!(
        matches!(&refused, Err(Error::VaultUnavailable(m)) if m.contains("busy")),
        "{refused:?}"
    );
    assert_eq!(gate.entered.load(Ordering::SeqCst), 2, "it never reached the vault");
    // Sealed keys are served meanwhile: the hung calls did not take the async workers.
    for _ in 0..20 {
        hsm.encrypt(&common::ctx(), &sealed, b"x", b"").await.unwrap();
    }

    gate.open();
    for call in hung {
        call.await.unwrap().unwrap();
    }
    hsm.encrypt(&common::ctx(), &held, b"x", b"").await.unwrap();
    done.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_of_a_hung_vault_answer_degraded_and_share_one_check() {
    let gate = Arc::new(Gate::default());
    let vault = Arc::new(HangingVault { gate: gate.clone(), hang_checks: true, checks: 0.into() });
    let hsm = hsm_with(vault.clone(), 2).await;
    // A probe that gives up early (a prober's own short timeout) leaves its check running.
    assert!(tokio::time::timeout(Duration::from_millis(50), hsm.health()).await.is_err());
    let (a, b) = tokio::join!(hsm.health(), hsm.health());
    assert_eq!((a.status.as_str(), b.status.as_str()), ("degraded", "degraded"));
    for _ in 0..2 {
        let health = hsm.health().await;
        assert_eq!(health.status, "degraded");
        let component = health.vault.expect("the vault is reported");
        assert!(component.detail.contains("did not answer"), "{}", component.detail);
    }
    assert_eq!(vault.checks.load(Ordering::SeqCst), 1, "later probes waited on the same check");
    gate.open();
    // Once the vault answers, the next check (not the one that timed out) turns health ok;
    // on a loaded machine the hung check may still be finishing when the first probe comes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = hsm.health().await;
        if health.status == "ok" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", health.vault);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
