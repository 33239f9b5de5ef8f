//! The loopback load test of SPEC §10: a release `ferrohsm-server dev` (filesystem store,
//! durable file audit log, TLS) and the `loadgen` example at 64 connections, for encrypt 1 KiB,
//! ECDSA P-256 sign and RSA-2048 sign.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One scenario's target: ops/s at least, p99 at most (ms).
pub(crate) struct LoadTarget {
    pub(crate) scenario: &'static str,
    pub(crate) what: &'static str,
    pub(crate) min_ops: f64,
    pub(crate) max_p99_ms: Option<f64>,
}

pub(crate) const TARGETS: &[LoadTarget] = &[
    LoadTarget {
        scenario: "encrypt-1k",
        what: "REST encrypt 1 KiB, 64 connections",
        min_ops: 20_000.0,
        max_p99_ms: Some(10.0),
    },
    LoadTarget {
        scenario: "sign-p256",
        what: "REST ECDSA P-256 sign, 64 connections",
        min_ops: 15_000.0,
        max_p99_ms: None,
    },
    LoadTarget {
        scenario: "sign-rsa2048",
        what: "REST RSA-2048 sign, 64 connections",
        min_ops: 4_000.0,
        max_p99_ms: None,
    },
];

const CONNECTIONS: &str = "64";
const SECONDS: &str = "10";

/// Runs every scenario and returns loadgen's JSON result for each.
pub(crate) fn run(root: &Path) -> Result<Vec<Value>> {
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
    )?;
    let dir = root.join("target/bench/load");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("clearing the previous load-test data")?;
    }
    std::fs::create_dir_all(&dir)?;
    // The load comes from one actor, so its rate limit is lifted for the test.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[rate_limit]\ncapacity = 1000000000\nrefill_per_second = 1000000000.0\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let server_bin = root.join("target/release/ferrohsm-server");
    let stderr = std::fs::File::create(dir.join("server.log"))?;
    let mut server = Command::new(&server_bin)
        .args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &listen, "--token-ttl", "1h", "--policy-file"])
        .arg(&policy)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("starting ferrohsm-server dev")?;
    let result = drive(root, &mut server, port);
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();
    result
}

fn drive(root: &Path, server: &mut std::process::Child, port: u16) -> Result<Vec<Value>> {
    let stdout = server.stdout.take().context("no server stdout")?;
    let (mut ca, mut token) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(v) = line.trim().strip_prefix("export FERROHSM_CA_CERT=") {
            ca = Some(v.to_owned());
        }
        if let Some(v) = line.trim().strip_prefix("export FERROHSM_TOKEN=") {
            token = Some(v.to_owned());
            break;
        }
    }
    let (Some(ca), Some(token)) = (ca, token) else {
        bail!("the dev server did not print its CA and token (see target/bench/load/server.log)");
    };
    let url = format!("https://localhost:{port}");
    let loadgen = root.join("target/release/examples/loadgen");
    let mut results = Vec::new();
    for target in TARGETS {
        eprintln!("xtask: load test {} ({CONNECTIONS} connections, {SECONDS} s)", target.scenario);
        let out = Command::new(&loadgen)
            .args([&url, &ca, &token, target.scenario, CONNECTIONS, SECONDS])
            .output()
            .context("running loadgen")?;
        if !out.status.success() {
            bail!("loadgen {} failed: {}", target.scenario, String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        results.push(serde_json::from_str(line.trim()).context("parsing loadgen output")?);
    }
    Ok(results)
}
