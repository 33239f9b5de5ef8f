//! The SDK checks of `cargo xtask test`: one `ferrohsm-server dev` started with
//! `sdks/testdata/policy.toml` and the scenario principals minted for it, then the Rust
//! client's scenario runner, the Go SDK
//! (`go vet`, `go test -race`), the Python SDK (a virtual environment under `target/`,
//! `mypy --strict`, pytest, a wheel), each SDK README's quickstart as pasted, and an
//! independent OpenAPI fuzzer (Schemathesis) against the document the server serves. Every runner reads the same `sdks/testdata/scenarios.json`.
//! The server is stopped by its PID when the checks end, whatever their outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::dev::DevServer;

/// The principals of `sdks/testdata/README.md`: name (also the token's subject) and role.
const PRINCIPALS: &[(&str, &str)] = &[
    ("admin", "admin"),
    ("operator", "operator"),
    ("auditor", "auditor"),
    ("service", "service"),
    ("approver1", "admin"),
    ("approver2", "operator"),
];

/// The fuzzer, pinned.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// A dev server for the SDKs, with the environment their live tests read.
pub(crate) struct SdkServer {
    _server: DevServer,
    env: Vec<(&'static str, String)>,
    url: String,
    admin: String,
    ca: String,
}

impl SdkServer {
    /// Starts the dev server in `target/sdk-run` and mints the principals' tokens.
    pub(crate) fn start(root: &Path) -> Result<SdkServer> {
        SdkServer::start_with(root, "sdk-run", "sdks/testdata/policy.toml", PRINCIPALS)
    }

