//! Debian packages the tests need, installed with apt-get when a file they provide is missing
//! (a no-op, instantly, when it is there), as root or through sudo.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Installs `packages` unless `file` exists.
pub(crate) fn ensure(file: &str, packages: &[&str]) -> Result<()> {
    if Path::new(file).exists() {
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
    eprintln!("xtask: installing Debian's {} ({file} is missing)", packages.join(", "));
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)?;
    eprintln!("xtask: installed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
