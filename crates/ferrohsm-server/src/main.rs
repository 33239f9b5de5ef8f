//! `ferrohsm-server`: `serve` from a configuration, `dev` for a local instance, `token` to mint
//! bootstrap tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use ferrohsm_core::{BackendConfig, BackendKind, MasterKey, TokenKey};
use ferrohsm_server::{
    AcmeConfig, AppConfig, CertificateSource, ClientAuth, ConnectionLimits, Server, ServerConfig,
    ShutdownSignal, TlsConfig, TokenSpec,
};
use serde::Deserialize;

mod healthcheck;

/// mimalloc instead of glibc's malloc: under load, glibc's allocator took a fifth of the
/// server's CPU per request (docs/performance.md). Freed memory is still zeroized first where
/// it held secrets (`zeroize`), whatever the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ferrohsm-server", version, about = "FerroHSM: a software HSM with a REST API")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FERROHSM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Export trace spans over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://localhost:4318 (the path /v1/traces is added when none is given).
    #[arg(long, global = true, env = "FERROHSM_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API with a configuration file, environment and flags (flags win).
    Serve(Box<ServeArgs>),
    /// Start a local instance on 127.0.0.1 with a filesystem store in ./ferrohsm-data,
    /// creating a master key and a development certificate on first run, and print the URL,
    /// the CA file and an admin token.
    Dev(DevArgs),
    /// Mint a token signed by the server's token key (derived from the master key).
    ///
    /// Example: ferrohsm-server token --data-dir ./ferrohsm-data --sub alice --role operator --ttl 8h
    Token(TokenArgs),
    /// Write the keys an auditor needs to verify exported audit logs offline: the HMAC key
    /// (`audit-hmac.key`, 0600, base64; it can forge HMACs, so hand it to auditors only) and the
    /// checkpoint public key (`audit-public.pem`).
    AuditKeys(AuditKeysArgs),
    /// Check a data directory offline (stop the server first): every key record and version,
    /// every approval and every audit segment. Prints each damaged one; exits 1 if any.
    ///
    /// Example: ferrohsm-server check --data-dir ./ferrohsm-data
    Check(CheckArgs),
    /// Copy everything (keys with their sealed bytes unchanged, approvals, token revocations
    /// and the audit log) from one backend into an empty other, checking every integrity tag
    /// and the audit chain on the way and comparing the copy after (stop the server first).
    ///
    /// Example: ferrohsm-server migrate --from filesystem:./ferrohsm-data --to sqlite:./ferrohsm-data/ferrohsm.db
    Migrate(MigrateArgs),
    /// One GET /healthz to a running server over TLS: exit 0 on 200, 1 otherwise (the
    /// container image's HEALTHCHECK; the image has no shell or curl).
    ///
    /// Example: ferrohsm-server healthcheck --url https://127.0.0.1:8443/healthz
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print the OpenAPI document the server serves at /openapi.json (`cargo xtask codegen`
    /// writes it to sdks/openapi.json, from which the SDKs are checked).
    Openapi,
}

