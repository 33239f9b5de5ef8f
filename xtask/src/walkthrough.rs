//! Runs the README's operator walk-through against a real `ferrohsm-server dev`, as a user
//! would paste it, so the README stays true.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::dev::DevServer;

/// How much of the walk-through is shown as it runs.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Show {
    /// Only a failure, with everything it printed (`cargo xtask test`).
    Failures,
    /// Each command before it runs, and what it prints (`cargo xtask demo`).
    Everything,
}

/// What the walk-through must print when every journey works.
const EXPECTED: &[&str] = &["identical", "order 42: 3 widgets", "Verified OK", "OK: "];

pub(crate) fn run(root: &Path, show: Show) -> Result<()> {
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
        "set -euo pipefail{}\nexport XDG_CONFIG_HOME={}\ncd {}\n{}\n",
        if show == Show::Everything { "\nset -x" } else { "" },
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
    let (status, text, stderr) = match show {
        Show::Failures => {
            let out =
                Command::new("bash").arg("-c").arg(&script).output().context("running bash")?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status, stdout, String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Show::Everything => {
            // Each line is shown as it comes (the commands, traced by bash, on stderr).
            let mut child = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .stdout(Stdio::piped())
                .spawn()
                .context("running bash")?;
            let stdout = child.stdout.take().context("no stdout")?;
            let mut text = String::new();
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                println!("{line}");
                text.push_str(&line);
                text.push('\n');
            }
            (child.wait()?, text, String::new())
        }
    };
    if !status.success() {
        bail!("the README walk-through failed ({status}):\n{text}\n{stderr}");
    }
    for needle in EXPECTED {
        if !text.contains(needle) {
            bail!("the README walk-through did not print {needle:?}:\n{text}");
        }
    }
    Ok(())
}
