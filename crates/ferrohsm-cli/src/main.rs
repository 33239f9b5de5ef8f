//! `ferrohsm`: the command line for operators and auditors. It talks to a FerroHSM server
//! through the typed client of `ferrohsm-api` (no request is built by hand); `audit verify`
//! works offline through the core's verifier. Errors print one line on stderr (with the request id when the server
//! answered) and exit with a code per kind (see `--help` and docs/cli.md).
//!
//! It must never write plaintext or key material anywhere but the output the user asked for,
//! never store a token in a file others can read, and never exit 0 when the operation failed.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use ferrohsm_api::{
    Algorithm, ApprovalInfo, AuditQuery, CreateKey, DecryptRequest, DestroyRequest, EncryptRequest,
    KeyInfo, ListKeys, Outcome, RevocationReason, RevokeRequest, RevokeTokenRequest, Role, Secret,
    SignRequest, SignatureScheme, TokenRequest, UnwrapRequest, Usage, VerifyRequest, VoteRequest,
    WrapRequest,
};
use ferrohsm_core::b64;
use serde_json::json;
use zeroize::Zeroizing;

mod cli;
mod client;
mod config;
mod error;

use cli::{
    ApprovalsCommand, AuditCommand, Cli, Command, Global, Input, KeysCommand, Output, TokenCommand,
};
use client::Client;
use error::{CliError, Kind, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.kind.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Login => login(g),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferrohsm", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify {
            files,
            audit_key,
            public_keys,
            checkpoint,
            allow_partial,
        }) => {
            let options =
                ferrohsm_core::OfflineOptions { audit_key, public_keys, checkpoint, allow_partial };
            match ferrohsm_core::verify_audit_files(
                ferrohsm_core::default_provider(),
                &options,
                &files,
            ) {
                Err(message) => Err(CliError::input(message)),
                Ok(Err(failure)) => {
                    Err(CliError::input(format!("audit verification FAILED: {failure}")))
                }
                Ok(Ok(report)) => {
                    if g.output == Output::Json {
                        print_json(
                            &json!({"valid": true, "records": report.records, "first_seq": report.first_seq,
                            "last_seq": report.last_seq, "checkpoints": report.checkpoints,
                            "hmacs_checked": report.hmacs_checked, "signatures_checked": report.signatures_checked,
                            "head": report.last_hash}),
                        );
                    } else {
                        println!("{}", ferrohsm_core::audit_summary(&report));
                        println!("head: {}", report.last_hash);
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        command => {
            let settings = config::resolve(g)?;
            let client = Client::new(&settings, g.approval_id.clone(), g.request_id.clone())?;
            online(g, &client, command)
        }
    }
}

fn login(g: &Global) -> Result<ExitCode> {
    let server = g.server.clone().ok_or_else(|| CliError::input("login needs --server"))?;
    let token = g.token.clone().ok_or_else(|| {
        CliError::input("login needs --token (or --token - to read it from stdin)")
    })?;
    let token = if token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::input(format!("reading the token: {e}")))?;
        text.trim().to_owned()
    } else {
        token
    };
    let absolute = |p: Option<PathBuf>| p.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let profile = config::Profile {
        server: Some(server),
        token: Some(token),
        ca_cert: absolute(g.ca_cert.clone()),
        client_cert: absolute(g.client_cert.clone()),
        client_key: absolute(g.client_key.clone()),
    };
    // Check the settings work before storing them.
    let client = Client::new(&profile, None, None)?;
    let one = ListKeys { limit: Some(1), ..ListKeys::default() };
    client.run(|c| async move { c.list_keys(&one).await.map(drop) }).or_else(|e| match e.kind {
        // A role that may not list keys still logs in.
        Kind::Auth if !e.message.starts_with("authentication failed") => Ok(()),
        _ => Err(e),
    })?;
    let path = config::config_path(g)
        .ok_or_else(|| CliError::input("no config location: set FERROHSM_CONFIG or HOME"))?;
    let mut file = config::load(&path)?;
    file.profiles.insert(g.profile.clone(), profile);
    config::save(&path, &file)?;
    println!("logged in: profile {} saved to {}", g.profile, path.display());
    Ok(ExitCode::SUCCESS)
}

