//! TLS (SPEC §9): rustls with TLS 1.3 by default, optional or required client certificates
//! against a CA bundle, and the served certificate either from files (`manual`: OCSP stapling
//! of a response file, hot reload of the certificate, key, CA and OCSP files) or from an ACME
//! CA (`acme`, see [`acme`]). New connections use the new certificate; open connections keep
//! theirs.

pub mod acme;
pub mod ocsp;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are requested.
    #[default]
    None,
    /// A certificate is requested and checked when given; tokens bound to one need it.
    Optional,
    /// Every connection must present a certificate the CA bundle issued.
    Required,
}

/// Where the served certificate comes from (`--tls-mode`).
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// `manual`: PEM files, reloaded when they change.
    Files {
        /// The certificate chain (PEM), leaf first.
        cert: PathBuf,
        /// The private key (PEM, PKCS#8, SEC1 or PKCS#1).
        key: PathBuf,
        /// An OCSP response (DER) for the certificate, stapled to handshakes while it is fresh
        /// and names the certificate (see `docs/tls.md`).
        ocsp_response: Option<PathBuf>,
    },
    /// `acme`: ordered from an ACME CA, cached encrypted and renewed (see [`acme`]).
    Acme(acme::AcmeConfig),
}

/// How TLS is served.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The served certificate.
    pub certificate: CertificateSource,
    /// The CA bundle that issues client certificates (PEM).
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are requested or required.
    pub client_auth: ClientAuth,
    /// Also accept TLS 1.2 (off by default).
    pub allow_tls12: bool,
}

impl TlsConfig {
    /// Serving the certificate and key files, without client certificates, TLS 1.2 or OCSP.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsConfig {
            certificate: CertificateSource::Files {
                cert: cert.into(),
                key: key.into(),
                ocsp_response: None,
            },
            client_ca: None,
            client_auth: ClientAuth::None,
            allow_tls12: false,
        }
    }
}

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// What the state remembers to notice changes: the files' modification times, and when the
/// stapled OCSP response (if any) goes stale.
#[derive(Debug, Default)]
struct Seen {
    stamps: Vec<Option<SystemTime>>,
    stale_at: Option<time::OffsetDateTime>,
}

/// The current server configuration, rebuilt when its files change or ACME renews the
/// certificate. Connections keep the configuration they started with.
#[derive(Debug)]
pub struct TlsState {
    config: TlsConfig,
    /// `None` in ACME mode until the first certificate is issued.
    current: RwLock<Option<Arc<ServerConfig>>>,
    seen: Mutex<Seen>,
    /// The served certificate's serial and validity.
    facts: Mutex<Option<ocsp::Facts>>,
    /// ACME mode: the latest chain and key (to rebuild when the client CA changes). Held
    /// while a configuration is built and swapped in, so a rebuild and an install never
    /// interleave.
    issued: Mutex<Option<acme::Issued>>,
    acme: Option<Arc<acme::Acme>>,
}

impl TlsState {
    /// Loads the files, or in ACME mode the cache (its key derived from `master_key`).
    /// Refuses an inconsistent configuration (client auth without a CA) and a damaged ACME
    /// cache. An OCSP response that cannot be stapled is not an error: the server serves
    /// without it and says why (log line, `ferrohsm_tls_ocsp_refused_total`).
    pub fn load(
        config: TlsConfig,
        master_key: &ferrohsm_core::MasterKey,
    ) -> Result<Self, TlsError> {
        let mut state = TlsState {
            current: RwLock::new(None),
            seen: Mutex::default(),
            facts: Mutex::default(),
            issued: Mutex::default(),
            acme: None,
            config,
        };
        let mut cached = None;
        if let CertificateSource::Acme(settings) = &state.config.certificate {
            let provider = ferrohsm_core::default_provider();
            let key = master_key
                .derive(provider.as_ref(), acme::CACHE_KEY_PURPOSE)
                .map_err(|e| TlsError(format!("deriving the ACME cache key: {e}")))?;
            let (acme, issued) = acme::Acme::open(settings.clone(), &key)?;
            state.acme = Some(Arc::new(acme));
            cached = issued;
        }
        match cached {
            Some(issued) => {
                tracing::info!(serial = %issued.facts.serial, not_after = %issued.facts.not_after, "serving the cached ACME certificate");
                state.install(issued)?;
            }
            None => state.rebuild()?,
        }
        Ok(state)
    }

