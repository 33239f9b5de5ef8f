//! Running the server: open the HSM from the configuration, accept TLS connections, reload
//! files that change, run the purge and rotation schedules, and shut down gracefully (drain
//! requests, then checkpoint and close the audit log).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferrohsm_core::{BackendConfig, Hsm, MasterKey, RequestContext};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service as _;

use crate::app::{AppConfig, AppState, ConnInfo, router};
use crate::auth::Authenticator;
use crate::tls::{TlsConfig, TlsState};
use crate::{Error, Result};

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where keys, approvals, token revocations and the audit log are kept.
    pub backend: BackendConfig,
    /// How long closed approvals and audit records are kept (applied by the scheduler).
    pub retention: ferrohsm_core::Retention,
    /// A policy file, reloaded when it changes.
    pub policy_file: Option<PathBuf>,
    /// A JWT keyset file, reloaded when it changes.
    pub keyset_file: Option<PathBuf>,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Router settings (issuer of the server's own tokens, body limit, timeout).
    pub app: AppConfig,
    /// How TLS is served (certificate files or ACME, client certificates).
    pub tls: TlsConfig,
    /// How often changed files (certificates, keyset, policy) are picked up.
    pub reload_interval: Duration,
    /// How often due destructions and rotations run.
    pub scheduler_interval: Duration,
    /// How long shutdown waits for open requests.
    pub drain_timeout: Duration,
    /// The longest lifetime of a token the server accepts or issues.
    pub max_token_lifetime: Duration,
    /// How often refusals beyond each source's small budget of audit records are written as
    /// one aggregated record per source and reason.
    pub refusal_interval: Duration,
    /// Connection timeouts and caps.
    pub limits: ConnectionLimits,
    /// A PKCS#11 token that may hold key material (`"custody": "pkcs11"`).
    pub vault: Option<ferrohsm_core::VaultConfig>,
    /// The custody of keys created without one: `sealed` (when `None`) or `pkcs11`.
    pub default_custody: Option<String>,
}

/// What one client may hold of the server's connections, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// The longest a client may take to send a request's headers (HTTP/1.1; also the wait
    /// for the next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections in all; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Open connections from one address; beyond, new ones from it are closed at once.
    pub max_connections_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_address: 256,
        }
    }
}

