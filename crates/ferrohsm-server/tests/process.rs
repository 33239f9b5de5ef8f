//! The `ferrohsm-server` binary as operators run it: `dev` (first run and restart), `token`,
//! graceful shutdown on SIGTERM, and OTLP span export to a collector.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

#[path = "support/pki.rs"]
mod pki;
#[path = "process/replicas.rs"]
mod replicas;
#[path = "process/serve.rs"]
mod serve;

const BIN: &str = env!("CARGO_BIN_EXE_ferrohsm-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Dev {
    child: Child,
    url: String,
    ca: String,
    token: String,
}

fn start_dev(data: &Path, extra: &[&str]) -> Dev {
    spawn_dev(Command::new(BIN), data, extra)
}

/// `dev` with `args` after the subcommand (e.g. `--key-store sqlite`).
fn start_dev_with(data: &Path, args: &[&str]) -> Dev {
    let mut command = Command::new(BIN);
    command.arg("dev").args(args);
    spawn_dev_command(command, data)
}

/// `dev` under a soft file-size limit of `blocks` × 512 bytes, with SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG instead of killing the process (the hard limit stays
/// unlimited, so the limit can be lifted on the running process).
fn start_dev_limited(data: &Path, blocks: u64, dev_args: &[&str]) -> Dev {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -S -f {blocks}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("dev")
        .args(dev_args);
    spawn_dev_command(command, data)
}

fn spawn_dev(mut command: Command, data: &Path, extra: &[&str]) -> Dev {
    command.args(extra).arg("dev");
    spawn_dev_command(command, data)
}

fn spawn_dev_command(mut command: Command, data: &Path) -> Dev {
    let port = free_port();
    let mut child = command
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut ca, mut token) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let field = |prefix: &str| line.trim().strip_prefix(prefix).map(str::to_owned);
        url = url.or(field("export FERROHSM_SERVER="));
        ca = ca.or(field("export FERROHSM_CA_CERT="));
        if let Some(t) = field("export FERROHSM_TOKEN=") {
            token = Some(t);
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Dev { child, url: url.unwrap(), ca: ca.unwrap(), token: token.unwrap() }
}

impl Drop for Dev {
    /// A test that fails before `terminate` still stops its server (by its own PID), so no
    /// server outlives its test holding the test's pipes.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    }

    /// GET `path` with the admin token, as JSON.
    async fn get_json(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        let r = client.get(format!("{}{path}", self.url)).bearer_auth(&self.token).send().await;
        r.unwrap().json().await.unwrap()
    }