    /// The configuration for the next connection (`None` in ACME mode before the first
    /// certificate).
    pub fn config(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The configuration for a connection that sent `hello`, and whether to close it after
    /// the handshake: ACME validation handshakes (`acme-tls/1`, in ACME mode) get the
    /// challenge configuration and are closed.
    pub fn config_for(
        &self,
        hello: &rustls::server::ClientHello<'_>,
    ) -> Option<(Arc<ServerConfig>, bool)> {
        if let Some(acme) = &self.acme
            && hello.alpn().is_some_and(|mut offered| offered.any(|p| p == acme::ACME_TLS_ALPN))
        {
            return Some((acme.challenge_config(), true));
        }
        self.config().map(|c| (c, false))
    }

    /// The ACME side, in ACME mode.
    pub(crate) fn acme(&self) -> Option<&Arc<acme::Acme>> {
        self.acme.as_ref()
    }

    /// Rebuilds the configuration if a file changed, or if the stapled OCSP response went
    /// stale (it is then no longer stapled). On error the previous configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = self.stamps();
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let stale = seen.stale_at.is_some_and(|at| at <= time::OffsetDateTime::now_utc());
            if seen.stamps == now && !stale {
                return Ok(false);
            }
        }
        self.rebuild()?;
        Ok(true)
    }

    /// Serves `issued` (an ACME certificate) from the next connection on. It is kept even
    /// when the configuration cannot be built now (a client CA file being replaced), so the
    /// next rebuild serves it.
    pub(crate) fn install(&self, issued: acme::Issued) -> Result<(), TlsError> {
        let mut latest = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let facts = issued.facts.clone();
        let built = client_auth(&self.config).and_then(|builder| {
            builder
                .with_single_cert(issued.chain.clone(), issued.key.clone_key())
                .map_err(|e| TlsError(e.to_string()))
        });
        *latest = Some(issued);
        let config = built?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(finish(config)));
        self.served(Some(facts));
        Ok(())
    }

    /// Builds the configuration from the files (in ACME mode: the client CA file and the
    /// served certificate).
    fn rebuild(&self) -> Result<(), TlsError> {
        let stamps = self.stamps();
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let builder = client_auth(&self.config)?;
        let (config, stale_at, facts) = match &self.config.certificate {
            CertificateSource::Files { cert, key, ocsp_response } => {
                let certs = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
                let stapled = ocsp_response.as_deref().and_then(|path| staple(path, &certs));
                let facts = certs.first().and_then(|leaf| ocsp::facts(leaf));
                let (config, stale_at) = match stapled {
                    Some((der, stale_at)) => {
                        (builder.with_single_cert_with_ocsp(certs, key, der), Some(stale_at))
                    }
                    None => (builder.with_single_cert(certs, key), None),
                };
                (config, stale_at, facts)
            }
            CertificateSource::Acme(_) => {
                let Some(issued) = issued.as_ref() else {
                    *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
                        Seen { stamps, stale_at: None };
                    return Ok(());
                };
                let config = builder.with_single_cert(issued.chain.clone(), issued.key.clone_key());
                (config, None, Some(issued.facts.clone()))
            }
        };
        let config = finish(config.map_err(|e| TlsError(e.to_string()))?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
        // Only what is now served is reported (health, expiry metrics).
        self.served(facts);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Seen { stamps, stale_at };
        Ok(())
    }

    fn served(&self, facts: Option<ocsp::Facts>) {
        if let Some(f) = &facts {
            metrics::gauge!("ferrohsm_tls_certificate_expiry_timestamp_seconds")
                .set(f.not_after.unix_timestamp() as f64);
        }
        *self.facts.lock().unwrap_or_else(|p| p.into_inner()) = facts;
        self.observe();
    }

    /// Updates the seconds-until-expiry gauge (the reload job calls it on every tick).
    pub fn observe(&self) {
        if let Some(f) = self.facts.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let left = f.not_after - time::OffsetDateTime::now_utc();
            metrics::gauge!("ferrohsm_tls_certificate_expires_in_seconds")
                .set(left.whole_seconds() as f64);
        }
    }

    /// `/healthz`'s `tls` as `(status, detail, serving)`: status `error` while ACME renewals
    /// fail or when no unexpired certificate is served; `serving` is false only in the latter
    /// case (only then is the whole server degraded: a failing renewal alone pages through the
    /// alert rules in docs/tls.md, not by taking the replica out of its load balancer).
    pub fn health(&self) -> (&'static str, String, bool) {
        let now = time::OffsetDateTime::now_utc();
        let facts = self.facts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (serving, mut detail) = match &facts {
            Some(f) if f.not_after > now => (
                true,
                format!(
                    "certificate {} expires {} (in {} s)",
                    f.serial,
                    f.not_after,
                    (f.not_after - now).whole_seconds()
                ),
            ),
            Some(f) => (false, format!("certificate {} expired at {}", f.serial, f.not_after)),
            None => (false, "no certificate yet".to_owned()),
        };
        let renewing = match &self.acme {
            Some(acme) => {
                let (ok, acme_detail) = acme.health();
                detail = format!("{acme_detail}; {detail}");
                ok
            }
            None => true,
        };
        let status = if serving && renewing { "ok" } else { "error" };
        (status, detail, serving)
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let (cert, key, ocsp) = match &self.config.certificate {
            CertificateSource::Files { cert, key, ocsp_response } => {
                (Some(cert), Some(key), ocsp_response.as_ref())
            }
            CertificateSource::Acme(_) => (None, None, None),
        };
        [cert, key, self.config.client_ca.as_ref(), ocsp]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// The largest OCSP response file read (real ones are a few KiB).
const MAX_OCSP_RESPONSE: u64 = 64 * 1024;

/// The file's bytes, if it can be read and is at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ocsp::Refusal> {
    use std::io::Read as _;
    let unreadable =
        |e: std::io::Error| ocsp::Refusal { reason: "unreadable", detail: e.to_string() };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(ocsp::Refusal {
            reason: "oversized",
            detail: format!("the file is larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

/// The OCSP response in `path` if it may be stapled to `certs`, with when it goes stale;
/// otherwise `None`, after saying why (log and metric).
fn staple(path: &Path, certs: &[CertificateDer<'_>]) -> Option<(Vec<u8>, time::OffsetDateTime)> {
    let checked = read_bounded(path, MAX_OCSP_RESPONSE).and_then(|der| {
        let leaf = certs.first().map(|c| c.as_ref()).unwrap_or_default();
        let issuer = certs.get(1).map(|c| c.as_ref());
        let fresh = ocsp::check(&der, leaf, issuer, time::OffsetDateTime::now_utc())?;
        Ok((der, fresh))
    });
    match checked {
        Ok((der, fresh)) => {
            metrics::gauge!("ferrohsm_tls_ocsp_stapled").set(1.0);
            metrics::gauge!("ferrohsm_tls_ocsp_next_update_timestamp_seconds")
                .set(fresh.next_update.unix_timestamp() as f64);
            tracing::info!(file = %path.display(), next_update = %fresh.next_update, "stapling the OCSP response");
            Some((der, fresh.next_update))
        }
        Err(refusal) => {
            metrics::gauge!("ferrohsm_tls_ocsp_stapled").set(0.0);
            metrics::counter!("ferrohsm_tls_ocsp_refused_total", "reason" => refusal.reason)
                .increment(1);
            tracing::warn!(file = %path.display(), reason = refusal.reason, "the OCSP response is refused and not stapled: {refusal}");
            None
        }
    }
}

/// A configuration builder with the protocol versions and client certificate settings.
fn client_auth(
    config: &TlsConfig,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if config.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(match (config.client_auth, &config.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError("client certificates need a CA bundle (--client-ca)".into()));
        }
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| TlsError(e.to_string()))?)
        }
    })
}

/// The protocols served over TLS.
fn finish(mut config: ServerConfig) -> ServerConfig {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The files of a development PKI: a CA, and a server certificate it issued for
/// `localhost` and `127.0.0.1`.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key (0600).
    pub key: PathBuf,
}

/// Creates (once) a development CA and server certificate in `dir`; reuses them after.
pub fn dev_certificates(dir: &Path) -> Result<DevCertificates, TlsError> {
    let files = DevCertificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let fail = |e: &dyn std::fmt::Display| TlsError(format!("generating the dev certificate: {e}"));
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "FerroHSM development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(825);
    let ca_key = KeyPair::generate().map_err(|e| fail(&e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail(&e))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(|e| fail(&e))?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(825);
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(|e| fail(&e))?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(|e| fail(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    write_private(&files.key, leaf_key.serialize_pem().as_bytes()).map_err(|e| fail(&e))?;
    std::fs::write(&files.cert, leaf_cert.pem()).map_err(|e| fail(&e))?;
    std::fs::write(&files.ca, ca_cert.pem()).map_err(|e| fail(&e))?;
    Ok(files)
}

/// Writes a file readable by its owner only (keys, tokens).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
