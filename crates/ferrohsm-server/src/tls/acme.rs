//! ACME (RFC 8555) certificates for the serving port (`--tls-mode acme`, docs/tls.md).
//!
//! - The challenge is **tls-alpn-01** (RFC 8737), answered on the serving port itself: a
//!   handshake that offers the `acme-tls/1` protocol gets the self-signed challenge
//!   certificate for its server name, and the connection is closed after the handshake. No
//!   second port is opened, nothing is written to a web root, and it works where only the
//!   HTTPS port is reachable (see docs/tls.md for why not http-01).
//! - The account key and the certificate with its key are cached in `--acme-cache-dir`,
//!   AES-256-GCM encrypted under a key derived from the master key (purpose
//!   `tls/acme-cache/v1`), each bound to its file name. A file that does not decrypt is refused
//!   with an error naming it (at start the server does not start), never silently replaced.
//! - Renewal starts at two thirds of the lifetime (plus up to a thirtieth of it as jitter);
//!   failures are retried with exponential backoff (jittered, from `retry_min` up to
//!   `retry_max`). Replicas sharing the cache take an advisory lock (`order.lock`) before they
//!   order and adopt what another replica wrote instead of ordering again.
//!
//! It must never write key material or account credentials unencrypted, answer a challenge on
//! a connection that did not ask for `acme-tls/1`, or stop serving the current certificate
//! because a renewal failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use zeroize::{Zeroize as _, Zeroizing};

use super::TlsError;
use super::ocsp::{Facts, facts};

/// The ALPN protocol of tls-alpn-01 validation connections.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The purpose the cache key is derived from the master key for.
pub const CACHE_KEY_PURPOSE: &str = "tls/acme-cache/v1";

/// The most names one certificate is ordered for (Let's Encrypt's limit).
const MAX_DOMAINS: usize = 100;

/// The largest cache file read (an account or a chain with its key is a few KiB).
const MAX_CACHE_FILE: u64 = 1024 * 1024;

/// The first bytes of every cache file (format version 1).
const MAGIC: &[u8] = b"FERROHSM-ACME-CACHE-1\n";

/// The certificate being served, in the cache.
const CERTIFICATE_FILE: &str = "certificate.enc";

/// The advisory lock a replica holds while it orders.
const LOCK_FILE: &str = "order.lock";

/// When the last failed order says the next may be made (Unix seconds, not secret), so the
/// replicas sharing the cache back off together instead of each ordering once per failure.
const BACKOFF_FILE: &str = "order.backoff";

/// The longest one order (account, challenges, finalisation, download) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// How the ACME certificate is obtained.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (see [`directory_url`] for the named presets).
    pub directory: String,
    /// The names (DNS names or IP addresses) the certificate is for.
    pub domains: Vec<String>,
    /// Contact URLs for the account (`mailto:…`).
    pub contact: Vec<String>,
    /// Where the encrypted account and certificate are kept (shared by replicas).
    pub cache_dir: PathBuf,
    /// The CA certificate (PEM) that issued the ACME server's own TLS certificate, for a
    /// private ACME CA; else the system's roots are trusted.
    pub ca_root: Option<PathBuf>,
    /// A certificate profile the CA offers (e.g. Let's Encrypt's `tlsserver`).
    pub profile: Option<String>,
    /// The first retry delay after a failed order.
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// How often the cache is checked for a certificate another replica ordered.
    pub check_interval: Duration,
}

/// The directory URL a name stands for: `letsencrypt` (production), `letsencrypt-staging`, or
/// an `https://` URL as it is.
pub fn directory_url(name: &str) -> Result<String, TlsError> {
    match name {
        "letsencrypt" | "letsencrypt-production" => {
            Ok(instant_acme::LetsEncrypt::Production.url().to_owned())
        }
        "letsencrypt-staging" => Ok(instant_acme::LetsEncrypt::Staging.url().to_owned()),
        url if url.starts_with("https://") && url.len() > "https://".len() => Ok(url.to_owned()),
        other => Err(TlsError(format!(
            "acme directory {other:?}: use letsencrypt, letsencrypt-staging or an https:// URL"
        ))),
    }
}

impl AcmeConfig {
    /// The configuration checked, with the directory resolved and the names in one canonical
    /// form (lower case, no trailing dot, sorted, no duplicates), so replicas configured with
    /// the same names in another order share one certificate.
    fn normalized(mut self) -> Result<AcmeConfig, TlsError> {
        self.directory = directory_url(&self.directory)?;
        let mut domains: Vec<String> = self
            .domains
            .iter()
            .map(|d| match d.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => d.trim_end_matches('.').to_ascii_lowercase(),
            })
            .collect();
        domains.sort();
        domains.dedup();
        self.domains = domains;
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), TlsError> {
        let fail = |m: String| Err(TlsError(format!("acme: {m}")));
        directory_url(&self.directory)?;
        if self.domains.is_empty() {
            return fail("name at least one domain (--acme-domain)".into());
        }
        if self.domains.len() > MAX_DOMAINS {
            return fail(format!("at most {MAX_DOMAINS} domains"));
        }
        for name in &self.domains {
            if name.parse::<IpAddr>().is_err() && !is_dns_name(name) {
                return fail(format!(
                    "{name:?} is not a DNS name or IP address (wildcards cannot be validated by tls-alpn-01)"
                ));
            }
        }
        if let Some(bad) = self.contact.iter().find(|c| !c.starts_with("mailto:")) {
            return fail(format!("contact {bad:?} must be a mailto: URL"));
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return fail("the retry delays need 0 < retry_min <= retry_max".into());
        }
        if self.check_interval < Duration::from_millis(10) {
            return fail("the cache check interval must be at least 10ms".into());
        }
        Ok(())
    }

    fn identifiers(&self) -> Vec<Identifier> {
        self.domains
            .iter()
            .map(|d| {
                d.parse::<IpAddr>().map_or_else(|_| Identifier::Dns(d.clone()), Identifier::Ip)
            })
            .collect()
    }
}