fn online(g: &Global, client: &Client, command: Command) -> Result<ExitCode> {
    let out = g.output;
    match command {
        Command::Keys(k) => keys(out, client, k),
        Command::Encrypt(a) => {
            let plaintext = Secret::new(read_input(&a.input)?);
            let body = EncryptRequest { plaintext, aad: a.aad.map(String::into_bytes) };
            let r = client.run(|c| async move { c.encrypt(&a.key, &body).await })?;
            emit(out, &r, a.out.as_deref(), format!("{}\n", r.ciphertext).as_bytes())
        }
        Command::Decrypt(a) => {
            let ciphertext = match a.ciphertext {
                Some(c) => c,
                None => text_input(a.input.as_deref())?,
            };
            let body = DecryptRequest { ciphertext, aad: a.aad.map(String::into_bytes) };
            let key = a.key;
            let r = client.run(|c| async move { c.decrypt(&key, &body).await })?;
            secret_output(out, &r, r.plaintext.expose(), a.out.as_deref())
        }
        Command::Sign(a) => {
            let mut body = match &a.digest_hex {
                Some(hex) => SignRequest::digest(unhex(hex)?),
                None => SignRequest::message(read_input(&a.input)?),
            };
            body.algorithm = a.algorithm.as_deref().map(SignatureScheme::from_wire);
            let key = a.key.clone();
            let r = client.run(|c| async move { c.sign(&key, &body).await })?;
            match (&a.out, out) {
                (Some(path), _) => {
                    write_file(path, &r.signature)?;
                    if out == Output::Json {
                        print_json(&r);
                    }
                }
                (None, Output::Json) => print_json(&r),
                (None, Output::Table) => println!("{}", b64::encode(&r.signature)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(a) => {
            let signature = match (&a.signature, &a.signature_b64) {
                (Some(path), None) => read_file(path)?,
                (None, Some(text)) => b64::decode(text.trim())
                    .map_err(|_| CliError::input("--signature-b64 is not valid base64"))?,
                _ => return Err(CliError::input("give --signature FILE or --signature-b64 TEXT")),
            };
            let (message, digest) = match &a.digest_hex {
                Some(hex) => (None, Some(unhex(hex)?)),
                None => (Some(read_input(&a.input)?), None),
            };
            let body = VerifyRequest {
                message,
                digest,
                signature,
                algorithm: a.algorithm.as_deref().map(SignatureScheme::from_wire),
                key_version: a.key_version,
            };
            let key = a.key.clone();
            let r = client.run(|c| async move { c.verify(&key, &body).await })?;
            if out == Output::Json {
                print_json(&r);
            } else {
                println!(
                    "{} (key {} version {}, {})",
                    if r.valid { "valid" } else { "INVALID" },
                    r.key_id,
                    r.key_version,
                    r.algorithm
                );
            }
            Ok(if r.valid { ExitCode::SUCCESS } else { ExitCode::from(Kind::Failed.exit_code()) })
        }
        Command::Wrap(a) => {
            let material = Zeroizing::new(read_input(&Input { data: None, input: a.input })?);
            let body = WrapRequest { key_material: Secret::from(&material[..]) };
            let key = a.key.clone();
            let r = client.run(|c| async move { c.wrap(&key, &body).await })?;
            emit(out, &r, a.out.as_deref(), format!("{}\n", r.wrapped).as_bytes())
        }
        Command::Unwrap(a) => {
            let wrapped = match a.wrapped {
                Some(w) => w,
                None => text_input(a.input.as_deref())?,
            };
            let body = UnwrapRequest { wrapped };
            let key = a.key;
            let r = client.run(|c| async move { c.unwrap(&key, &body).await })?;
            secret_output(out, &r, r.key_material.expose(), a.out.as_deref())
        }
        Command::Approvals(a) => approvals(out, client, a),
        Command::Audit(a) => audit(out, client, a),
        Command::Token(TokenCommand::Issue { sub, roles, ttl_seconds, cert_sha256 }) => {
            let roles = roles.iter().map(|r| Role::from_wire(r)).collect();
            let body = TokenRequest { sub, roles, ttl_seconds: Some(ttl_seconds), cert_sha256 };
            let r = client.run(|c| async move { c.issue_token(&body).await })?;
            if out == Output::Json {
                print_json(&r)
            } else {
                println!("{}", r.token)
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Revoke { jti, sid, reason }) => {
            let body = RevokeTokenRequest { jti, sid, reason };
            let r = client.run(|c| async move { c.revoke_token(&body).await })?;
            if out == Output::Json {
                print_json(&r)
            } else {
                println!(
                    "revoked every token with {} {} until {}",
                    r.matches,
                    r.value,
                    rfc3339(r.expires_at)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Health => {
            let h = client.run(|c| async move { c.health().await })?;
            if out == Output::Json {
                print_json(&h);
            } else {
                let mut t = table(&["component", "status", "detail"]);
                t.add_row(vec![
                    "server".to_owned(),
                    h.status.clone(),
                    format!("version {}", h.version),
                ]);
                for (name, c) in [
                    ("store", &h.store),
                    ("audit", &h.audit),
                    ("seal", &h.seal),
                    ("policy", &h.policy),
                ] {
                    t.add_row(vec![name.to_owned(), c.status.clone(), c.detail.clone()]);
                }
                println!("{t}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Login | Command::Completions { .. } => Ok(ExitCode::SUCCESS),
    }
}

fn keys(out: Output, client: &Client, command: KeysCommand) -> Result<ExitCode> {
    let key_result = |info: KeyInfo| -> Result<ExitCode> {
        if out == Output::Json {
            print_json(&info)
        } else {
            print_key(&info)
        }
        Ok(ExitCode::SUCCESS)
    };
    match command {
        KeysCommand::Create { algorithm, name, description, tags, usages, custody } => {
            let mut request = CreateKey::new(Algorithm::from_wire(&algorithm));
            request.name = name;
            request.description = description;
            request.custody = custody.as_deref().map(ferrohsm_api::Custody::from_wire);
            if !usages.is_empty() {
                request.usages = Some(usages.iter().map(|u| Usage::from_wire(u)).collect());
            }
            for t in tags {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| CliError::input(format!("--tag {t:?}: want key=value")))?;
                request.tags.insert(k.to_owned(), v.to_owned());
            }
            key_result(client.run(|c| async move { c.create_key(&request).await })?)
        }
        KeysCommand::List { tags, algorithm, state, name_prefix, limit } => {
            let mut query = ListKeys {
                algorithm: algorithm.as_deref().map(Algorithm::from_wire),
                state: state.as_deref().map(ferrohsm_api::KeyState::from_wire),
                name_prefix,
                ..ListKeys::default()
            };
            for t in &tags {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| CliError::input(format!("--tag {t:?}: want key=value")))?;
                query.tags.push((k.to_owned(), v.to_owned()));
            }
            let mut keys = Vec::new();
            loop {
                let page_size = limit.map_or(1000, |l| (l - keys.len().min(l)).clamp(1, 1000));
                query.limit = Some(u32::try_from(page_size).unwrap_or(1000));
                let q = query.clone();
                let page = client.run(|c| async move { c.list_keys(&q).await })?;
                keys.extend(page.keys);
                query.cursor = page.next_cursor;
                if query.cursor.is_none() || limit.is_some_and(|l| keys.len() >= l) {
                    break;
                }
            }
            if let Some(l) = limit {
                keys.truncate(l);
            }
            if out == Output::Json {
                #[derive(serde::Serialize)]
                struct Keys<'a> {
                    keys: &'a [KeyInfo],
                }
                print_json(&Keys { keys: &keys });
            } else {
                let mut t =
                    table(&["name", "id", "algorithm", "state", "version", "tags", "created"]);
                for k in &keys {
                    t.add_row(vec![
                        k.name.clone().unwrap_or_default(),
                        k.id.to_string(),
                        k.algorithm.to_string(),
                        k.state.to_string(),
                        k.current_version.to_string(),
                        k.tags
                            .iter()
                            .map(|(a, b)| format!("{a}={b}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        rfc3339(k.created_at),
                    ]);
                }
                println!("{t}");
                println!("{} keys", keys.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Show { key } => {
            key_result(client.run(|c| async move { c.describe_key(&key).await })?)
        }
        KeysCommand::Rotate { key } => {
            key_result(client.run(|c| async move { c.rotate_key(&key).await })?)
        }
        KeysCommand::Rollback { key, version } => {
            key_result(client.run(|c| async move { c.rollback_key(&key, version).await })?)
        }
        KeysCommand::Revoke { key, reason, comment } => {
            let body = RevokeRequest { reason: RevocationReason::from_wire(&reason), comment };
            key_result(client.run(|c| async move { c.revoke_key(&key, &body).await })?)
        }
        KeysCommand::Destroy { key, grace_seconds } => {
            let body = DestroyRequest { grace_seconds };
            key_result(client.run(|c| async move { c.destroy_key(&key, &body).await })?)
        }
        KeysCommand::CancelDestroy { key } => {
            key_result(client.run(|c| async move { c.cancel_destroy(&key).await })?)
        }
        KeysCommand::Public { key, version, out: file } => {
            let p = client.run(|c| async move { c.public_key(&key, version).await })?;
            emit(out, &p, file.as_deref(), p.pem.as_bytes())
        }
    }
}

fn approvals(out: Output, client: &Client, command: ApprovalsCommand) -> Result<ExitCode> {
    let one = |a: ApprovalInfo| -> Result<ExitCode> {
        if out == Output::Json {
            print_json(&a)
        } else {
            print_approval(&a)
        }
        Ok(ExitCode::SUCCESS)
    };
    match command {
        ApprovalsCommand::List { limit } => {
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            let list = client.run(|c| async move { c.list_approvals(Some(limit)).await })?;
            if out == Output::Json {
                print_json(&list)
            } else {
                print_approvals(&list.approvals)
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Show { id } => {
            let id = approval_id(&id)?;
            one(client.run(|c| async move { c.describe_approval(id).await })?)
        }
        ApprovalsCommand::Approve { id, comment } => {
            let (id, vote) = (approval_id(&id)?, VoteRequest { comment });
            one(client.run(|c| async move { c.approve(id, &vote).await })?)
        }
        ApprovalsCommand::Deny { id, comment } => {
            let (id, vote) = (approval_id(&id)?, VoteRequest { comment });
            one(client.run(|c| async move { c.deny(id, &vote).await })?)
        }
    }
}

fn audit(out: Output, client: &Client, command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::List {
            actor,
            action,
            key_id,
            outcome,
            for_request,
            since,
            until,
            limit,
            cursor,
        } => {
            let query = AuditQuery {
                limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
                cursor,
                actor,
                action,
                key_id,
                outcome: outcome.as_deref().map(Outcome::from_wire),
                request_id: for_request,
                since,
                until,
            };
            let page = client.run(|c| async move { c.audit_records(&query).await })?;
            if out == Output::Json {
                print_json(&page);
            } else {
                let mut t = table(&[
                    "seq", "time", "actor", "action", "key", "outcome", "request", "message",
                ]);
                for r in &page.records {
                    t.add_row(vec![
                        r.seq.to_string(),
                        r.ts.clone(),
                        r.actor.clone(),
                        r.action.clone(),
                        r.key_id.clone().unwrap_or_default(),
                        r.outcome.as_str().to_owned(),
                        r.request_id.clone(),
                        r.message.clone().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
                if let Some(c) = page.next_cursor {
                    println!("more: --cursor {c}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { out: file } => {
            let text = client.run(|c| async move { c.audit_export().await })?;
            let text = String::from_utf8(text)
                .map_err(|_| CliError::new(Kind::Server, "the export is not UTF-8"))?;
            match file {
                Some(path) => {
                    write_file(&path, text.as_bytes())?;
                    eprintln!("{} lines written to {}", text.lines().count(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { now, public_key_out } => {
            let r = if now {
                client.run(|c| async move { c.audit_checkpoint_now().await })?
            } else {
                client.run(|c| async move { c.audit_checkpoint().await })?
            };
            if let Some(path) = public_key_out {
                write_file(&path, r.public_key_pem.as_bytes())?;
            }
            if out == Output::Json {
                print_json(&r);
            } else {
                match &r.checkpoint {
                    None => println!("no checkpoint yet"),
                    Some(cp) => {
                        let mut t = table(&["seq", "hash", "time", "key"]);
                        t.add_row(vec![
                            cp.seq.to_string(),
                            cp.hash.clone(),
                            cp.ts.clone(),
                            cp.key_id.clone(),
                        ]);
                        println!("{t}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { .. } => Ok(ExitCode::SUCCESS),
    }
}

// ----- Input and output ----------------------------------------------------------------------

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CliError::input(format!("reading {}: {e}", path.display())))
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data)
        .map_err(|e| CliError::input(format!("writing {}: {e}", path.display())))
}

/// Writes secret bytes (plaintext, unwrapped key material): a new file is created 0600; an
/// existing file keeps its mode (never widened) and is truncated.
fn write_secret_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| CliError::input(format!("writing {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(data).and_then(|()| file.flush()).map_err(fail)
}

/// The bytes of `--data`, `--in FILE` or stdin.
fn read_input(input: &Input) -> Result<Vec<u8>> {
    if let Some(text) = &input.data {
        return Ok(text.as_bytes().to_vec());
    }
    match input.input.as_deref() {
        Some(path) if path != Path::new("-") => read_file(path),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::input(format!("reading stdin: {e}")))?;
            Ok(buf)
        }
    }
}

fn text_input(path: Option<&Path>) -> Result<String> {
    let bytes = read_input(&Input { data: None, input: path.map(Path::to_path_buf) })?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_owned())
        .map_err(|_| CliError::input("the input is not text"))
}

/// Writes a response: JSON, or `raw` to the file or stdout.
fn emit(
    out: Output,
    value: &impl serde::Serialize,
    file: Option<&Path>,
    raw: &[u8],
) -> Result<ExitCode> {
    match (file, out) {
        (Some(path), _) => write_file(path, raw)?,
        (None, Output::Json) => print_json(value),
        (None, Output::Table) => {
            std::io::stdout()
                .write_all(raw)
                .map_err(|e| CliError::input(format!("writing stdout: {e}")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the secret of a response (plaintext, key material): its bytes to the file or stdout,
/// or the JSON.
fn secret_output(
    out: Output,
    response: &impl serde::Serialize,
    bytes: &[u8],
    file: Option<&Path>,
) -> Result<ExitCode> {
    if out == Output::Json && file.is_none() {
        print_json(response);
        return Ok(ExitCode::SUCCESS);
    }
    match file {
        Some(path) => write_secret_file(path, bytes)?,
        None => {
            let mut stdout = std::io::stdout();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::input(format!("writing stdout: {e}")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn print_key(k: &KeyInfo) {
    let mut t = table(&["field", "value"]);
    let name = k.name.clone().unwrap_or_default();
    let rows: Vec<(&str, String)> = vec![
        ("id", k.id.to_string()),
        ("name", name),
        ("algorithm", k.algorithm.to_string()),
        ("custody", k.custody.to_string()),
        ("state", k.state.to_string()),
        ("current version", k.current_version.to_string()),
        ("usages", k.usages.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        ("tags", k.tags.iter().map(|(a, b)| format!("{a}={b}")).collect::<Vec<_>>().join(", ")),
        ("description", k.description.clone()),
        ("created", format!("{} by {}", rfc3339(k.created_at), k.created_by)),
        ("destroy after", k.destroy_after.map(rfc3339).unwrap_or_default()),
    ];
    for (f, v) in rows {
        t.add_row(vec![f.to_owned(), v]);
    }
    println!("{t}");
    let mut v = table(&["version", "state", "created"]);
    for ver in &k.versions {
        v.add_row(vec![
            ver.version.to_string(),
            ver.state.as_str().to_owned(),
            rfc3339(ver.created_at),
        ]);
    }
    println!("{v}");
}

fn print_approvals(list: &[ApprovalInfo]) {
    let mut t = table(&["id", "operation", "key", "requester", "state", "approvals", "expires"]);
    for a in list {
        t.add_row(vec![
            a.id.to_string(),
            a.operation.as_str().to_owned(),
            a.key_id.clone(),
            a.requester.clone(),
            a.state.as_str().to_owned(),
            format!("{}/{}", a.approvals, a.quorum),
            rfc3339(a.expires_at),
        ]);
    }
    println!("{t}");
}

/// One approval in full: what it authorizes, parameter by parameter, and who voted.
fn print_approval(a: &ApprovalInfo) {
    print_approvals(std::slice::from_ref(a));
    let mut p = table(&["parameter", "value"]);
    for param in &a.parameters {
        p.add_row(vec![param.name.clone(), param.value.clone()]);
    }
    println!("{p}");
    let behind = if a.requester_identity.len() > 1 {
        format!(" (token minted through {})", a.requester_identity[1..].join(" -> "))
    } else {
        String::new()
    };
    println!("requested by {}{behind}", a.requester);
    if !a.approver_issuers.is_empty() {
        println!("approvers only from: {}", a.approver_issuers.join(", "));
    }
    if a.require_certificate {
        println!("approvers need certificate-bound tokens");
    }
    if !a.votes.is_empty() {
        let mut v = table(&["voter", "vote", "identity source", "comment", "at"]);
        for vote in &a.votes {
            v.add_row(vec![
                vote.actor.clone(),
                if vote.approve { "approve" } else { "deny" }.to_owned(),
                vote.source.clone(),
                vote.comment.clone().unwrap_or_default(),
                rfc3339(vote.at),
            ]);
        }
        println!("{v}");
    }
}

/// An approval id as the API takes it.
fn approval_id(text: &str) -> Result<uuid::Uuid> {
    text.trim().parse().map_err(|_| CliError::input(format!("{text:?} is not an approval id")))
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    ferrohsm_core::hex::decode(text.trim())
        .ok_or_else(|| CliError::input("--digest-hex: not an even number of hex digits"))
}
