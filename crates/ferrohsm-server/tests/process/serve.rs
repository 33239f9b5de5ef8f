//! `ferrohsm-server serve` as production runs it (issue 18): settings from a TOML file,
//! overridden by the environment, overridden by flags; client certificates required; a JWT
//! keyset file and a policy file; `healthcheck` as a container engine runs it (no CA, loopback)
//! and as a verifying probe; SIGTERM.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::pki::Pki;
use super::{BIN, free_port};

const KEYSET_SECRET: &[u8] = b"a keyset secret of at least thirty-two bytes";

const POLICY: &str = r#"
version = 1

[[tag_policy]]
name = "production"
match = { env = "prod" }
roles = ["admin", "operator"]

[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 2
approver_roles = ["admin"]
expires_after = "1h"
"#;

/// The files a production deployment mounts, in one temporary directory.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    server_ca: String,
    client: (String, String),
    rogue: (String, String),
}

impl Deployment {
    /// Writes the PKI, master key, keyset, policy and a TOML file that listens on
    /// `file_port` with the audience `file-audience` and a 1000-byte body limit.
    fn write(file_port: u16) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let server_pki = Pki::new("serve test server CA");
        let client_pki = Pki::new("serve test client CA");
        let (cert, key, _) = server_pki.issue(&["localhost"]);
        let (client_cert, client_key, _) = client_pki.issue(&["svc-ci"]);
        let (rogue_cert, rogue_key, _) = Pki::new("an untrusted CA").issue(&["svc-ci"]);
        std::fs::write(d.join("server.pem"), cert).unwrap();
        std::fs::write(d.join("server-key.pem"), key).unwrap();
        std::fs::write(d.join("client-ca.pem"), &client_pki.ca_pem).unwrap();
        let master = d.join("master.key");
        std::fs::write(&master, ferrohsm_core::b64::encode(&[9u8; 32])).unwrap();
        std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            d.join("keyset.toml"),
            format!(
                "[[key]]\nkid = \"ci-hs256\"\nalgorithm = \"HS256\"\nissuer = \"https://ci.example\"\nroles = [\"operator\"]\nsecret = \"{}\"\n",
                ferrohsm_core::b64::encode(KEYSET_SECRET)
            ),
        )
        .unwrap();
        std::fs::write(d.join("policy.toml"), POLICY).unwrap();
        let path = |name: &str| d.join(name).to_str().unwrap().to_owned();
        let config = d.join("ferrohsm.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{file_port}"
key_store = "sqlite"
data_dir = "{data}"
master_key_file = "{master}"
policy_file = "{policy}"
keyset_file = "{keyset}"
tls_cert = "{cert}"
tls_key = "{key}"
client_ca = "{client_ca}"
client_auth = "required"
audience = "file-audience"
issuer = "file-issuer"
max_body_bytes = 1000
scheduler_interval = "1h"
"#,
                data = path("data"),
                master = path("master.key"),
                policy = path("policy.toml"),
                keyset = path("keyset.toml"),
                cert = path("server.pem"),
                key = path("server-key.pem"),
                client_ca = path("client-ca.pem"),
            ),
        )
        .unwrap();
        Deployment {
            dir,
            config,
            server_ca: server_pki.ca_pem,
            client: (client_cert, client_key),
            rogue: (rogue_cert, rogue_key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client that trusts the server's CA and presents `identity`.
    fn client(&self, identity: Option<&(String, String)>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.server_ca.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder().tls_certs_only([ca]).https_only(true);
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A token minted offline by `ferrohsm-server token` with the deployment's master key.
    fn token(&self, issuer: &str, audience: &str) -> String {
        let out = Command::new(BIN)
            .args(["token", "--sub", "olga", "--role", "admin", "--role", "operator"])
            .args(["--issuer", issuer, "--audience", audience, "--master-key-file"])
            .arg(self.path("master.key"))
            .env_remove("FERROHSM_ISSUER")
            .env_remove("FERROHSM_AUDIENCE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `ferrohsm-server healthcheck` against `url`, with `args`.
    fn healthcheck(&self, url: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["healthcheck", "--url", url, "--timeout", "3s"])
            .args(args)
            .env_remove("FERROHSM_LISTEN")
            .output()
            .unwrap()
    }
}

/// The server process, killed by its own PID if the test fails before `terminate`.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token signed with the keyset file's HS256 key (or another secret).
fn keyset_token(secret: &[u8], audience: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ci-hs256".into());
    let claims = json!({"sub": "svc-ci", "roles": ["operator"], "iss": "https://ci.example",
        "aud": audience, "exp": now() + 300, "iat": now()});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn status(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Value,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = client.request(method, url).bearer_auth(token).json(&body).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_a_toml_file_overridden_by_env_then_flags_with_mtls_keyset_and_policy() {
    let (file_port, env_port) = (free_port(), free_port());
    let deployment = Deployment::write(file_port);
    let mut command = Command::new(BIN);
    // Only what the test sets: nothing of the caller's FERROHSM_* environment.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FERROHSM_")) {
        command.env_remove(name);
    }
    let child = command
        .arg("serve")
        .arg("--config")
        .arg(&deployment.config)
        .args(["--audience", "flag-audience"])
        .env("FERROHSM_LISTEN", format!("127.0.0.1:{env_port}"))
        .env("FERROHSM_AUDIENCE", "env-audience")
        .env("FERROHSM_MAX_BODY_BYTES", "4096")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut serving = Serving(child);

    // `healthcheck` with the client certificate, verifying the server against its CA, is how
    // a probe sees it come up: on the environment's port, not the file's.
    let url = format!("https://localhost:{env_port}");
    let health = format!("{url}/healthz");
    std::fs::write(deployment.path("client.pem"), &deployment.client.0).unwrap();
    std::fs::write(deployment.path("client-key.pem"), &deployment.client.1).unwrap();
    let (ca, cert, key) = (
        deployment.path("server-ca.pem"),
        deployment.path("client.pem"),
        deployment.path("client-key.pem"),
    );
    std::fs::write(&ca, &deployment.server_ca).unwrap();
    let with_identity = [
        "--ca-cert",
        ca.to_str().unwrap(),
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let started = Instant::now();
    loop {
        let out = deployment.healthcheck(&health, &with_identity);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("healthy"));
            break;
        }
        assert!(serving.0.try_wait().unwrap().is_none(), "serve exited");
        assert!(started.elapsed() < Duration::from_secs(60), "{out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "FERROHSM_LISTEN overrides the file's listen"
    );
    assert!(deployment.path("data/ferrohsm.db").is_file(), "the file's key_store = sqlite");

    // Client certificates are required: none, or one from another CA, gets no answer, from a
    // client or from healthcheck.
    for identity in [None, Some(&deployment.rogue)] {
        let r = deployment.client(identity).get(&health).send().await;
        assert!(r.is_err(), "a connection without a trusted client certificate was served");
    }
    let out = deployment.healthcheck(&health, &with_identity[..2]);
    assert!(!out.status.success(), "healthcheck without a client certificate passed");
    // As the image's HEALTHCHECK runs it: no CA (loopback only), the client certificate.
    let out = deployment.healthcheck(&health, &with_identity[2..]);
    assert!(out.status.success(), "{out:?}");
    // Verifying against another CA fails; a non-loopback host needs a CA.
    let other_ca = deployment.path("other-ca.pem");
    std::fs::write(&other_ca, Pki::new("another CA").ca_pem).unwrap();
    let mut args = with_identity;
    args[1] = other_ca.to_str().unwrap();
    assert!(!deployment.healthcheck(&health, &args).status.success());
    let remote = deployment.healthcheck("https://192.0.2.1:8443/healthz", &with_identity[2..]);
    assert!(String::from_utf8_lossy(&remote.stderr).contains("not a loopback address"));
    let client = deployment.client(Some(&deployment.client));

    // The audience: the flag beats the environment, which beats the file. The issuer of the
    // server's own tokens comes from the file.
    let keys = format!("{url}/v1/keys");
    let admin = deployment.token("file-issuer", "flag-audience");
    assert_eq!(status(&client, "GET", &keys, &admin, Value::Null).await, 200);
    for (issuer, audience) in [
        ("file-issuer", "env-audience"),
        ("file-issuer", "file-audience"),
        ("ferrohsm", "flag-audience"),
    ] {
        let token = deployment.token(issuer, audience);
        assert_eq!(
            status(&client, "GET", &keys, &token, Value::Null).await,
            401,
            "{issuer} {audience}"
        );
    }

    // The keyset file's external signer is trusted, with its roles; another secret is not.
    let ci = keyset_token(KEYSET_SECRET, "flag-audience");
    assert_eq!(status(&client, "GET", &keys, &ci, Value::Null).await, 200);
    let forged = keyset_token(b"another secret of at least thirty-two bytes", "flag-audience");
    assert_eq!(status(&client, "GET", &keys, &forged, Value::Null).await, 401);

    // The body limit: the environment's 4096 bytes beat the file's 1000.
    let create = |name: &str, env: &str| json!({"name": name, "algorithm": "aes-256-gcm", "tags": {"env": env}});
    assert_eq!(status(&client, "POST", &keys, &admin, create("prod-key", "prod")).await, 201);
    assert_eq!(status(&client, "POST", &keys, &admin, create("dev-key", "dev")).await, 201);
    let encrypt = format!("{keys}/dev-key/encrypt");
    let plaintext = |n: usize| json!({"plaintext": ferrohsm_core::b64::encode(&vec![7u8; n])});
    assert_eq!(status(&client, "POST", &encrypt, &admin, plaintext(1500)).await, 200);
    assert_eq!(status(&client, "POST", &encrypt, &admin, plaintext(4000)).await, 413);

    // The policy file: destroying a production key waits for a second admin; another key's
    // destruction is scheduled at once.
    let destroy = |name: &str| format!("{keys}/{name}/destroy");
    let grace = json!({"grace_seconds": 3600});
    assert_eq!(status(&client, "POST", &destroy("prod-key"), &admin, grace.clone()).await, 202);
    assert_eq!(status(&client, "POST", &destroy("dev-key"), &admin, grace).await, 200);

    // SIGTERM drains and exits cleanly.
    let pid = serving.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = serving.0.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit} after SIGTERM");
}

/// `healthcheck` fails, with a reason, when nothing listens, the URL is not an https URL, or
/// the server never answers (bounded by `--timeout`).
#[test]
fn healthcheck_fails_clearly_when_the_server_is_not_there() {
    let port = free_port();
    let out = Command::new(BIN)
        .args(["healthcheck", "--timeout", "2s"])
        .env("FERROHSM_LISTEN", format!("0.0.0.0:{port}"))
        .env_remove("FERROHSM_HEALTHCHECK_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    let out = Command::new(BIN).args(["healthcheck", "--url", "http://127.0.0.1/healthz"]).output();
    let out = out.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
    // A server that accepts the connection but never answers: the timeout ends the check.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}/healthz", silent.local_addr().unwrap().port());
    let out = Command::new(BIN).args(["healthcheck", "--timeout", "1s", "--url", &url]).output();
    let out = out.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"), "{out:?}");
}
