//! A real PostgreSQL server for tests, and the harnesses that run the store and audit
//! conformance suites against it.
//!
//! [`PgServer::start`] runs Debian's `postgres` (found under `/usr/lib/postgresql/*/bin`, or
//! in `FERROHSM_PG_BIN`) from a fresh `initdb` in a temporary directory, listening on a free
//! loopback port with trust authentication for the user `ferrohsm` (loopback only, a
//! throw-away cluster). PostgreSQL refuses to run as root, so when the tests do, it runs as the
//! `postgres` system user. The server stops when its [`PgServer`] is dropped, and also when
//! the test process dies however it dies: it runs under a small shell that stops it and
//! removes the cluster as soon as the pipe from the test process closes.
#![allow(clippy::expect_used, clippy::panic, reason = "test support: failures must stop the test")]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{PostgresBackend, PostgresKeyStore};

/// A PostgreSQL server in a temporary directory.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The shell that runs the server; closing its stdin stops the server.
    guard: Mutex<Option<(Child, ChildStdin)>>,
    owner: Option<(u32, u32)>,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROHSM_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): `cargo xtask test` installs Debian's postgresql, or set FERROHSM_PG_BIN")
    })
}

/// The uid and gid of the `postgres` system user, when this process runs as root.
fn run_as() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

impl PgServer {
    /// Creates a cluster in a new temporary directory and starts it.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let owner = run_as();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("giving the cluster directory to the postgres user");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "ferrohsm", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null());
        let out = as_owner(&mut initdb, owner).output().expect("running initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let server = PgServer { dir, bin, port: free_port(), guard: Mutex::new(None), owner };
        server.launch();
        server
    }

    /// Starts the server (again, after [`PgServer::stop`]) on its port, and waits for it.
    pub fn launch(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            // A line on stdin stops the server (`stop`, to start it again); the pipe closing
            // (the test process ended, whatever way) stops it and removes the cluster.
            .arg(r#""$0" -D "$1" -k "$1" -p "$2" -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400 >>"$3" 2>&1 & p=$!; if read _; then kill -INT $p; wait $p; else kill -INT $p; wait $p; rm -rf "$4"; fi"#)
            .arg(self.bin.join("postgres"))
            .arg(&data)
            .arg(self.port.to_string())
            .arg(&log)
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = as_owner(&mut shell, self.owner).spawn().expect("starting postgres");
        let stdin = child.stdin.take().expect("the server's guard pipe");
        *self.guard.lock().unwrap_or_else(|p| p.into_inner()) = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a fast shutdown) and waits for it to end.
    pub fn stop(&self) {
        let guard = self.guard.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((mut child, mut stdin)) = guard {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "ferrohsm", "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Restarts the server with TLS on, serving `cert_pem` (a chain) with `key_pem`.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        self.stop();
        let data = self.dir.path().join("data");
        for (name, text, mode) in [("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)]
        {
            let path = data.join(name);
            std::fs::write(&path, text).expect("writing the server's TLS files");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("setting the TLS files' modes");
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .expect("giving the TLS files to the postgres user");
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("reading postgresql.conf");
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("writing postgresql.conf");
        self.launch();
    }

    /// The server's port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://ferrohsm@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> String {
        self.url(&self.create_database_named())
    }

    /// Creates a new empty database and returns its name.
    pub fn create_database_named(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        self.psql(&format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs one SQL command with `psql` on the `postgres` database.
    pub fn psql(&self, sql: &str) {
        self.psql_on("postgres", sql);
    }

    /// Runs one SQL command with `psql` on database `database`.
    pub fn psql_on(&self, database: &str, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "ferrohsm"])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .output()
            .expect("running psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

/// The server the conformance suites of this test process share (each harness has its own
/// database on it).
pub fn shared_server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// A fresh database on the shared server.
#[derive(Debug, Clone)]
pub struct PostgresHarness {
    name: Arc<String>,
    url: Arc<String>,
}

impl PostgresHarness {
    /// A harness around a new database.
    pub fn new() -> Self {
        let server = shared_server();
        let name = server.create_database_named();
        PostgresHarness { url: Arc::new(server.url(&name)), name: Arc::new(name) }
    }

    /// Runs one SQL command on the harness's database (to damage rows, say).
    pub fn sql(&self, sql: &str) {
        shared_server().psql_on(&self.name, sql);
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a backend on the harness's database (a second call opens a second handle, as
    /// a second replica would).
    pub async fn backend(&self) -> PostgresBackend {
        let (provider, keys) = ferrohsm_audit::conformance::keys();
        PostgresBackend::open(&self.url, provider, keys).await.expect("opening the database")
    }
}

impl Default for PostgresHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl ferrohsm_store::conformance::Harness for PostgresHarness {
    type Store = PostgresKeyStore;

    async fn open(&self) -> PostgresKeyStore {
        self.backend().await.key_store()
    }

    async fn approvals(&self) -> Arc<dyn ferrohsm_store::ApprovalStore> {
        Arc::new(self.backend().await.approval_store())
    }

    async fn second_handle(&self, _first: &PostgresKeyStore) -> Option<PostgresKeyStore> {
        Some(self.backend().await.key_store())
    }
}

#[async_trait]
impl ferrohsm_audit::conformance::SinkHarness for PostgresHarness {
    async fn open(&self) -> Arc<dyn ferrohsm_audit::AuditSink> {
        Arc::new(self.backend().await.audit_sink())
    }

    async fn second(&self) -> Option<Arc<dyn ferrohsm_audit::AuditSink>> {
        Some(Arc::new(self.backend().await.audit_sink()))
    }
}