#[derive(Args)]
struct MigrateArgs {
    /// The source: filesystem:DIR, sqlite:FILE, postgres:URL or postgres:$VAR (the URL in
    /// environment variable VAR, keeping a password off the command line).
    #[arg(long)]
    from: BackendSpec,
    /// The target (empty): filesystem:DIR, sqlite:FILE, postgres:URL or postgres:$VAR.
    #[arg(long)]
    to: BackendSpec,
    /// Read and check the source only; write nothing.
    #[arg(long, conflicts_with = "verify")]
    dry_run: bool,
    /// Compare an earlier migration's target with its source; write nothing.
    #[arg(long)]
    verify: bool,
    /// The master key file, if not master.key beside the source; else FERROHSM_MASTER_KEY.
    #[arg(long, env = "FERROHSM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

/// A backend named on the command line: `filesystem:DIR`, `sqlite:FILE` or `postgres:URL`.
#[derive(Clone, Debug)]
struct BackendSpec {
    config: BackendConfig,
    /// Where its master key would be (the data directory).
    dir: PathBuf,
}

impl std::str::FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, path) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected filesystem:DIR, sqlite:FILE or postgres:URL")
        })?;
        if kind == "postgres" {
            // `postgres:$VAR` reads the URL from the environment, so a password need not be
            // on the command line (where `ps` shows it).
            let url = match path.strip_prefix('$') {
                Some(var) => std::env::var(var).map_err(|_| {
                    format!("postgres:${var}: the environment variable {var} is not set")
                })?,
                None => path.to_owned(),
            };
            // No data directory: the master key comes from --master-key-file or the
            // environment.
            return Ok(BackendSpec { config: BackendConfig::postgres(url), dir: PathBuf::new() });
        }
        let path = PathBuf::from(path);
        if path.as_os_str().is_empty() {
            return Err(format!("{s:?}: the path is missing"));
        }
        match kind {
            "filesystem" => Ok(BackendSpec { config: BackendConfig::filesystem(&path), dir: path }),
            "sqlite" => {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let mut config = BackendConfig::sqlite(&dir);
                config.database = Some(path);
                Ok(BackendSpec { config, dir })
            }
            other => Err(format!("{other:?}: migrate between filesystem, sqlite and postgres")),
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    /// The data directory.
    #[arg(long, env = "FERROHSM_DATA_DIR", default_value = "./ferrohsm-data")]
    data_dir: PathBuf,
    /// The backend the directory holds: filesystem or sqlite (or postgres, with
    /// --database-url).
    #[arg(long, env = "FERROHSM_KEY_STORE", default_value = "filesystem")]
    key_store: StoreKind,
    /// The PostgreSQL database (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE) of
    /// `--key-store postgres`.
    #[arg(long, env = "FERROHSM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The master key file, if not DIR/master.key; else FERROHSM_MASTER_KEY.
    #[arg(long, env = "FERROHSM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

#[derive(Args)]
struct AuditKeysArgs {
    /// The data directory whose master key derives them (reads DIR/master.key).
    #[arg(long, env = "FERROHSM_DATA_DIR", default_value = "./ferrohsm-data")]
    data_dir: PathBuf,
    /// The master key file, if not DIR/master.key; else FERROHSM_MASTER_KEY.
    #[arg(long, env = "FERROHSM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Where to write the two files.
    #[arg(long)]
    out_dir: PathBuf,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// A TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "FERROHSM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long, env = "FERROHSM_LISTEN")]
    listen: Option<SocketAddr>,
    /// Key store (keys, approvals, revocations and audit): filesystem, sqlite or memory
    /// [default: filesystem]. `postgres` keeps them in the database of --database-url, which
    /// several replicas may share (docs/scaling.md).
    #[arg(long, env = "FERROHSM_KEY_STORE")]
    key_store: Option<StoreKind>,
    /// The PostgreSQL database of `--key-store postgres`:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…].
    #[arg(long, env = "FERROHSM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Remove audit records older than this many days, behind a signed anchor checkpoint
    /// (docs/storage.md) [default: keep everything].
    #[arg(long, env = "FERROHSM_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Remove closed approvals (executed, denied, expired) older than this many days
    /// [default: keep everything].
    #[arg(long, env = "FERROHSM_APPROVAL_RETENTION_DAYS")]
    approval_retention_days: Option<u32>,
    /// Let audit retention remove records no export has covered yet.
    #[arg(long, env = "FERROHSM_AUDIT_RETENTION_UNEXPORTED")]
    audit_retention_unexported: bool,
    /// Directory of the store and audit log (SQLite: DIR/ferrohsm.db) [default: ./ferrohsm-data].
    #[arg(long, env = "FERROHSM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The master key file (0600); else FERROHSM_MASTER_KEY holds the key as base64.
    #[arg(long, env = "FERROHSM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// A policy file (docs/policy.md), reloaded when it changes.
    #[arg(long, env = "FERROHSM_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// A JWT keyset file (docs/server.md), reloaded when it changes.
    #[arg(long, env = "FERROHSM_KEYSET_FILE")]
    keyset_file: Option<PathBuf>,
    /// The audience tokens must carry [default: ferrohsm].
    #[arg(long, env = "FERROHSM_AUDIENCE")]
    audience: Option<String>,
    /// The issuer of tokens this server signs [default: ferrohsm].
    #[arg(long, env = "FERROHSM_ISSUER")]
    issuer: Option<String>,
    /// Where the certificate comes from: manual (--tls-cert/--tls-key files) or acme (ordered
    /// and renewed from an ACME CA, docs/tls.md) [default: manual].
    #[arg(long, env = "FERROHSM_TLS_MODE")]
    tls_mode: Option<TlsMode>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "FERROHSM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "FERROHSM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA bundle for client certificates (PEM).
    #[arg(long, env = "FERROHSM_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Client certificates: none, optional or required [default: optional with --client-ca].
    #[arg(long, env = "FERROHSM_CLIENT_AUTH")]
    client_auth: Option<ClientAuth>,
    /// Also accept TLS 1.2.
    #[arg(long, env = "FERROHSM_TLS12")]
    tls12: Option<bool>,
    /// An OCSP response (DER) for the certificate, stapled while it is fresh and reloaded when
    /// it changes (docs/tls.md).
    #[arg(long, env = "FERROHSM_OCSP_RESPONSE")]
    ocsp_response: Option<PathBuf>,
    #[command(flatten)]
    acme: AcmeArgs,
    /// Largest request body in bytes [default: 2097152].
    #[arg(long, env = "FERROHSM_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Request timeout, e.g. 30s [default: 30s].
    #[arg(long, env = "FERROHSM_REQUEST_TIMEOUT")]
    request_timeout: Option<String>,
    /// How often changed certificate, keyset and policy files are picked up [default: 2s].
    #[arg(long, env = "FERROHSM_RELOAD_INTERVAL")]
    reload_interval: Option<String>,
    /// The longest lifetime of a token the server accepts or issues, e.g. 8h [default: 24h].
    #[arg(long, env = "FERROHSM_MAX_TOKEN_LIFETIME")]
    max_token_lifetime: Option<String>,
    /// How often refusals beyond each source's budget are written as one aggregated audit
    /// record per source and reason [default: 60s].
    #[arg(long, env = "FERROHSM_REFUSAL_INTERVAL")]
    refusal_interval: Option<String>,
    /// How often due destructions, due rotations and retention run; with replicas on one
    /// database, one of them runs each tick [default: 60s].
    #[arg(long, env = "FERROHSM_SCHEDULER_INTERVAL")]
    scheduler_interval: Option<String>,
    /// The longest a TLS handshake may take [default: 10s].
    #[arg(long, env = "FERROHSM_HANDSHAKE_TIMEOUT")]
    handshake_timeout: Option<String>,
    /// The longest a client may take to send a request's headers, and to start the next
    /// request on a kept-alive HTTP/1.1 connection [default: 10s].
    #[arg(long, env = "FERROHSM_HEADER_TIMEOUT")]
    header_timeout: Option<String>,
    /// Connections with no traffic for this long are closed [default: 60s].
    #[arg(long, env = "FERROHSM_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// Open connections in all [default: 10000].
    #[arg(long, env = "FERROHSM_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections from one address [default: 256].
    #[arg(long, env = "FERROHSM_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
    #[command(flatten)]
    pkcs11: Pkcs11Args,
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// Certificate and key files, reloaded when they change.
    Manual,
    /// Ordered from an ACME CA (tls-alpn-01 on the listening port), cached and renewed.
    Acme,
}

/// ACME issuance (`--tls-mode acme`, docs/tls.md).
#[derive(Args, Default, Clone)]
struct AcmeArgs {
    /// The ACME directory: letsencrypt, letsencrypt-staging or an https:// URL
    /// [default: letsencrypt].
    #[arg(long, env = "FERROHSM_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// A name (DNS name or IP address) the certificate is for; repeat for more (env: commas).
    #[arg(long, env = "FERROHSM_ACME_DOMAIN", value_delimiter = ',')]
    acme_domain: Vec<String>,
    /// A contact for the account (mailto:…); repeat for more (env: commas).
    #[arg(long, env = "FERROHSM_ACME_CONTACT", value_delimiter = ',')]
    acme_contact: Vec<String>,
    /// Where the account and certificate are cached, encrypted under the master key; replicas
    /// may share it [default: DATA_DIR/acme].
    #[arg(long, env = "FERROHSM_ACME_CACHE_DIR")]
    acme_cache_dir: Option<PathBuf>,
    /// The CA certificate (PEM) that issued a private ACME server's TLS certificate [default:
    /// the system's roots].
    #[arg(long, env = "FERROHSM_ACME_CA_ROOT")]
    acme_ca_root: Option<PathBuf>,
    /// A certificate profile the CA offers (e.g. tlsserver at Let's Encrypt).
    #[arg(long, env = "FERROHSM_ACME_PROFILE")]
    acme_profile: Option<String>,
    /// The first retry delay after a failed order, doubling up to --acme-retry-max
    /// [default: 60s].
    #[arg(long, env = "FERROHSM_ACME_RETRY_MIN")]
    acme_retry_min: Option<String>,
    /// The longest retry delay [default: 1h].
    #[arg(long, env = "FERROHSM_ACME_RETRY_MAX")]
    acme_retry_max: Option<String>,
}

impl AcmeArgs {
    /// The settings from the flags over the file's, or `None` when nothing ACME is set.
    fn merged(self, file: &FileConfig) -> Option<AcmeArgs> {
        let domains = if self.acme_domain.is_empty() {
            file.acme_domain.clone().unwrap_or_default()
        } else {
            self.acme_domain
        };
        let contact = if self.acme_contact.is_empty() {
            file.acme_contact.clone().unwrap_or_default()
        } else {
            self.acme_contact
        };
        let merged = AcmeArgs {
            acme_directory: self.acme_directory.or(file.acme_directory.clone()),
            acme_domain: domains,
            acme_contact: contact,
            acme_cache_dir: self.acme_cache_dir.or(file.acme_cache_dir.clone()),
            acme_ca_root: self.acme_ca_root.or(file.acme_ca_root.clone()),
            acme_profile: self.acme_profile.or(file.acme_profile.clone()),
            acme_retry_min: self.acme_retry_min.or(file.acme_retry_min.clone()),
            acme_retry_max: self.acme_retry_max.or(file.acme_retry_max.clone()),
        };
        let any = merged.acme_directory.is_some()
            || !merged.acme_domain.is_empty()
            || !merged.acme_contact.is_empty()
            || merged.acme_cache_dir.is_some()
            || merged.acme_ca_root.is_some()
            || merged.acme_profile.is_some()
            || merged.acme_retry_min.is_some()
            || merged.acme_retry_max.is_some();
        any.then_some(merged)
    }

    fn config(self, data_dir: &Path, check_interval: Duration) -> anyhow::Result<AcmeConfig> {
        let directory = self.acme_directory.unwrap_or_else(|| "letsencrypt".into());
        Ok(AcmeConfig {
            directory: ferrohsm_server::acme_directory_url(&directory)?,
            domains: self.acme_domain,
            contact: self.acme_contact,
            cache_dir: self.acme_cache_dir.unwrap_or_else(|| data_dir.join("acme")),
            ca_root: self.acme_ca_root,
            profile: self.acme_profile,
            retry_min: duration(self.acme_retry_min.as_deref().unwrap_or("60s"))?,
            retry_max: duration(self.acme_retry_max.as_deref().unwrap_or("1h"))?,
            check_interval,
        })
    }
}

/// A PKCS#11 token for key material (docs/pkcs11.md).
#[derive(Args, Default, Clone)]
struct Pkcs11Args {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so); enables `"custody":
    /// "pkcs11"`.
    #[arg(long, env = "FERROHSM_PKCS11_MODULE")]
    pkcs11_module: Option<PathBuf>,
    /// The label of the token holding the keys.
    #[arg(long, env = "FERROHSM_PKCS11_TOKEN_LABEL")]
    pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN; else FERROHSM_PKCS11_PIN holds it.
    #[arg(long, env = "FERROHSM_PKCS11_PIN_FILE")]
    pkcs11_pin_file: Option<PathBuf>,
    /// The custody of keys created without one: sealed or pkcs11 [default: sealed].
    #[arg(long, env = "FERROHSM_DEFAULT_CUSTODY")]
    default_custody: Option<String>,
    /// Keep the master key in the token: `pkcs11:LABEL` names the token's AES key that wraps
    /// it (made on first start); the data directory then holds it only wrapped
    /// (`master.key.pkcs11`) and is useless without the token.
    #[arg(long, env = "FERROHSM_MASTER_KEY_SOURCE")]
    master_key: Option<String>,
    /// With --master-key pkcs11:LABEL on a data directory whose master key is still in the
    /// clear: wrap that key with the token key, write DIR/master.key.pkcs11 and wipe the clear
    /// file (once; later starts need only --master-key).
    #[arg(long)]
    migrate_master_key: bool,
}

