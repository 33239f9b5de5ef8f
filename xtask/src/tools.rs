//! Go programs the checks run (Pebble, helm, kubeconform, actionlint, gitleaks), installed
//! with `go install` at pinned versions into `target/tools/bin`, once per version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Installs `module` (`path@version`) into `target/tools/bin` unless that version is there,
/// and returns the path of its program `name`.
pub(crate) fn go_install(root: &Path, name: &str, module: &str) -> Result<PathBuf> {
    let bin = root.join("target/tools/bin");
    let program = bin.join(name);
    let stamp = bin.join(format!("{name}.version"));
    let installed = std::fs::read_to_string(&stamp).is_ok_and(|v| v == module);
    if installed && program.exists() {
        return Ok(program);
    }
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    eprintln!("xtask: $ GOBIN={} go install {module}", bin.display());
    let started = std::time::Instant::now();
    let status = Command::new("go")
        .args(["install", module])
        .env("GOBIN", &bin)
        .current_dir(root)
        .status()
        .with_context(|| format!("starting go (Go is needed to install {name})"))?;
    if !status.success() {
        bail!("`go install {module}` failed ({status})");
    }
    if !program.exists() {
        bail!("`go install {module}` did not write {}", program.display());
    }
    std::fs::write(&stamp, module).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!("xtask: {name} installed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(program)
}
