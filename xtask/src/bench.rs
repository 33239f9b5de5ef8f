//! `cargo xtask bench`: runs the criterion benchmarks, prints one table, compares the figures
//! SPEC §10 sets targets for, and writes everything to `target/bench/*.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// One benchmark's result, read from criterion's output.
struct Estimate {
    id: String,
    mean_ns: f64,
    low_ns: f64,
    high_ns: f64,
    bytes: Option<u64>,
}

/// A SPEC §10 target that a benchmark figure is compared with.
struct Target {
    what: String,
    measured_ns: Option<f64>,
    limit_ns: f64,
}

pub(crate) fn run(root: &Path, only_load: bool) -> Result<()> {
    if only_load {
        let (table, load) = load_table()?;
        print!("{table}");
        return write_load(root, &load);
    }
    let criterion_dir = root.join("target/criterion");
    if criterion_dir.exists() {
        std::fs::remove_dir_all(&criterion_dir).context("clearing old criterion results")?;
    }
    crate::run(root, "cargo", &["bench", "--workspace", "--benches", "--locked"])?;

    let mut estimates = Vec::new();
    collect(&criterion_dir, &mut estimates)?;
    estimates.sort_by(|a, b| a.id.cmp(&b.id));

    let mut table = String::new();
    writeln!(table, "{:<52} {:>12} {:>14} {:>12}", "benchmark", "mean", "ops/s", "MiB/s")?;
    for e in &estimates {
        let mib = e.bytes.map(|b| format!("{:.1}", b as f64 / e.mean_ns * 1e9 / 1048576.0));
        writeln!(
            table,
            "{:<52} {:>12} {:>14.0} {:>12}",
            e.id,
            human(e.mean_ns),
            1e9 / e.mean_ns,
            mib.unwrap_or_default()
        )?;
    }

    let find = |id: &str| estimates.iter().find(|e| e.id == id).map(|e| e.mean_ns);
    let overhead = match (find("core/encrypt/1KiB"), find("crypto/aes-256-gcm-encrypt/1KiB")) {
        (Some(core), Some(raw)) => Some(core - raw),
        _ => None,
    };
    let mut targets = vec![Target {
        what: "embedded encrypt 1 KiB: core minus raw primitive".into(),
        measured_ns: overhead,
        limit_ns: 5_000.0,
    }];
    for store in ["memory", "file", "sqlite"] {
        targets.push(Target {
            what: format!("{store} store: first page (100) of 100,000 keys, tag filter"),
            measured_ns: find(&format!("store/{store}/list-100k-first-page-tag-filter")),
            limit_ns: 10_000_000.0,
        });
        targets.push(Target {
            what: format!("{store} store: all 5,000 keys of a 5,000-key store"),
            measured_ns: find(&format!("store/{store}/list-5k-all")),
            limit_ns: 100_000_000.0,
        });
    }
    targets.push(Target {
        what: "core: list all 5,000 keys (integrity-checked)".into(),
        measured_ns: find("core/list-5k-all"),
        limit_ns: 100_000_000.0,
    });

    targets.push(Target {
        what: "audit: durable appends at 64 writers (50,000/s)".into(),
        measured_ns: find("audit/append-durable/64-writers"),
        limit_ns: 1e9 / 50_000.0,
    });
    targets.push(Target {
        what: "SQLite audit: durable appends at 64 writers (50,000/s)".into(),
        measured_ns: find("audit/sqlite-append-durable/64-writers"),
        limit_ns: 1e9 / 50_000.0,
    });
    targets.push(Target {
        what: "SQLite audit: durable appends at 512 writers (50,000/s)".into(),
        measured_ns: find("audit/sqlite-append-durable/512-writers"),
        limit_ns: 1e9 / 50_000.0,
    });
    targets.push(Target {
        what: "SQLite store: durable key creation at 32 callers (5,000/s)".into(),
        measured_ns: find("store/sqlite/create-durable/32-callers"),
        limit_ns: 1e9 / 5_000.0,
    });
    targets.push(Target {
        what: "audit: verify 100,000 records (500,000 records/s)".into(),
        measured_ns: find("audit/verify-100k-records"),
        limit_ns: 100_000.0 * 1e9 / 500_000.0,
    });

    writeln!(table, "\nSPEC §10 targets")?;
    let mut spec = Vec::new();
    for t in &targets {
        let (measured, verdict) = match t.measured_ns {
            Some(ns) => (human(ns), if ns <= t.limit_ns { "met" } else { "MISSED" }),
            None => ("-".to_string(), "not measured"),
        };
        writeln!(
            table,
            "{:<62} {:>12}  limit {:>10}  {}",
            t.what,
            measured,
            human(t.limit_ns),
            verdict
        )?;
        spec.push(json!({"target": t.what, "measured_ns": t.measured_ns, "limit_ns": t.limit_ns, "verdict": verdict}));
    }
    // The load test runs after criterion, on a quiet machine.
    let (load_rows, load) = load_table()?;
    table.push_str(&load_rows);
    print!("{table}");
    write_load(root, &load)?;

    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let results: Vec<Value> = estimates
        .iter()
        .map(|e| {
            json!({"id": e.id, "mean_ns": e.mean_ns, "ci_low_ns": e.low_ns, "ci_high_ns": e.high_ns,
                   "ops_per_s": 1e9 / e.mean_ns, "bytes": e.bytes})
        })
        .collect();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let doc = json!({"unix_time": stamp, "results": results, "spec_targets": spec});
    let path = out_dir.join("criterion.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(out_dir.join("table.txt"), table)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// Runs the REST load test and formats its rows against SPEC §10.
fn load_table() -> Result<(String, Vec<Value>)> {
    let root = crate::workspace_root()?;
    let results = crate::load::run(&root)?;
    let mut table = String::new();
    writeln!(table, "\nSPEC §10 REST load (TLS, durable audit, loopback)")?;
    writeln!(
        table,
        "{:<44} {:>10} {:>9} {:>9} {:>7} {:>9}  target",
        "scenario", "ops/s", "p50 ms", "p99 ms", "errors", "CPU µs/op"
    )?;
    for (target, r) in crate::load::TARGETS.iter().zip(&results) {
        let ops = r["ops_per_s"].as_f64().unwrap_or(0.0);
        let p99 = r["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        let cpu = r["server_cpu_us_per_op"].as_f64().unwrap_or(f64::INFINITY);
        let met = ops >= target.min_ops
            && target.max_p99_ms.is_none_or(|m| p99 < m)
            && target.max_cpu_us.is_none_or(|m| cpu <= m);
        let mut goals = Vec::new();
        if target.min_ops > 0.0 {
            goals.push(format!(">= {:.0}/s", target.min_ops));
        }
        if let Some(m) = target.max_p99_ms {
            goals.push(format!("p99 < {m} ms"));
        }
        if let Some(m) = target.max_cpu_us {
            goals.push(format!("CPU <= {m} µs"));
        }
        let reported = goals.is_empty();
        let goal = if reported { "reported".to_owned() } else { goals.join(", ") };
        let verdict = match (reported, met) {
            (true, _) => "reported",
            (false, true) => "met",
            (false, false) => "MISSED",
        };
        writeln!(
            table,
            "{:<44} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>9.0}  {goal}: {}",
            target.what,
            ops,
            r["p50_ms"].as_f64().unwrap_or(0.0),
            p99,
            r["errors"].as_u64().unwrap_or(0),
            cpu,
            verdict
        )?;
    }
    writeln!(table, "\nPostgreSQL, 1 and 3 replicas (issue 17: no target beyond no collapse)")?;
    writeln!(
        table,
        "{:<44} {:>10} {:>9} {:>9} {:>7} {:>9}",
        "scenario", "ops/s", "p50 ms", "p99 ms", "errors", "CPU µs/op"
    )?;
    for r in results.iter().filter(|r| r["key_store"] == "postgres") {
        writeln!(
            table,
            "{:<44} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>9.0}",
            format!(
                "{}, {} replica(s), {} conns",
                r["scenario"].as_str().unwrap_or_default(),
                r["replicas"],
                r["connections"]
            ),
            r["ops_per_s"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(f64::INFINITY),
            r["errors"].as_u64().unwrap_or(0),
            r["server_cpu_us_per_op"].as_f64().unwrap_or(f64::INFINITY),
        )?;
    }
    Ok((table, results))
}

fn write_load(root: &Path, load: &[Value]) -> Result<()> {
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let path = out_dir.join("load.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({"unix_time": stamp, "results": load}))?,
    )?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// Walks criterion's output, reading every `new/benchmark.json` with its `new/estimates.json`.
fn collect(dir: &Path, out: &mut Vec<Estimate>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path: PathBuf = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let bench = path.join("new/benchmark.json");
        if bench.is_file() {
            let meta: Value = serde_json::from_slice(&std::fs::read(&bench)?)?;
            let est: Value =
                serde_json::from_slice(&std::fs::read(path.join("new/estimates.json"))?)?;
            let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
            out.push(Estimate {
                id: meta["full_id"].as_str().unwrap_or("?").to_string(),
                mean_ns: num(&est["mean"]["point_estimate"]),
                low_ns: num(&est["mean"]["confidence_interval"]["lower_bound"]),
                high_ns: num(&est["mean"]["confidence_interval"]["upper_bound"]),
                bytes: meta["throughput"]["Bytes"].as_u64(),
            });
        } else {
            collect(&path, out)?;
        }
    }
    Ok(())
}

fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
