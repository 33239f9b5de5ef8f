//! `cargo xtask bench profile [SCENARIO] [CONNECTIONS] [KEY_STORE]`: where a request's server
//! CPU goes (issue 19, docs/performance.md). It starts a release `ferrohsm-server dev`
//! (filesystem store unless KEY_STORE says `sqlite`, durable audit log, TLS 1.3), drives it with `loadgen` (default: `encrypt-1k` at 64
//! connections), samples the server with `perf record -e cpu-clock` for the measured seconds,
//! and sorts every sampled symbol into the stage of the request it belongs to. It prints the
//! share of each stage and its CPU µs per request (the share of `loadgen`'s measured server
//! CPU per request), and writes the table and perf's flat report to
//! `target/bench/profile-SCENARIO-KEY_STORE.txt`.
//!
//! The stages are decided by symbol and library name (the `STAGES` table, first match wins),
//! so a number is as good as that table: unmatched symbols are reported as `other` with the
//! largest of them listed, so the table can be refined.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::dev::DevServer;

/// Request stages and the symbol or library fragments that belong to them, first match wins.
const STAGES: &[(&str, &[&str])] = &[
    // virtio's queue kick (iowrite16) is the block device: loopback traffic never reaches it.
    (
        "disk: fsync and writes (kernel, virtio)",
        &["fsync", "ext4_", "jbd2", "file_write", "vfs_write", "iowrite16", "blk_", "virtqueue"],
    ),
    (
        "audit log: encode, hash, HMAC, append",
        &["ferrohsm_audit", "audit::", "AuditRecord", "canonical"],
    ),
    ("JWT verification", &["jsonwebtoken", "auth::", "Authenticator", "verify_token", "jwt"]),
    ("policy and rate limits", &["ferrohsm_policy", "policy::", "RateLimiter"]),
    (
        "cryptographic operation (AES-GCM, ECDSA, RSA, SHA-256)",
        &[
            "aes_gcm",
            "aes_hw",
            "gcm_",
            "ecdsa",
            "p256",
            "ec_GFp",
            "bn_",
            "RSA_",
            "rsa_",
            "ghash",
            "ecp_nistz256",
            "sha256_block",
            "sha512_block",
            "rdrand",
        ],
    ),
    (
        "TLS record layer (encrypt/decrypt, framing)",
        &["rustls", "tokio_rustls", "chacha20", "aws_lc_0_", "aws_lc_rs", "EVP_AEAD", "CRYPTO_"],
    ),
    (
        "network: sockets, loopback, softirq (kernel)",
        &[
            "tcp_",
            "sock_",
            "__sys_",
            "inet_",
            "ip_",
            "skb",
            "netif",
            "__netif",
            "loopback",
            "__dev_queue",
            "net_rx",
            "sendmsg",
            "recvmsg",
            "epoll",
            "ep_",
            "softirq",
        ],
    ),
    (
        "HTTP parsing and routing (hyper, axum, tower)",
        &["hyper", "http::", "httparse", "axum", "tower", "matchit", "h2::"],
    ),
    ("JSON and base64", &["serde_json", "serde::", "base64", "b64", "ryu", "itoa"]),
    ("metrics and tracing", &["metrics", "tracing", "prometheus", "opentelemetry", "sketches"]),
    // In a VM without a PMU, cpu-clock samples taken with interrupts off land where they are
    // turned on again: the context switch and the unlock after a wake-up.
    (
        "context switches, wake-ups, futexes (tokio, kernel)",
        &[
            "tokio",
            "futex",
            "schedule",
            "finish_task_switch",
            "try_to_wake_up",
            "park",
            "mio",
            "pick_next",
            "_raw_spin_unlock_irqrestore",
            "irqentry_exit",
            "atomic_waker",
            "lock_contended",
        ],
    ),
    (
        "memory allocation and copies",
        &[
            "malloc",
            "free",
            "realloc",
            "_int_",
            "memcpy",
            "memmove",
            "memset",
            "memcmp",
            "unlink_chunk",
            "arena",
            "tcache",
            "__rdl_",
            "__rust_alloc",
            "zeroize",
        ],
    ),
    // `ferrohsm_sql` also matches the SQLite backend crate's symbols.
    ("store: SQLite and sqlx", &["ferrohsm_sql", "sqlx", "sqlite3"]),
    (
        "request pipeline and key cache (ferrohsm crates)",
        &[
            "ferrohsm_core",
            "ferrohsm_server",
            "ferrohsm_seal",
            "ferrohsm_store",
            "ferrohsm_backends",
            "ferrohsm_api",
            "ferrohsm_crypto",
        ],
    ),
    ("clock reads", &["clock_gettime", "read_tsc", "vdso"]),
    (
        "other kernel (syscall entry and exit, page faults)",
        &["[kernel", "entry_SYSCALL", "syscall", "do_", "__x64", "irq", "page_fault", "exc_"],
    ),
];