/// A DNS name of letters, digits and hyphens, with at least one dot-free label, no wildcard.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The name a tls-alpn-01 validator sends as SNI for an identifier: the DNS name, or for an IP
/// address its reverse-mapping name (RFC 8738).
fn challenge_server_name(identifier: &Identifier) -> Option<String> {
    match identifier {
        Identifier::Dns(name) => Some(name.to_ascii_lowercase()),
        Identifier::Ip(IpAddr::V4(ip)) => {
            let [a, b, c, d] = ip.octets();
            Some(format!("{d}.{c}.{b}.{a}.in-addr.arpa"))
        }
        Identifier::Ip(IpAddr::V6(ip)) => {
            let mut name = String::new();
            for byte in ip.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            Some(name + "ip6.arpa")
        }
        _ => None,
    }
}

/// A cache file refused: counted (`ferrohsm_tls_acme_cache_refused_total`, which the alert
/// in docs/tls.md watches) and named in the error.
fn refused(path: &Path, why: &str) -> TlsError {
    metrics::counter!("ferrohsm_tls_acme_cache_refused_total").increment(1);
    TlsError(format!(
        "acme cache file {} is refused: {why}. It is damaged, truncated, or was written under \
         another master key; FerroHSM does not use or replace it. Move it away to order anew \
         (docs/tls.md)",
        path.display()
    ))
}

/// The files of the cache, encrypted under the derived key.
#[derive(Debug)]
struct Cache {
    dir: PathBuf,
    key: KeyHolder,
}

/// The cache key (not printed).
struct KeyHolder(LessSafeKey);

impl std::fmt::Debug for KeyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHolder(..)")
    }
}

impl Cache {
    fn open(dir: &Path, key: &[u8; 32]) -> Result<Cache, TlsError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |e: std::io::Error| TlsError(format!("acme cache {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let key = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| TlsError("acme cache: the derived key was refused".into()))?;
        Ok(Cache { dir: dir.to_owned(), key: KeyHolder(LessSafeKey::new(key)) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn aad(name: &str) -> Vec<u8> {
        [MAGIC, name.as_bytes()].concat()
    }

    /// The decrypted contents of `name`, or `None` when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, TlsError> {
        use std::io::Read as _;
        let path = self.path(name);
        let damaged = |why: &str| refused(&path, why);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(file) => file.take(MAX_CACHE_FILE + 1).read_to_end(&mut bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => Err(e),
        }
        .map_err(|e| TlsError(format!("acme cache file {}: {e}", path.display())))?;
        if bytes.len() as u64 > MAX_CACHE_FILE {
            return Err(damaged("it is larger than 1 MiB"));
        }
        let Some(sealed) = bytes.strip_prefix(MAGIC) else {
            return Err(damaged("it does not start with the cache format's header"));
        };
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(damaged("it is too short"));
        }
        let (nonce, sealed) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged("bad nonce"))?;
        let mut plain = Zeroizing::new(sealed.to_vec());
        let len = self
            .key
            .0
            .open_in_place(nonce, Aad::from(Self::aad(name)), &mut plain)
            .map_err(|_| damaged("it does not decrypt"))?
            .len();
        plain.truncate(len);
        Ok(Some(plain))
    }

    /// Encrypts `plain` into `name`: a temporary file, synced, then renamed over the old one,
    /// so a reader (another replica) sees the old file or the new one, never half of one.
    fn write(&self, name: &str, plain: &[u8]) -> Result<(), TlsError> {
        let io = |e: &dyn std::fmt::Display| {
            TlsError(format!("writing acme cache file {}: {e}", self.path(name).display()))
        };
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|e| io(&e))?;
        let mut sealed = Zeroizing::new(plain.to_vec());
        self.key
            .0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(name)),
                &mut *sealed,
            )
            .map_err(|e| io(&e))?;
        let bytes = [MAGIC, &nonce, &sealed].concat();
        let temporary = self.path(&format!(".{name}.{}.tmp", uuid::Uuid::now_v7()));
        let written = super::write_private(&temporary, &bytes)
            .and_then(|()| std::fs::rename(&temporary, self.path(name)))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(|e| io(&e))
    }

    /// When `name` last changed (and its length), to notice another replica's write.
    fn stamp(&self, name: &str) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(self.path(name)).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// The account file for a directory (one account per directory URL).
    fn account_file(directory: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, directory.as_bytes());
        format!("account-{}.enc", &ferrohsm_core::hex::encode(digest.as_ref())[..16])
    }
}

/// The certificate file's contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedCertificate {
    directory: String,
    domains: Vec<String>,
    chain_pem: String,
    key_pem: String,
}

impl Drop for CachedCertificate {
    fn drop(&mut self) {
        self.key_pem.zeroize();
    }
}

/// A certificate chain with its key, ready to serve.
pub(crate) struct Issued {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) facts: Facts,
    directory: String,
    domains: Vec<String>,
}

