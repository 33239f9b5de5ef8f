//! The loopback load test of SPEC §10: a release `ferrohsm-server dev` (durable store and
//! audit log, TLS) and the `loadgen` example: encrypt 1 KiB, ECDSA P-256 sign and RSA-2048 sign
//! at 64 connections on the filesystem backend, and durable key creation at 32 connections on
//! the filesystem and SQLite backends (issue 12's targets); then the same encrypt and sign
//! scenarios with every key held by a SoftHSM2 token (`--default-custody pkcs11`, issue 15:
//! reported beside the sealed figures, no target); then encrypt, sign and create on PostgreSQL
//! with one replica and with three (`deploy/local/replicas.sh`, issue 17: reported, no target
//! beyond no collapse). Each run also reports the server's CPU time per request over the
//! measured seconds (issue 19's steadier figure), and encrypt runs once more over HTTP/2.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::dev::DevServer;

/// One scenario's target: ops/s at least, p99 at most (ms).
pub(crate) struct LoadTarget {
    pub(crate) scenario: &'static str,
    pub(crate) key_store: &'static str,
    pub(crate) connections: &'static str,
    pub(crate) what: &'static str,
    pub(crate) min_ops: f64,
    pub(crate) max_p99_ms: Option<f64>,
    /// Server CPU time per request at most (µs; issue 19).
    pub(crate) max_cpu_us: Option<f64>,
    /// HTTP/2 instead of HTTP/1.1.
    pub(crate) http2: bool,
}

pub(crate) const TARGETS: &[LoadTarget] = &[
    LoadTarget {
        scenario: "encrypt-1k",
        key_store: "filesystem",
        connections: "64",
        what: "REST encrypt 1 KiB, 64 connections",
        min_ops: 20_000.0,
        max_p99_ms: Some(10.0),
        max_cpu_us: Some(50.0),
        http2: false,
    },
    LoadTarget {
        scenario: "encrypt-1k",
        key_store: "filesystem",
        connections: "32",
        what: "REST encrypt 1 KiB, 32 connections",
        min_ops: 0.0,
        max_p99_ms: Some(7.0),
        max_cpu_us: Some(50.0),
        http2: false,
    },
    LoadTarget {
        scenario: "encrypt-1k",
        key_store: "filesystem",
        connections: "64",
        what: "REST encrypt 1 KiB, HTTP/2, 64 connections",
        min_ops: 0.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: true,
    },
    LoadTarget {
        scenario: "sign-p256",
        key_store: "filesystem",
        connections: "64",
        what: "REST ECDSA P-256 sign, 64 connections",
        min_ops: 15_000.0,
        max_p99_ms: None,
        max_cpu_us: Some(80.0),
        http2: false,
    },
    LoadTarget {
        scenario: "sign-rsa2048",
        key_store: "filesystem",
        connections: "64",
        what: "REST RSA-2048 sign, 64 connections",
        min_ops: 4_000.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: false,
    },
    LoadTarget {
        scenario: "create-aes",
        key_store: "filesystem",
        connections: "32",
        what: "REST create AES key, filesystem, 32 conns",
        min_ops: 2_500.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: false,
    },
    LoadTarget {
        scenario: "create-aes",
        key_store: "sqlite",
        connections: "32",
        what: "REST create AES key, SQLite, 32 conns",
        min_ops: 5_000.0,
        max_p99_ms: None,
        max_cpu_us: Some(200.0),
        http2: false,
    },
    LoadTarget {
        scenario: "encrypt-1k",
        key_store: "pkcs11",
        connections: "64",
        what: "REST encrypt 1 KiB, key in SoftHSM2 (no target)",
        min_ops: 0.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: false,
    },
    LoadTarget {
        scenario: "sign-p256",
        key_store: "pkcs11",
        connections: "64",
        what: "REST P-256 sign, key in SoftHSM2 (no target)",
        min_ops: 0.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: false,
    },
    LoadTarget {
        scenario: "sign-rsa2048",
        key_store: "pkcs11",
        connections: "64",
        what: "REST RSA-2048 sign, key in SoftHSM2 (no target)",
        min_ops: 0.0,
        max_p99_ms: None,
        max_cpu_us: None,
        http2: false,
    },
];