pub(crate) fn run(root: &Path, scenario: &str, connections: &str, key_store: &str) -> Result<()> {
    crate::debian::ensure("/usr/bin/perf", &["linux-perf"])?;
    crate::load::build(root)?;
    let dir = root.join("target/bench/profile");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let policy = crate::load::unlimited_policy(&dir)?;
    let stderr = std::fs::File::create(dir.join("server.log"))?;
    let data = dir.join("data");
    let data = data.to_string_lossy();
    let args =
        ["--data-dir", &*data, "--key-store", key_store, "--token-ttl", "1h", "--policy-file"]
            .into_iter()
            .map(str::to_owned)
            .chain([policy.to_string_lossy().into_owned()])
            .collect::<Vec<_>>();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server =
        DevServer::start(&root.join("target/release/ferrohsm-server"), &dir, &args, stderr.into())?;
    let url = format!("https://localhost:{}", server.port);
    let pid = server.pid().to_string();
    const SECONDS: u64 = 10;
    let loadgen = Command::new(root.join("target/release/examples/loadgen"))
        .args([&*url, &server.ca, &server.token, scenario, connections, &SECONDS.to_string()])
        .args(["--pids", &pid])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting loadgen")?;
    // Sample the measured seconds only: after loadgen's key creation and one second of warm-up.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let data_file = dir.join("perf.data");
    let record = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "499", "-p", &pid, "-o"])
        .arg(&data_file)
        .args(["--", "sleep", &(SECONDS - 2).to_string()])
        .output()
        .context("running perf record")?;
    if !record.status.success() {
        bail!("perf record failed: {}", String::from_utf8_lossy(&record.stderr));
    }
    let out = loadgen.wait_with_output()?;
    if !out.status.success() {
        bail!("loadgen failed");
    }
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let cpu_per_op = result["server_cpu_us_per_op"].as_f64().unwrap_or(0.0);
    let report = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol", "-i"])
        .arg(&data_file)
        .output()
        .context("running perf report")?;
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    let (table, _) = breakdown(&text, cpu_per_op, &result)?;
    print!("{table}");
    let file = root.join(format!("target/bench/profile-{scenario}-{key_store}.txt"));
    std::fs::write(
        &file,
        format!("{table}\nperf report --no-children --sort dso,symbol:\n{text}"),
    )?;
    eprintln!("xtask: wrote {}", file.display());
    drop(server);
    Ok(())
}

/// The stage table from a flat `perf report`: (table, share of each stage in %).
fn breakdown(
    report: &str,
    cpu_per_op: f64,
    result: &serde_json::Value,
) -> Result<(String, Vec<(String, f64)>)> {
    let mut shares: Vec<(String, f64)> =
        STAGES.iter().map(|(name, _)| ((*name).to_owned(), 0.0)).collect();
    let mut other = 0.0;
    let mut unmatched: Vec<(f64, String)> = Vec::new();
    for line in report.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let Some(share) = words.next().and_then(|p| p.strip_suffix('%')?.parse::<f64>().ok())
        else {
            continue;
        };
        let rest: String = words.collect::<Vec<_>>().join(" ");
        match STAGES.iter().position(|(_, keys)| keys.iter().any(|k| rest.contains(k))) {
            Some(i) => shares[i].1 += share,
            None => {
                other += share;
                unmatched.push((share, rest));
            }
        }
    }
    shares.push(("other".to_owned(), other));
    let mut table = String::new();
    writeln!(
        table,
        "{} at {} connections over HTTP/{}: {:.0} ops/s, p99 {:.2} ms, server CPU {:.0} µs per request",
        result["scenario"].as_str().unwrap_or_default(),
        result["connections"],
        result["http"].as_str().unwrap_or("1.1"),
        result["ops_per_s"].as_f64().unwrap_or(0.0),
        result["p99_ms"].as_f64().unwrap_or(0.0),
        cpu_per_op
    )?;
    writeln!(table, "{:<48} {:>7} {:>10}", "stage", "share", "µs/request")?;
    let mut sorted = shares.clone();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, share) in &sorted {
        writeln!(table, "{name:<48} {share:>6.1}% {:>10.1}", share / 100.0 * cpu_per_op)?;
    }
    unmatched.sort_by(|a, b| b.0.total_cmp(&a.0));
    writeln!(table, "largest symbols in `other`:")?;
    for (share, symbol) in unmatched.iter().take(8) {
        writeln!(table, "  {share:>5.2}%  {}", symbol.chars().take(110).collect::<String>())?;
    }
    Ok((table, shares))
}