impl Pkcs11Args {
    /// The settings, with the configuration file's where a flag is absent.
    fn merged(self, file: &FileConfig) -> anyhow::Result<Pkcs11Settings> {
        let module = self.pkcs11_module.or_else(|| file.pkcs11_module.clone());
        let label = self.pkcs11_token_label.or_else(|| file.pkcs11_token_label.clone());
        let pin_file = self.pkcs11_pin_file.or_else(|| file.pkcs11_pin_file.clone());
        let custody = self.default_custody.or_else(|| file.default_custody.clone());
        let master = self.master_key.or_else(|| file.master_key.clone());
        let vault = match (module, label) {
            (None, None) => None,
            (Some(module), Some(token_label)) => Some(ferrohsm_core::VaultConfig {
                module,
                token_label,
                pin: match pin_file {
                    Some(path) => ferrohsm_core::PinSource::File(path),
                    None => ferrohsm_core::PinSource::Env("FERROHSM_PKCS11_PIN".into()),
                },
            }),
            _ => bail!("--pkcs11-module and --pkcs11-token-label go together"),
        };
        if self.migrate_master_key && master.is_none() {
            bail!(
                "--migrate-master-key moves the master key into a token: give --master-key pkcs11:LABEL too"
            );
        }
        let master_key = match master {
            None => None,
            Some(spec) => match (spec.strip_prefix("pkcs11:"), &vault) {
                (Some(label), Some(_)) if !label.trim().is_empty() => Some(label.trim().to_owned()),
                (Some(_), None) => bail!(
                    "--master-key {spec} needs the token: --pkcs11-module and --pkcs11-token-label"
                ),
                _ => bail!("--master-key {spec:?}: expected pkcs11:LABEL"),
            },
        };
        Ok(Pkcs11Settings {
            vault,
            default_custody: custody,
            master_key,
            migrate: self.migrate_master_key,
        })
    }
}

