//! The FerroHSM audit log: records, the SHA-256 hash chain, HMACs, signed checkpoints, the
//! [`AuditSink`] trait with memory and file sinks, and the offline [`Verifier`] (SPEC §8).
//!
//! Every record carries the previous record's hash, its own hash over a canonical encoding,
//! and an HMAC of that hash under the audit key; periodic checkpoints sign the chain head with
//! an Ed25519 key named by id. A verifier with the HMAC key and the checkpoint public keys
//! names the first edited, removed, reordered, inserted or forged record, and, given a
//! checkpoint the auditor kept, detects truncation.
//!
//! This crate must never record key material, plaintexts or credentials (callers pass ids and
//! codes only), never rewrite or delete a written line (a torn tail from a crash is the one
//! exception), and never acknowledge a record before it is durable.
//!
//! ```
//! use std::sync::Arc;
//! use ferrohsm_audit::{AuditEntry, AuditKeys, AuditSink, MemoryAuditSink, Outcome, Verifier};
//! use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
//! let keys = Arc::new(AuditKeys::new(provider.as_ref(), &[1; 32], &[2; 32])?);
//! let sink = MemoryAuditSink::new(provider.clone(), keys.clone());
//! sink.append(AuditEntry::new("alice", "encrypt", Outcome::Success, "req-1")).await?;
//! sink.checkpoint().await?;
//! let mut export = Vec::new();
//! sink.export(&mut export).await?;
//! let report = Verifier::new(provider)
//!     .hmac_key(&[1; 32])
//!     .public_key(keys.public_key_der())?
//!     .verify_reader("export", export.as_slice())?;
//! assert_eq!((report.records, report.signatures_checked), (1, 1));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chain;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod file;
mod keys;
mod offline;
mod query;
mod record;
mod sink;
mod verify;

// Public interface:
pub use chain::Chain;
pub use error::{Error, Result};
pub use file::{FileAuditConfig, FileAuditSink, Recovery, recovery_entry};
pub use keys::{AuditKeys, key_id_of};
pub use offline::{OfflineOptions, summary, verify_files};
pub use query::{AuditFilter, AuditHead, PageFilter, Pruned, RecordPage, anchor_allowed};
pub use record::{
    AuditEntry, AuditRecord, Checkpoint, CheckpointTag, FORMAT_VERSION, GENESIS_HASH, Outcome,
    RecordTag, hex, parse_hex32,
};
pub use sink::{AuditSink, MemoryAuditSink};
pub use verify::{Failure, FailureKind, Line, Report, Verification, Verifier, parse_line};

/// The segment files of an audit directory, oldest first (for verifying a log in place).
pub fn segment_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    Ok(file::segments(dir)?.into_iter().map(|(_, p)| p).collect())
}
