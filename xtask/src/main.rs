//! FerroHSM developer tasks, run as `cargo xtask <task>`.
//!
//! - `test`: formatting, clippy with warnings denied, `cargo deny` against the offline advisory
//!   snapshot, then every workspace test. It installs what it needs when absent (cargo-deny,
//!   the Python OpenAPI validator the server's tests call, Debian's `softhsm2` for the PKCS#11
//!   vault's tests, `postgresql` for the PostgreSQL backend's and `chromium` for the
//!   dashboard's (see `debian.rs`), and Pebble, the ACME test CA, with `go install`), then runs
//!   every test (the end-to-end server suite on each durable backend), then the README's
//!   operator walk-through, the SDK checks and the dashboard journeys against real dev servers.
//! - `fuzz [SECONDS] [TARGET]`: the stable-Rust fuzzer of `fuzz/` in release, for longer
//!   than the smoke run `test` includes.
//! - `bench`: the criterion benchmarks and the REST load test (`bench load` runs only the
//!   latter), then one table of results, also written as JSON to `target/bench/`;
//!   `bench profile [SCENARIO] [CONNECTIONS] [KEY_STORE]` samples the server with perf under load and
//!   breaks its CPU per request down by stage (xtask/src/profile.rs).
//!
//! - `sdk`: only the SDK checks and the OpenAPI fuzzer that `test` runs (xtask/src/sdk.rs).
//! - `ui`: only the dashboard's browser journeys that `test` ends with (xtask/src/ui.rs).
//! - `dist`: release builds of the two binaries, packed as archives with SHA-256 sums and
//!   CycloneDX SBOMs in `target/dist` (xtask/src/dist.rs); `test` packs the debug binaries
//!   the same way.
//! - `deploy`: only the checks of `deploy/` and `.github/` (xtask/src/deploy.rs) and the
//!   packaging of the debug binaries that `test` runs.
//! - `demo`: builds the binaries, starts a dev server and runs the README walk-through,
//!   showing each command and what it prints.
//! - `codegen`: writes the server's OpenAPI document to `sdks/openapi.json` (the server's tests
//!   fail while the committed copy differs from what the server serves).
//!
//! Only `codegen` changes the source tree (one file); a task never reaches the network except
//! through the package registries (cargo's, PyPI's and Go's module proxy).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod debian;
mod deploy;
mod dev;
mod dist;
mod load;
mod profile;
mod sdk;
mod tools;
mod ui;
mod walkthrough;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let root = workspace_root()?;
    match task.as_str() {
        "test" | "ci" => test(&root),
        "codegen" => codegen(&root),
        "sdk" => {
            run(&root, "cargo", &["build", "--locked", "-p", "ferrohsm-server"])?;
            sdk::run(&root)
        }
        "ui" => {
            let packages = ["build", "--locked", "-p", "ferrohsm-server", "-p", "ferrohsm-cli"];
            run(&root, "cargo", &packages)?;
            ui::run(&root)
        }
        "dist" => dist::release(&root),
        "deploy" => {
            let packages = ["build", "--locked", "-p", "ferrohsm-server", "-p", "ferrohsm-cli"];
            run(&root, "cargo", &packages)?;
            deploy::check(&root)?;
            dist::package(&root, &root.join("target/debug"), &root.join("target/tmp/dist"))
                .map(drop)
        }
        "demo" => {
            let packages = ["build", "--locked", "-p", "ferrohsm-server", "-p", "ferrohsm-cli"];
            run(&root, "cargo", &packages)?;
            walkthrough::run(&root, walkthrough::Show::Everything)
        }
        "bench" if std::env::args().nth(2).as_deref() == Some("profile") => {
            let scenario = std::env::args().nth(3).unwrap_or_else(|| "encrypt-1k".into());
            let connections = std::env::args().nth(4).unwrap_or_else(|| "64".into());
            let key_store = std::env::args().nth(5).unwrap_or_else(|| "filesystem".into());
            profile::run(&root, &scenario, &connections, &key_store)
        }
        "bench" => bench::run(&root, std::env::args().nth(2).as_deref() == Some("load")),
        "fuzz" => {
            let seconds = std::env::args().nth(2).unwrap_or_else(|| "300".into());
            let mut args = vec!["run", "--release", "-p", "ferrohsm-fuzz", "--", &seconds];
            let target = std::env::args().nth(3);
            if let Some(t) = &target {
                args.push(t);
            }
            run(&root, "cargo", &args)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|ci|bench|fuzz|codegen|sdk|ui|deploy|dist|demo>");
            eprintln!("  test   fmt check, clippy -D warnings, cargo deny, every test");
            eprintln!("  ci     the same as test (what .ci/run calls)");
            eprintln!(
                "  bench  criterion benchmarks and the REST load test; table on stdout, JSON in target/bench/"
            );
            eprintln!("  bench load   only the REST load test");
            eprintln!(
                "  bench profile [SCENARIO] [CONNECTIONS] [KEY_STORE]   where the server's CPU per request goes (perf)"
            );
            eprintln!(
                "  fuzz [SECONDS] [TARGET]   fuzz every parser of untrusted input (default 300 s; the smoke run is part of test)"
            );
            eprintln!("  codegen   write the OpenAPI document to sdks/openapi.json");
            eprintln!("  sdk       only the SDK checks and the OpenAPI fuzzer (part of test)");
            eprintln!("  ui        only the dashboard's browser journeys (part of test)");
            eprintln!(
                "  dist      release build; archives, SHA256SUMS and CycloneDX SBOMs in target/dist"
            );
            eprintln!(
                "  demo      start a dev server and run the README walk-through, showing each step"
            );
            bail!("unknown task {task:?}")
        }
    }
}

