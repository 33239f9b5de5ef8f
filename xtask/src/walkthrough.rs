//! Runs the README's operator walk-through against a real `ferrohsm-server dev`, as a user
//! would paste it, so the README stays true.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::dev::DevServer;

/// What the walk-through must print when every journey works.
const EXPECTED: &[&str] = &["identical", "order 42: 3 widgets", "Verified OK", "OK: "];

pub(crate) fn run(root: &Path) -> Result<()> {
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let section = readme
        .split("## An operator walk-through")
        .nth(1)
        .context("the README has no operator walk-through")?;
    let script = section
        .split("```sh")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .context("the walk-through has no sh block")?;
    let dir = root.join("target/walkthrough");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("config"))?;
    // `cargo test --workspace` built both binaries. The README's own `cargo build` would build
    // again the dependencies whose features differ without dev-dependencies, so it is skipped.
    for bin in ["ferrohsm-server", "ferrohsm"] {
        if !root.join("target/debug").join(bin).is_file() {
            bail!(
                "target/debug/{bin} is missing; the walk-through runs after `cargo test --workspace`"
            );
        }
    }
    const BUILD: &str = "cargo build -q -p ferrohsm-cli -p ferrohsm-server";
    if !script.contains(BUILD) {
        bail!("the walk-through no longer starts with `{BUILD}`; update xtask/src/walkthrough.rs");
    }
    let script = script.replace(BUILD, "true");
    let server =
        DevServer::start(&root.join("target/debug/ferrohsm-server"), &dir, &[], Stdio::inherit())?;
    // The script runs from the repository root, as after the README's first command, with the
    // dev server's data directory and port, and the profile kept out of the user's home.
    let script = format!(
        "set -euo pipefail\nexport XDG_CONFIG_HOME={}\ncd {}\n{}\n",
        dir.join("config").display(),
        root.display(),
        script
            .replace("https://localhost:8443", &format!("https://localhost:{}", server.port))
            .replace(
                "FERROHSM_DATA_DIR=\"$PWD/ferrohsm-data\"",
                &format!("FERROHSM_DATA_DIR=\"{}\"", dir.join("ferrohsm-data").display()),
            ),
    );
    eprintln!("xtask: running the README walk-through");
    let out = Command::new("bash").arg("-c").arg(&script).output().context("running bash")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the README walk-through failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for needle in EXPECTED {
        if !text.contains(needle) {
            bail!("the README walk-through did not print {needle:?}:\n{text}");
        }
    }
    Ok(())
}
