//! TLS (SPEC §9): rustls with TLS 1.3 by default, optional or required client certificates
//! against a CA bundle, OCSP stapling of a response file, and hot reload of the certificate,
//! key, CA and OCSP files (new connections use the new files; open connections keep theirs).

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

/// The files TLS is served from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The CA bundle that issues client certificates (PEM).
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are requested or required.
    pub client_auth: ClientAuth,
    /// Also accept TLS 1.2 (off by default).
    pub allow_tls12: bool,
    /// An OCSP response (DER) for the certificate, stapled to handshakes while it is fresh
    /// and names the certificate (see `docs/tls.md`).
    pub ocsp_response: Option<PathBuf>,
}

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// The current server configuration, rebuilt when its files change.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' modification times, and when the stapled OCSP response (if any) goes stale.
    seen: Mutex<(Vec<Option<SystemTime>>, Option<time::OffsetDateTime>)>,
}

impl TlsState {
    /// Loads the files. Refuses an inconsistent configuration (client auth without a CA).
    /// An OCSP response that cannot be stapled is not an error: the server serves without it
    /// and says why (log line, `ferrohsm_tls_ocsp_refused_total`).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (config, stale_at) = build(&files)?;
        let stamps = stamps(&files);
        Ok(TlsState {
            files,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new((stamps, stale_at)),
        })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds the configuration if a file changed, or if the stapled OCSP response went
    /// stale (it is then no longer stapled). On error the previous configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let stale = seen.1.is_some_and(|at| at <= time::OffsetDateTime::now_utc());
        if seen.0 == now && !stale {
            return Ok(false);
        }
        let (config, stale_at) = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *seen = (now, stale_at);
        Ok(true)
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref(), files.ocsp_response.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
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

fn build(files: &TlsFiles) -> Result<(ServerConfig, Option<time::OffsetDateTime>), TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if files.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match (files.client_auth, &files.client_ca) {
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
    };
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError(format!("{}: {e}", files.key.display())))?;
    let stapled = files.ocsp_response.as_deref().and_then(|path| staple(path, &certs));
    let (config, stale_at) = match stapled {
        Some((der, stale_at)) => {
            (builder.with_single_cert_with_ocsp(certs, key, der), Some(stale_at))
        }
        None => (builder.with_single_cert(certs, key), None),
    };
    let mut config = config.map_err(|e| TlsError(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, stale_at))
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