/// Writes the document `ferrohsm-server openapi` prints to `sdks/openapi.json`.
fn codegen(root: &Path) -> Result<()> {
    let out = Command::new("cargo")
        .args(["run", "--quiet", "--locked", "-p", "ferrohsm-server", "--", "openapi"])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running ferrohsm-server openapi")?;
    if !out.status.success() {
        bail!("`ferrohsm-server openapi` failed ({})", out.status);
    }
    let file = root.join("sdks/openapi.json");
    std::fs::write(&file, &out.stdout).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("xtask: wrote {}", file.display());
    Ok(())
}

pub(crate) fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// Runs a command in the workspace root, failing with its name if it fails.
pub(crate) fn run(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    run(root, "cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        root,
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
    )?;
    deny(root)?;
    python_tools(root)?;
    // The PKCS#11 vault's tests run against SoftHSM2 tokens in temporary directories.
    debian::ensure("/usr/lib/softhsm/libsofthsm2.so", &["softhsm2"])?;
    // The ACME tests order certificates from Pebble, Let's Encrypt's test CA.
    pebble(root)?;
    // The PostgreSQL backend's tests start Debian's postgres in temporary directories.
    postgresql()?;
    run(root, "cargo", &["test", "--workspace", "--locked"])?;
    // The end-to-end server suite once more on the SQLite and PostgreSQL backends: the test
    // binary the run above built, run directly (a narrower cargo invocation would resolve
    // other features and rebuild part of the tree).
    let e2e = test_binary(root, "ferrohsm-server", "e2e")?;
    for store in ["sqlite", "postgres"] {
        eprintln!("xtask: $ FERROHSM_TEST_KEY_STORE={store} {}", e2e.display());
        let started = std::time::Instant::now();
        let status = Command::new(&e2e)
            .env("FERROHSM_TEST_KEY_STORE", store)
            .current_dir(root.join("crates/ferrohsm-server"))
            .status()
            .context("starting the e2e suite")?;
        if !status.success() {
            bail!("the end-to-end suite failed on {store} ({status})");
        }
        eprintln!("xtask: the e2e suite on {store} took {:.1} s", started.elapsed().as_secs_f64());
    }
    // What deploy/ ships (the systemd unit, the chart, the image), and the release packaging
    // of the debug binaries (`dist` packages release ones the same way).
    deploy::check(root)?;
    dist::package(root, &root.join("target/debug"), &root.join("target/tmp/dist"))?;
    walkthrough::run(root, walkthrough::Show::Failures)?;
    sdk::run(root)?;
    ui::run(root)?;
    eprintln!("xtask: all checks and tests passed");
    Ok(())
}

