//! The command line: every clap type, with help text and examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  ferrohsm login --server https://localhost:8443 --ca-cert ferrohsm-data/tls/ca.pem --token \"$TOKEN\"
  ferrohsm keys create --name orders --algorithm aes-256-gcm --tag team=payments
  ferrohsm keys list --tag team=payments
  echo -n 'hello' | ferrohsm encrypt orders > secret.txt
  ferrohsm decrypt orders --in secret.txt
  ferrohsm sign release-key --in app.tar.gz --out app.tar.gz.sig
  ferrohsm audit export --out audit.ndjson
  ferrohsm audit verify audit.ndjson --audit-key audit-hmac.key --public-key audit-public.pem

Exit codes: 0 ok; 1 refused or failed (bad input, invalid signature, failed verification);
2 usage; 3 authentication or permission; 4 not found; 5 conflict or approval required;
6 server error, rate limit or server unreachable.";

/// `ferrohsm`: operate a FerroHSM server from the terminal.
#[derive(Parser, Debug)]
#[command(name = "ferrohsm", version, about = "Operate FerroHSM: keys, cryptography, approvals and audit", after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and output settings; each also comes from `FERROHSM_*` and the profile.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Server URL, e.g. https://localhost:8443.
    #[arg(long, global = true, env = "FERROHSM_SERVER")]
    pub server: Option<String>,
    /// Bearer token.
    #[arg(long, global = true, env = "FERROHSM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that issued the server's certificate.
    #[arg(long, global = true, env = "FERROHSM_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, env = "FERROHSM_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "FERROHSM_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// The profile of the config file to use.
    #[arg(long, global = true, env = "FERROHSM_PROFILE", default_value = "default")]
    pub profile: String,
    /// The config file [default: $XDG_CONFIG_HOME/ferrohsm/config.toml or ~/.config/ferrohsm/config.toml].
    #[arg(long, global = true, env = "FERROHSM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output: tables for people, JSON for scripts.
    #[arg(long, short = 'o', global = true, env = "FERROHSM_OUTPUT", default_value = "table")]
    pub output: Output,
    /// Repeat a dual-controlled request with this approved approval.
    #[arg(long, global = true)]
    pub approval_id: Option<String>,
    /// Correlation id sent as X-Request-Id (recorded in the audit log).
    #[arg(long, global = true)]
    pub request_id: Option<String>,
}