/// Where a master key kept in the clear would come from.
#[derive(Clone, Copy)]
struct ClearKey<'a> {
    file: Option<&'a Path>,
    env: Option<&'a str>,
}

/// The PKCS#11 settings, merged.
struct Pkcs11Settings {
    vault: Option<ferrohsm_core::VaultConfig>,
    default_custody: Option<String>,
    /// The label of the token key that wraps the master key, when it does.
    master_key: Option<String>,
    /// Move a master key kept in the clear into the token first.
    migrate: bool,
}

impl Pkcs11Settings {
    /// The master key from the token when the settings say so, else from `otherwise`, which
    /// reads the clear key: from the file `clear.file` when there is one, else from the
    /// environment variable `clear.env`. With the token:
    ///
    /// - a clear key beside the token-held one must be the same key (an interrupted
    ///   migration: its clear file is then wiped) or the start is refused;
    /// - a clear key without a token-held one is moved into the token with
    ///   `--migrate-master-key`, and refused without it (nothing changes by accident).
    fn master_key(
        &self,
        data_dir: &Path,
        clear: ClearKey<'_>,
        otherwise: impl FnOnce() -> anyhow::Result<MasterKey>,
    ) -> anyhow::Result<MasterKey> {
        let (Some(label), Some(vault)) = (&self.master_key, &self.vault) else {
            return otherwise();
        };
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let wrapped = data_dir.join("master.key.pkcs11");
        let clear_file = || clear.file.filter(|path| path.exists());
        let clear_env = clear.env.filter(|var| std::env::var_os(var).is_some());
        let clear_name = match (clear_file(), clear_env) {
            (Some(file), _) => Some(file.display().to_string()),
            (None, Some(var)) => Some(var.to_owned()),
            (None, None) => None,
        };
        match (wrapped.exists(), clear_name) {
            (true, Some(name)) => {
                let held = MasterKey::from_bytes(vault.master_key(label, &wrapped)?.as_ref())?;
                if !otherwise()?.same_as(&held) {
                    bail!(
                        "{name} and the token-held {} are different master keys; remove the one \
                         this data directory was not sealed with",
                        wrapped.display()
                    );
                }
                let Some(file) = clear_file() else {
                    bail!(
                        "{name} holds the master key in the clear, but it is kept in the token: unset it"
                    );
                };
                MasterKey::wipe_file(file)?;
                eprintln!(
                    "{} (a clear copy of the token-held master key) was wiped",
                    file.display()
                );
            }
            (false, Some(name)) if self.migrate => {
                vault.adopt_master_key(label, &wrapped, &otherwise()?)?;
                // Looked for again: `dev` may have made its key file just now.
                if let Some(file) = clear_file() {
                    MasterKey::wipe_file(file)?;
                }
                eprintln!(
                    "the master key from {name} is now kept wrapped by the token key {label:?} in {}; \
                     remove any other copy of it",
                    wrapped.display()
                );
            }
            (false, Some(name)) => bail!(
                "{name} holds this data directory's master key in the clear; to keep it in the token \
                 instead, start once with --migrate-master-key (it is wrapped by the token key \
                 {label:?} into {} and a clear file is wiped)",
                wrapped.display()
            ),
            (_, None) => {}
        }
        let bytes = vault.master_key(label, &wrapped)?;
        Ok(MasterKey::from_bytes(bytes.as_ref())?)
    }
}