impl Drop for Issued {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("facts", &self.facts).finish_non_exhaustive()
    }
}

impl Issued {
    fn from_cached(cached: &CachedCertificate, path: &Path) -> Result<Issued, TlsError> {
        let bad = |what: &str| refused(path, what);
        let chain = CertificateDer::pem_slice_iter(cached.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("its certificate chain is not PEM"))?;
        let key = PrivateKeyDer::from_pem_slice(cached.key_pem.as_bytes())
            .map_err(|_| bad("its key is not PEM"))?;
        let facts = chain
            .first()
            .and_then(|leaf| facts(leaf))
            .ok_or_else(|| bad("its leaf certificate cannot be read"))?;
        Ok(Issued {
            chain,
            key,
            facts,
            directory: cached.directory.clone(),
            domains: cached.domains.clone(),
        })
    }

    /// When renewal starts: two thirds into the lifetime, plus a jitter of up to a thirtieth of
    /// it (so replicas and restarts spread out).
    fn renew_at(&self) -> OffsetDateTime {
        let lifetime = self.facts.not_after - self.facts.not_before;
        self.facts.not_before + lifetime * 2 / 3 + lifetime / 30 * random_fraction()
    }
}

/// A uniformly random number in [0, 1).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The challenge certificates being offered, by the server name a validator sends: this
/// replica's own, and those another replica sharing the cache published there (the CA's
/// validation may reach any replica behind a load balancer, not the one that ordered).
#[derive(Debug)]
pub(crate) struct Challenges {
    mine: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    cache: Arc<Cache>,
}

/// A challenge certificate and its key (DER), as published in the shared cache.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChallengeCertificate {
    name: String,
    cert_der: String,
    key_der: String,
}

impl Drop for ChallengeCertificate {
    fn drop(&mut self) {
        self.key_der.zeroize();
    }
}

impl ChallengeCertificate {
    /// The certificate and key rustls serves.
    fn certified(&self) -> Result<CertifiedKey, String> {
        let cert = ferrohsm_core::b64::decode(&self.cert_der).map_err(|e| e.to_string())?;
        let key =
            Zeroizing::new(ferrohsm_core::b64::decode(&self.key_der).map_err(|e| e.to_string())?);
        let key = PrivateKeyDer::try_from(key.to_vec()).map_err(|e| e.to_string())?;
        // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki,
        // which refuses the critical acmeIdentifier extension the validator needs.
        let signer = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| e.to_string())?;
        Ok(CertifiedKey::new(vec![CertificateDer::from(cert)], signer))
    }
}

impl Challenges {
    fn new(cache: Arc<Cache>) -> Challenges {
        Challenges { mine: Mutex::default(), cache }
    }

    /// The cache file of the challenge for `name`.
    fn file(name: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
        format!("challenge-{}.enc", &ferrohsm_core::hex::encode(digest.as_ref())[..32])
    }

    /// Offers `challenge` here and, through the cache, on every replica sharing it.
    fn publish(&self, challenge: &ChallengeCertificate) -> Result<(), String> {
        let certified = Arc::new(challenge.certified()?);
        self.mine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(challenge.name.clone(), certified);
        let plain = Zeroizing::new(serde_json::to_vec(challenge).map_err(|e| e.to_string())?);
        self.cache.write(&Self::file(&challenge.name), &plain).map_err(|e| e.to_string())
    }

    fn withdraw(&self, names: &[String]) {
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        for name in names {
            mine.remove(name);
            let _ = std::fs::remove_file(self.cache.path(&Self::file(name)));
        }
    }

    /// A challenge another replica published for `name`, if any.
    fn shared(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let plain = match self.cache.read(&Self::file(name)) {
            Ok(plain) => plain?,
            Err(e) => {
                tracing::warn!(error = %e, "a shared ACME challenge is refused");
                return None;
            }
        };
        let challenge = serde_json::from_slice::<ChallengeCertificate>(&plain).ok()?;
        (challenge.name == name).then(|| challenge.certified().ok().map(Arc::new)).flatten()
    }
}

impl ResolvesServerCert for Challenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
        let mine = self.mine.lock().unwrap_or_else(|p| p.into_inner()).get(&name).cloned();
        mine.or_else(|| self.shared(&name))
    }
}

