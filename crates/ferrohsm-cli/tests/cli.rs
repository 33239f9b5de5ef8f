//! The real `ferrohsm` binary against a real server (TLS on a loopback port, filesystem store,
//! durable audit log): the operator, CI and auditor journeys of SPEC §1, dual control across
//! three actors, and the documented errors and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use ferrohsm_core::MasterKey;
use ferrohsm_server::{AppConfig, ClientAuth, Server, ServerConfig, TlsConfig, TokenSpec};

const BIN: &str = env!("CARGO_BIN_EXE_ferrohsm");
const MASTER: [u8; 32] = [9; 32];

const POLICY: &str = r#"
version = 1
[[tag_policy]]
name = "production"
match = { env = "prod" }
[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "1h"
"#;

struct Env {
    server: Option<Server>,
    dir: tempfile::TempDir,
    url: String,
    ca: PathBuf,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(None).await
    }

    /// With `client_ca`, the server demands client certificates issued by it.
    async fn start_with(client_ca: Option<PathBuf>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let certs = ferrohsm_server::dev_certificates(&dir.path().join("tls")).unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY).unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            backend: ferrohsm_core::BackendConfig::filesystem(dir.path().join("data")),
            retention: ferrohsm_core::Retention::default(),
            policy_file: Some(policy),
            keyset_file: None,
            audience: "ferrohsm".into(),
            app: AppConfig::default(),
            tls: TlsConfig {
                client_auth: if client_ca.is_some() {
                    ClientAuth::Required
                } else {
                    ClientAuth::None
                },
                client_ca,
                ..TlsConfig::files(certs.cert, certs.key)
            },
            reload_interval: Duration::from_secs(1),
            scheduler_interval: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(5),
            max_token_lifetime: Duration::from_secs(86_400),
            refusal_interval: Duration::from_secs(60),
            vault: None,
            default_custody: None,
            limits: Default::default(),
        };
        let server = Server::start(config, MasterKey::from_bytes(&MASTER).unwrap()).await.unwrap();
        let url = format!("https://localhost:{}", server.local_addr().port());
        Env { server: Some(server), dir, url, ca: certs.ca }
    }

    fn token(&self, sub: &str, role: &str) -> String {
        let key = self.server.as_ref().unwrap().state().hsm().token_key();
        let spec = TokenSpec {
            sub: sub.into(),
            roles: vec![role.into()],
            ttl: Duration::from_secs(600),
            issuer: "ferrohsm".into(),
            audience: "ferrohsm".into(),
            cert_sha256: None,
            minted_by: Vec::new(),
            max_ttl: Duration::from_secs(86_400),
        };
        let unsigned = ferrohsm_server::unsigned_token(key, &spec).unwrap();
        ferrohsm_server::finish_token(
            &unsigned,
            &key.sign(unsigned.signing_input.as_bytes()).unwrap(),
        )
    }

    fn expired_token(&self) -> String {
        let key = self.server.as_ref().unwrap().state().hsm().token_key();
        let b = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = b(serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()}));
        let claims = b(
            serde_json::json!({"sub": "old", "roles": ["admin"], "iss": "ferrohsm", "aud": "ferrohsm", "exp": 1_000_000_000u64}),
        );
        let input = format!("{header}.{claims}");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key.sign(input.as_bytes()).unwrap());
        format!("{input}.{sig}")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `ferrohsm` with this environment's config file and no inherited FERROHSM_* settings.
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("FERROHSM_CONFIG", self.path("config.toml"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("FERROHSM_") && k != "FERROHSM_TEST_MASTER_KEY" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs as another actor (a token flag overrides the profile).
    fn run_as(&self, token: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all = vec!["--token", token];
        all.extend_from_slice(args);
        self.run(&all, stdin)
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failure: its exit code and its one stderr line.
fn fails(out: &Output) -> (i32, String) {
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    (out.status.code().unwrap(), stderr.trim().to_owned())
}

fn login(env: &Env, token: &str) {
    let ca = env.ca.to_str().unwrap();
    let out = env.run(
        &["login", "--server", &env.url, "--ca-cert", ca, "--token", "-"],
        Some(token.as_bytes()),
    );
    assert!(ok(&out).contains("logged in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_1_operator_keys_and_round_trips() {
    let env = Env::start().await;
    login(&env, &env.token("olga", "operator"));
    let mode = std::fs::metadata(env.path("config.toml")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the profile holds a token");

    ok(&env.run(
        &[
            "keys",
            "create",
            "--name",
            "orders",
            "--algorithm",
            "aes-256-gcm",
            "--tag",
            "team=payments",
        ],
        None,
    ));
    let table = ok(&env.run(&["keys", "list", "--tag", "team=payments"], None));
    assert!(
        table.contains("orders") && table.contains("team=payments") && table.contains("active"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["keys", "list", "-o", "json"], None))).unwrap();
    assert_eq!(json["keys"][0]["name"], "orders");
    assert_eq!(json["keys"][0]["tags"]["team"], "payments");

    // Encrypt a binary file from stdin and decrypt it back byte for byte.
    let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let ciphertext = ok(&env.run(&["encrypt", "orders", "--aad", "invoice-7"], Some(&data)));
    assert!(ciphertext.starts_with("fhsm:v1:"));
    std::fs::write(env.path("ct.txt"), &ciphertext).unwrap();
    let out = env.run(
        &["decrypt", "orders", "--in", env.path("ct.txt").to_str().unwrap(), "--aad", "invoice-7"],
        None,
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, data);

    // Rotate: the old ciphertext still decrypts; roll back to version 1.
    let rotated: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["keys", "rotate", "orders", "-o", "json"], None)))
            .unwrap();
    assert_eq!(rotated["current_version"], 2);
    assert!(ok(&env.run(&["encrypt", "orders", "--data", "x"], None)).starts_with("fhsm:v2:"));
    let out = env.run(
        &[
            "decrypt",
            "orders",
            "--ciphertext",
            ciphertext.trim(),
            "--aad",
            "invoice-7",
            "--out",
            env.path("pt.bin").to_str().unwrap(),
        ],
        None,
    );
    ok(&out);
    assert_eq!(std::fs::read(env.path("pt.bin")).unwrap(), data);
    let back: serde_json::Value = serde_json::from_str(&ok(
        &env.run(&["keys", "rollback", "orders", "--version", "1", "-o", "json"], None)
    ))
    .unwrap();
    assert_eq!(back["current_version"], 1);
    assert!(ok(&env.run(&["keys", "show", "orders"], None)).contains("current version"));

    // Wrap and unwrap are binary-safe too.
    let material = [0u8, 1, 2, 255, 254, 0, 10, 13, 7, 7, 7, 7, 7, 7, 7, 7];
    let wrapped = ok(&env.run(&["wrap", "orders"], Some(&material)));
    let out = env.run(&["unwrap", "orders", "--wrapped", wrapped.trim()], None);
    ok(&out);
    assert_eq!(out.stdout, material);

    // Issue 11: secrets written to files are 0600, and an existing file's mode is never
    // widened (here it stays 0640 and is overwritten).
    let mode = |p: &str| std::fs::metadata(env.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("pt.bin"), 0o600, "decrypt --out");
    let key_out = env.path("key.bin");
    let args =
        ["unwrap", "orders", "--wrapped", wrapped.trim(), "--out", key_out.to_str().unwrap()];
    ok(&env.run(&args, None));
    assert_eq!((std::fs::read(&key_out).unwrap(), mode("key.bin")), (material.to_vec(), 0o600));
    std::fs::write(&key_out, b"old contents, longer than the key material").unwrap();
    std::fs::set_permissions(&key_out, std::fs::Permissions::from_mode(0o640)).unwrap();
    ok(&env.run(&args, None));
    assert_eq!((std::fs::read(&key_out).unwrap(), mode("key.bin")), (material.to_vec(), 0o640));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_2_sign_an_artefact_and_verify_with_openssl() {
    let env = Env::start().await;
    login(&env, &env.token("ci", "operator"));
    ok(&env.run(&["keys", "create", "--name", "release", "--algorithm", "ec-p256"], None));
    let artefact = env.path("app.tar.gz");
    std::fs::write(&artefact, b"pretend this is a build artefact\n".repeat(100)).unwrap();
    let (a, sig, pem) = (artefact.to_str().unwrap(), env.path("app.sig"), env.path("release.pem"));
    ok(&env.run(
        &[
            "--request-id",
            "ci-run-77",
            "sign",
            "release",
            "--in",
            a,
            "--out",
            sig.to_str().unwrap(),
        ],
        None,
    ));
    ok(&env.run(&["keys", "public", "release", "--out", pem.to_str().unwrap()], None));
    let openssl = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            pem.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            a,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&openssl.stdout).contains("Verified OK"), "{openssl:?}");

    // The CLI agrees, and refuses a tampered artefact with exit 1.
    assert!(
        ok(&env.run(&["verify", "release", "--in", a, "--signature", sig.to_str().unwrap()], None))
            .starts_with("valid")
    );
    let out = env.run(
        &["verify", "release", "--data", "tampered", "--signature", sig.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    // The correlation id reached the audit record.
    let auditor = env.token("audrey", "auditor");
    let records = ok(&env.run_as(
        &auditor,
        &["audit", "list", "--for-request", "ci-run-77", "-o", "json"],
        None,
    ));
    let records: serde_json::Value = serde_json::from_str(&records).unwrap();
    assert_eq!(records["records"][0]["action"], "sign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_3_export_and_verify_the_audit_log_offline() {
    let mut env = Env::start().await;
    login(&env, &env.token("ada", "admin"));
    ok(&env.run(&["keys", "create", "--name", "k", "--algorithm", "aes-256-gcm"], None));
    for _ in 0..3 {
        ok(&env.run(&["encrypt", "k", "--data", "x"], None));
    }
    let public = env.path("audit-public.pem");
    ok(&env.run(
        &["audit", "checkpoint", "--now", "--public-key-out", public.to_str().unwrap()],
        None,
    ));
    let export = env.path("audit.ndjson");
    ok(&env.run(&["audit", "export", "--out", export.to_str().unwrap()], None));
    // The auditor's HMAC key, as `ferrohsm-server audit-keys` writes it.
    let provider = ferrohsm_core::default_provider();
    let hmac = ferrohsm_core::danger_derive_audit_hmac_key(
        provider.as_ref(),
        &MasterKey::from_bytes(&MASTER).unwrap(),
    )
    .unwrap();
    let key = env.path("audit-hmac.key");
    std::fs::write(&key, ferrohsm_core::b64::encode(hmac.expose())).unwrap();
    env.server.take().unwrap().shutdown().await;

    // Offline: no server is running now.
    let args = |file: &Path| -> Vec<String> {
        vec![
            "audit".into(),
            "verify".into(),
            file.display().to_string(),
            "--audit-key".into(),
            key.display().to_string(),
            "--public-key".into(),
            public.display().to_string(),
        ]
    };
    let argv = args(&export);
    let out = env.run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert!(ok(&out).starts_with("OK: "), "{}", String::from_utf8_lossy(&out.stdout));

    // Edit one byte of one record: verification fails and names that record.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let target = lines.iter().position(|l| l.contains(r#""action":"encrypt""#)).unwrap();
    let seq: serde_json::Value = serde_json::from_str(&lines[target]).unwrap();
    lines[target] = lines[target].replacen(r#""actor":"ada""#, r#""actor":"adb""#, 1);
    let edited = env.path("edited.ndjson");
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();
    let argv = args(&edited);
    let (code, line) = fails(&env.run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), None));
    assert_eq!(code, 1);
    assert!(line.contains(&format!("(record {})", seq["seq"])), "{line}");
    assert!(line.contains("FAILED"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_control_across_three_actors() {
    let env = Env::start().await;
    let (olga, ada, bob) =
        (env.token("olga", "operator"), env.token("ada", "admin"), env.token("bob", "operator"));
    login(&env, &olga);
    ok(&env.run(
        &["keys", "create", "--name", "prod-db", "--algorithm", "aes-256-gcm", "--tag", "env=prod"],
        None,
    ));
    let (code, line) =
        fails(&env.run(&["keys", "destroy", "prod-db", "--grace-seconds", "3600"], None));
    assert_eq!(code, 5);
    assert!(line.contains("approval required"), "{line}");
    let id = line.split("approval ").nth(2).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(line.contains(&format!("ferrohsm approvals approve {id}")), "{line}");

    let (code, _) = fails(&env.run(&["approvals", "approve", &id], None));
    assert_eq!(code, 3, "the requester cannot approve");
    ok(&env.run_as(&ada, &["approvals", "approve", &id, "--comment", "checked"], None));
    let shown = ok(&env.run_as(&bob, &["approvals", "approve", &id, "-o", "json"], None));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap()["state"], "approved");
    assert!(ok(&env.run(&["approvals", "list"], None)).contains("approved"));
    // Issue 10: `approvals show` prints exactly what will run, parameter by parameter.
    let table = ok(&env.run_as(&ada, &["approvals", "show", &id], None));
    for needle in
        ["grace_seconds", "3600 (1 hour; requested)", "key_name", "prod-db", "schedule_destruction"]
    {
        assert!(table.contains(needle), "{needle} missing from: {table}");
    }
    assert!(line.contains("grace_seconds=3600"), "the 202 line names the parameters: {line}");

    let done = ok(&env.run(
        &[
            "--approval-id",
            &id,
            "keys",
            "destroy",
            "prod-db",
            "--grace-seconds",
            "3600",
            "-o",
            "json",
        ],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&done).unwrap()["state"],
        "pending_destruction"
    );
    let (code, _) = fails(&env.run(
        &["--approval-id", &id, "keys", "destroy", "prod-db", "--grace-seconds", "3600"],
        None,
    ));
    assert_eq!(code, 5, "an approval runs once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_line_and_the_documented_exit_code() {
    let env = Env::start().await;
    login(&env, &env.token("olga", "operator"));
    ok(&env.run(&["keys", "create", "--name", "aes", "--algorithm", "aes-256-gcm"], None));
    ok(&env.run(&["keys", "create", "--name", "ec", "--algorithm", "ec-p256"], None));

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["encrypt".into(), "aes".into(), "--in".into(), "missing.txt".into()],
            1,
            "reading missing.txt",
        ),
        (
            vec![
                "verify".into(),
                "ec".into(),
                "--data".into(),
                "x".into(),
                "--signature-b64".into(),
                "!!".into(),
            ],
            1,
            "not valid base64",
        ),
        (vec!["encrypt".into(), "ec".into(), "--data".into(), "x".into()], 1, "unsupported"),
        (
            vec!["decrypt".into(), "aes".into(), "--ciphertext".into(), "fhsm:v1:AAAA".into()],
            1,
            "invalid_ciphertext",
        ),
        (vec!["keys".into(), "show".into(), "missing".into()], 4, "not_found"),
        (
            vec![
                "keys".into(),
                "create".into(),
                "--name".into(),
                "aes".into(),
                "--algorithm".into(),
                "aes-256-gcm".into(),
            ],
            5,
            "conflict",
        ),
        (
            vec!["--token".into(), env.expired_token(), "keys".into(), "list".into()],
            3,
            "authentication failed",
        ),
        (
            vec!["--server".into(), "https://127.0.0.1:1".into(), "keys".into(), "list".into()],
            6,
            "cannot reach",
        ),
        (
            vec![
                "keys".into(),
                "create".into(),
                "--algorithm".into(),
                "aes-256-gcm".into(),
                "--tag".into(),
                "novalue".into(),
            ],
            1,
            "want key=value",
        ),
    ];
    for (args, code, needle) in cases {
        let out = env.run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let (got, line) = fails(&out);
        assert_eq!(got, code, "{args:?}: {line}");
        assert!(line.starts_with("error: ") && line.contains(needle), "{args:?}: {line}");
        if code != 1 && code != 6 || needle == "unsupported" {
            assert!(line.contains("(request "), "server errors name the request: {line}");
        }
    }
    // Usage errors exit 2; help has examples; completions are generated.
    assert_eq!(env.run(&["keys", "frobnicate"], None).status.code(), Some(2));
    assert!(ok(&env.run(&["--help"], None)).contains("Examples:"));
    assert!(ok(&env.run(&["completions", "bash"], None)).contains("ferrohsm"));
    assert!(ok(&env.run(&["completions", "zsh"], None)).contains("ferrohsm"));
    assert!(ok(&env.run(&["completions", "fish"], None)).contains("ferrohsm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_flags_environment_and_profile() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let pki = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(pki.path().join("clients-ca.pem"), ca.self_signed(&ca_key).unwrap().pem())
        .unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["ops-laptop".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (cert, key) = (pki.path().join("client.pem"), pki.path().join("client-key.pem"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    let env = Env::start_with(Some(pki.path().join("clients-ca.pem"))).await;
    let token = env.token("olga", "operator");
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // Without a certificate the TLS handshake fails: the server is unreachable for this client.
    let (code, line) = fails(&env.run(
        &[
            "--server",
            &env.url,
            "--ca-cert",
            env.ca.to_str().unwrap(),
            "--token",
            &token,
            "keys",
            "list",
        ],
        None,
    ));
    assert_eq!(code, 6, "{line}");
    // With the certificate, from flags…
    ok(&env.run(
        &[
            "--server",
            &env.url,
            "--ca-cert",
            env.ca.to_str().unwrap(),
            "--token",
            &token,
            "--client-cert",
            c,
            "--client-key",
            k,
            "keys",
            "list",
        ],
        None,
    ));
    // …and from a profile written by login.
    let out = env.run(
        &[
            "--profile",
            "mtls",
            "login",
            "--server",
            &env.url,
            "--ca-cert",
            env.ca.to_str().unwrap(),
            "--token",
            &token,
            "--client-cert",
            c,
            "--client-key",
            k,
        ],
        None,
    );
    ok(&out);
    ok(&env.run(&["--profile", "mtls", "health"], None));
    let (code, line) =
        fails(&env.run(&["--profile", "mtls", "--client-key", "/nonexistent.pem", "health"], None));
    assert_eq!(code, 1, "{line}");
}