#[derive(Clone, Copy, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Filesystem,
    Sqlite,
    Postgres,
    Memory,
}

impl StoreKind {
    /// The backend in `dir`, or for postgres the database at `url` (which only postgres
    /// takes: a URL given to another kind is refused rather than ignored).
    fn config(self, dir: &Path, url: Option<String>) -> anyhow::Result<BackendConfig> {
        let kind = match self {
            StoreKind::Filesystem => BackendKind::Filesystem,
            StoreKind::Sqlite => BackendKind::Sqlite,
            StoreKind::Memory => BackendKind::Memory,
            StoreKind::Postgres => {
                let Some(url) = url else {
                    bail!("--key-store postgres needs --database-url (or FERROHSM_DATABASE_URL)");
                };
                return Ok(BackendConfig::postgres(url));
            }
        };
        if url.is_some() {
            bail!("--database-url is for --key-store postgres");
        }
        Ok(BackendConfig::new(kind, dir))
    }
}

/// The configuration file: the same settings as the flags.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    key_store: Option<StoreKind>,
    database_url: Option<String>,
    audit_retention_days: Option<u32>,
    approval_retention_days: Option<u32>,
    audit_retention_unexported: Option<bool>,
    data_dir: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    policy_file: Option<PathBuf>,
    keyset_file: Option<PathBuf>,
    audience: Option<String>,
    issuer: Option<String>,
    tls_mode: Option<TlsMode>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    tls12: Option<bool>,
    ocsp_response: Option<PathBuf>,
    acme_directory: Option<String>,
    acme_domain: Option<Vec<String>>,
    acme_contact: Option<Vec<String>>,
    acme_cache_dir: Option<PathBuf>,
    acme_ca_root: Option<PathBuf>,
    acme_profile: Option<String>,
    acme_retry_min: Option<String>,
    acme_retry_max: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout: Option<String>,
    reload_interval: Option<String>,
    max_token_lifetime: Option<String>,
    refusal_interval: Option<String>,
    scheduler_interval: Option<String>,
    handshake_timeout: Option<String>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    pkcs11_module: Option<PathBuf>,
    pkcs11_token_label: Option<String>,
    pkcs11_pin_file: Option<PathBuf>,
    default_custody: Option<String>,
    master_key: Option<String>,
}

#[derive(Args)]
struct DevArgs {
    /// Data directory.
    #[arg(long, env = "FERROHSM_DATA_DIR", default_value = "./ferrohsm-data")]
    data_dir: PathBuf,
    /// Address to listen on (loopback only).
    #[arg(long, env = "FERROHSM_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Lifetime of the printed admin token.
    #[arg(long, default_value = "8h")]
    token_ttl: String,
    /// A policy file (docs/policy.md), reloaded when it changes.
    #[arg(long, env = "FERROHSM_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Key store: filesystem or sqlite (in the data directory), memory, or postgres (with
    /// --database-url).
    #[arg(long, env = "FERROHSM_KEY_STORE", default_value = "filesystem")]
    key_store: StoreKind,
    /// The PostgreSQL database of `--key-store postgres`.
    #[arg(long, env = "FERROHSM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// How often due destructions, due rotations and retention run.
    #[arg(long, env = "FERROHSM_SCHEDULER_INTERVAL", default_value = "60s")]
    scheduler_interval: String,
    #[command(flatten)]
    pkcs11: Pkcs11Args,
}

