//! A `ferrohsm-server dev` process for the load test and the README walk-through: started on a
//! free loopback port, read until it prints its CA file and admin token, stopped with SIGTERM
//! when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A running dev server.
pub(crate) struct DevServer {
    child: Child,
    pub(crate) port: u16,
    pub(crate) ca: String,
    pub(crate) token: String,
}

impl DevServer {
    /// Runs `binary dev --listen 127.0.0.1:PORT ARGS…` in `cwd`, logging to `stderr`.
    pub(crate) fn start(binary: &Path, cwd: &Path, args: &[&str], stderr: Stdio) -> Result<Self> {
        Self::start_with_env(binary, cwd, args, &[], stderr)
    }

    /// The same, with `env` added to the server's environment.
    pub(crate) fn start_with_env(
        binary: &Path,
        cwd: &Path,
        args: &[&str],
        env: &[(String, String)],
        stderr: Stdio,
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = Command::new(binary)
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} dev", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut ca, mut token) = (None, None);
        for line in lines.by_ref().map_while(|l| l.ok()) {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("export FERROHSM_CA_CERT=") {
                ca = Some(v.to_owned());
            }
            if let Some(v) = line.strip_prefix("export FERROHSM_TOKEN=") {
                token = Some(v.to_owned());
                break;
            }
        }
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let server = |ca, token| DevServer { child, port, ca, token };
        match (ca, token) {
            (Some(ca), Some(token)) => Ok(server(ca, token)),
            _ => {
                drop(server(String::new(), String::new()));
                bail!("the dev server did not print its CA file and token")
            }
        }
    }
}

impl DevServer {
    /// The server's process id (for its CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