    fn terminate(mut self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the server exited with {exit} after SIGTERM");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_prints_what_a_client_needs_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ferrohsm-data");
    let dev = start_dev(&data, &[]);
    assert!(dev.url.starts_with("https://localhost:"));
    let mode = std::fs::metadata(data.join("master.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let client = dev.client();
    let health: serde_json::Value =
        client.get(format!("{}/healthz", dev.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let r = client
        .post(format!("{}/v1/keys", dev.url))
        .bearer_auth(&dev.token)
        .json(&serde_json::json!({"algorithm": "aes-256-gcm", "name": "kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = std::fs::read(data.join("master.key")).unwrap();
    // (The client's connection must stay served while the server drains, so wait elsewhere.)
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    // A restart reuses the master key and certificate, and the key is still there; a token
    // minted offline by `ferrohsm-server token` is accepted.
    let dev = start_dev(&data, &[]);
    assert_eq!(std::fs::read(data.join("master.key")).unwrap(), key);
    let out = Command::new(BIN)
        .args(["token", "--sub", "audrey", "--role", "auditor", "--ttl", "5m", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let auditor = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let client = dev.client();
    let r =
        client.get(format!("{}/v1/keys/kept", dev.url)).bearer_auth(&auditor).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{}/v1/keys", dev.url))
        .bearer_auth(&auditor)
        .json(&serde_json::json!({"algorithm": "aes-256-gcm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    // Bad invocations fail with one clear line.
    let out = Command::new(BIN)
        .args(["dev", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = Command::new(BIN)
        .args(["token", "--sub", "x", "--role", "wizard", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    // A minimal OTLP/HTTP collector that records what it receives.
    let received: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let seen = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            let kind = req
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(req.into_body(), 1 << 24).await.unwrap();
            seen.lock().unwrap().push((path, kind, body.len()));
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(&dir.path().join("data"), &["--otlp-endpoint", &collector]);
    let r = dev
        .client()
        .get(format!("{}/v1/keys", dev.url))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Shutdown flushes the spans still buffered.
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();
    let received = received.lock().unwrap().clone();
    assert!(
        received.iter().any(|(path, kind, len)| path == "/v1/traces"
            && kind == "application/x-protobuf"
            && *len > 0),
        "{received:?}"
    );
}

/// Issue 11: when the audit log cannot be written (here: the process's file size limit is
/// reached), every operation answers 503, health says why, and once writes succeed again the
/// log recovers by itself with every acknowledged record kept and the chain continuous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_log_shows_in_health_and_recovers_by_itself() {
    // 256 KiB: room for the keys and a few hundred audit records.
    full_audit_log_recovers(512, &[]).await;
}

/// The same on SQLite (issue 12): a database whose writes fail (file size limit, as a full
/// disk) refuses every operation with 503, keeps every acknowledged record, and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_database_shows_in_health_and_recovers_by_itself() {
    // 2 MiB: the database and its write-ahead log, then a few thousand audit records.
    full_audit_log_recovers(4096, &["--key-store", "sqlite"]).await;
}

async fn full_audit_log_recovers(blocks: u64, dev_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ferrohsm-data");
    let dev = start_dev_limited(&data, blocks, dev_args);
    let client = dev.client();
    let url = dev.url.clone();
    let token = dev.token.clone();
    let r = client
        .post(format!("{url}/v1/keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"algorithm": "aes-256-gcm", "name": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let encrypt = |i: usize| {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            client
                .post(format!("{url}/v1/keys/k/encrypt"))
                .bearer_auth(&token)
                .header("x-request-id", format!("req-{i}"))
                .json(&serde_json::json!({"plaintext": "aGVsbG8="}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..20_000 {
        match encrypt(i).await {
            200 => acknowledged.push(i),
            503 => {
                refused = Some(i);
                break;
            }
            other => panic!("request {i}: {other}"),
        }
    }
    let refused = refused.expect("the file size limit was never reached");
    assert!(!acknowledged.is_empty());
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["audit"]["status"], "error", "{body}");
    assert!(body["audit"]["detail"].as_str().unwrap().contains("cannot be written"), "{body}");
    assert_eq!(client.get(format!("{url}/readyz")).send().await.unwrap().status(), 503);
    let metrics = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ferrohsm_audit_writable 0"), "{metrics}");
    // The filesystem log only grows, so it keeps failing while the limit holds. SQLite may
    // recover within the limit (a WAL checkpoint lets it write from the start of its WAL file
    // again), so there the next request may be refused or recorded (then after the recovery
    // record, which the check below finds either way).
    let next = encrypt(refused + 1).await;
    if dev_args.contains(&"sqlite") {
        assert!([200, 503].contains(&next), "{next}");
        if next == 200 {
            acknowledged.push(refused + 1);
        }
    } else {
        assert_eq!(next, 503, "still failing while the limit holds");
    }

    // Lift the limit: the log recovers without a restart.
    let pid = dev.child.id().to_string();
    let lifted = Command::new("prlimit").args(["--pid", &pid, "--fsize=unlimited"]).status();
    assert!(lifted.unwrap().success());
    let mut healthy = false;
    for _ in 0..100 {
        if client.get(format!("{url}/healthz")).send().await.unwrap().status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy, "health never recovered");
    for i in 10_000..10_050 {
        assert_eq!(encrypt(i).await, 200);
        acknowledged.push(i);
    }

    // Every acknowledged request has its record, the chain verifies, and the recovery is
    // itself recorded.
    let auditor = Command::new(BIN)
        .args(["token", "--sub", "audrey", "--role", "auditor", "--ttl", "5m", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let auditor = String::from_utf8(auditor.stdout).unwrap().trim().to_owned();
    let verify: serde_json::Value = client
        .get(format!("{url}/v1/audit/verify"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["valid"], true, "{verify}");
    let export = client
        .get(format!("{url}/v1/audit/export"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ids: std::collections::HashSet<String> = export
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect();
    for i in &acknowledged {
        assert!(ids.contains(&format!("req-{i}")), "acknowledged request {i} has no record");
    }
    assert!(export.contains("audit.recovered"), "the recovery is not recorded");
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();
}

/// Issue 11: one damaged key record (and one damaged approval) no longer stops the server:
/// they are quarantined and reported, every other key keeps working, the damaged key answers
/// `integrity`, and `ferrohsm-server check` names every damaged record offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_are_quarantined_and_named_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ferrohsm-data");
    let dev = start_dev(&data, &[]);
    let client = dev.client();
    let mut ids = Vec::new();
    for name in ["broken", "edited", "fine"] {
        let r: serde_json::Value = client
            .post(format!("{}/v1/keys", dev.url))
            .bearer_auth(&dev.token)
            .json(&serde_json::json!({"algorithm": "aes-256-gcm", "name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    // Damage: garbage in one record, an edited (still valid JSON) field in another, and a
    // garbage approval.
    let record = |id: &str| data.join("keys").join("keys").join(format!("{id}.json"));
    std::fs::write(record(&ids[0]), b"{\"id\": \"not what it was").unwrap();
    let text = std::fs::read_to_string(record(&ids[1])).unwrap();
    std::fs::write(record(&ids[1]), text.replace("\"edited\"", "\"edited2\"")).unwrap();
    let approval = data.join("keys").join("approvals").join(format!("{}.json", uuid_like()));
    std::fs::write(&approval, b"garbage").unwrap();

    let dev = start_dev(&data, &[]);
    let client = dev.client();
    let health = client.get(format!("{}/healthz", dev.url)).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["store"]["status"], "degraded", "{health}");
    assert!(health["store"]["detail"].as_str().unwrap().contains("2 damaged"), "{health}");
    assert_eq!(client.get(format!("{}/readyz", dev.url)).send().await.unwrap().status(), 200);
    let get = |key: String| {
        let (client, url, token) = (client.clone(), dev.url.clone(), dev.token.clone());
        async move {
            let r = client.get(format!("{url}/v1/keys/{key}")).bearer_auth(token).send().await;
            let r = r.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(get(ids[0].clone()).await, (500, "integrity".to_owned()));
    assert_eq!(get(ids[1].clone()).await, (500, "integrity".to_owned()));
    assert_eq!(get("fine".into()).await.0, 200);
    let r = client
        .post(format!("{}/v1/keys/fine/encrypt", dev.url))
        .bearer_auth(&dev.token)
        .json(&serde_json::json!({"plaintext": "aGk="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = client.get(format!("{}/metrics", dev.url)).send().await.unwrap();
    assert!(metrics.text().await.unwrap().contains("ferrohsm_store_damaged_records 2"));
    let export = client
        .get(format!("{}/v1/audit/export", dev.url))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export.matches("store.quarantined").count(), 2, "{export}");
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    // A damaged revocation would stop the server (revocations fail closed); check names it.
    let revocation = data.join("keys").join("revocations").join(format!("{}.json", uuid_like()));
    std::fs::write(&revocation, b"{").unwrap();
    // Offline, `check` names all four; on an intact directory it exits 0.
    let out = Command::new(BIN).args(["check", "--data-dir"]).arg(&data).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("{}.json", ids[0])), "{stdout}");
    assert!(
        stdout.contains(&format!("key {}: its metadata fails the integrity tag", ids[1])),
        "{stdout}"
    );
    assert!(stdout.contains(&approval.display().to_string()), "{stdout}");
    assert!(stdout.contains(&format!("token revocation {}", revocation.display())), "{stdout}");
    assert!(stdout.contains("4 damaged"), "{stdout}");
    let clean = dir.path().join("clean");
    let dev = start_dev(&clean, &[]);
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();
    let out = Command::new(BIN).args(["check", "--data-dir"]).arg(&clean).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("all intact"), "{stdout}");
}

fn uuid_like() -> &'static str {
    "01900000-0000-7000-8000-000000000001"
}

/// SQLite under write load: a `kill -9` mid-load loses no acknowledged key and no audit
/// record, and the log verifies after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_write_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One actor writes as fast as it can: lift its rate limit.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[rate_limit]\ncapacity = 1000000000\nrefill_per_second = 1000000000.0\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let mut dev = start_dev_with(&data, &["--key-store", "sqlite", "--policy-file", policy]);
    assert!(data.join("ferrohsm.db").exists());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for task in 0..8 {
        let (client, url, token) = (dev.client(), dev.url.clone(), dev.token.clone());
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("load-{task}-{i}");
                let sent = client
                    .post(format!("{url}/v1/keys"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"algorithm": "aes-256-gcm", "name": name}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => acknowledged.lock().unwrap().push(name),
                    Ok(r) => panic!("unexpected {}", r.status()),
                    // The server was killed: this write was never acknowledged.
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    dev.child.kill().unwrap(); // SIGKILL, mid-load
    dev.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 50, "only {} writes before the kill", acknowledged.len());

    let dev = start_dev_with(&data, &["--key-store", "sqlite", "--policy-file", policy]);
    let client = dev.client();
    let mut ids = Vec::new();
    for name in &acknowledged {
        let r = client
            .get(format!("{}/v1/keys/{name}", dev.url))
            .bearer_auth(&dev.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged key {name} was lost");
        let info: serde_json::Value = r.json().await.unwrap();
        ids.push(info["id"].as_str().unwrap().to_owned());
    }
    let verify = dev.get_json(&client, "/v1/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
    // Every acknowledged creation has its audit record.
    let mut created = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/audit?action=create_key&outcome=success&limit=1000".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = dev.get_json(&client, &path).await;
        for r in page["records"].as_array().unwrap() {
            created.insert(r["key_id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    for id in &ids {
        assert!(created.contains(id), "no audit record for the acknowledged creation of {id}");
    }
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();
}

/// `migrate` filesystem → SQLite → filesystem: keys (with their sealed bytes), approvals and
/// the audit chain arrive intact; a ciphertext made before decrypts after; each log verifies
/// and continues; a non-empty target is refused; `--dry-run` and `--verify` write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_round_trip_keeps_keys_ciphertexts_and_the_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = start_dev(&data, &[]);
    let client = dev.client();
    let post = |path: &str, body: serde_json::Value| {
        client.post(format!("{}{path}", dev.url)).bearer_auth(&dev.token).json(&body).send()
    };
    assert_eq!(
        post("/v1/keys", serde_json::json!({"algorithm": "aes-256-gcm", "name": "app"}))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(post("/v1/keys/app/rotate", serde_json::json!({})).await.unwrap().status(), 200);
    assert_eq!(
        post("/v1/keys", serde_json::json!({"algorithm": "ec-p256", "name": "signer"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let sealed: serde_json::Value = post(
        "/v1/keys/app/encrypt",
        serde_json::json!({"plaintext": ferrohsm_core::b64::encode(b"before migration")}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let ciphertext = sealed["ciphertext"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    let migrate = |args: &[&str]| {
        let out = Command::new(BIN).arg("migrate").args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let from = format!("filesystem:{}", data.display());
    let db = data.join("ferrohsm.db");
    let to = format!("sqlite:{}", db.display());
    let (ok, out) = migrate(&["--from", &from, "--to", &to, "--dry-run"]);
    assert!(ok && out.contains("2 keys"), "{out}");
    assert!(!db.exists(), "a dry run writes nothing");
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(ok && out.contains("migrated and verified 2 keys"), "{out}");
    let (ok, out) = migrate(&["--from", &from, "--to", &to, "--verify"]);
    assert!(ok, "{out}");
    let (ok, out) = migrate(&["--from", &from, "--to", &to]);
    assert!(!ok && out.contains("already holds data"), "{out}");

    // The server on SQLite: the old ciphertext decrypts, and the log verifies and continues.
    let dev = start_dev_with(&data, &["--key-store", "sqlite"]);
    let on_sqlite = check_migrated(&dev, ciphertext.clone()).await;
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    // And back to a fresh filesystem directory (with the same master key).
    let back = dir.path().join("back");
    std::fs::create_dir_all(&back).unwrap();
    std::fs::copy(data.join("master.key"), back.join("master.key")).unwrap();
    let (ok, out) = migrate(&["--from", &to, "--to", &format!("filesystem:{}", back.display())]);
    assert!(ok, "{out}");
    let dev = start_dev(&back, &[]);
    let on_filesystem = check_migrated(&dev, ciphertext).await;
    assert!(on_filesystem > on_sqlite, "the chain continued: {on_sqlite} then {on_filesystem}");
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();
}

/// After a migration: the old ciphertext decrypts, the rotated key is intact, and the audit
/// log verifies from record 1; returns how many records it holds.
async fn check_migrated(dev: &Dev, ciphertext: String) -> u64 {
    let client = dev.client();
    let opened: serde_json::Value = client
        .post(format!("{}/v1/keys/app/decrypt", dev.url))
        .bearer_auth(&dev.token)
        .json(&serde_json::json!({"ciphertext": ciphertext}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(opened["plaintext"], ferrohsm_core::b64::encode(b"before migration"));
    let info = dev.get_json(&client, "/v1/keys/app").await;
    assert_eq!(info["current_version"], 2, "{info}");
    let verify = dev.get_json(&client, "/v1/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
    assert_eq!(verify["first_seq"], 1, "{verify}");
    verify["records"].as_u64().unwrap()
}

/// `dev` with its master key wrapped by a SoftHSM2 token's key: the data directory holds it
/// only wrapped, a restart opens it again, and without the token the server does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_kept_in_a_token_makes_the_data_directory_useless_without_it() {
    let hsm = tempfile::tempdir().unwrap();
    let conf = ferrohsm_pkcs11::testing::init_token(hsm.path(), "dev-token", "9753").unwrap();
    let data = tempfile::tempdir().unwrap();
    let token_args = [
        "--pkcs11-module",
        ferrohsm_pkcs11::testing::SOFTHSM2_MODULE,
        "--pkcs11-token-label",
        "dev-token",
        "--master-key",
        "pkcs11:ferrohsm-master",
    ];
    let with_token = || {
        let mut command = Command::new(BIN);
        command
            .env("SOFTHSM2_CONF", &conf)
            .env("FERROHSM_PKCS11_PIN", "9753")
            .arg("dev")
            .args(token_args);
        command
    };
    let dev = spawn_dev_command(with_token(), data.path());
    assert!(!data.path().join("master.key").exists(), "no master key in the clear");
    let wrapped = std::fs::read_to_string(data.path().join("master.key.pkcs11")).unwrap();
    assert!(wrapped.starts_with("ferrohsm-master-key-pkcs11-v1\n"), "{wrapped}");
    let client = dev.client();
    let post = |dev: &Dev, path: &str, body: serde_json::Value| {
        let request = client.post(format!("{}{path}", dev.url)).bearer_auth(&dev.token).json(&body);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let key =
        post(&dev, "/v1/keys", serde_json::json!({"algorithm": "aes-256-gcm", "name": "kept"}))
            .await;
    assert_eq!(key["custody"], "sealed", "sealed under the token-held master key: {key}");
    let sealed =
        post(&dev, "/v1/keys/kept/encrypt", serde_json::json!({"plaintext": "c2VjcmV0"})).await;
    dev.terminate();

    // A restart with the token opens the same master key: the key still decrypts.
    let dev = spawn_dev_command(with_token(), data.path());
    let opened = post(
        &dev,
        "/v1/keys/kept/decrypt",
        serde_json::json!({"ciphertext": sealed["ciphertext"]}),
    )
    .await;
    assert_eq!(opened["plaintext"], "c2VjcmV0", "{opened}");
    dev.terminate();

    // Without the token the server refuses to start, saying why.
    std::fs::rename(hsm.path().join("tokens"), hsm.path().join("away")).unwrap();
    std::fs::create_dir_all(hsm.path().join("tokens")).unwrap();
    let out = with_token()
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dev-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_kept_in_the_clear_moves_into_the_token_only_when_asked() {
    let hsm = tempfile::tempdir().unwrap();
    let conf = ferrohsm_pkcs11::testing::init_token(hsm.path(), "move-token", "8642").unwrap();
    let data = tempfile::tempdir().unwrap();
    // A data directory made the ordinary way: its master key in DIR/master.key.
    let dev = start_dev(data.path(), &[]);
    let client = dev.client();
    let post = |dev: &Dev, path: &str, body: serde_json::Value| {
        let request = client.post(format!("{}{path}", dev.url)).bearer_auth(&dev.token).json(&body);
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    post(&dev, "/v1/keys", serde_json::json!({"algorithm": "aes-256-gcm", "name": "old"})).await;
    let sealed =
        post(&dev, "/v1/keys/old/encrypt", serde_json::json!({"plaintext": "bW92ZWQ="})).await;
    dev.terminate();
    let clear = data.path().join("master.key");
    let original = std::fs::read(&clear).unwrap();

    let with_token = |extra: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .env("SOFTHSM2_CONF", &conf)
            .env("FERROHSM_PKCS11_PIN", "8642")
            .arg("dev")
            .args([
                "--pkcs11-module",
                ferrohsm_pkcs11::testing::SOFTHSM2_MODULE,
                "--pkcs11-token-label",
                "move-token",
                "--master-key",
                "pkcs11:moved-root",
            ])
            .args(extra);
        command
    };
    let refused = |extra: &[&str]| {
        let out = with_token(extra)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .unwrap();
        assert!(!out.status.success(), "the start should have been refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Asked for the token without saying to move the key: refused, nothing changed.
    let stderr = refused(&[]);
    assert!(stderr.contains("--migrate-master-key"), "{stderr}");
    assert!(clear.exists() && !data.path().join("master.key.pkcs11").exists());

    // Moved when asked: the clear file is wiped and the old key still decrypts.
    let dev = spawn_dev_command(with_token(&["--migrate-master-key"]), data.path());
    assert!(!clear.exists(), "the clear master key was wiped");
    let wrapped = std::fs::read_to_string(data.path().join("master.key.pkcs11")).unwrap();
    assert!(wrapped.starts_with("ferrohsm-master-key-pkcs11-v1\nmoved-root\n"), "{wrapped}");
    let decrypt = serde_json::json!({"ciphertext": sealed["ciphertext"]});
    let opened = post(&dev, "/v1/keys/old/decrypt", decrypt.clone()).await;
    assert_eq!(opened["plaintext"], "bW92ZWQ=", "{opened}");
    dev.terminate();

    // Later starts need only the token. Another key file beside it is refused; a clear copy
    // of the same key (a migration interrupted before its wipe) is wiped.
    let dev = spawn_dev_command(with_token(&[]), data.path());
    assert_eq!(post(&dev, "/v1/keys/old/decrypt", decrypt.clone()).await["plaintext"], "bW92ZWQ=");
    dev.terminate();
    let write_key = |bytes: &[u8]| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        options.open(&clear).unwrap().write_all(bytes).unwrap();
    };
    write_key(&[7u8; 32]);
    let stderr = refused(&[]);
    assert!(stderr.contains("different master keys"), "{stderr}");
    std::fs::remove_file(&clear).unwrap();
    write_key(&original);
    let dev = spawn_dev_command(with_token(&[]), data.path());
    assert!(!clear.exists(), "the leftover clear copy was wiped");
    assert_eq!(post(&dev, "/v1/keys/old/decrypt", decrypt).await["plaintext"], "bW92ZWQ=");
    dev.terminate();
}

/// `--tls-mode` refuses settings of the other mode and an ACME setup without a name or with a
/// bad directory, before anything starts; a TOML file sets the same keys. A bad scheduler
/// interval is refused the same way.
#[test]
fn tls_mode_flags_of_the_other_mode_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, ferrohsm_core::b64::encode(&[7u8; 32])).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml = dir.path().join("acme.toml");
    std::fs::write(&toml, "tls_mode = \"acme\"\nacme_directory = \"ftp://ca.example/dir\"\nacme_domain = [\"hsm.example\"]\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--tls-mode", "acme"], "needs at least one --acme-domain"),
        (
            &["--tls-mode", "acme", "--acme-domain", "hsm.example", "--tls-cert", "c.pem"],
            "are for --tls-mode manual",
        ),
        (
            &["--acme-domain", "hsm.example", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            "need --tls-mode acme",
        ),
        (&["--tls-mode", "acme", "--acme-domain", "*.example.com"], "wildcards"),
        (
            &["--tls-mode", "acme", "--acme-domain", "hsm.example", "--acme-directory", "staging"],
            "letsencrypt-staging",
        ),
        (&["--config", toml.to_str().unwrap()], "https:// URL"),
        (&["--tls-mode", "manual"], "--tls-cert and --tls-key are required"),
        // Issue 17: a scheduler interval of zero (a busy loop) or nonsense is refused.
        (&["--tls-cert", "c.pem", "--tls-key", "k.pem", "--scheduler-interval", "0s"], "\"0s\""),
        (
            &["--tls-cert", "c.pem", "--tls-key", "k.pem", "--scheduler-interval", "soon"],
            "\"soon\"",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--master-key-file")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(*args)
            .env_remove("FERROHSM_MASTER_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
