//! Runs the README's operator walk-through against a real `ferrohsm-server dev`, as a user
//! would paste it, so the README stays true.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

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
    crate::run(
        root,
        "cargo",
        &["build", "--quiet", "--locked", "-p", "ferrohsm-server", "-p", "ferrohsm-cli"],
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new(root.join("target/debug/ferrohsm-server"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting ferrohsm-server dev")?;
    let stdout = server.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.by_ref().map_while(|l| l.ok()).any(|l| l.contains("export FERROHSM_TOKEN="));
    std::thread::spawn(move || lines.for_each(drop));
    let result = (|| {
        if !ready {
            bail!("the dev server did not start");
        }
        // The script runs from the directory holding ./ferrohsm-data, as after the README's
        // first command, with the profile kept out of the user's home.
        let script = format!(
            "set -euo pipefail\nexport XDG_CONFIG_HOME={}\ncd {}\n{}\n",
            dir.join("config").display(),
            root.display(),
            script.replace("https://localhost:8443", &format!("https://localhost:{port}")).replace(
                "FERROHSM_DATA_DIR=\"$PWD/ferrohsm-data\"",
                &format!("FERROHSM_DATA_DIR=\"{}\"", dir.join("ferrohsm-data").display())
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
    })();
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();
    result
}
