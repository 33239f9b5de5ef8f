//! Three `ferrohsm-server` replicas on one PostgreSQL database (issue 17, docs/scaling.md):
//! each replica is a real process with its own data directory (the same master key copied
//! into each, as a deployment would), on a real PostgreSQL server these tests start in a
//! temporary directory. Clients spread their load across the replicas.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrohsm_postgres::conformance::PgServer;
use serde_json::{Value, json};

use super::{BIN, Dev, start_dev_with};

/// Three replicas on one database, with one policy file.
struct Cluster {
    replicas: Vec<Option<Dev>>,
    dirs: Vec<PathBuf>,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three replicas on database `url` with `policy`, each with the flags `first`
    /// (not given to replicas started again later).
    fn start(url: &str, policy: &str, first: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let policy_file = dir.path().join("policy.toml");
        std::fs::write(&policy_file, policy).unwrap();
        let mut args: Vec<String> = ["--key-store", "postgres", "--database-url", url]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--policy-file".to_owned(), policy_file.to_str().unwrap().to_owned()]);
        let dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("replica-{i}"))).collect();
        let mut cluster = Cluster { replicas: Vec::new(), dirs, args, _dir: dir };
        // The first replica creates the master key; the others get a copy of it.
        cluster.replicas.push(Some(cluster.spawn(0, first)));
        for i in 1..3 {
            std::fs::create_dir_all(&cluster.dirs[i]).unwrap();
            std::fs::copy(cluster.dirs[0].join("master.key"), cluster.dirs[i].join("master.key"))
                .unwrap();
            cluster.replicas.push(Some(cluster.spawn(i, first)));
        }
        cluster
    }

    /// Starts replica `i`, with `args` as well as the cluster's.
    fn spawn(&self, i: usize, more: &[&str]) -> Dev {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(more);
        start_dev_with(&self.dirs[i], &args)
    }

    fn replica(&self, i: usize) -> &Dev {
        self.replicas[i].as_ref().unwrap()
    }

    /// A client of replica `i` acting as `token`.
    fn api(&self, i: usize, token: &str) -> Api {
        let dev = self.replica(i);
        Api { client: dev.client(), url: dev.url.clone(), token: token.to_owned() }
    }

    /// A token for `sub` with `role`, minted offline with the shared master key.
    fn token(&self, sub: &str, role: &str) -> String {
        let out = std::process::Command::new(BIN)
            .args(["token", "--sub", sub, "--role", role, "--ttl", "1h", "--data-dir"])
            .arg(&self.dirs[0])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn kill(&mut self, i: usize) {
        let mut dev = self.replicas[i].take().unwrap();
        dev.child.kill().unwrap(); // SIGKILL
        dev.child.wait().unwrap();
    }
}

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    /// Sends a request; `Err` when no answer came (the replica is gone).
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        approval: Option<&str>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(id) = approval {
            request = request.header("x-approval-id", id);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None, None).await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, Some(body), None).await.unwrap()
    }

    /// Every audit record matching `query` (all pages).
    async fn audit(&self, query: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/audit?{query}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page}");
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return records,
            }
        }
    }

    /// Exports the whole log and verifies it offline, as an auditor would (`ferrohsm audit
    /// verify`), with the checkpoint public key the server publishes; returns its records.
    async fn export_and_verify(&self, dir: &Path) -> u64 {
        let export = self
            .client
            .get(format!("{}/v1/audit/export", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(export.status(), 200);
        let file = dir.join("export.ndjson");
        std::fs::write(&file, export.bytes().await.unwrap()).unwrap();
        let (_, checkpoint) = self.get("/v1/audit/checkpoint").await;
        let pem = dir.join("audit-public.pem");
        std::fs::write(&pem, checkpoint["public_key_pem"].as_str().unwrap()).unwrap();
        let options =
            ferrohsm_core::OfflineOptions { public_keys: vec![pem], ..Default::default() };
        let report =
            ferrohsm_core::verify_audit_files(ferrohsm_core::default_provider(), &options, &[file])
                .unwrap()
                .unwrap_or_else(|failure| panic!("the exported log does not verify: {failure}"));
        assert_eq!(report.first_seq, 1);
        report.records
    }
}

const UNLIMITED: &str = "
[rate_limit]
capacity = 1000000000
refill_per_second = 1000000000.0
";

/// Keys tagged env=prod need two approvers to be destroyed.
const DUAL_CONTROL: &str = r#"
[[tag_policy]]
name = "production"
match = { env = "prod" }
[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "1h"
"#;

/// Under client load spread across three replicas, `kill -9` of one loses no acknowledged
/// key, approval or audit record, and the exported log verifies offline as one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_acknowledged_when_one_is_killed_mid_load() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let mut cluster = Cluster::start(&url, &format!("version = 1\n{DUAL_CONTROL}{UNLIMITED}"), &[]);
    let admin = cluster.replica(0).token.clone();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let approvals = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for task in 0..6 {
        let api = cluster.api(task % 3, &admin);
        let (keys, approvals, stop) = (keys.clone(), approvals.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("load-{task}-{i}");
                let body =
                    json!({"algorithm": "aes-256-gcm", "name": name, "tags": {"env": "prod"}});
                match api.send("POST", "/v1/keys", Some(body), None).await {
                    Ok((201, _)) => keys.lock().unwrap().push(name.clone()),
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    // The replica was killed: this write was never acknowledged.
                    Err(_) => break,
                }
                if i % 4 != 0 {
                    continue;
                }
                // Every fourth key: a destruction request, which opens an approval.
                match api.send("POST", &format!("/v1/keys/{name}/destroy"), None, None).await {
                    Ok((202, body)) => {
                        approvals.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    cluster.kill(1);
    // The others keep serving their clients after the kill.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let keys = keys.lock().unwrap().clone();
    let approvals = approvals.lock().unwrap().clone();
    assert!(keys.len() > 50 && approvals.len() > 10, "{} keys, {}", keys.len(), approvals.len());

    // The killed replica starts again on the same database and sees everything.
    cluster.replicas[1] = Some(cluster.spawn(1, &[]));
    let mut ids = std::collections::HashSet::new();
    for (n, name) in keys.iter().enumerate() {
        let (status, info) = cluster.api(n % 3, &admin).get(&format!("/v1/keys/{name}")).await;
        assert_eq!(status, 200, "acknowledged key {name} was lost: {info}");
        ids.insert(info["id"].as_str().unwrap().to_owned());
    }
    for (n, id) in approvals.iter().enumerate() {
        let (status, approval) =
            cluster.api(n % 3, &admin).get(&format!("/v1/approvals/{id}")).await;
        assert_eq!((status, approval["state"].as_str()), (200, Some("pending")), "{approval}");
    }
    // Every acknowledged write has its audit record, and the log is one chain.
    let api = cluster.api(2, &admin);
    let created: std::collections::HashSet<String> = api
        .audit("action=create_key&outcome=success")
        .await
        .iter()
        .map(|r| r["key_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ids.is_subset(&created), "an acknowledged creation has no audit record");
    let (_, verify) = api.get("/v1/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
    let dir = tempfile::tempdir().unwrap();
    let records = api.export_and_verify(dir.path()).await;
    assert!(records >= (keys.len() + approvals.len()) as u64, "{records} records");
}

/// Dual control across replicas: requested on one, approved on the two others, executed on
/// the third; a replay on any of them is refused. And a caller's rate limit
/// holds across the replicas: what it used up on one is debited on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_control_and_rate_limits_span_the_replicas() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let policy = format!(
        "version = 1\n{DUAL_CONTROL}\n[rate_limit]\ncapacity = 30\nrefill_per_second = 0.2\n"
    );
    let cluster = Cluster::start(&url, &policy, &[]);
    let olga = cluster.token("olga", "operator");
    let (ada, bob) = (cluster.token("ada", "admin"), cluster.token("bob", "operator"));

    let (status, _) = cluster
        .api(0, &olga)
        .post(
            "/v1/keys",
            json!({"algorithm": "aes-256-gcm", "name": "prod-key", "tags": {"env": "prod"}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, approval) = cluster
        .api(0, &olga)
        .post("/v1/keys/prod-key/destroy", json!({"grace_seconds": 3600}))
        .await;
    assert_eq!(status, 202, "{approval}");
    let id = approval["id"].as_str().unwrap().to_owned();
    let (status, _) =
        cluster.api(1, &ada).post(&format!("/v1/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, 200);
    // The same approver again, through another replica, does not count twice.
    let (status, _) =
        cluster.api(2, &ada).post(&format!("/v1/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, 409);
    let (status, approved) =
        cluster.api(2, &bob).post(&format!("/v1/approvals/{id}/approve"), json!({})).await;
    assert_eq!((status, approved["state"].as_str()), (200, Some("approved")), "{approved}");
    let body = Some(json!({"grace_seconds": 3600}));
    let (status, key) = cluster
        .api(2, &olga)
        .send("POST", "/v1/keys/prod-key/destroy", body.clone(), Some(&id))
        .await
        .unwrap();
    assert_eq!((status, key["state"].as_str()), (200, Some("pending_destruction")), "{key}");
    for i in 0..3 {
        let api = cluster.api(i, &olga);
        let replay = api.send("POST", "/v1/keys/prod-key/destroy", body.clone(), Some(&id));
        assert_eq!(replay.await.unwrap().0, 409, "a replay on replica {i} must be refused");
        let (_, key) = api.get("/v1/keys/prod-key").await;
        assert_eq!(key["state"], "pending_destruction");
    }

    // Rita uses up her bucket (30) on replica 0...
    let rita = cluster.token("rita", "operator");
    let first = cluster.api(0, &rita);
    for n in 0..30 {
        let (status, body) = first.get("/v1/keys?limit=1").await;
        assert_eq!(status, 200, "request {n}: {body}");
    }
    // ...and once the replicas have exchanged their usage (twice a second; the wait allows
    // for a loaded machine), the others refuse her too, apart from what refilled meanwhile
    // (0.2 per second). Without the exchange each would serve her 30 more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in [1, 2] {
        let api = cluster.api(i, &rita);
        let mut served = 0;
        loop {
            let (status, body) = api.get("/v1/keys?limit=1").await;
            if status == 429 {
                break;
            }
            assert_eq!(status, 200, "{body}");
            served += 1;
            assert!(served <= 10, "replica {i} served {served} requests beyond the shared limit");
        }
    }
    // Another caller is not affected.
    assert_eq!(cluster.api(1, &ada).get("/v1/keys?limit=1").await.0, 200);
}

/// PostgreSQL restarts while three replicas serve: clients get 503 (retryable, never another
/// error) during the outage, and every replica serves again by itself afterwards; the log
/// records the outage and still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_answers_503_then_recovers() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let cluster = Cluster::start(&url, &format!("version = 1\n{UNLIMITED}"), &[]);
    let admin = cluster.replica(0).token.clone();
    let (status, _) = cluster
        .api(0, &admin)
        .post("/v1/keys", json!({"algorithm": "aes-256-gcm", "name": "k"}))
        .await;
    assert_eq!(status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let mut clients = Vec::new();
    for task in 0..3 {
        let api = cluster.api(task, &admin);
        let (stop, statuses) = (stop.clone(), statuses.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"plaintext": ferrohsm_core::b64::encode(b"mid-load")});
                let (status, body) = api.post("/v1/keys/k/encrypt", body).await;
                assert!(status == 200 || status == 503, "{status}: {body}");
                if status == 503 {
                    assert_eq!(body["error"]["code"], "unavailable", "{body}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                *statuses.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.stop();
    // While the database is down, readiness says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dev = cluster.replica(1);
        let ready = dev.client().get(format!("{}/readyz", dev.url)).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed ready with the database down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = statuses.lock().unwrap().clone();
    pg.launch();
    // Every replica serves again by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..3 {
        let api = cluster.api(i, &admin);
        loop {
            let body = json!({"plaintext": ferrohsm_core::b64::encode(b"after")});
            if api.post("/v1/keys/k/encrypt", body).await.0 == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "replica {i} did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let after = statuses.lock().unwrap().clone();
    assert!(
        during.get(&503).copied().unwrap_or(0) > 0,
        "no 503 while the database was down: {during:?}"
    );
    assert!(after[&200] > during.get(&200).copied().unwrap_or(0), "no success after: {after:?}");

    let api = cluster.api(0, &admin);
    let (_, verify) = api.get("/v1/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
    let recovered = api.audit("action=audit.recovered").await;
    assert!(!recovered.is_empty(), "the outage is not in the log");
    let dir = tempfile::tempdir().unwrap();
    api.export_and_verify(dir.path()).await;
}

/// Scheduled jobs run once across three replicas: keys whose policy says rotate after 4 s are
/// rotated by exactly one replica per due version (no refused second attempt in the log), the
/// other replicas skip their ticks, and when the lease holder is killed another takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_each_job_once_across_replicas() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let policy = format!(
        "version = 1\n[[tag_policy]]\nname = \"short-lived\"\nmatch = {{ rot = \"yes\" }}\n\
         [tag_policy.retention]\nmax_age = \"4s\"\n{UNLIMITED}"
    );
    let mut cluster = Cluster::start(&url, &policy, &["--scheduler-interval", "1s"]);
    let admin = cluster.replica(0).token.clone();
    for n in 0..10 {
        let body =
            json!({"algorithm": "aes-256-gcm", "name": format!("r{n}"), "tags": {"rot": "yes"}});
        assert_eq!(cluster.api(n % 3, &admin).post("/v1/keys", body).await.0, 201);
    }
    // Wait for one round of rotations.
    let api = cluster.api(0, &admin);
    wait_until_all_at_version(&api, 2, "rotated once").await;
    // Which replica holds the lease: the one that did not skip its ticks.
    let mut holder = None;
    for i in 0..3 {
        let dev = cluster.replica(i);
        let metrics = dev
            .client()
            .get(format!("{}/metrics", dev.url))
            .bearer_auth(&dev.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // A replica that never skipped a tick held the lease at every tick. (None may show
        // this if the lease changed hands, which a tick delayed past the lease allows.)
        if !metrics.contains("ferrohsm_scheduler_runs_total{result=\"other_replica\"}") {
            assert!(holder.is_none(), "two replicas ran the scheduler at every tick");
            holder = Some(i);
        }
    }
    let holder = holder.unwrap_or(0);
    cluster.kill(holder);
    let survivor = cluster.api((holder + 1) % 3, &admin);
    // The lease (three intervals) expires and another replica rotates the next due versions.
    wait_until_all_at_version(&survivor, 3, "rotated again after the holder died").await;
    // Stop the schedule (a replica started again ticks once a minute) to count what it did.
    for i in 0..3 {
        if cluster.replicas[i].is_some() {
            cluster.kill(i);
        }
    }
    cluster.replicas[0] = Some(cluster.spawn(0, &[]));
    let survivor = cluster.api(0, &admin);
    // Once each: every scheduled rotation succeeded (a second replica's attempt would be
    // refused and recorded), and each key's versions match its rotations.
    let rotations = survivor.audit("action=rotate_key&actor=system:scheduler").await;
    assert!(
        rotations.iter().all(|r| r["outcome"] == "success"),
        "a rotation was attempted twice: {rotations:?}"
    );
    let (_, list) = survivor.get("/v1/keys?limit=100").await;
    for key in list["keys"].as_array().unwrap() {
        let id = key["id"].as_str().unwrap();
        let count = rotations.iter().filter(|r| r["key_id"] == id).count() as u64;
        assert_eq!(count + 1, key["current_version"].as_u64().unwrap(), "{key}");
    }
}

/// Waits (at most 40 s) until each of the 10 keys is at `version` or later.
async fn wait_until_all_at_version(api: &Api, version: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, list) = api.get("/v1/keys?limit=100").await;
        let keys = list["keys"].as_array().unwrap();
        let done = keys.iter().filter(|k| k["current_version"].as_u64() >= Some(version)).count();
        if done == 10 {
            return;
        }
        assert!(Instant::now() < deadline, "{done} of 10 keys {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three consecutive free loopback ports; returns the first.
fn three_free_ports() -> u16 {
    loop {
        let base = super::free_port();
        if base < u16::MAX - 2
            && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// The cluster `deploy/local/replicas.sh up` started, stopped with `down` however the test
/// ends.
struct Deployed {
    script: PathBuf,
    dir: PathBuf,
    stopped: bool,
}

impl Deployed {
    fn down(&mut self) -> std::process::Output {
        self.stopped = true;
        std::process::Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .arg(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        if !self.stopped {
            self.down();
        }
    }
}

/// `deploy/local/replicas.sh` runs PostgreSQL and three replicas on this machine: they share
/// keys (created on one, used on the others) and one audit log, and `down` stops every
/// process it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_deployment_runs_postgres_and_three_replicas() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::tempdir().unwrap();
    // When the tests run as root, PostgreSQL runs as `postgres` and must reach the cluster.
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/replicas.sh");
    let dir = temp.path().join("cluster");
    let base = three_free_ports();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .arg(&dir)
        .env("FERROHSM_BIN", BIN)
        .env("BASE_PORT", base.to_string())
        .env("PG_PORT", super::free_port().to_string())
        .output()
        .unwrap();
    let mut deployed = Deployed { script: script.clone(), dir: dir.clone(), stopped: false };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_owned()
    };
    let (ca, token) = (field("export FERROHSM_CA_CERT="), field("export FERROHSM_TOKEN="));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let api = |i: u16| Api {
        client: client.clone(),
        url: format!("https://localhost:{}", base + i),
        token: token.clone(),
    };
    assert_eq!(
        api(0).post("/v1/keys", json!({"algorithm": "aes-256-gcm", "name": "shared"})).await.0,
        201
    );
    let plaintext = ferrohsm_core::b64::encode(b"across replicas");
    let (status, sealed) =
        api(1).post("/v1/keys/shared/encrypt", json!({"plaintext": plaintext})).await;
    assert_eq!(status, 200, "{sealed}");
    let (status, opened) =
        api(2).post("/v1/keys/shared/decrypt", json!({"ciphertext": sealed["ciphertext"]})).await;
    assert_eq!((status, opened["plaintext"].as_str()), (200, Some(plaintext.as_str())), "{opened}");
    let (_, verify) = api(2).get("/v1/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");

    let pids: Vec<String> = (0..3)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("replica-{i}.pid"))).unwrap().trim().to_owned()
        })
        .collect();
    let out = deployed.down();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for pid in pids {
        // Gone, or a zombie its (init) parent has not reaped yet.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        assert!(matches!(state, None | Some(Some('Z'))), "replica {pid} still runs: {stat}");
    }
    assert!(!dir.join("pg/data/postmaster.pid").exists(), "PostgreSQL still runs");
}

/// `migrate` into PostgreSQL, with the URL taken from the environment (`postgres:$VAR`, so a
/// password stays out of the process list): the key and the audit chain arrive, and a server
/// on the database serves the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_data_directory_into_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = super::start_dev(&data, &[]);
    let api = Api { client: dev.client(), url: dev.url.clone(), token: dev.token.clone() };
    assert_eq!(
        api.post("/v1/keys", json!({"algorithm": "aes-256-gcm", "name": "app"})).await.0,
        201
    );
    tokio::task::spawn_blocking(move || dev.terminate()).await.unwrap();

    let pg = PgServer::start();
    let url = pg.create_database();
    let migrate = |to: &str| {
        let out = std::process::Command::new(BIN)
            .args(["migrate", "--from"])
            .arg(format!("filesystem:{}", data.display()))
            .args(["--to", to])
            .env("FERROHSM_TEST_TARGET", &url)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = migrate("postgres:$FERROHSM_TEST_UNSET");
    assert!(!ok && out.contains("FERROHSM_TEST_UNSET is not set"), "{out}");
    let (ok, out) = migrate("postgres:$FERROHSM_TEST_TARGET");
    assert!(ok && out.contains("migrated and verified 1 keys"), "{out}");

    // The server on the database needs the same master key.
    let replica_dir = dir.path().join("replica");
    std::fs::create_dir_all(&replica_dir).unwrap();
    std::fs::copy(data.join("master.key"), replica_dir.join("master.key")).unwrap();
    let replica =
        start_dev_with(&replica_dir, &["--key-store", "postgres", "--database-url", &url]);
    let api =
        Api { client: replica.client(), url: replica.url.clone(), token: replica.token.clone() };
    assert_eq!(api.get("/v1/keys/app").await.0, 200);
    let (_, verify) = api.get("/v1/audit/verify").await;
    assert_eq!(
        (verify["valid"].as_bool(), verify["first_seq"].as_u64()),
        (Some(true), Some(1)),
        "{verify}"
    );
}