/// The path of the already built test binary `target` of `package` (from cargo's build plan
/// of `cargo test --workspace`, which builds nothing new after a full test run).
pub(crate) fn test_binary(root: &Path, package: &str, target: &str) -> Result<std::path::PathBuf> {
    let out = Command::new("cargo")
        .args(["test", "--workspace", "--locked", "--no-run", "--message-format=json"])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("asking cargo for the test binaries")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_target = message["target"]["name"] == target
            && message["target"]["kind"][0] == "test"
            && message["package_id"].as_str().is_some_and(|id| id.contains(package));
        if is_target && let Some(path) = message["executable"].as_str() {
            return Ok(path.into());
        }
    }
    bail!("cargo did not report the {package} test binary {target}")
}

/// Installs Debian's PostgreSQL server programs unless some version is there (the tests
/// look under `/usr/lib/postgresql/*/bin`; they run their own clusters, never the system's).
fn postgresql() -> Result<()> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin/initdb").exists());
    if installed {
        return Ok(());
    }
    debian::ensure("/usr/lib/postgresql", &["postgresql"])
}

/// The Pebble release the ACME tests run against (`go install` builds it in seconds).
const PEBBLE: &str = "github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3";

/// Installs Pebble into `target/tools/bin` (where the server's ACME tests look), once per
/// version.
fn pebble(root: &Path) -> Result<()> {
    tools::go_install(root, "pebble", PEBBLE).map(drop)
}

/// Installs the Python tools the tests call (the OpenAPI validator), once.
fn python_tools(root: &Path) -> Result<()> {
    python_package(root, "openapi_spec_validator", "openapi-spec-validator>=0.7,<1")
}

/// Installs the PyPI `package` (a pip requirement) for the user unless `module` imports.
pub(crate) fn python_package(root: &Path, module: &str, package: &str) -> Result<()> {
    let present = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if present() {
        return Ok(());
    }
    let base = ["-m", "pip", "install", "--user", "--quiet", "--disable-pip-version-check"];
    let mut args: Vec<&str> = base.to_vec();
    args.push(package);
    if run(root, "python3", &args).is_err() {
        // Debian marks its Python as externally managed; a user install does not touch it.
        args.insert(4, "--break-system-packages");
        run(root, "python3", &args)?;
    }
    if !present() {
        bail!("{module} is still not importable after installing {package}");
    }
    Ok(())
}

/// The directory name cargo-deny derives for the default RustSec database URL
/// (`<last path segment>-<xxhash64 of the URL>`); it finds the snapshot there.
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";
/// The date of the shared snapshot (../shared/advisory-db.md), recorded as its fetch time so
/// cargo-deny's staleness check judges the snapshot's real age.
const ADVISORY_DB_DATE: &str = "2026-08-21";

fn deny(root: &Path) -> Result<()> {
    let installed = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !installed {
        run(root, "cargo", &["install", "cargo-deny", "--locked", "--version", "^0.20"])?;
    }
    let source = root.join("../shared/advisory-db");
    let target = root.join("target/advisory-dbs").join(ADVISORY_DB_DIR);
    if !source.is_dir() {
        bail!("the advisory snapshot {} is missing", source.display());
    }
    if !target.join(".git/FETCH_HEAD").is_file() {
        if target.exists() {
            std::fs::remove_dir_all(&target).context("clearing a partial advisory copy")?;
        }
        let parent = target.parent().context("advisory target has no parent")?;
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!("{ADVISORY_DB_DIR}.partial"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        copy_dir(&source, &tmp).context("copying the advisory snapshot")?;
        std::fs::create_dir_all(tmp.join(".git"))?;
        std::fs::write(tmp.join(".git/FETCH_HEAD"), b"")?;
        run(
            root,
            "touch",
            &["-d", ADVISORY_DB_DATE, &tmp.join(".git/FETCH_HEAD").to_string_lossy()],
        )?;
        std::fs::rename(&tmp, &target)?;
    }
    run(root, "cargo", &["deny", "--offline", "check"])
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}
