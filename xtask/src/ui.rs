//! The dashboard's browser journeys of `cargo xtask test`: Debian's Chromium (installed with
//! apt when absent), Playwright for Python in a virtual environment under `target/` (driving
//! that Chromium; it never downloads a browser), and one `ferrohsm-server dev` started with
//! `ui-tests/policy.toml` and the journeys' principals. The journeys run the real CLI too.
//! Screenshots of every page land in `target/ui-screenshots/`. The server is stopped by its PID
//! when the journeys end, whatever their outcome.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::sdk::{SdkServer, path_string, venv};

/// The journeys' principals (`ui-tests/README.md`).
const PRINCIPALS: &[(&str, &str)] = &[
    ("admin", "admin"),
    ("operator", "operator"),
    ("auditor", "auditor"),
    ("approver1", "admin"),
    ("approver2", "operator"),
];

/// The browser the journeys drive.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs Chromium from Debian's packages when it is not there (a no-op, instantly, when it
/// is), with `sudo` when not root.
fn chromium() -> Result<()> {
    if Path::new(CHROMIUM).is_file() {
        return Ok(());
    }
    let start = Instant::now();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| -> Result<()> {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.arg("apt-get");
        }
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    eprintln!("xtask: installing Debian's chromium for the dashboard journeys");
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "--no-install-recommends", "chromium", "fonts-dejavu-core"])?;
    eprintln!("xtask: chromium installed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Every dashboard journey, against one server.
pub(crate) fn run(root: &Path) -> Result<()> {
    chromium()?;
    let requirements = root.join("ui-tests/requirements.txt");
    let venv = venv(root, "ui-venv", &["-r", &path_string(&requirements)?])?;
    let shots = root.join("target/ui-screenshots");
    if shots.exists() {
        std::fs::remove_dir_all(&shots)?;
    }
    std::fs::create_dir_all(&shots)?;
    let server = SdkServer::start_with(root, "ui-run", "ui-tests/policy.toml", PRINCIPALS)?;
    let cli = path_string(&root.join("target/debug/ferrohsm"))?;
    let shots = path_string(&shots)?;
    let pytest = path_string(&venv.join("bin/pytest"))?;
    server.run(
        root,
        &pytest,
        &["ui-tests", "-q", "-p", "no:cacheprovider"],
        &[
            ("FERROHSM_CLI", &cli),
            ("FERROHSM_CHROMIUM", CHROMIUM),
            ("FERROHSM_SCREENSHOTS", &shots),
            ("PYTHONDONTWRITEBYTECODE", "1"),
        ],
    )
}
