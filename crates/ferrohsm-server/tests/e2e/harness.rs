//! A real server on a loopback port with real TLS, a filesystem store and file audit log, and
//! the PKI, keysets and tokens the tests need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ferrohsm_core::MasterKey;
use ferrohsm_server::{
    AcmeConfig, AppConfig, CertificateSource, ClientAuth, ConnectionLimits, Server, ServerConfig,
    TlsConfig, TokenSpec,
};
use rcgen::KeyPair;
use serde_json::{Value, json};

pub const AUDIENCE: &str = "ferrohsm-test";
pub const ISSUER: &str = "ferrohsm-test-server";

#[path = "../support/pki.rs"]
mod pki;
pub use pki::Pki;

/// External token signers configured in the keyset file.
pub struct Signers {
    pub hs256: Vec<u8>,
    pub es256: KeyPair,
    pub ed25519: KeyPair,
    pub rs256: KeyPair,
    pub es384: KeyPair,
}

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub ca_pem: String,
    pub client_pki: Pki,
    pub signers: Signers,
    pub keyset_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

pub struct Options {
    pub client_auth: ClientAuth,
    pub policy: Option<String>,
    pub refusal_interval: Duration,
    pub limits: ConnectionLimits,
    /// Audit records written into the data directory before the server starts.
    pub audit_records: usize,
    /// A PKCS#11 token for key material.
    pub vault: Option<ferrohsm_core::VaultConfig>,
    /// Staple the OCSP response in `DIR/ocsp.der` (absent at start).
    pub ocsp: bool,
    /// Serve a certificate from this ACME CA instead of the test CA's.
    pub acme: Option<AcmeConfig>,
    /// The address to listen on [default: 127.0.0.1:0].
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_auth: ClientAuth::Optional,
            policy: None,
            refusal_interval: Duration::from_secs(60),
            limits: ConnectionLimits::default(),
            audit_records: 0,
            vault: None,
            ocsp: false,
            acme: None,
            listen: None,
        }
    }
}

/// The backend kind the suite runs on: the filesystem, or the one `FERROHSM_TEST_KEY_STORE`
/// names (`cargo xtask test` runs the suite once more on `sqlite` and on `postgres`).
pub fn backend_kind() -> ferrohsm_core::BackendKind {
    std::env::var("FERROHSM_TEST_KEY_STORE")
        .ok()
        .map(|k| k.parse::<ferrohsm_core::BackendKind>().expect("FERROHSM_TEST_KEY_STORE"))
        .unwrap_or(ferrohsm_core::BackendKind::Filesystem)
}

/// The backend of data directory `data`. On postgres, each data directory gets its own
/// database on a server this test process starts (the same database every time it is asked
/// for the same directory, so a restart finds its data).
pub fn backend(data: &Path) -> ferrohsm_core::BackendConfig {
    let kind = backend_kind();
    if kind != ferrohsm_core::BackendKind::Postgres {
        return ferrohsm_core::BackendConfig::new(kind, data);
    }
    static DATABASES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let url = match databases.iter().find(|(dir, _)| dir == data) {
        Some((_, url)) => url.clone(),
        None => {
            let url = ferrohsm_postgres::conformance::PostgresHarness::new().url().to_owned();
            databases.push((data.to_owned(), url.clone()));
            url
        }
    };
    ferrohsm_core::BackendConfig::postgres(url)
}