/// A tls-alpn-01 challenge certificate: self-signed, for exactly the identifier, with the
/// critical acmeIdentifier extension holding the key authorisation's digest.
fn challenge_certificate(
    identifier: &Identifier,
    digest: &[u8],
) -> Result<ChallengeCertificate, String> {
    let (name, san) = match identifier {
        Identifier::Dns(dns) => (challenge_server_name(identifier), dns.clone()),
        Identifier::Ip(ip) => (challenge_server_name(identifier), ip.to_string()),
        other => return Err(format!("unsupported identifier {other:?}")),
    };
    let name = name.ok_or_else(|| format!("unsupported identifier {identifier:?}"))?;
    let mut params = rcgen::CertificateParams::new(vec![san]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(ChallengeCertificate {
        name,
        cert_der: ferrohsm_core::b64::encode(cert.der()),
        key_der: ferrohsm_core::b64::encode(&key.serialize_der()),
    })
}

/// How the last renewal went, for health and metrics.
#[derive(Debug, Clone, Default)]
struct Status {
    /// The certificate being served.
    current: Option<Facts>,
    /// When to order next (renewal due, or a retry after a failure).
    next_attempt: Option<OffsetDateTime>,
    consecutive_failures: u32,
    /// When the last order ended, and its error if it failed.
    last: Option<(OffsetDateTime, Option<String>)>,
    /// The cache file's stamp when it was last read or written here.
    seen: Option<(SystemTime, u64)>,
    /// Since when another replica has held the order lock (while this one waits).
    busy_since: Option<OffsetDateTime>,
    /// Why the certificate this replica ordered could not be written to the cache (retried
    /// every tick; a restart would order anew meanwhile).
    unsaved: Option<String>,
}

/// The ACME side of the TLS state: the cache, the challenges being answered, and the renewal
/// schedule.
#[derive(Debug)]
pub struct Acme {
    config: AcmeConfig,
    cache: Arc<Cache>,
    challenges: Arc<Challenges>,
    challenge_config: Arc<ServerConfig>,
    status: Mutex<Status>,
    /// The certificate file's contents, while writing them failed.
    unsaved: Mutex<Option<Zeroizing<Vec<u8>>>>,
}

/// What one renewal attempt did.
enum Attempt {
    /// This replica ordered a new certificate; `first` when the cache held none before.
    Ordered { issued: Issued, first: bool },
    /// Another replica had just written one; it is adopted.
    Adopted(Issued),
    /// Another replica holds the order lock.
    Busy,
    /// A replica's failed order asked everyone to wait until then.
    Deferred(OffsetDateTime),
}

impl Acme {
    /// Checks the configuration and reads the cache. A cache file that cannot be decrypted
    /// is an error; a missing one is not (the first order writes it).
    pub(crate) fn open(
        config: AcmeConfig,
        cache_key: &[u8; 32],
    ) -> Result<(Acme, Option<Issued>), TlsError> {
        let config = config.normalized()?;
        let cache = Arc::new(Cache::open(&config.cache_dir, cache_key)?);
        // The account is read now too, so a damaged account file stops the start as clearly
        // as a damaged certificate would (it is only used when ordering).
        let directory = config.directory.clone();
        read_account(&cache, &directory)?;
        let seen = cache.stamp(CERTIFICATE_FILE);
        let issued = read_certificate(&cache)?;
        let challenges = Arc::new(Challenges::new(cache.clone()));
        let mut challenge_config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(challenges.clone());
        challenge_config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let now = OffsetDateTime::now_utc();
        let next_attempt = match &issued {
            Some(issued) if issued.directory == directory && issued.domains == config.domains => {
                issued.renew_at().max(now)
            }
            _ => now,
        };
        let status = Status {
            current: issued.as_ref().map(|i| i.facts.clone()),
            next_attempt: Some(next_attempt),
            seen,
            ..Status::default()
        };
        let acme = Acme {
            config,
            cache,
            challenges,
            challenge_config: Arc::new(challenge_config),
            status: Mutex::new(status),
            unsaved: Mutex::default(),
        };
        acme.publish_metrics();
        Ok((acme, issued))
    }

    /// The configuration for validation handshakes (`acme-tls/1`).
    pub(crate) fn challenge_config(&self) -> Arc<ServerConfig> {
        self.challenge_config.clone()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(healthy, detail)` for `/healthz`: unhealthy while renewals fail, while another
    /// replica holds the order lock far longer than an order may take, or while the ordered
    /// certificate is not in the cache.
    pub(crate) fn health(&self) -> (bool, String) {
        let status = self.status();
        let now = OffsetDateTime::now_utc();
        let mut healthy = status.consecutive_failures == 0;
        let mut detail = format!("acme {}", self.config.domains.join(","));
        if let Some(since) = status.busy_since
            && now - since > ATTEMPT_TIMEOUT + Duration::from_secs(60)
        {
            healthy = false;
            detail.push_str(&format!(
                "; another replica has held the order lock ({}) since {since}",
                self.cache.path(LOCK_FILE).display()
            ));
        }
        if let Some(error) = &status.unsaved {
            healthy = false;
            detail.push_str(&format!("; the new certificate is not cached: {error}"));
        }
        if let Some(next) = status.next_attempt {
            let wait = (next - now).whole_seconds().max(0);
            detail.push_str(&format!("; next order in {wait}s"));
        }
        match &status.last {
            Some((at, None)) => detail.push_str(&format!("; last renewal ok at {at}")),
            Some((at, Some(error))) => detail.push_str(&format!(
                "; {} consecutive renewal failures, last at {at}: {error}",
                status.consecutive_failures
            )),
            None => {}
        }
        (healthy, detail)
    }

    fn publish_metrics(&self) {
        let status = self.status();
        metrics::gauge!("ferrohsm_tls_acme_consecutive_failures")
            .set(f64::from(status.consecutive_failures));
        if let Some(next) = status.next_attempt {
            metrics::gauge!("ferrohsm_tls_acme_next_attempt_timestamp_seconds")
                .set(next.unix_timestamp() as f64);
        }
        if let Some((at, error)) = &status.last {
            metrics::gauge!("ferrohsm_tls_acme_last_renewal_timestamp_seconds")
                .set(at.unix_timestamp() as f64);
            metrics::gauge!("ferrohsm_tls_acme_last_renewal_success").set(if error.is_none() {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Orders, renews and adopts certificates until `stopped`, installing each into `tls`.
    pub(crate) async fn run(
        self: Arc<Self>,
        tls: Arc<super::TlsState>,
        hsm: ferrohsm_core::Hsm,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if *stopped.borrow() {
                return;
            }
            self.save_unsaved();
            self.adopt_changed_cache(&tls);
            let now = OffsetDateTime::now_utc();
            let due = self.status().next_attempt.unwrap_or(now);
            if due > now {
                let wait = Duration::try_from(due - now)
                    .unwrap_or_default()
                    .min(self.config.check_interval);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    _ = stopped.changed() => return,
                }
            }
            let attempt = tokio::select! {
                a = tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt()) => a
                    .unwrap_or_else(|_| Err(format!("the order took longer than {}s", ATTEMPT_TIMEOUT.as_secs()))),
                _ = stopped.changed() => return,
            };
            self.settle(attempt, &tls, &hsm).await;
        }
    }

    /// Records the outcome of an attempt: serves, schedules, counts, logs and audits.
    async fn settle(
        &self,
        attempt: Result<Attempt, String>,
        tls: &super::TlsState,
        hsm: &ferrohsm_core::Hsm,
    ) {
        use ferrohsm_core::AuditOutcome;
        let now = OffsetDateTime::now_utc();
        let names = self.config.domains.join(",");
        if !matches!(attempt, Ok(Attempt::Busy)) {
            self.status().busy_since = None;
        }
        let event = match attempt {
            Ok(Attempt::Busy) => {
                tracing::info!("another replica is ordering the ACME certificate; waiting for it");
                let mut status = self.status();
                status.busy_since.get_or_insert(now);
                status.next_attempt = Some(now + self.config.check_interval);
                None
            }
            Ok(Attempt::Deferred(until)) => {
                tracing::info!(%until, "a replica's failed ACME order asks to wait; waiting");
                self.status().next_attempt = Some(until);
                None
            }
            Ok(Attempt::Adopted(issued)) => {
                tracing::info!(serial = %issued.facts.serial, "adopting the ACME certificate another replica ordered");
                self.serve(issued, tls, now);
                None
            }
            Ok(Attempt::Ordered { issued, first }) => {
                let message = format!(
                    "certificate for {names} from {}: serial {}, valid {} to {}",
                    self.config.directory,
                    issued.facts.serial,
                    issued.facts.not_before,
                    issued.facts.not_after
                );
                tracing::info!(serial = %issued.facts.serial, not_after = %issued.facts.not_after, "ACME certificate {}", if first { "issued" } else { "renewed" });
                metrics::counter!("ferrohsm_tls_acme_renewals_total", "result" => "success")
                    .increment(1);
                let _ = std::fs::remove_file(self.cache.path(BACKOFF_FILE));
                self.serve(issued, tls, now);
                let action =
                    if first { "tls.certificate_issued" } else { "tls.certificate_renewed" };
                Some((action, AuditOutcome::Success, message))
            }
            Err(error) => {
                let (failures, retry) = {
                    let mut status = self.status();
                    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                    let retry = self.backoff(status.consecutive_failures);
                    status.next_attempt = Some(now + retry);
                    status.last = Some((now, Some(error.clone())));
                    (status.consecutive_failures, retry)
                };
                // The replicas sharing the cache wait as long (best effort: a replica that
                // cannot write it still backs off itself).
                let until = (now + retry).unix_timestamp().to_string();
                let _ = std::fs::write(self.cache.path(BACKOFF_FILE), until);
                metrics::counter!("ferrohsm_tls_acme_renewals_total", "result" => "failure")
                    .increment(1);
                tracing::warn!(
                    failures,
                    retry_in_ms = retry.as_millis() as u64,
                    "ordering the ACME certificate failed; the current certificate (if any) keeps serving: {error}"
                );
                let message = format!(
                    "order for {names} from {} failed ({failures} in a row), retrying in {}s: {error}",
                    self.config.directory,
                    retry.as_secs()
                );
                Some(("tls.certificate_order_failed", AuditOutcome::Error, message))
            }
        };
        self.publish_metrics();
        if let Some((action, outcome, message)) = event {
            let ctx = ferrohsm_core::RequestContext::local("system:acme");
            if let Err(e) = hsm.record_server_event(&ctx, action, outcome, message).await {
                tracing::error!(error = %e, action, "the audit log did not take the ACME event");
            }
        }
    }

    /// Installs `issued` (ordered here or adopted) and schedules its renewal. When it cannot
    /// be installed the schedule stays, and the cache is read again at the next tick.
    fn serve(&self, issued: Issued, tls: &super::TlsState, now: OffsetDateTime) {
        let facts = issued.facts.clone();
        let renew_at = issued.renew_at();
        if let Err(e) = tls.install(issued) {
            tracing::error!(error = %e, "the ACME certificate cannot be served; keeping the previous one");
            self.status().seen = None;
            return;
        }
        let mut status = self.status();
        // Never sooner than a retry would be: a certificate already due (a clock ahead of
        // the CA's, a very short lifetime) must not make the loop order back to back.
        let earliest = now + self.config.retry_min;
        if renew_at < earliest {
            tracing::warn!(%renew_at, "the new ACME certificate is already due for renewal; check the clock");
        }
        status.next_attempt = Some(renew_at.max(earliest));
        status.current = Some(facts);
        status.consecutive_failures = 0;
        status.last = Some((now, None));
        status.seen = self.cache.stamp(CERTIFICATE_FILE);
        drop(status);
        self.publish_metrics();
    }

    /// Writes the certificate this replica ordered but could not cache, if any.
    fn save_unsaved(&self) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        let Some(plain) = unsaved.as_ref() else { return };
        match self.cache.write(CERTIFICATE_FILE, plain) {
            Ok(()) => {
                *unsaved = None;
                let mut status = self.status();
                status.unsaved = None;
                status.seen = self.cache.stamp(CERTIFICATE_FILE);
                tracing::info!("the ACME certificate is now cached");
            }
            Err(e) => self.status().unsaved = Some(e.to_string()),
        }
    }

    /// The delay before retry number `failures` (from 1): doubling from `retry_min` up to
    /// `retry_max`, then a random part of the upper half taken off (so replicas spread out).
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .config
            .retry_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.config.retry_max);
        doubled.mul_f64(0.5 + 0.5 * random_fraction())
    }

    /// Adopts the cached certificate when another replica replaced it since it was last read
    /// here and it is newer than the one served.
    fn adopt_changed_cache(&self, tls: &super::TlsState) {
        let stamp = self.cache.stamp(CERTIFICATE_FILE);
        if stamp.is_none() || stamp == self.status().seen {
            return;
        }
        match read_certificate(&self.cache) {
            Ok(Some(issued)) if self.is_newer(&issued) => {
                tracing::info!(serial = %issued.facts.serial, "adopting the ACME certificate another replica ordered");
                self.serve(issued, tls, OffsetDateTime::now_utc());
            }
            Ok(_) => self.status().seen = stamp,
            Err(e) => {
                tracing::error!(error = %e, "keeping the served certificate");
                self.status().seen = stamp;
            }
        }
    }

    /// Whether `issued` is for the configured names and outlives the served certificate.
    fn is_newer(&self, issued: &Issued) -> bool {
        let current = self.status().current.clone();
        issued.domains == self.config.domains
            && issued.directory == self.config.directory
            && current.is_none_or(|c| issued.facts.not_after > c.not_after)
    }

    /// One renewal: take the order lock (or leave it to the replica holding it), adopt a
    /// certificate written meanwhile, else order one and cache it.
    async fn attempt(&self) -> Result<Attempt, String> {
        let lock_path = self.cache.path(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(Attempt::Busy),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", lock_path.display()));
            }
        }
        let now = OffsetDateTime::now_utc();
        if let Some(until) = self.shared_backoff(now) {
            return Ok(Attempt::Deferred(until));
        }
        let cached = read_certificate(&self.cache).map_err(|e| e.to_string())?;
        let first = cached.is_none();
        if let Some(issued) = cached
            && self.is_newer(&issued)
            && issued.renew_at() > now
        {
            return Ok(Attempt::Adopted(issued));
        }
        let issued = self.order().await?;
        let cached = CachedCertificate {
            directory: issued.directory.clone(),
            domains: issued.domains.clone(),
            chain_pem: pem_chain(&issued.chain),
            key_pem: pem_key(&issued.key),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&cached).map_err(|e| e.to_string())?);
        // A certificate that cannot be cached is still served (ordering it again would spend
        // the CA's duplicate-certificate limit); the write is retried every tick.
        if let Err(e) = self.cache.write(CERTIFICATE_FILE, &plain) {
            tracing::error!(error = %e, "the new ACME certificate is served but not cached; retrying the write");
            self.status().unsaved = Some(e.to_string());
            *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()) = Some(plain);
        }
        drop(lock);
        Ok(Attempt::Ordered { issued, first })
    }

    /// When a replica's failed order asked the others to wait, if that is still ahead (at most
    /// `retry_max` ahead: a later time in the file is not trusted).
    fn shared_backoff(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let text = std::fs::read_to_string(self.cache.path(BACKOFF_FILE)).ok()?;
        let until = OffsetDateTime::from_unix_timestamp(text.trim().parse().ok()?).ok()?;
        (until > now).then(|| until.min(now + self.config.retry_max))
    }

    /// The account for the configured directory: the cached one, else a new one (cached).
    async fn account(&self, directory: &str) -> Result<Account, String> {
        let builder = || match &self.config.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let file = Cache::account_file(directory);
        if let Some(credentials) =
            read_account(&self.cache, directory).map_err(|e| e.to_string())?
        {
            return builder()
                .map_err(|e| format!("ACME client: {e}"))?
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("loading the ACME account: {e}"));
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()
            .map_err(|e| format!("ACME client: {e}"))?
            .create(&new, directory.to_owned(), None)
            .await
            .map_err(|e| format!("creating the ACME account: {e}"))?;
        let plain = Zeroizing::new(serde_json::to_vec(&credentials).map_err(|e| e.to_string())?);
        self.cache.write(&file, &plain).map_err(|e| e.to_string())?;
        tracing::info!(account = account.id(), "created an ACME account");
        Ok(account)
    }

    /// Orders a certificate: answers each authorisation's tls-alpn-01 challenge on the
    /// serving port, finalises with a fresh P-256 key and downloads the chain.
    async fn order(&self) -> Result<Issued, String> {
        let directory = self.config.directory.clone();
        let account = self.account(&directory).await?;
        let identifiers = self.config.identifiers();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(profile) = &self.config.profile {
            new_order = new_order.profile(profile);
        }
        let mut order =
            account.new_order(&new_order).await.map_err(|e| format!("new order: {e}"))?;
        let mut published = Published { challenges: &self.challenges, names: Vec::new() };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("an authorization is {other:?}")),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or("the CA offers no tls-alpn-01 challenge")?;
            let identifier = challenge.identifier().identifier.clone();
            let digest = challenge.key_authorization().digest();
            let certificate = challenge_certificate(&identifier, digest.as_ref())?;
            published.names.push(certificate.name.clone());
            published.challenges.publish(&certificate)?;
            challenge.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            let problem = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
            return Err(format!("the order is {status:?} after validation {problem}"));
        }
        drop(published);
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(self.config.domains.clone())
            .map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order.finalize_csr(csr.der()).await.map_err(|e| format!("finalize: {e}"))?;
        let chain_pem =
            order.poll_certificate(&retry).await.map_err(|e| format!("certificate: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the CA's chain is not PEM: {e}"))?;
        let facts = chain
            .first()
            .and_then(|leaf| facts(leaf))
            .ok_or("the CA's leaf certificate cannot be read")?;
        let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
        // The leaf must be for the key just generated, or it is never cached or served.
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
            .map_err(|e| format!("the CA's certificate does not fit the key: {e}"))?;
        Ok(Issued { chain, key, facts, directory, domains: self.config.domains.clone() })
    }
}

/// Challenge certificates published for one order, withdrawn when it ends however it ends.
struct Published<'a> {
    challenges: &'a Challenges,
    names: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.challenges.withdraw(&self.names);
    }
}

/// The account cached for `directory`, if there is one.
fn read_account(cache: &Cache, directory: &str) -> Result<Option<AccountCredentials>, TlsError> {
    let file = Cache::account_file(directory);
    let Some(plain) = cache.read(&file)? else { return Ok(None) };
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|_| refused(&cache.path(&file), "it decrypts but holds no account"))
}

/// The certificate in the cache, if there is one.
fn read_certificate(cache: &Cache) -> Result<Option<Issued>, TlsError> {
    let Some(plain) = cache.read(CERTIFICATE_FILE)? else { return Ok(None) };
    let path = cache.path(CERTIFICATE_FILE);
    let cached = serde_json::from_slice::<CachedCertificate>(&plain)
        .map_err(|_| refused(&path, "it decrypts but holds no certificate"))?;
    Issued::from_cached(&cached, &path).map(Some)
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_chain(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
}

fn pem_key(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem(label, key.secret_der())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> AcmeConfig {
        AcmeConfig {
            directory: "https://127.0.0.1:1/dir".into(),
            domains: vec!["a.example".into(), "127.0.0.1".into()],
            contact: vec![],
            cache_dir: dir.to_owned(),
            ca_root: None,
            profile: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            check_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn presets_name_lets_encrypt_and_other_directories_must_be_https() {
        assert!(directory_url("letsencrypt").unwrap().starts_with("https://acme-v02."));
        assert!(directory_url("letsencrypt-staging").unwrap().contains("staging"));
        assert_eq!(directory_url("https://ca.internal/dir").unwrap(), "https://ca.internal/dir");
        assert!(directory_url("http://ca.internal/dir").is_err());
        assert!(directory_url("staging").is_err());
    }

    #[test]
    fn names_contacts_and_delays_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(config(dir.path()).validate().is_ok());
        for bad in ["*.example.com", "a..b", "-a.example", "a b", ""] {
            let mut c = config(dir.path());
            c.domains = vec![bad.into()];
            assert!(c.validate().is_err(), "{bad:?}");
        }
        let mut c = config(dir.path());
        c.domains = vec![];
        assert!(c.validate().is_err());
        let mut c = config(dir.path());
        c.domains = (0..=MAX_DOMAINS).map(|i| format!("h{i}.example")).collect();
        assert!(c.validate().is_err());
        let mut c = config(dir.path());
        c.contact = vec!["admin@example.com".into()];
        assert!(c.validate().is_err());
        let mut c = config(dir.path());
        c.retry_min = Duration::from_secs(9);
        assert!(c.validate().is_err());
    }

    #[test]
    fn names_are_normalised_so_replicas_agree_on_one_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.domains =
            vec!["B.example.".into(), "a.example".into(), "b.example".into(), "::0:1".into()];
        let c = c.normalized().unwrap();
        assert_eq!(c.domains, ["::1", "a.example", "b.example"]);
        let mut c = config(dir.path());
        c.directory = "letsencrypt-staging".into();
        assert!(c.normalized().unwrap().directory.starts_with("https://"));
        let mut c = config(dir.path());
        c.check_interval = Duration::ZERO;
        assert!(c.normalized().is_err(), "a zero interval would spin");
    }

    #[test]
    fn a_shared_backoff_is_honoured_only_while_ahead_and_never_beyond_retry_max() {
        let dir = tempfile::tempdir().unwrap();
        let (acme, _) = Acme::open(config(dir.path()), &[1; 32]).unwrap();
        let now = OffsetDateTime::now_utc();
        let write = |t: i64| std::fs::write(dir.path().join(BACKOFF_FILE), t.to_string()).unwrap();
        assert_eq!(acme.shared_backoff(now), None, "no file");
        write(now.unix_timestamp() + 5);
        assert_eq!(acme.shared_backoff(now).unwrap().unix_timestamp(), now.unix_timestamp() + 5);
        write(now.unix_timestamp() + 86_400);
        assert_eq!(acme.shared_backoff(now).unwrap(), now + Duration::from_secs(8), "capped");
        write(now.unix_timestamp() - 1);
        assert_eq!(acme.shared_backoff(now), None, "past");
        std::fs::write(dir.path().join(BACKOFF_FILE), "soon").unwrap();
        assert_eq!(acme.shared_backoff(now), None, "garbage");
    }

    #[test]
    fn a_certificate_that_could_not_be_cached_is_written_when_the_cache_works_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let (acme, _) = Acme::open(config(&dir), &[1; 32]).unwrap();
        *acme.unsaved.lock().unwrap() = Some(Zeroizing::new(b"{}".to_vec()));
        // Even root cannot write into a directory that became a file.
        std::fs::rename(&dir, root.path().join("away")).unwrap();
        std::fs::write(&dir, b"").unwrap();
        acme.save_unsaved();
        let (healthy, detail) = acme.health();
        assert!(!healthy && detail.contains("the new certificate is not cached"), "{detail}");
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(root.path().join("away"), &dir).unwrap();
        acme.save_unsaved();
        assert!(acme.health().0, "{}", acme.health().1);
        assert!(acme.unsaved.lock().unwrap().is_none());
        assert_eq!(&**acme.cache.read(CERTIFICATE_FILE).unwrap().unwrap(), b"{}");
    }

    #[test]
    fn validators_server_names_follow_rfc_8738_for_addresses() {
        let ip = |s: &str| Identifier::Ip(s.parse().unwrap());
        assert_eq!(challenge_server_name(&ip("127.0.0.1")).unwrap(), "1.0.0.127.in-addr.arpa");
        assert_eq!(
            challenge_server_name(&ip("2001:db8::1")).unwrap(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(
            challenge_server_name(&Identifier::Dns("A.Example".into())).unwrap(),
            "a.example"
        );
    }

    #[test]
    fn the_cache_round_trips_and_refuses_damage_another_key_and_a_moved_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &[7; 32]).unwrap();
        assert!(cache.read("x.enc").unwrap().is_none());
        cache.write("x.enc", b"secret account").unwrap();
        assert_eq!(&**cache.read("x.enc").unwrap().unwrap(), b"secret account");
        let raw = std::fs::read(dir.path().join("x.enc")).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"), "the file is encrypted");
        // Another master key.
        let other = Cache::open(dir.path(), &[8; 32]).unwrap();
        let err = other.read("x.enc").unwrap_err().to_string();
        assert!(err.contains("x.enc") && err.contains("another master key"), "{err}");
        // Bound to its name.
        std::fs::copy(dir.path().join("x.enc"), dir.path().join("y.enc")).unwrap();
        assert!(cache.read("y.enc").is_err());
        // Every single-byte flip and every truncation is refused.
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            std::fs::write(dir.path().join("x.enc"), &bad).unwrap();
            assert!(cache.read("x.enc").is_err(), "flip at {i}");
            std::fs::write(dir.path().join("x.enc"), &raw[..i]).unwrap();
            assert!(cache.read("x.enc").is_err(), "cut at {i}");
        }
        // Oversized files are not read whole.
        std::fs::write(dir.path().join("x.enc"), vec![0u8; (MAX_CACHE_FILE + 1) as usize]).unwrap();
        assert!(cache.read("x.enc").unwrap_err().to_string().contains("larger than 1 MiB"));
        let mode = std::fs::metadata(dir.path().join("y.enc")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn challenges_are_shared_through_the_cache_for_their_name_only_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let cache = |key| Arc::new(Cache::open(dir.path(), &[key; 32]).unwrap());
        let (here, replica, stranger) =
            (Challenges::new(cache(1)), Challenges::new(cache(1)), Challenges::new(cache(2)));
        let identifier = Identifier::Ip("127.0.0.1".parse().unwrap());
        let certificate = challenge_certificate(&identifier, &[1; 32]).unwrap();
        let name = certificate.name.clone();
        assert_eq!(name, "1.0.0.127.in-addr.arpa");
        {
            let mut published = Published { challenges: &here, names: Vec::new() };
            published.names.push(name.clone());
            published.challenges.publish(&certificate).unwrap();
            assert!(here.mine.lock().unwrap().contains_key(&name));
            // Another replica on the same cache answers it; one on another key does not.
            assert!(replica.shared(&name).is_some());
            assert!(stranger.shared(&name).is_none());
            assert!(replica.shared("2.0.0.127.in-addr.arpa").is_none());
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(files, 1, "one encrypted challenge file");
        }
        assert!(here.mine.lock().unwrap().is_empty());
        assert!(replica.shared(&name).is_none(), "withdrawn from the cache too");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn renewal_starts_two_thirds_in_and_backoff_doubles_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (acme, issued) = Acme::open(config(dir.path()), &[1; 32]).unwrap();
        assert!(issued.is_none());
        for failures in 1..10 {
            let d = acme.backoff(failures);
            let full = Duration::from_secs(1 << (failures - 1).min(3));
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
        let start = OffsetDateTime::now_utc();
        let issued = Issued {
            chain: vec![],
            key: PrivateKeyDer::try_from(vec![0u8])
                .unwrap_or_else(|_| PrivateKeyDer::Pkcs8(vec![0u8].into())),
            facts: Facts {
                serial: "01".into(),
                not_before: start,
                not_after: start + time::Duration::days(90),
            },
            directory: String::new(),
            domains: vec![],
        };
        for _ in 0..50 {
            let at = issued.renew_at() - start;
            assert!(at >= time::Duration::days(60) && at <= time::Duration::days(63), "{at}");
        }
    }
}
