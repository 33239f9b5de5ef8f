//! The loopback load test of SPEC §10: a release `ferrohsm-server dev` (filesystem store,
//! durable file audit log, TLS) and the `loadgen` example at 64 connections, for encrypt 1 KiB,
//! ECDSA P-256 sign and RSA-2048 sign.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::dev::DevServer;

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
    let stderr = std::fs::File::create(dir.join("server.log"))?;
    let data = dir.join("data");
    let args = ["--data-dir", &*data.to_string_lossy(), "--token-ttl", "1h", "--policy-file"];
    let policy = policy.to_string_lossy();
    let server = DevServer::start(
        &root.join("target/release/ferrohsm-server"),
        &dir,
        &[&args[..], &[&*policy]].concat(),
        stderr.into(),
    )
    .context("see target/bench/load/server.log")?;
    let url = format!("https://localhost:{}", server.port);
    let loadgen = root.join("target/release/examples/loadgen");
    let mut results = Vec::new();
    for target in TARGETS {
        eprintln!("xtask: load test {} ({CONNECTIONS} connections, {SECONDS} s)", target.scenario);
        let out = Command::new(&loadgen)
            .args([&url, &server.ca, &server.token, target.scenario, CONNECTIONS, SECONDS])
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
