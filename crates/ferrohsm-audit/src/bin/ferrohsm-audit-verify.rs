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

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ferrohsm_audit::{OfflineOptions, summary, verify_files};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};

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
    let mut options = OfflineOptions::default();
    let mut paths = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next().map(PathBuf::from).ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--audit-key" => options.audit_key = Some(value()?),
            "--public-key" => options.public_keys.push(value()?),
            "--checkpoint" => options.checkpoint = Some(value()?),
            "--allow-partial" => options.allow_partial = true,
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
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    match verify_files(provider, &options, &paths)? {
        Ok(report) => {
            println!("{}", summary(&report));
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