/// Fills `data`'s audit log with `n` records (each a key listing by a local caller), through
/// the core on the same master key the server uses.
async fn fill_audit_log(data: &Path, n: usize) {
    let hsm = ferrohsm_core::Hsm::builder()
        .backend(backend(data))
        .master_key(MasterKey::from_bytes(&[42u8; 32]).unwrap())
        .build()
        .await
        .unwrap();
    let lanes = 64;
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let hsm = hsm.clone();
            tokio::spawn(async move {
                let ctx = ferrohsm_core::RequestContext::local("filler");
                let query = ferrohsm_core::ListQuery { limit: 1, ..Default::default() };
                for _ in (lane..n).step_by(lanes) {
                    hsm.list_keys(&ctx, &query).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    hsm.shutdown().await.unwrap();
}

pub fn keyset_toml(signers: &Signers, dir: &Path) -> String {
    std::fs::write(dir.join("es256.pem"), signers.es256.public_key_pem()).unwrap();
    format!(
        r#"
[[key]]
kid = "ci-hs256"
algorithm = "HS256"
issuer = "https://ci.example"
roles = ["admin", "operator", "auditor", "service"]
secret = "{}"

[[key]]
kid = "ci-es256"
algorithm = "ES256"
issuer = "https://ci.example"
roles = ["admin", "operator", "auditor", "service"]
public_key_file = "es256.pem"

[[key]]
kid = "ci-rs256"
algorithm = "RS256"
issuer = "https://ci.example"
roles = ["admin", "operator", "auditor", "service"]
public_key = """{}"""

[[key]]
kid = "ci-es384"
algorithm = "ES384"
issuer = "https://ci.example"
roles = ["admin", "operator", "auditor", "service"]
public_key = """{}"""

[[key]]
kid = "ops-eddsa"
algorithm = "EdDSA"
issuer = "https://ops.example"
roles = ["admin", "operator"]
public_key = """{}"""
"#,
        ferrohsm_core::b64::encode(&signers.hs256),
        signers.rs256.public_key_pem(),
        signers.es384.public_key_pem(),
        signers.ed25519.public_key_pem()
    )
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        TestServer::try_start_with(options).await.unwrap()
    }

    /// Starts the server, or says why it did not start.
    pub async fn try_start_with(options: Options) -> Result<TestServer, ferrohsm_server::Error> {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = Pki::new("test server CA");
        let client_pki = Pki::new("test client CA");
        let (cert, key, _) = server_pki.issue(&["localhost", "127.0.0.1"]);
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server-key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let client_ca = dir.path().join("client-ca.pem");
        std::fs::write(&client_ca, &client_pki.ca_pem).unwrap();
        let signers = Signers {
            hs256: (0u8..48).collect(),
            es256: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            ed25519: KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            rs256: KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap(),
            es384: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        };
        let keyset_path = dir.path().join("keyset.toml");
        std::fs::write(&keyset_path, keyset_toml(&signers, dir.path())).unwrap();
        let policy_file = options.policy.map(|text| {
            let path = dir.path().join("policy.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        if options.audit_records > 0 {
            fill_audit_log(&dir.path().join("data"), options.audit_records).await;
        }
        let config = ServerConfig {
            listen: options.listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
            backend: backend(&dir.path().join("data")),
            retention: ferrohsm_core::Retention::default(),
            policy_file,
            keyset_file: Some(keyset_path.clone()),
            audience: AUDIENCE.into(),
            app: AppConfig { issuer: ISSUER.into(), max_body: 64 * 1024, ..AppConfig::default() },
            tls: TlsConfig {
                certificate: match options.acme {
                    Some(acme) => CertificateSource::Acme(acme),
                    None => CertificateSource::Files {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                        ocsp_response: options.ocsp.then(|| dir.path().join("ocsp.der")),
                    },
                },
                client_ca: Some(client_ca),
                client_auth: options.client_auth,
                allow_tls12: false,
            },
            reload_interval: Duration::from_millis(100),
            scheduler_interval: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(5),
            max_token_lifetime: Duration::from_secs(86_400),
            refusal_interval: options.refusal_interval,
            vault: options.vault,
            default_custody: None,
            limits: options.limits,
        };
        let server = Server::start(config, MasterKey::from_bytes(&[42u8; 32]).unwrap()).await?;
        let url = format!("https://localhost:{}", server.local_addr().port());
        Ok(TestServer {
            server: Some(server),
            url,
            ca_pem: server_pki.ca_pem.clone(),
            dir,
            client_pki,
            signers,
            keyset_path,
            cert_path,
            key_path,
        })
    }

    pub fn hsm(&self) -> &ferrohsm_core::Hsm {
        self.server.as_ref().unwrap().state().hsm()
    }

    /// A token from the server's own token key.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.token_spec(TokenSpec {
            sub: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ttl: Duration::from_secs(600),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            cert_sha256: None,
            minted_by: Vec::new(),
            max_ttl: Duration::from_secs(86_400),
        })
    }

    pub fn token_spec(&self, spec: TokenSpec) -> String {
        let key = self.hsm().token_key();
        let unsigned = ferrohsm_server::unsigned_token(key, &spec).unwrap();
        let signature = key.sign(unsigned.signing_input.as_bytes()).unwrap();
        ferrohsm_server::finish_token(&unsigned, &signature)
    }

    /// A client that trusts the server's CA, optionally presenting a client certificate.
    pub fn client_with(&self, identity: Option<(&str, &str)>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder().tls_certs_only([ca]).https_only(true);
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    pub fn client(&self) -> reqwest::Client {
        self.client_with(None)
    }

    pub fn api(&self, token: &str) -> Api {
        Api { client: self.client(), url: self.url.clone(), token: token.to_owned() }
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A small JSON client for one caller.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
    pub token: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req =
            self.client.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }

    /// Creates a key and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let r = self.post("/v1/keys", body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

pub fn aes(name: &str) -> Value {
    json!({"algorithm": "aes-256-gcm", "name": name})
}
