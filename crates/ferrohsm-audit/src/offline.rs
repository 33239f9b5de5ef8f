//! Offline verification from files, shared by `ferrohsm-audit-verify` and `ferrohsm audit
//! verify`: the keys and a trusted checkpoint come from files, the log from exports, segments
//! or directories of segments.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrohsm_crypto::{CryptoProvider, b64, decode_pem};

use crate::{Checkpoint, Failure, Report, Verifier, segment_files};

/// What an offline verification uses besides the log.
#[derive(Debug, Clone, Default)]
pub struct OfflineOptions {
    /// The audit HMAC key: base64 text or 32 raw bytes. Without it HMACs are not checked.
    pub audit_key: Option<PathBuf>,
    /// Checkpoint public keys, PEM (several when the key rotated).
    pub public_keys: Vec<PathBuf>,
    /// A checkpoint line kept from an earlier verification: the log must reach it.
    pub checkpoint: Option<PathBuf>,
    /// Accept a log that starts after record 1 (an excerpt).
    pub allow_partial: bool,
}

/// Verifies the log in `paths` (exports or segments; a directory means its segments in
/// order). The outer error is a usage or I/O problem; the inner one the first bad record.
pub fn verify_files(
    provider: Arc<dyn CryptoProvider>,
    options: &OfflineOptions,
    paths: &[PathBuf],
) -> Result<Result<Report, Failure>, String> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    let mut verifier = Verifier::new(provider).allow_partial(options.allow_partial);
    if let Some(path) = &options.audit_key {
        let bytes = read(path)?;
        let key = if bytes.len() == 32 {
            bytes
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{}: not base64 text", path.display()))?;
            b64::decode(text.trim()).map_err(|_| format!("{}: not base64", path.display()))?
        };
        if key.len() != 32 {
            return Err(format!("{}: the audit key is 32 bytes", path.display()));
        }
        verifier = verifier.hmac_key(&key);
    }
    for path in &options.public_keys {
        let text = String::from_utf8(read(path)?)
            .map_err(|_| format!("{}: not PEM text", path.display()))?;
        let der =
            decode_pem(&text, "PUBLIC KEY").map_err(|e| format!("{}: {e}", path.display()))?;
        verifier = verifier.public_key(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &options.checkpoint {
        let text = String::from_utf8(read(path)?)
            .map_err(|_| format!("{}: not a checkpoint", path.display()))?;
        let checkpoint: Checkpoint = serde_json::from_str(text.trim())
            .map_err(|e| format!("{}: not a checkpoint: {e}", path.display()))?;
        verifier = verifier.trusted_checkpoint(checkpoint);
    }
    if paths.is_empty() {
        return Err("no log given".into());
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(segment_files(path).map_err(|e| format!("{}: {e}", path.display()))?);
        } else {
            files.push(path.clone());
        }
    }
    let mut run = verifier.start();
    for file in &files {
        let reader =
            std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
        if let Err(failure) = run.feed(&file.display().to_string(), BufReader::new(reader)) {
            return Ok(Err(failure));
        }
    }
    Ok(run.finish())
}

/// The one-line summary of a successful verification.
pub fn summary(report: &Report) -> String {
    format!(
        "OK: {} records ({}..{}), {} checkpoints, HMACs {}, {} checkpoint signatures verified",
        report.records,
        report.first_seq,
        report.last_seq,
        report.checkpoints,
        if report.hmacs_checked { "verified" } else { "not checked (no --audit-key)" },
        report.signatures_checked,
    )
}