/// Output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The API's JSON.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check --server, --token (`-` reads it from stdin), --ca-cert and --client-cert/--client-key
    /// against the server, then store them as the profile (the file is 0600).
    Login,
    /// Create, list, inspect and manage keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Encrypt data (argument, file or stdin) with a key's current version.
    Encrypt(EncryptArgs),
    /// Decrypt an `fhsm:v…` ciphertext; writes the plaintext bytes.
    Decrypt(DecryptArgs),
    /// Sign data (or a digest) with a key's current version; writes the raw signature
    /// (DER for ECDSA) to --out, or base64 to stdout.
    Sign(SignArgs),
    /// Verify a signature; exits 0 when valid and 1 when not.
    Verify(VerifyArgs),
    /// Wrap key material (RFC 5649) with an AES key.
    Wrap(WrapArgs),
    /// Unwrap an `fhsm:v…` wrapped key; writes the key bytes.
    Unwrap(UnwrapArgs),
    /// List, inspect, approve and deny dual-control approvals.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Read, export, verify and checkpoint the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Issue tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The server's health.
    Health,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key.
    ///
    /// Example: ferrohsm keys create --name orders --algorithm aes-256-gcm --tag team=payments
    Create {
        /// aes-256-gcm, ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072, rsa-4096, ml-dsa-44/65/87.
        #[arg(long)]
        algorithm: String,
        /// A unique name.
        #[arg(long)]
        name: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// A policy tag k=v (repeatable).
        #[arg(long = "tag", value_name = "K=V")]
        tags: Vec<String>,
        /// A usage (repeatable): encrypt, decrypt, sign, verify, wrap, unwrap.
        #[arg(long = "usage")]
        usages: Vec<String>,
        /// Where the material is kept: sealed, or pkcs11 (the server's token); the server's
        /// default when omitted.
        #[arg(long)]
        custody: Option<String>,
    },
    /// List keys (all pages unless --limit).
    List {
        /// Only keys with this tag k=v (repeatable; all must match).
        #[arg(long = "tag", value_name = "K=V")]
        tags: Vec<String>,
        /// Only this algorithm.
        #[arg(long)]
        algorithm: Option<String>,
        /// Only this state: active, revoked, pending_destruction, destroyed.
        #[arg(long)]
        state: Option<String>,
        /// Only names with this prefix.
        #[arg(long)]
        name_prefix: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show a key and its versions.
    Show {
        /// Key id or name.
        key: String,
    },
    /// Add a version and make it current.
    Rotate {
        /// Key id or name.
        key: String,
    },
    /// Make an earlier version current.
    Rollback {
        /// Key id or name.
        key: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Revoke a key.
    Revoke {
        /// Key id or name.
        key: String,
        /// superseded, cessation_of_operation, compromised or unspecified.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// A note.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Schedule destruction after a grace period.
    Destroy {
        /// Key id or name.
        key: String,
        /// Grace period in seconds (policy or server default when omitted).
        #[arg(long)]
        grace_seconds: Option<i64>,
    },
    /// Cancel a scheduled destruction.
    CancelDestroy {
        /// Key id or name.
        key: String,
    },
    /// Print a key's public key as PEM (or JSON with -o json).
    Public {
        /// Key id or name.
        key: String,
        /// The version (the current one when omitted).
        #[arg(long)]
        version: Option<u32>,
        /// Write the PEM to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Where input comes from: `--data`, `--in FILE`, or stdin.
#[derive(Args, Debug)]
pub struct Input {
    /// The input as text.
    #[arg(long, conflicts_with = "input")]
    pub data: Option<String>,
    /// Read the input from this file (`-` for stdin, the default).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// Key id or name.
    pub key: String,
    #[command(flatten)]
    pub input: Input,
    /// Associated data as text.
    #[arg(long)]
    pub aad: Option<String>,
    /// Write the ciphertext to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// Key id or name.
    pub key: String,
    /// The ciphertext (else --in or stdin).
    #[arg(long)]
    pub ciphertext: Option<String>,
    /// Read the ciphertext from this file.
    #[arg(long = "in", value_name = "FILE", conflicts_with = "ciphertext")]
    pub input: Option<PathBuf>,
    /// Associated data as text.
    #[arg(long)]
    pub aad: Option<String>,
    /// Write the plaintext to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Key id or name.
    pub key: String,
    #[command(flatten)]
    pub input: Input,
    /// Sign this pre-computed digest (hex) instead of a message.
    #[arg(long, conflicts_with_all = ["data", "input"])]
    pub digest_hex: Option<String>,
    /// The scheme (ecdsa-p256-sha256, rsa-pss-sha256, …); the key's default when omitted.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// Write the raw signature to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Key id or name.
    pub key: String,
    #[command(flatten)]
    pub input: Input,
    /// A pre-computed digest (hex) instead of a message.
    #[arg(long, conflicts_with_all = ["data", "input"])]
    pub digest_hex: Option<String>,
    /// The raw signature file.
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// The signature as base64.
    #[arg(long, conflicts_with = "signature")]
    pub signature_b64: Option<String>,
    /// The scheme; the key's default when omitted.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// The key version (the current one when omitted).
    #[arg(long)]
    pub key_version: Option<u32>,
}

#[derive(Args, Debug)]
pub struct WrapArgs {
    /// Key id or name.
    pub key: String,
    /// Read the key material from this file (else stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write the wrapped key to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UnwrapArgs {
    /// Key id or name.
    pub key: String,
    /// The wrapped key (else --in or stdin).
    #[arg(long)]
    pub wrapped: Option<String>,
    /// Read the wrapped key from this file.
    #[arg(long = "in", value_name = "FILE", conflicts_with = "wrapped")]
    pub input: Option<PathBuf>,
    /// Write the key material to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approvals, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one approval.
    Show {
        /// The approval id.
        id: String,
    },
    /// Approve a pending request.
    Approve {
        /// The approval id.
        id: String,
        /// A note recorded with the vote.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        /// The approval id.
        id: String,
        /// A note recorded with the vote.
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit records, oldest first.
    List {
        /// Only this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (encrypt, create_key, authenticate, …).
        #[arg(long)]
        action: Option<String>,
        /// Only this key id.
        #[arg(long)]
        key_id: Option<String>,
        /// Only this outcome: success, denied, error.
        #[arg(long)]
        outcome: Option<String>,
        /// Only this request id.
        #[arg(long = "for-request")]
        for_request: Option<String>,
        /// Only records written at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only records written before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this sequence number.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Export the whole log as NDJSON.
    Export {
        /// Write to this file (else stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an exported log or log segments offline (no server needed).
    Verify {
        /// Exports, segments, or directories of segments.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The audit HMAC key (base64 text or 32 raw bytes).
        #[arg(long)]
        audit_key: Option<PathBuf>,
        /// A checkpoint public key, PEM (repeatable).
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// A checkpoint kept from an earlier verification; the log must reach it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Accept a log that starts after record 1.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Show the latest signed checkpoint (or write one now with --now).
    Checkpoint {
        /// Write a checkpoint now.
        #[arg(long)]
        now: bool,
        /// Save the checkpoint public key (PEM) to this file.
        #[arg(long)]
        public_key_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token signed by the server (admin only).
    Issue {
        /// The subject.
        #[arg(long)]
        sub: String,
        /// A role (repeatable): admin, operator, auditor, service.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
        /// Bind to a client certificate (SHA-256, hex).
        #[arg(long)]
        cert_sha256: Option<String>,
    },
    /// Revoke tokens at once, by token id or by session (admin only).
    Revoke {
        /// The token id (`jti`) to revoke.
        #[arg(long, conflicts_with = "sid", required_unless_present = "sid")]
        jti: Option<String>,
        /// The session id (`sid`) whose tokens to revoke.
        #[arg(long)]
        sid: Option<String>,
        /// Why (kept in the revocation and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}