    /// Starts the dev server in `target/DIR` with the policy file `policy` (relative to the
    /// repository) and mints a two-hour token for each `(subject, role)` of `principals` into
    /// `tokens.json` there (`FERROHSM_SCENARIO_TOKENS` names it).
    pub(crate) fn start_with(
        root: &Path,
        dir: &str,
        policy: &str,
        principals: &[(&str, &str)],
    ) -> Result<SdkServer> {
        let dir = root.join("target").join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let binary = root.join("target/debug/ferrohsm-server");
        let policy = root.join(policy);
        let policy = policy.to_str().context("non-UTF-8 path")?;
        let server = DevServer::start(&binary, &dir, &["--policy-file", policy], Stdio::inherit())?;
        let mut tokens = serde_json::Map::new();
        for (name, role) in principals {
            let out = Command::new(&binary)
                .args(["token", "--data-dir", "ferrohsm-data", "--sub", name, "--role", role])
                .args(["--ttl", "2h"])
                .current_dir(&dir)
                .output()
                .context("minting a scenario token")?;
            if !out.status.success() {
                bail!("minting the {name} token failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let token = String::from_utf8(out.stdout)?.trim().to_owned();
            tokens.insert((*name).to_owned(), token.into());
        }
        let tokens_file = dir.join("tokens.json");
        std::fs::write(&tokens_file, serde_json::to_vec_pretty(&tokens)?)?;
        let url = format!("https://localhost:{}", server.port);
        let env = vec![
            ("FERROHSM_SERVER", url.clone()),
            ("FERROHSM_CA_CERT", server.ca.clone()),
            ("FERROHSM_TOKEN", server.token.clone()),
            ("FERROHSM_SCENARIO_TOKENS", path_string(&tokens_file)?),
        ];
        Ok(SdkServer {
            admin: server.token.clone(),
            ca: server.ca.clone(),
            _server: server,
            env,
            url,
        })
    }

    /// Runs `program args` in `dir` with the server's environment, failing if it fails.
    pub(crate) fn run(
        &self,
        dir: &Path,
        program: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<()> {
        eprintln!("xtask: (in {}) $ {program} {}", dir.display(), args.join(" "));
        let start = Instant::now();
        let status = Command::new(program)
            .args(args)
            .current_dir(dir)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .status()
            .with_context(|| format!("starting {program}"))?;
        eprintln!("xtask: {program} took {:.1} s", start.elapsed().as_secs_f64());
        if !status.success() {
            bail!("`{program} {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }
}

/// Every SDK check, against one server.
pub(crate) fn run(root: &Path) -> Result<()> {
    let server = SdkServer::start(root)?;
    rust(root, &server)?;
    go(root, &server)?;
    python(root, &server)?;
    for readme in ["sdks/go/README.md", "sdks/python/README.md"] {
        quickstart(root, &server, readme)?;
    }
    fuzz(root, &server)?;
    Ok(())
}

/// Runs the `sh` block under a README's `## Quickstart` heading as a user would paste it, at
/// the repository root with the server's variables exported.
fn quickstart(root: &Path, server: &SdkServer, readme: &str) -> Result<()> {
    let text = std::fs::read_to_string(root.join(readme))?;
    let section = text
        .split("\n## Quickstart")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .with_context(|| format!("{readme} has no ## Quickstart section"))?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .with_context(|| format!("the quickstart of {readme} has no sh block"))?;
    let script = format!("set -euo pipefail\n{block}\n");
    eprintln!("xtask: running the quickstart of {readme}");
    server.run(root, "bash", &["-c", &script], &[("GOTOOLCHAIN", "local")])
}

/// The Rust client's scenario runner (an e2e test of the server, built by the workspace test
/// run), pointed at this server.
fn rust(root: &Path, server: &SdkServer) -> Result<()> {
    let e2e = crate::test_binary(root, "ferrohsm-server", "e2e")?;
    let test = "client::the_shared_sdk_scenarios_pass_through_the_rust_client";
    server.run(root, &path_string(&e2e)?, &[test, "--exact"], &[])
}

/// `go vet` and `go test -race` (live tests included, never from the test cache).
fn go(root: &Path, server: &SdkServer) -> Result<()> {
    let dir = root.join("sdks/go");
    let env = [("GOTOOLCHAIN", "local")];
    server.run(&dir, "go", &["vet", "./..."], &env)?;
    server.run(&dir, "go", &["test", "-race", "-count=1", "./..."], &env)
}

/// The Python SDK in its own virtual environment: pinned tools, `mypy --strict`, pytest
/// (unit, live and scenario tests) and a wheel.
fn python(root: &Path, server: &SdkServer) -> Result<()> {
    let requirements = root.join("sdks/python/requirements-dev.txt");
    let venv = venv(root, "sdk-venv", &["-r", &path_string(&requirements)?])?;
    let bin = |tool: &str| path_string(&venv.join("bin").join(tool));
    let cache = path_string(&root.join("target/sdk-mypy-cache"))?;
    server.run(
        root,
        &bin("mypy")?,
        &[
            "--strict",
            "--cache-dir",
            &cache,
            "sdks/python/src",
            "sdks/python/tests",
            "sdks/python/examples",
        ],
        &[],
    )?;
    let no_bytecode = [("PYTHONDONTWRITEBYTECODE", "1")];
    server.run(
        root,
        &bin("pytest")?,
        &["sdks/python", "-q", "-p", "no:cacheprovider"],
        &no_bytecode,
    )?;
    let dist = path_string(&root.join("target/sdk-dist"))?;
    server.run(
        root,
        &bin("python")?,
        &["-m", "build", "--wheel", "--no-isolation", "--outdir", &dist, "sdks/python"],
        &[],
    )
}

/// Schemathesis against the served document with `sdks/schemathesis.toml` (which turns every
/// check on but one it explains),
/// bounded examples per operation (about 2,000 requests, under a minute here), a fixed seed;
/// any finding fails the run.
fn fuzz(root: &Path, server: &SdkServer) -> Result<()> {
    let venv = venv(root, "schemathesis-venv", &[SCHEMATHESIS])?;
    let st = path_string(&venv.join("bin/st"))?;
    let report = root.join("target/schemathesis");
    let schema = format!("{}/openapi.json", server.url);
    let auth = format!("Authorization: Bearer {}", server.admin);
    let config = path_string(&root.join("sdks/schemathesis.toml"))?;
    server.run(
        root,
        &st,
        &[
            "--config-file",
            &config,
            "run",
            &schema,
            "--url",
            &server.url,
            "--header",
            &auth,
            "--tls-verify",
            &server.ca,
            "--max-examples",
            "50",
            // A kept-alive connection the server closes as the client reuses it is a transport
            // event, not a contract finding: retried (server errors are still findings).
            "--request-retries",
            "2",
            "--seed",
            "13",
            "--workers",
            "2",
            "--report",
            "junit",
            "--report-dir",
            &path_string(&report)?,
        ],
        &[("NO_COLOR", "1")],
    )
}

/// A virtual environment under `target/NAME` with `packages` installed by pip. A stamp file
/// records what was installed, so a second run installs nothing.
pub(crate) fn venv(root: &Path, name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = root.join("target").join(name);
    let python = dir.join("bin/python");
    if !python.is_file() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .context("creating a virtual environment")?;
        if !status.success() {
            bail!("python3 -m venv {} failed ({status})", dir.display());
        }
    }
    // What is asked for: the arguments, and the contents of any requirements file among them.
    let mut wanted = packages.join(" ");
    for file in packages.iter().filter(|p| p.ends_with(".txt")) {
        wanted.push('\n');
        wanted.push_str(&std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?);
    }
    let stamp = dir.join(".xtask-installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(dir);
    }
    let mut args = vec!["-m", "pip", "install", "--quiet", "--disable-pip-version-check"];
    args.extend_from_slice(packages);
    let status = Command::new(&python).args(&args).status().context("running pip")?;
    if !status.success() {
        bail!("pip install {} failed ({status})", packages.join(" "));
    }
    std::fs::write(&stamp, wanted)?;
    Ok(dir)
}

pub(crate) fn path_string(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).context("a non-UTF-8 path")
}