/// The SoftHSM2 token the `pkcs11` runs keep their keys in.
const TOKEN: &str = "ferrohsm-bench";
const PIN: &str = "1234";

const SECONDS: &str = "10";

/// Builds the release server and `loadgen`.
pub(crate) fn build(root: &Path) -> Result<()> {
    crate::run(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "ferrohsm-server",
            "--bin",
            "ferrohsm-server",
            "--example",
            "loadgen",
        ],
    )
}

/// Writes a policy that lifts the rate limit (the load comes from one actor) into `dir`.
pub(crate) fn unlimited_policy(dir: &Path) -> Result<std::path::PathBuf> {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[rate_limit]\ncapacity = 1000000000\nrefill_per_second = 1000000000.0\n",
    )?;
    Ok(policy)
}

/// Runs every scenario and returns loadgen's JSON result for each.
pub(crate) fn run(root: &Path) -> Result<Vec<Value>> {
    build(root)?;
    let dir = root.join("target/bench/load");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("clearing the previous load-test data")?;
    }
    std::fs::create_dir_all(&dir)?;
    // The load comes from one actor, so its rate limit is lifted for the test.
    let policy = unlimited_policy(&dir)?;
    let loadgen = root.join("target/release/examples/loadgen");
    let mut results = Vec::new();
    for key_store in ["filesystem", "sqlite", "pkcs11"] {
        let run_dir = dir.join(key_store);
        std::fs::create_dir_all(&run_dir)?;
        let stderr = std::fs::File::create(run_dir.join("server.log"))?;
        let data = run_dir.join("data");
        let store = if key_store == "sqlite" { "sqlite" } else { "filesystem" };
        let mut args = [
            "--data-dir",
            &*data.to_string_lossy(),
            "--key-store",
            store,
            "--token-ttl",
            "1h",
            "--policy-file",
            &*policy.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut env = Vec::new();
        if key_store == "pkcs11" {
            crate::debian::ensure(SOFTHSM2_MODULE, &["softhsm2"])?;
            let conf = softhsm_token(&run_dir)?;
            env.push(("SOFTHSM2_CONF".to_owned(), conf));
            env.push(("FERROHSM_PKCS11_PIN".to_owned(), PIN.to_owned()));
            for a in [
                "--pkcs11-module",
                SOFTHSM2_MODULE,
                "--pkcs11-token-label",
                TOKEN,
                "--default-custody",
                "pkcs11",
            ] {
                args.push(a.to_owned());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = DevServer::start_with_env(
            &root.join("target/release/ferrohsm-server"),
            &run_dir,
            &args,
            &env,
            stderr.into(),
        )
        .with_context(|| format!("see target/bench/load/{key_store}/server.log"))?;
        let url = format!("https://localhost:{}", server.port);
        for target in TARGETS.iter().filter(|t| t.key_store == key_store) {
            eprintln!(
                "xtask: load test {} on {key_store} ({} connections, {SECONDS} s)",
                target.scenario, target.connections
            );
            let pid = server.pid().to_string();
            let mut args =
                vec![&*url, &server.ca, &server.token, target.scenario, target.connections];
            args.extend([SECONDS, "--pids", &pid]);
            if target.http2 {
                args.push("--http2");
            }
            let out = Command::new(&loadgen).args(&args).output().context("running loadgen")?;
            if !out.status.success() {
                bail!(
                    "loadgen {} failed: {}",
                    target.scenario,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let mut result: Value =
                serde_json::from_str(line.trim()).context("parsing loadgen output")?;
            result["key_store"] = key_store.into();
            results.push(result);
        }
    }
    results.extend(replicas(root, &dir, &policy, &loadgen)?);
    Ok(results)
}

/// The scenarios run on PostgreSQL, with one replica and then three (`REPLICA_TARGETS`).
const REPLICA_SCENARIOS: &[(&str, &str)] =
    &[("encrypt-1k", "64"), ("sign-p256", "64"), ("create-aes", "32")];

/// Encrypt, sign and create against 1 and then 3 replicas on one PostgreSQL database, started
/// by `deploy/local/replicas.sh` (the connections spread over the replicas).
fn replicas(root: &Path, dir: &Path, policy: &Path, loadgen: &Path) -> Result<Vec<Value>> {
    crate::postgresql()?;
    let script = root.join("deploy/local/replicas.sh");
    let mut results = Vec::new();
    for count in [1u16, 3] {
        let cluster = dir.join(format!("postgres-{count}"));
        let ports = (free_port()?, free_port()?);
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(&cluster)
            .env("FERROHSM_BIN", root.join("target/release/ferrohsm-server"))
            .env("REPLICAS", count.to_string())
            .env("BASE_PORT", ports.0.to_string())
            .env("PG_PORT", ports.1.to_string())
            .env("EXTRA_ARGS", format!("--policy-file {}", policy.display()))
            .output()
            .context("running deploy/local/replicas.sh")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let down = || Command::new("bash").arg(&script).arg("down").arg(&cluster).output();
        if !out.status.success() {
            let _ = down();
            bail!("replicas.sh up failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        }
        let field =
            |prefix: &str| stdout.lines().find_map(|l| l.strip_prefix(prefix)).map(str::to_owned);
        let (Some(ca), Some(token)) =
            (field("export FERROHSM_CA_CERT="), field("export FERROHSM_TOKEN="))
        else {
            let _ = down();
            bail!("replicas.sh printed no CA or token: {stdout}");
        };
        let urls: Vec<String> =
            (0..count).map(|i| format!("https://localhost:{}", ports.0 + i)).collect();
        let urls = urls.join(",");
        let pids: Vec<String> = (0..count)
            .map(|i| std::fs::read_to_string(cluster.join(format!("replica-{i}.pid"))))
            .collect::<std::io::Result<_>>()
            .context("reading the replicas' pid files")?;
        let pids = pids.iter().map(|p| p.trim()).collect::<Vec<_>>().join(",");
        let mut run = || -> Result<()> {
            for (scenario, connections) in REPLICA_SCENARIOS {
                eprintln!(
                    "xtask: load test {scenario} on postgres, {count} replica(s) ({connections} connections, {SECONDS} s)"
                );
                let out = Command::new(loadgen)
                    .args([urls.as_str(), &ca, &token, scenario, connections, SECONDS])
                    .args(["--pids", &pids])
                    .output()
                    .context("running loadgen")?;
                if !out.status.success() {
                    bail!("loadgen {scenario} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                let mut result: Value =
                    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
                        .context("parsing loadgen output")?;
                result["key_store"] = "postgres".into();
                result["replicas"] = count.into();
                results.push(result);
            }
            Ok(())
        };
        let outcome = run();
        let stopped = down().context("replicas.sh down")?;
        outcome?;
        if !stopped.status.success() {
            bail!("replicas.sh down failed: {}", String::from_utf8_lossy(&stopped.stderr));
        }
    }
    Ok(results)
}

/// A free loopback port, and (for the replicas) the two after it.
fn free_port() -> Result<u16> {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < u16::MAX - 2
            && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", port + i)).is_ok())
        {
            return Ok(port);
        }
    }
}

const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration and a fresh token `TOKEN` under `dir`; returns the configuration
/// file's path (the value of `SOFTHSM2_CONF`).
fn softhsm_token(dir: &Path) -> Result<String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN, "--so-pin", "12345678", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running softhsm2-util")?;
    if !status.success() {
        bail!("softhsm2-util --init-token failed ({status})");
    }
    Ok(conf.to_string_lossy().into_owned())
}