#[derive(Args)]
struct TokenArgs {
    /// The subject (actor name).
    #[arg(long)]
    sub: String,
    /// A role: admin, operator, auditor or service (repeatable).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Lifetime, e.g. 15m, 8h (at most 24h).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The data directory whose master key signs (reads DIR/master.key).
    #[arg(long, env = "FERROHSM_DATA_DIR", default_value = "./ferrohsm-data")]
    data_dir: PathBuf,
    /// The master key file, if not DIR/master.key; else FERROHSM_MASTER_KEY.
    #[arg(long, env = "FERROHSM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Issuer.
    #[arg(long, env = "FERROHSM_ISSUER", default_value = "ferrohsm")]
    issuer: String,
    /// Audience.
    #[arg(long, env = "FERROHSM_AUDIENCE", default_value = "ferrohsm")]
    audience: String,
    /// Bind the token to a client certificate (its SHA-256, hex).
    #[arg(long)]
    cert_sha256: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tracer = init_tracing(cli.log_format, cli.otlp_endpoint.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Dev(args) => dev(args).await,
            Command::Token(args) => token(args),
            Command::AuditKeys(args) => audit_keys(args),
            Command::Check(args) => check(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Healthcheck(args) => healthcheck::run(args).await,
            Command::Openapi => {
                println!("{}", ferrohsm_server::openapi_json());
                Ok(())
            }
        }
    });
    if let Some(provider) = tracer {
        // Export the spans still buffered.
        if let Err(e) = provider.shutdown() {
            eprintln!("ferrohsm-server: flushing OTLP spans failed: {e}");
        }
    }
    result
}

