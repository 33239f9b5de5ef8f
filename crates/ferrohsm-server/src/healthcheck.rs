//! `ferrohsm-server healthcheck`: one `GET /healthz` over TLS to a running server, for
//! container engines and orchestrators whose image has no shell or curl (the distroless image
//! of `deploy/container/`). Exits 0 when the server answers 200, 1 otherwise.
//!
//! Without `--ca-cert` it does not authenticate the server, as a Kubernetes HTTPS probe does
//! not: it talks to loopback only (any other host needs `--ca-cert`), sends no token and reads
//! only the status. With `--ca-cert` the server's chain and the URL's host name are verified
//! (the certificate must name that host, e.g. an IP SAN for 127.0.0.1).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The largest answer read (the health document is far smaller).
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(clap::Args)]
pub(crate) struct HealthcheckArgs {
    /// The health URL [default: https://ADDRESS/healthz, ADDRESS from FERROHSM_LISTEN, with
    /// an unspecified IP replaced by loopback; 127.0.0.1:8443 without it].
    #[arg(long, env = "FERROHSM_HEALTHCHECK_URL")]
    url: Option<String>,
    /// Verify the server's certificate against this CA (PEM) and the URL's host name.
    #[arg(long, env = "FERROHSM_HEALTHCHECK_CA")]
    ca_cert: Option<PathBuf>,
    /// A client certificate (PEM), for a server that requires one (`client_auth = "required"`).
    #[arg(long, env = "FERROHSM_HEALTHCHECK_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FERROHSM_HEALTHCHECK_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s")]
    timeout: String,
}

/// Runs the check; an error (exit status 1) says what failed.
pub(crate) async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = match args.url {
        Some(url) => url,
        None => default_url(std::env::var("FERROHSM_LISTEN").ok().as_deref())?,
    };
    let target = Target::parse(&url)?;
    if args.ca_cert.is_none() && !target.is_loopback() {
        bail!("{url} is not a loopback address: give --ca-cert to verify the server");
    }
    let timeout = crate::duration(&args.timeout)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match &args.ca_cert {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("parsing {}", ca.display()))?)
                    .with_context(|| format!("adding {}", ca.display()))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider))),
    };
    let config = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("the client certificate")?
        }
        _ => builder.with_no_client_auth(),
    };
    let status = tokio::time::timeout(timeout, get(&target, Arc::new(config)))
        .await
        .with_context(|| format!("no answer from {url} within {}", args.timeout))??;
    if !status.starts_with("200") {
        bail!("{url} answered {status}");
    }
    println!("{url}: healthy");
    Ok(())
}

/// `https://ADDRESS/healthz` for the server's listen address (an unspecified IP, 0.0.0.0 or
/// `::`, becomes the loopback address of its family).
fn default_url(listen: Option<&str>) -> anyhow::Result<String> {
    let Some(listen) = listen else {
        return Ok("https://127.0.0.1:8443/healthz".to_owned());
    };
    let mut addr: std::net::SocketAddr =
        listen.parse().with_context(|| format!("FERROHSM_LISTEN={listen:?} is not IP:PORT"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("https://{addr}/healthz"))
}

/// Sends the GET and returns the status line's code and reason, with the body when it is not
/// 200 (the health document names the failing component).
async fn get(target: &Target, config: Arc<rustls::ClientConfig>) -> anyhow::Result<String> {
    let host = target.host.trim_matches(['[', ']']);
    let tcp = tokio::net::TcpStream::connect((host, target.port))
        .await
        .with_context(|| format!("connecting to {}:{}", target.host, target.port))?;
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{} is not a valid server name", target.host))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("the TLS handshake failed")?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrohsm-healthcheck\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    tls.write_all(request.as_bytes()).await.context("sending the request")?;
    let mut answer = Vec::new();
    // A server may close without TLS close_notify; what arrived before counts.
    let _ = (&mut tls).take(MAX_ANSWER).read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.lines().next())
        .context("the server sent no HTTP/1.1 status line")?;
    if status.starts_with("200") {
        return Ok(status.to_owned());
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body.trim());
    Ok(format!("{status}: {body}"))
}

/// The parts of an `https://host[:port]/path` URL.
#[derive(Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// `localhost`, 127.0.0.0/8 or `::1`.
    fn is_loopback(&self) -> bool {
        let host = self.host.trim_matches(['[', ']']);
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn parse(url: &str) -> anyhow::Result<Target> {
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("the health URL must start with https:// (got {url:?})");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/healthz"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().with_context(|| format!("bad port in {url:?}"))?)
            }
            _ => (authority, 443),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            bail!("{url:?} is not a valid health URL");
        }
        Ok(Target { host: host.to_owned(), port, path: path.to_owned() })
    }
}

/// Accepts any server certificate, but still checks the handshake signatures with it.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_urls_parse_and_bad_ones_are_refused() {
        let t = Target::parse("https://127.0.0.1:9443/healthz").unwrap();
        assert_eq!(t, Target { host: "127.0.0.1".into(), port: 9443, path: "/healthz".into() });
        let t = Target::parse("https://[::1]:8443/readyz").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("[::1]", 8443, "/readyz"));
        let t = Target::parse("https://hsm.example").unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/healthz"));
        for bad in ["http://127.0.0.1/healthz", "https://:1/x", "https://h:99999/", "https://h/a b"]
        {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let loopback = |url: &str| Target::parse(url).unwrap().is_loopback();
        assert!(loopback("https://127.0.0.2:1/") && loopback("https://[::1]:1/"));
        assert!(loopback("https://LOCALHOST:1/"));
        assert!(!loopback("https://10.0.0.5:8443/") && !loopback("https://hsm.example/"));
    }

    #[test]
    fn the_default_url_follows_the_listen_address() {
        let url = |listen| default_url(listen).unwrap();
        assert_eq!(url(None), "https://127.0.0.1:8443/healthz");
        assert_eq!(url(Some("0.0.0.0:9443")), "https://127.0.0.1:9443/healthz");
        assert_eq!(url(Some("[::]:9443")), "https://[::1]:9443/healthz");
        assert_eq!(url(Some("127.0.0.5:1")), "https://127.0.0.5:1/healthz");
        assert!(default_url(Some("localhost:8443")).is_err());
    }
}