/// Counts open connections, in all and per address; a slot is given back when dropped.
#[derive(Debug)]
struct ConnectionTable {
    limits: ConnectionLimits,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

struct Slot {
    table: Arc<ConnectionTable>,
    ip: std::net::IpAddr,
}

impl ConnectionTable {
    fn admit(table: &Arc<ConnectionTable>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let per_address = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= table.limits.max_connections
            || per_address >= table.limits.max_connections_per_address
        {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot { table: table.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// The connection's I/O with a clock of its last activity, for the idle timeout.
struct Watched<T> {
    inner: T,
    last: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once the connection has seen no activity for `idle`.
async fn idle_for(
    last: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
    idle: Duration,
) {
    loop {
        let quiet = epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(std::sync::atomic::Ordering::Relaxed)));
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the HSM, binds the listener and starts serving.
    pub async fn start(config: ServerConfig, master_key: MasterKey) -> Result<Server> {
        // Pin the process-wide rustls provider (a second provider in the tree would panic).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = Arc::new(TlsState::load(config.tls.clone(), &master_key)?);
        let lifetime = time::Duration::try_from(config.max_token_lifetime).map_err(|e| {
            Error::Io { what: "max_token_lifetime".into(), source: std::io::Error::other(e) }
        })?;
        let mut builder = Hsm::builder()
            .master_key(master_key)
            .max_token_lifetime(lifetime)
            .refusal_interval(config.refusal_interval);
        builder = builder.backend(config.backend.clone()).retention(config.retention);
        if let Some(vault) = &config.vault {
            let vault = vault.open().map_err(ferrohsm_core::Error::Backend)?;
            builder = builder.vault(vault);
        }
        if let Some(custody) = &config.default_custody {
            builder = builder.default_custody(custody.clone());
        }
        if let Some(policy) = &config.policy_file {
            builder = builder.policy_file(policy, config.reload_interval);
        }
        let hsm = builder.build().await?;
        let auth = Arc::new(Authenticator::new(
            &hsm,
            &config.app.issuer,
            &config.audience,
            config.keyset_file.clone(),
        )?);
        let jobs = Arc::new(Jobs::default());
        let state =
            AppState::new(hsm.clone(), auth.clone(), jobs.clone(), tls.clone(), &config.app);
        let app = router(state.clone(), config.app.max_body);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Io { what: format!("binding {}", config.listen), source: e })?;
        let addr =
            listener.local_addr().map_err(|e| Error::Io { what: "listener".into(), source: e })?;
        let (stop, stopped) = watch::channel(false);
        if let Some(acme) = tls.acme() {
            supervise_acme(acme.clone(), tls.clone(), hsm.clone(), jobs.clone(), stopped.clone());
        }
        spawn_jobs(tls.clone(), auth, hsm.clone(), &config, jobs, &stopped);
        let drain = config.drain_timeout;
        let limits = config.limits;
        let task = tokio::spawn(async move {
            accept_loop(listener, tls, app, stopped, drain, limits).await;
            if let Err(e) = hsm.shutdown().await {
                tracing::error!(error = %e, "closing the audit log failed");
            }
        });
        tracing::info!(%addr, "listening");
        Ok(Server { addr, state, stop, task })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The application state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, drains open requests, checkpoints and closes the audit log.
    pub async fn shutdown(self) {
        self.state.start_draining();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully. The handlers are installed
    /// at once (with [`Server::start`] already listening), so a signal that arrives right after
    /// start-up output is never lost to the default action.
    pub async fn run_until_signal(self) {
        let stop = ShutdownSignal::install();
        stop.wait().await;
        tracing::info!("shutting down: draining requests, then checkpointing the audit log");
        self.shutdown().await;
    }

    /// Serves until `signal` fires, then shuts down gracefully.
    pub async fn run_until(self, signal: ShutdownSignal) {
        signal.wait().await;
        tracing::info!("shutting down: draining requests, then checkpointing the audit log");
        self.shutdown().await;
    }
}

/// SIGINT and SIGTERM listeners, installed when created: create it before announcing that the
/// server is up, so an early signal still shuts down gracefully.
#[derive(Debug)]
pub struct ShutdownSignal {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Installs the listeners now.
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        ShutdownSignal {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves at the first SIGINT or SIGTERM.
    pub async fn wait(mut self) {
        let interrupt = async {
            match self.interrupt.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let terminate = async {
            match self.terminate.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<TlsState>,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
    limits: ConnectionLimits,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let table = Arc::new(ConnectionTable { limits, open: Default::default() });
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let Some(slot) = ConnectionTable::admit(&table, peer.ip()) else {
            metrics::counter!("ferrohsm_connections_refused_total").increment(1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let epoch = std::time::Instant::now();
            let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tcp = Watched { inner: tcp, last: last.clone(), epoch };
            let handshake = handshake(tcp, &tls);
            let stream = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(Handshake::Serve(s))) => s,
                Ok(Ok(Handshake::Challenge(mut s))) => {
                    // An ACME validator saw the challenge certificate; nothing is served.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let info = conn_info(peer, stream.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    app.clone().call(req)
                },
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder.http2().timer(hyper_util::rt::TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                served = watcher.watch(conn.into_owned()) => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = idle_for(last, epoch, limits.idle_timeout) => {
                    tracing::debug!(%peer, "closing an idle connection");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout: closing connections with requests still open");
    }
}

/// A finished handshake: a connection to serve, or an ACME validation to close.
enum Handshake<IO> {
    Serve(tokio_rustls::server::TlsStream<IO>),
    Challenge(tokio_rustls::server::TlsStream<IO>),
}

/// Reads the ClientHello, picks the configuration for it (an ACME validation gets the
/// challenge's; before ACME has issued a certificate, others are refused) and completes the
/// handshake.
async fn handshake<IO>(io: IO, tls: &TlsState) -> std::io::Result<Handshake<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    let Some((config, challenge)) = tls.config_for(&start.client_hello()) else {
        return Err(std::io::Error::other("no certificate to serve yet (ACME has not issued one)"));
    };
    let stream = start.into_stream(config).await?;
    Ok(if challenge { Handshake::Challenge(stream) } else { Handshake::Serve(stream) })
}

fn conn_info(
    peer: SocketAddr,
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> ConnInfo {
    let digest = certs
        .and_then(|c| c.first())
        .map(|leaf| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref()));
    ConnInfo {
        peer: Some(peer),
        cert_sha256_hex: digest.as_ref().map(|d| ferrohsm_core::hex::encode(d.as_ref())),
        cert_sha256_b64url: digest
            .as_ref()
            .map(|d| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())),
    }
}

/// The background jobs' last outcomes, for `/healthz` and metrics: a job that fails (or
/// panics) is reported and runs again at its next tick; it never dies silently.
#[derive(Debug, Default)]
pub struct Jobs {
    failing: std::sync::Mutex<std::collections::BTreeMap<&'static str, (String, String)>>,
}

impl Jobs {
    fn outcome(&self, job: &'static str, result: std::result::Result<(), String>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                failing.remove(job);
            }
            Err(e) => {
                metrics::counter!("ferrohsm_background_job_failures_total", "job" => job)
                    .increment(1);
                tracing::warn!(job, error = %e, "background job failed; it runs again at its next tick");
                let at = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                failing.insert(job, (e, at));
            }
        }
    }

    /// `ok`, or the failing jobs with their last error and its time.
    pub fn health(&self) -> ferrohsm_core::wire::ComponentHealth {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.is_empty() {
            return ferrohsm_core::wire::ComponentHealth {
                status: "ok".into(),
                detail: "running".into(),
            };
        }
        let detail: Vec<String> =
            failing.iter().map(|(job, (e, at))| format!("{job} failed at {at}: {e}")).collect();
        ferrohsm_core::wire::ComponentHealth { status: "error".into(), detail: detail.join("; ") }
    }
}

/// Runs `job` every `every` until stopped. Each run is its own task, so a panic is caught and
/// reported like an error, and the next run still happens.
fn spawn_job<F, Fut>(
    name: &'static str,
    every: Duration,
    jobs: Arc<Jobs>,
    mut stopped: watch::Receiver<bool>,
    job: F,
) where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.changed() => break,
            }
            let outcome = match tokio::spawn(job()).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err("the job panicked".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            jobs.outcome(name, outcome);
        }
    });
}

/// Runs the ACME renewal loop until stopped; a panic is reported like a failed job (log,
/// `ferrohsm_background_job_failures_total{job="acme"}`, `/healthz` jobs) and the loop starts
/// again after a pause.
fn supervise_acme(
    acme: Arc<crate::tls::acme::Acme>,
    tls: Arc<TlsState>,
    hsm: Hsm,
    jobs: Arc<Jobs>,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let run = tokio::spawn(acme.clone().run(tls.clone(), hsm.clone(), stopped.clone()));
            match run.await {
                Ok(()) => break,
                Err(e) => jobs.outcome("acme", Err(format!("the ACME renewal loop ended: {e}"))),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stopped.changed() => break,
            }
            jobs.outcome("acme", Ok(()));
        }
    });
}

/// One retention run, with its metrics. It runs even with no retention configured: it is
/// also what writes each approval's expiry to the audit log when it happens.
async fn retention(hsm: &Hsm, now: time::OffsetDateTime) -> std::result::Result<(), String> {
    match hsm.apply_retention(now).await {
        Ok(report) => {
            metrics::counter!("ferrohsm_retention_runs_total", "result" => "ok").increment(1);
            let removed = |what: &'static str, n: u64| {
                metrics::counter!("ferrohsm_retention_removed_total", "what" => what).increment(n)
            };
            removed("approvals", report.approvals_removed);
            removed("audit_records", report.audit.as_ref().map_or(0, |p| p.records));
            metrics::counter!("ferrohsm_approvals_expired_total")
                .increment(report.approvals_expired);
            Ok(())
        }
        Err(e) => {
            metrics::counter!("ferrohsm_retention_runs_total", "result" => "error").increment(1);
            Err(format!("retention: {e}"))
        }
    }
}