/// Logs to stderr (text or JSON, filtered by RUST_LOG, default `info`), and exports spans over
/// OTLP when an endpoint is given (at `info`, independent of RUST_LOG).
fn init_tracing(
    format: LogFormat,
    otlp: Option<&str>,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let provider = match otlp {
        None => None,
        Some(endpoint) => {
            let mut url = endpoint.trim_end_matches('/').to_owned();
            if url.matches('/').count() <= 2 {
                url.push_str("/v1/traces");
            }
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()
                .context("configuring the OTLP exporter")?;
            let resource =
                opentelemetry_sdk::Resource::builder().with_service_name("ferrohsm-server").build();
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    // Spans go to the collector at `info` whatever RUST_LOG says about the log.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ferrohsm-server"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(provider)
}

fn duration(text: &str) -> anyhow::Result<Duration> {
    let d = ferrohsm_core::parse_duration(text).map_err(anyhow::Error::msg)?;
    Duration::try_from(d).with_context(|| format!("{text:?} is not a positive duration"))
}

fn load_master_key(file: Option<&Path>) -> anyhow::Result<MasterKey> {
    match file {
        Some(path) => MasterKey::from_file(path)
            .with_context(|| format!("reading the master key {}", path.display())),
        None => MasterKey::from_env("FERROHSM_MASTER_KEY")
            .context("no --master-key-file and no FERROHSM_MASTER_KEY"),
    }
}

/// The served certificate: files in manual mode, ACME settings in ACME mode; flags of the
/// other mode are refused rather than ignored.
fn certificate_source(
    mode: TlsMode,
    (cert, key): (Option<PathBuf>, Option<PathBuf>),
    ocsp_response: Option<PathBuf>,
    acme: Option<AcmeArgs>,
    data_dir: &Path,
    check_interval: Duration,
) -> anyhow::Result<CertificateSource> {
    match mode {
        TlsMode::Manual => {
            if acme.is_some() {
                bail!("the --acme-* settings need --tls-mode acme");
            }
            let (Some(cert), Some(key)) = (cert, key) else {
                bail!(
                    "--tls-cert and --tls-key are required (or use `ferrohsm-server dev`, or --tls-mode acme)"
                );
            };
            Ok(CertificateSource::Files { cert, key, ocsp_response })
        }
        TlsMode::Acme => {
            if cert.is_some() || key.is_some() || ocsp_response.is_some() {
                bail!(
                    "--tls-cert, --tls-key and --ocsp-response are for --tls-mode manual; ACME orders the certificate"
                );
            }
            let Some(acme) = acme.filter(|a| !a.acme_domain.is_empty()) else {
                bail!("--tls-mode acme needs at least one --acme-domain");
            };
            Ok(CertificateSource::Acme(acme.config(data_dir, check_interval)?))
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let pkcs11 = args.pkcs11.merged(&file)?;
    let acme = args.acme.merged(&file);
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| "./ferrohsm-data".into());
    let store = args.key_store.or(file.key_store).unwrap_or(StoreKind::Filesystem);
    let reload_interval =
        duration(args.reload_interval.or(file.reload_interval.clone()).as_deref().unwrap_or("2s"))?;
    let certificate = certificate_source(
        args.tls_mode.or(file.tls_mode).unwrap_or(TlsMode::Manual),
        (args.tls_cert.or(file.tls_cert.clone()), args.tls_key.or(file.tls_key.clone())),
        args.ocsp_response.or(file.ocsp_response.clone()),
        acme,
        &data_dir,
        reload_interval,
    )?;
    let client_ca = args.client_ca.or(file.client_ca);
    let client_auth = args.client_auth.or(file.client_auth).unwrap_or(if client_ca.is_some() {
        ClientAuth::Optional
    } else {
        ClientAuth::None
    });
    let master_key_file = args.master_key_file.or(file.master_key_file);
    let clear = ClearKey {
        file: master_key_file.as_deref(),
        env: master_key_file.is_none().then_some("FERROHSM_MASTER_KEY"),
    };
    let master =
        pkcs11.master_key(&data_dir, clear, || load_master_key(master_key_file.as_deref()))?;
    let app = AppConfig {
        issuer: args.issuer.or(file.issuer).unwrap_or_else(|| "ferrohsm".into()),
        max_body: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(2 << 20),
        timeout: duration(
            args.request_timeout.or(file.request_timeout).as_deref().unwrap_or("30s"),
        )?,
    };
    let config = ServerConfig {
        listen: args.listen.or(file.listen).unwrap_or(([127, 0, 0, 1], 8443).into()),
        backend: store.config(&data_dir, args.database_url.or(file.database_url))?,
        retention: ferrohsm_core::Retention {
            audit: args
                .audit_retention_days
                .or(file.audit_retention_days)
                .map(|d| time::Duration::days(d.into())),
            approvals: args
                .approval_retention_days
                .or(file.approval_retention_days)
                .map(|d| time::Duration::days(d.into())),
            audit_unexported: args.audit_retention_unexported
                || file.audit_retention_unexported.unwrap_or(false),
        },
        policy_file: args.policy_file.or(file.policy_file),
        keyset_file: args.keyset_file.or(file.keyset_file),
        audience: args.audience.or(file.audience).unwrap_or_else(|| "ferrohsm".into()),
        app,
        tls: TlsConfig {
            certificate,
            client_ca,
            client_auth,
            allow_tls12: args.tls12.or(file.tls12).unwrap_or(false),
        },
        reload_interval,
        scheduler_interval: duration(
            args.scheduler_interval.or(file.scheduler_interval).as_deref().unwrap_or("60s"),
        )?,
        drain_timeout: Duration::from_secs(30),
        max_token_lifetime: duration(
            args.max_token_lifetime.or(file.max_token_lifetime).as_deref().unwrap_or("24h"),
        )?,
        refusal_interval: duration(
            args.refusal_interval.or(file.refusal_interval).as_deref().unwrap_or("60s"),
        )?,
        limits: ConnectionLimits {
            handshake_timeout: duration(
                args.handshake_timeout.or(file.handshake_timeout).as_deref().unwrap_or("10s"),
            )?,
            header_timeout: duration(
                args.header_timeout.or(file.header_timeout).as_deref().unwrap_or("10s"),
            )?,
            idle_timeout: duration(
                args.idle_timeout.or(file.idle_timeout).as_deref().unwrap_or("60s"),
            )?,
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(10_000),
            max_connections_per_address: args
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(256),
        },
        vault: pkcs11.vault,
        default_custody: pkcs11.default_custody,
    };
    // Signal handlers first: a SIGTERM right after the start-up lines still shuts down cleanly.
    let stop = ShutdownSignal::install();
    let server = Server::start(config, master).await.context("starting the server")?;
    server.run_until(stop).await;
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("`dev` listens on loopback only; use `serve` for {}", args.listen);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let pkcs11 = args.pkcs11.clone().merged(&FileConfig::default())?;
    let key_file = args.data_dir.join("master.key");
    let clear = ClearKey { file: Some(&key_file), env: None };
    let master = pkcs11.master_key(&args.data_dir, clear, || {
        Ok(if key_file.exists() {
            MasterKey::from_file(&key_file).context("reading the master key")?
        } else {
            MasterKey::generate_file(ferrohsm_core::default_provider().as_ref(), &key_file)
                .context("creating the master key")?
        })
    })?;
    let config_backend = args.key_store.config(&args.data_dir, args.database_url.clone())?;
    let certs = ferrohsm_server::dev_certificates(&args.data_dir.join("tls"))?;
    let token_key = TokenKey::derive(ferrohsm_core::default_provider().as_ref(), &master)?;
    let admin = mint(
        &token_key,
        "dev-admin",
        &["admin".into()],
        duration(&args.token_ttl)?,
        "ferrohsm",
        "ferrohsm",
        None,
    )?;
    let config = ServerConfig {
        listen: args.listen,
        backend: config_backend.clone(),
        retention: ferrohsm_core::Retention::default(),
        policy_file: args.policy_file.clone(),
        keyset_file: None,
        audience: "ferrohsm".into(),
        app: AppConfig::default(),
        tls: TlsConfig::files(certs.cert, certs.key),
        reload_interval: Duration::from_secs(2),
        scheduler_interval: duration(&args.scheduler_interval)?,
        drain_timeout: Duration::from_secs(10),
        max_token_lifetime: Duration::from_secs(ferrohsm_server::MAX_TOKEN_TTL_SECONDS),
        refusal_interval: Duration::from_secs(60),
        limits: ConnectionLimits::default(),
        vault: pkcs11.vault,
        default_custody: pkcs11.default_custody,
    };
    // Signal handlers first: a SIGTERM right after the start-up lines still shuts down cleanly.
    let stop = ShutdownSignal::install();
    let server = Server::start(config, master).await.context("starting the server")?;
    let ca = std::fs::canonicalize(&certs.ca).unwrap_or(certs.ca);
    println!("FerroHSM dev server");
    println!("  URL:          https://localhost:{}", server.local_addr().port());
    println!("  dashboard:    https://localhost:{}/ui", server.local_addr().port());
    println!("  CA file:      {}", ca.display());
    println!("  data:         {} ({})", config_backend.location(), config_backend.kind);
    println!("  admin token:  {admin}");
    println!();
    println!("  export FERROHSM_SERVER=https://localhost:{}", server.local_addr().port());
    println!("  export FERROHSM_CA_CERT={}", ca.display());
    println!("  export FERROHSM_TOKEN={admin}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    server.run_until(stop).await;
    Ok(())
}

fn mint(
    key: &TokenKey,
    sub: &str,
    roles: &[String],
    ttl: Duration,
    issuer: &str,
    audience: &str,
    cert_sha256: Option<String>,
) -> anyhow::Result<String> {
    let spec = TokenSpec {
        sub: sub.to_owned(),
        roles: roles.to_vec(),
        ttl,
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        cert_sha256,
        minted_by: Vec::new(),
        max_ttl: Duration::from_secs(ferrohsm_server::MAX_TOKEN_TTL_SECONDS),
    };
    let unsigned = ferrohsm_server::unsigned_token(key, &spec).map_err(anyhow::Error::msg)?;
    let signature = key.sign(unsigned.signing_input.as_bytes())?;
    Ok(ferrohsm_server::finish_token(&unsigned, &signature))
}

/// The master key of `--master-key-file`, else `DATA_DIR/master.key`, else the environment.
fn master_for(data_dir: &Path, file: Option<&Path>) -> anyhow::Result<MasterKey> {
    let file = file.map(Path::to_path_buf).or_else(|| {
        let f = data_dir.join("master.key");
        f.exists().then_some(f)
    });
    load_master_key(file.as_deref())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let master = master_for(&args.from.dir, args.master_key_file.as_deref())?;
    let mode = match (args.dry_run, args.verify) {
        (true, _) => ferrohsm_core::MigrateMode::DryRun,
        (_, true) => ferrohsm_core::MigrateMode::Verify,
        _ => ferrohsm_core::MigrateMode::Copy,
    };
    let (from, to) = (&args.from.config, &args.to.config);
    let report = ferrohsm_core::migrate(from, to, &master, mode).await.with_context(|| {
        format!("migrating {} ({}) to {} ({})", from.kind, from.location(), to.kind, to.location())
    })?;
    let what = format!(
        "{} keys, {} approvals, {} token revocations, {} audit lines ({} records verified)",
        report.keys, report.approvals, report.revocations, report.audit_lines, report.audit_records
    );
    match mode {
        ferrohsm_core::MigrateMode::DryRun => println!("dry run: the source is intact: {what}"),
        ferrohsm_core::MigrateMode::Verify => println!("verified: the target holds {what}"),
        ferrohsm_core::MigrateMode::Copy => {
            println!("migrated and verified {what} into {}", to.location());
            if args.to.dir != args.from.dir && !args.to.dir.join("master.key").exists() {
                println!(
                    "the target needs the same master key: copy it beside the target, or point --master-key-file at it"
                );
            }
        }
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let master = master_for(&args.data_dir, args.master_key_file.as_deref())?;
    let backend = args.key_store.config(&args.data_dir, args.database_url.clone())?;
    let report = ferrohsm_core::check_backend(&backend, &master)
        .await
        .with_context(|| format!("checking {}", args.data_dir.display()))?;
    for problem in &report.problems {
        println!("damaged: {problem}");
    }
    println!(
        "checked {} keys ({} versions), {} approvals, {} audit records: {}",
        report.keys,
        report.versions,
        report.approvals,
        report.audit_records,
        if report.problems.is_empty() {
            "all intact".to_owned()
        } else {
            format!("{} damaged", report.problems.len())
        }
    );
    if !report.problems.is_empty() {
        bail!("{} damaged records in {}", report.problems.len(), args.data_dir.display());
    }
    Ok(())
}

fn audit_keys(args: AuditKeysArgs) -> anyhow::Result<()> {
    let master = master_for(&args.data_dir, args.master_key_file.as_deref())?;
    let provider = ferrohsm_core::default_provider();
    let hmac = ferrohsm_core::danger_derive_audit_hmac_key(provider.as_ref(), &master)?;
    let keys = ferrohsm_core::derive_audit_keys(provider.as_ref(), &master)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let hmac_file = args.out_dir.join("audit-hmac.key");
    let text = zeroize::Zeroizing::new(ferrohsm_core::b64::encode(hmac.expose()));
    ferrohsm_server::write_private(&hmac_file, text.as_bytes())
        .with_context(|| format!("writing {}", hmac_file.display()))?;
    let public_file = args.out_dir.join("audit-public.pem");
    std::fs::write(&public_file, keys.public_key_pem())
        .with_context(|| format!("writing {}", public_file.display()))?;
    println!("{}", hmac_file.display());
    println!("{}", public_file.display());
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let master = master_for(&args.data_dir, args.master_key_file.as_deref())?;
    let key = TokenKey::derive(ferrohsm_core::default_provider().as_ref(), &master)?;
    let token = mint(
        &key,
        &args.sub,
        &args.roles,
        duration(&args.ttl)?,
        &args.issuer,
        &args.audience,
        args.cert_sha256,
    )?;
    println!("{token}");
    Ok(())
}
