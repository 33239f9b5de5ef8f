//! ACME against Pebble (issue 16): Let's Encrypt's test CA, run by this test on loopback with a
//! short certificate lifetime. The server orders with tls-alpn-01 on its serving port, serves
//! the certificate, renews it at two thirds of its life while an old connection keeps working,
//! restarts from the encrypted cache with the CA down (so no order is possible), retries with
//! backoff while the CA stays down (the failure metric rises, the old certificate keeps
//! serving), and refuses a damaged cache at start.
//!
//! Pebble is installed by `cargo xtask test` into `target/tools/bin/pebble`
//! (`FERROHSM_PEBBLE` overrides the path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "the end-to-end suite's harness; this binary uses part of it")]
#[path = "e2e/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohsm_server::{AcmeConfig, ClientAuth, ConnectionLimits};
use harness::{Options, TestServer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// Pebble, listening on loopback, validating tls-alpn-01 on `tls_port`.
struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    directory: String,
    management: SocketAddr,
    /// The CA of Pebble's own HTTPS certificate (what `--acme-ca-root` names).
    ca_root: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pebble_binary() -> PathBuf {
    let path = std::env::var_os("FERROHSM_PEBBLE").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/pebble")
    });
    assert!(
        path.exists(),
        "Pebble is not installed at {}: `cargo xtask test` installs it (or set FERROHSM_PEBBLE)",
        path.display()
    );
    path
}

impl Pebble {
    fn start(tls_port: u16, validity_seconds: u64) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let pki = harness::Pki::new("Pebble front-end CA");
        let (cert, key, _) = pki.issue(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let ca_root = dir.path().join("ca.pem");
        std::fs::write(&ca_root, &pki.ca_pem).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "retryAfter": {"authz": 1, "order": 1},
            "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "short-lived", "validityPeriod": validity_seconds}}
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let child = Command::new(pebble_binary())
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "Pebble did not start listening on {listen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Pebble { child, dir, directory: format!("https://{listen}/dir"), management, ca_root }
    }

    /// The root of the certificates Pebble issues (made anew at each Pebble start).
    async fn issuer_root(&self) -> CertificateDer<'static> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_root).unwrap()).unwrap();
        let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
        let pem = client
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("pebble.log"));
            eprintln!("Pebble's log:\n{}", log.unwrap_or_default());
        }
    }
}

fn acme_config(pebble: &Pebble, cache: &Path) -> AcmeConfig {
    AcmeConfig {
        directory: pebble.directory.clone(),
        domains: vec!["127.0.0.1".into()],
        contact: vec!["mailto:ops@example.com".into()],
        cache_dir: cache.to_owned(),
        ca_root: Some(pebble.ca_root.clone()),
        profile: None,
        retry_min: Duration::from_millis(250),
        retry_max: Duration::from_secs(1),
        check_interval: Duration::from_millis(200),
    }
}

fn options(acme: AcmeConfig, port: u16) -> Options {
    Options {
        acme: Some(acme),
        listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        client_auth: ClientAuth::Optional,
        // The kept-alive connection below waits through a renewal between requests.
        limits: ConnectionLimits {
            header_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            ..ConnectionLimits::default()
        },
        ..Options::default()
    }
}

/// A TLS client trusting only `root`, offering `alpn`.
fn connector(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    port: u16,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector(root, alpn).connect(name, tcp).await
}