fn spawn_jobs(
    tls: Arc<TlsState>,
    auth: Arc<Authenticator>,
    hsm: Hsm,
    config: &ServerConfig,
    jobs: Arc<Jobs>,
    stopped: &watch::Receiver<bool>,
) {
    spawn_job("tls-reload", config.reload_interval, jobs.clone(), stopped.clone(), move || {
        let tls = tls.clone();
        async move {
            tls.observe();
            match tls.reload_if_changed() {
                Ok(true) => tracing::info!("TLS files reloaded"),
                Ok(false) => {}
                Err(e) => return Err(format!("{e}; keeping the previous files")),
            }
            Ok(())
        }
    });
    spawn_job("keyset-reload", config.reload_interval, jobs.clone(), stopped.clone(), move || {
        let auth = auth.clone();
        async move {
            match auth.reload_if_changed() {
                Ok(true) => tracing::info!("JWT keyset reloaded"),
                Ok(false) => {}
                Err(e) => return Err(format!("{e}; keeping the previous keyset")),
            }
            Ok(())
        }
    });
    // Revocations made through another replica sharing the store take effect within a second
    // (this replica's own take effect at once).
    let refresh = hsm.clone();
    spawn_job("revocations", Duration::from_secs(1), jobs.clone(), stopped.clone(), move || {
        let hsm = refresh.clone();
        async move { hsm.refresh_token_revocations().await.map_err(|e| e.to_string()) }
    });
    // With replicas sharing a database, each reports its callers' rate-limit usage and
    // debits theirs on the others twice a second, so a limit holds across replicas.
    if hsm.shares_rate_limits() {
        let share = hsm.clone();
        let every = Duration::from_millis(500);
        spawn_job("rate-limits", every, jobs.clone(), stopped.clone(), move || {
            let hsm = share.clone();
            async move { hsm.share_rate_limits().await.map_err(|e| e.to_string()) }
        });
    }
    // With replicas sharing a database, one at a time runs the schedule: the lease outlives
    // three ticks, so a replica that dies holding it is replaced within three intervals.
    let lease = config.scheduler_interval.saturating_mul(3);
    spawn_job("scheduler", config.scheduler_interval, jobs, stopped.clone(), move || {
        let hsm = hsm.clone();
        async move {
            if !hsm.lease("scheduler", lease).await.map_err(|e| e.to_string())? {
                metrics::counter!("ferrohsm_scheduler_runs_total", "result" => "other_replica")
                    .increment(1);
                return Ok(());
            }
            let ctx = RequestContext::local("system:scheduler");
            let now = time::OffsetDateTime::now_utc();
            let purged = hsm.purge_due(&ctx, now).await.map(|_| ());
            let rotated = hsm.rotate_due(&ctx, now).await.map(|_| ());
            let retained = retention(&hsm, now).await;
            purged.and(rotated).map_err(|e| e.to_string()).and(retained)
        }
    });
}
