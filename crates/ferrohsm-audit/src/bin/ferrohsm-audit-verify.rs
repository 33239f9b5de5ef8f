//! `ferrohsm-audit-verify`: checks an audit log offline and names the first bad record.
//!
//! ```text
//! ferrohsm-audit-verify [--audit-key FILE] [--public-key FILE]... [--checkpoint FILE]
//!                       [--allow-partial] PATH...
//! ```
//!
//! Each PATH is an NDJSON export or a log segment; a directory means all its segments in
//! order. `--audit-key` is the HMAC key (base64 text or 32 raw bytes), `--public-key` a
//! checkpoint key as PEM (repeat for rotated keys), `--checkpoint` a checkpoint line kept from
//! an earlier verification. Exit status: 0 verified, 1 verification failed, 2 usage or I/O
//! error.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ferrohsm_audit::{Checkpoint, Verifier, segment_files};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider, b64, decode_pem};

const USAGE: &str = "usage: ferrohsm-audit-verify [--audit-key FILE] [--public-key FILE]... [--checkpoint FILE] [--allow-partial] PATH...";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let mut verifier = Verifier::new(provider);
    let mut paths = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--audit-key" => {
                let path = value()?;
                let bytes = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
                let key = if bytes.len() == 32 {
                    bytes
                } else {
                    let text =
                        String::from_utf8(bytes).map_err(|_| format!("{path}: not base64 text"))?;
                    b64::decode(text.trim()).map_err(|_| format!("{path}: not base64"))?
                };
                if key.len() != 32 {
                    return Err(format!("{path}: the audit key is 32 bytes"));
                }
                verifier = verifier.hmac_key(&key);
            }
            "--public-key" => {
                let path = value()?;
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
                let der = decode_pem(&text, "PUBLIC KEY").map_err(|e| format!("{path}: {e}"))?;
                verifier = verifier.public_key(&der).map_err(|e| format!("{path}: {e}"))?;
            }
            "--checkpoint" => {
                let path = value()?;
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
                let checkpoint: Checkpoint = serde_json::from_str(text.trim())
                    .map_err(|e| format!("{path}: not a checkpoint: {e}"))?;
                verifier = verifier.trusted_checkpoint(checkpoint);
            }
            "--allow-partial" => verifier = verifier.allow_partial(true),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
            path => paths.push(PathBuf::from(path)),
        }
    }
    if paths.is_empty() {
        return Err(format!("no log given\n{USAGE}"));
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(segment_files(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        } else {
            files.push(path);
        }
    }
    let mut run = verifier.start();
    for file in &files {
        let reader =
            std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
        if let Err(failure) = run.feed(&file.display().to_string(), BufReader::new(reader)) {
            println!("FAILED: {failure}");
            return Ok(ExitCode::from(1));
        }
    }
    match run.finish() {
        Ok(report) => {
            println!(
                "OK: {} records ({}..{}), {} checkpoints, HMACs {}, {} checkpoint signatures verified",
                report.records,
                report.first_seq,
                report.last_seq,
                report.checkpoints,
                if report.hmacs_checked { "verified" } else { "not checked (no --audit-key)" },
                report.signatures_checked,
            );
            println!("head: {}", report.last_hash);
            if let Some(cp) = report.latest_checkpoint {
                let line = serde_json::to_string(&cp).map_err(|e| e.to_string())?;
                println!("latest checkpoint (keep it to detect later truncation): {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            Ok(ExitCode::from(1))
        }
    }
}