/// The leaf certificate a new connection is served, once it chains to `root`.
async fn served_leaf(port: u16, root: &CertificateDer<'static>) -> Option<Vec<u8>> {
    let tls = connect(port, root, &[b"http/1.1"]).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

/// Waits (up to a minute) until new connections are served a certificate `accept` likes.
async fn wait_for_leaf(
    port: u16,
    root: &CertificateDer<'static>,
    accept: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(leaf) = served_leaf(port, root).await
            && accept(&leaf)
        {
            return leaf;
        }
        assert!(Instant::now() < deadline, "no such certificate was served within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One `GET /healthz` on a kept-alive HTTP/1.1 connection; returns the status line.
async fn healthz_on(tls: &mut tokio::io::BufReader<Tls>) -> String {
    tls.get_mut().write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut status = String::new();
    tls.read_line(&mut status).await.unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        tls.read_line(&mut line).await.unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    tls.read_exact(&mut body).await.unwrap();
    status.trim().to_owned()
}

async fn metrics(port: u16, root: &CertificateDer<'static>) -> String {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/metrics");
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// Waits (up to 20 s: records are written after the certificate is served) for at least `n`
/// audit records of `action`, and returns them oldest first.
async fn wait_for_audit(
    server: &TestServer,
    root: &CertificateDer<'static>,
    action: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = audit(server, root, action).await;
        if records.len() >= n {
            return records;
        }
        assert!(Instant::now() < deadline, "{} {action} records, not {n}", records.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SUCCESSES: &str = "ferrohsm_tls_acme_renewals_total{result=\"success\"}";

/// The value of a metric line starting with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

async fn health(port: u16, root: &CertificateDer<'static>) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The audit records of `action`, oldest first.
async fn audit(
    server: &TestServer,
    root: &CertificateDer<'static>,
    action: &str,
) -> Vec<serde_json::Value> {
    let mut api = server.api(&server.token("audrey", &["auditor"]));
    api.client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .build()
        .unwrap();
    api.url = server.url.replace("localhost", "127.0.0.1");
    let r = api.get(&format!("/v1/audit?action={action}&limit=100")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut records = r.body["records"].as_array().unwrap().clone();
    records.sort_by_key(|r| r["seq"].as_u64());
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_renews_under_an_open_connection_restarts_from_the_cache_and_rides_out_the_ca_being_down()
 {
    // The server's log lines show in the output of a failing run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ferrohsm_server=debug,instant_acme=debug")
        .with_test_writer()
        .try_init();
    let port = free_port();
    let cache = tempfile::tempdir().unwrap();
    // Certificates live 30 s (Pebble: notAfter = notBefore + 29 s): renewal starts 19.3 to
    // 20.3 s after notBefore.
    let mut pebble = Pebble::start(port, 30);
    let root = pebble.issuer_root().await;
    let mut server =
        TestServer::start_with(options(acme_config(&pebble, cache.path()), port)).await;

    // Issued through tls-alpn-01 on the serving port, then served.
    let first = wait_for_leaf(port, &root, |_| true).await;
    let h = health(port, &root).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["tls"]["status"], "ok", "{h}");
    // (The metrics are the process's: the other test's servers write the same gauges, so the
    // expiry is read from this server's health.)
    let detail = h["tls"]["detail"].as_str().unwrap();
    let left: i64 =
        detail.split("(in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(left > 0 && left <= 30, "{h}");
    let text = metrics(port, &root).await;
    assert!(metric(&text, SUCCESSES) >= 1.0, "{text}");
    for gauge in [
        "ferrohsm_tls_acme_last_renewal_success",
        "ferrohsm_tls_acme_last_renewal_timestamp_seconds",
        "ferrohsm_tls_acme_next_attempt_timestamp_seconds",
        "ferrohsm_tls_acme_consecutive_failures",
        "ferrohsm_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(text.lines().any(|l| l.starts_with(gauge)), "no {gauge}");
    }
    let issued = wait_for_audit(&server, &root, "tls.certificate_issued", 1).await;
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["actor"], "system:acme");
    let cached = std::fs::read(cache.path().join("certificate.enc")).unwrap();
    assert!(!cached.windows(10).any(|w| w == b"PRIVATE KE"), "the cache is encrypted");

    // A validator's protocol with no challenge pending is refused; nothing is served on it.
    assert!(connect(port, &root, &[b"acme-tls/1"]).await.is_err());

    // An old connection, kept alive through the renewal.
    let old = connect(port, &root, &[b"http/1.1"]).await.unwrap();
    let old_leaf = old.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(old_leaf, first);
    let mut old = tokio::io::BufReader::new(old);
    assert_eq!(healthz_on(&mut old).await, "HTTP/1.1 200 OK");

    // Renewed at two thirds of the lifetime: new connections get the new certificate ...
    let second = wait_for_leaf(port, &root, |leaf| leaf != first.as_slice()).await;
    // ... and the old connection still works, on its old certificate.
    assert_eq!(healthz_on(&mut old).await, "HTTP/1.1 200 OK");
    assert_eq!(old.get_ref().get_ref().1.peer_certificates().unwrap()[0].as_ref(), first);
    wait_for_audit(&server, &root, "tls.certificate_renewed", 1).await;
    drop(old);

    // Restart with the CA down: the cached certificate is served at once (no order could
    // have been made, and none was: the new server's audit log has none).
    server.stop().await;
    pebble.stop();
    let mut server =
        TestServer::start_with(options(acme_config(&pebble, cache.path()), port)).await;
    assert_eq!(served_leaf(port, &root).await.unwrap(), second, "not the cached certificate");
    for action in ["tls.certificate_issued", "tls.certificate_renewed"] {
        assert!(audit(&server, &root, action).await.is_empty(), "{action} after the restart");
    }

    // When renewal comes due, the orders fail and are retried with backoff: the failure
    // metric rises, health says so, and the cached certificate keeps serving.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = metrics(port, &root).await;
        if metric(&text, "ferrohsm_tls_acme_renewals_total{result=\"failure\"}") >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no three failed renewals within 40 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served_leaf(port, &root).await.unwrap(), second);
    let h = health(port, &root).await;
    assert_eq!(h["tls"]["status"], "error", "{h}");
    let detail = h["tls"]["detail"].as_str().unwrap();
    assert!(detail.contains("consecutive renewal failures"), "{h}");
    let failures: u32 =
        detail.split("; ").find_map(|p| p.split_once(" consecutive")).unwrap().0.parse().unwrap();
    assert!(failures >= 3, "{h}");
    assert_eq!(h["status"], "ok", "a valid certificate still serves: {h}");
    let failed = wait_for_audit(&server, &root, "tls.certificate_order_failed", 3).await;
    // Oldest first: each failure counts the ones before it, and says when it retries.
    let messages: Vec<&str> = failed.iter().map(|r| r["message"].as_str().unwrap()).collect();
    for (n, message) in messages.iter().enumerate().take(3) {
        assert!(message.contains(&format!("({} in a row)", n + 1)), "{messages:?}");
        assert!(message.contains("retrying in"), "{message}");
    }
    server.stop().await;

    // A damaged cache is refused at start, naming the file; it is not replaced.
    let file = cache.path().join("certificate.enc");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let err = TestServer::try_start_with(options(acme_config(&pebble, cache.path()), port))
        .await
        .err()
        .expect("a damaged cache must stop the start");
    let message = format!("{err}");
    assert!(message.contains("certificate.enc") && message.contains("refused"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the damaged file was replaced");
}

/// Two replicas share a cache. While the test holds the order lock neither orders; then the
/// replica that checks often (B) takes the lock and orders, the CA validates on the other
/// replica's port (A answers from the challenge B published in the cache), and A adopts B's
/// certificate instead of ordering its own: one issuance for the pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_cache_order_once_and_answer_each_others_challenges() {
    let (port_a, port_b) = (free_port(), free_port());
    let cache = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(port_a, 3600);
    let root = pebble.issuer_root().await;
    let lock = std::fs::File::create(cache.path().join("order.lock")).unwrap();
    lock.try_lock().unwrap();
    let slow =
        AcmeConfig { check_interval: Duration::from_secs(3), ..acme_config(&pebble, cache.path()) };
    let mut a = TestServer::start_with(options(slow, port_a)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = TestServer::start_with(options(acme_config(&pebble, cache.path()), port_b)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        served_leaf(port_a, &root).await.is_none() && served_leaf(port_b, &root).await.is_none()
    );
    lock.unlock().unwrap();

    let leaf = wait_for_leaf(port_b, &root, |_| true).await;
    assert_eq!(wait_for_leaf(port_a, &root, |_| true).await, leaf, "A serves B's certificate");
    assert_eq!(wait_for_audit(&b, &root, "tls.certificate_issued", 1).await.len(), 1);
    assert!(audit(&a, &root, "tls.certificate_issued").await.is_empty(), "A ordered too");
    assert!(audit(&a, &root, "tls.certificate_order_failed").await.is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("challenge-") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    a.stop().await;
    b.stop().await;
}
