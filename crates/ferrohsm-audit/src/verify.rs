//! Offline verification of a log or an NDJSON export: links, hashes, HMACs, checkpoint
//! signatures, sequence gaps, and truncation relative to a checkpoint the auditor holds.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::sync::Arc;

use ferrohsm_crypto::{Algorithm, CryptoProvider, HmacKey, PublicKey, SignInput, SignatureScheme};

use crate::keys::key_id_of;
use crate::record::{FORMAT_VERSION, GENESIS_HASH, RecordView, hex};
use crate::{AuditRecord, Checkpoint};

/// One parsed line of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a parsed line is consumed at once; boxing would add an allocation per record verified"
)]
pub enum Line {
    /// A record.
    Record(AuditRecord),
    /// A checkpoint.
    Checkpoint(Checkpoint),
}

const RECORD_PREFIX: &[u8] = br#"{"type":"record","#;
const CHECKPOINT_PREFIX: &[u8] = br#"{"type":"checkpoint","#;

/// Parses one line (without its newline). Lines are exactly as FerroHSM writes them: the
/// `type` member comes first.
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
    if line.starts_with(RECORD_PREFIX) {
        serde_json::from_slice(line).map(Line::Record).map_err(|e| e.to_string())
    } else if line.starts_with(CHECKPOINT_PREFIX) {
        serde_json::from_slice(line).map(Line::Checkpoint).map_err(|e| e.to_string())
    } else {
        Err("not a FerroHSM audit line".into())
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The line is not a valid record or checkpoint.
    Malformed(String),
    /// The line has a format version this verifier does not know.
    UnknownVersion(u8),
    /// The record's sequence number is not the next one (a deletion, reordering or insertion).
    Sequence {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The record does not link to the previous record's hash.
    BrokenLink,
    /// The record's hash does not match its contents (it was edited).
    HashMismatch,
    /// The record's HMAC does not match (forged, or the chain was recomputed without the key).
    HmacMismatch,
    /// A checkpoint does not match the record it claims to cover.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint names a key the verifier was not given.
    UnknownCheckpointKey(String),
    /// The log ends before the trusted checkpoint's record.
    Truncated {
        /// The last record present.
        last_seq: u64,
        /// The record the trusted checkpoint covers.
        checkpoint_seq: u64,
    },
    /// The log holds no records.
    Empty,
    /// The log starts at a checkpoint (an anchor left by retention), but the verifier has no
    /// public key to check its signature, so the anchor cannot be trusted.
    UnverifiedAnchor,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Malformed(e) => write!(f, "malformed line: {e}"),
            FailureKind::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            FailureKind::Sequence { expected, found } => {
                write!(
                    f,
                    "expected record {expected}, found record {found} (a record was removed, reordered or inserted)"
                )
            }
            FailureKind::BrokenLink => {
                f.write_str("prev_hash does not match the previous record's hash")
            }
            FailureKind::HashMismatch => {
                f.write_str("hash does not match the record's contents (edited)")
            }
            FailureKind::HmacMismatch => {
                f.write_str("HMAC does not verify under the audit key (forged or recomputed)")
            }
            FailureKind::CheckpointMismatch => {
                f.write_str("checkpoint does not match the record it covers")
            }
            FailureKind::BadSignature => f.write_str("checkpoint signature does not verify"),
            FailureKind::UnknownCheckpointKey(id) => {
                write!(f, "checkpoint signed by unknown key {id}")
            }
            FailureKind::Truncated { last_seq, checkpoint_seq } => write!(
                f,
                "log ends at record {last_seq}, but the trusted checkpoint covers record {checkpoint_seq} (truncated)"
            ),
            FailureKind::Empty => f.write_str("the log holds no records"),
            FailureKind::UnverifiedAnchor => f.write_str(
                "the log starts at a checkpoint (retention's anchor) but no checkpoint public key was given to check it",
            ),
        }
    }
}

/// The first bad line: where, which record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file (or other source) name.
    pub source: String,
    /// The 1-based line number in that source (0 when the failure concerns the whole log).
    pub line: u64,
    /// The record's sequence number, when the line is a record or checkpoint.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: FailureKind,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (record {seq})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for Failure {}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// The first record's sequence number.
    pub first_seq: u64,
    /// The last record's sequence number.
    pub last_seq: u64,
    /// The last record's hash, hex.
    pub last_hash: String,
    /// Checkpoints seen.
    pub checkpoints: u64,
    /// Whether HMACs were checked (an audit key was given).
    pub hmacs_checked: bool,
    /// Checkpoint signatures checked.
    pub signatures_checked: u64,
    /// The last checkpoint in the log, which the auditor can keep to detect later truncation.
    pub latest_checkpoint: Option<Checkpoint>,
    /// The checkpoint the log starts at, when retention removed the records before it (the
    /// log is then verified from that anchor on).
    pub anchor_seq: Option<u64>,
}

/// How many lines are parsed and hashed together.
const BLOCK_LINES: usize = 8192;

/// One line after the independent checks.
enum Checked {
    Blank,
    Malformed(String),
    /// What the ordered checks need of a record, whether its hash matches its contents, and
    /// whether its HMAC verifies (true when no key was given).
    Record(RecordFacts, bool, bool),
    Checkpoint(Checkpoint),
}

/// The fields of a record that the ordered checks use.
struct RecordFacts {
    v: u8,
    seq: u64,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

fn check_line(verifier: &Verifier, line: &[u8], scratch: &mut Vec<u8>) -> Checked {
    if line.is_empty() {
        return Checked::Blank;
    }
    if line.starts_with(RECORD_PREFIX) {
        // The borrowing view avoids copying every string of every record.
        return match serde_json::from_slice::<RecordView<'_>>(line) {
            Err(e) => Checked::Malformed(e.to_string()),
            Ok(record) => {
                record.canonical_into(scratch);
                let hash_ok = verifier.provider.sha256(scratch) == record.hash;
                let hmac_ok =
                    verifier.hmac.as_ref().is_none_or(|k| k.verify(&record.hash, &record.hmac));
                let facts = RecordFacts {
                    v: record.v,
                    seq: record.seq,
                    prev_hash: record.prev_hash,
                    hash: record.hash,
                };
                Checked::Record(facts, hash_ok, hmac_ok)
            }
        };
    }
    match parse_line(line) {
        Err(e) => Checked::Malformed(e),
        Ok(Line::Checkpoint(cp)) => Checked::Checkpoint(cp),
        Ok(Line::Record(_)) => {
            Checked::Malformed("a record line must start with the record prefix".into())
        }
    }
}

/// Verifies logs. Configure it with the keys and checkpoint the auditor holds.
#[derive(Debug)]
pub struct Verifier {
    provider: Arc<dyn CryptoProvider>,
    hmac: Option<Arc<dyn HmacKey>>,
    keys: HashMap<String, Arc<dyn PublicKey>>,
    trusted: Option<Checkpoint>,
    allow_partial: bool,
}

impl Verifier {
    /// A verifier that checks structure, sequence, links and hashes.
    pub fn new(provider: Arc<dyn CryptoProvider>) -> Self {
        Verifier { provider, hmac: None, keys: HashMap::new(), trusted: None, allow_partial: false }
    }

    /// Also checks every record's HMAC under `key`.
    pub fn hmac_key(mut self, key: &[u8]) -> Self {
        self.hmac = Some(self.provider.hmac_sha256_key(key));
        self
    }

    /// Also checks checkpoints signed by this Ed25519 public key (SPKI DER). Give every key
    /// the log may have used; a checkpoint by a key not given fails verification.
    pub fn public_key(mut self, spki_der: &[u8]) -> ferrohsm_crypto::Result<Self> {
        let key = self.provider.load_public(Algorithm::Ed25519, spki_der)?;
        self.keys.insert(key_id_of(self.provider.as_ref(), key.der()), key);
        Ok(self)
    }

    /// Requires the log to contain the record this checkpoint covers, with the same hash:
    /// a log cut short before it, or rewritten, fails.
    pub fn trusted_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.trusted = Some(checkpoint);
        self
    }

    /// Accepts a log that starts after record 1 (an excerpt); its first record is trusted as
    /// the anchor.
    pub fn allow_partial(mut self, allow: bool) -> Self {
        self.allow_partial = allow;
        self
    }

    /// Starts a verification that is fed one or more sources in order.
    pub fn start(&self) -> Verification<'_> {
        Verification {
            verifier: self,
            seq: 0,
            head: GENESIS_HASH,
            first_seq: None,
            records: 0,
            checkpoints: 0,
            signatures: 0,
            latest: None,
            trusted_seen: false,
            anchor: None,
        }
    }

    /// Verifies one source completely.
    pub fn verify_reader(&self, source: &str, reader: impl BufRead) -> Result<Report, Failure> {
        let mut run = self.start();
        run.feed(source, reader)?;
        run.finish()
    }
}

/// A verification in progress; the chain carries across sources (segments).
#[derive(Debug)]
pub struct Verification<'v> {
    verifier: &'v Verifier,
    seq: u64,
    head: [u8; 32],
    first_seq: Option<u64>,
    records: u64,
    checkpoints: u64,
    signatures: u64,
    latest: Option<Checkpoint>,
    trusted_seen: bool,
    anchor: Option<u64>,
}

impl Verification<'_> {
    /// Checks every line of `reader`.
    ///
    /// Lines are read in blocks; within a block, parsing, hashing and HMAC checks run on all
    /// cores (they are independent per record), then the ordered checks — sequence, links,
    /// checkpoints — run in line order, so the failure reported is always the first bad line.
    pub fn feed(&mut self, source: &str, mut reader: impl BufRead) -> Result<(), Failure> {
        let mut number = 0u64;
        loop {
            // One buffer per block, and the range of each line in it.
            let mut buffer: Vec<u8> = Vec::with_capacity(BLOCK_LINES * 400);
            let mut spans: Vec<std::ops::Range<usize>> = Vec::with_capacity(BLOCK_LINES);
            let mut read_error = None;
            while spans.len() < BLOCK_LINES {
                let start = buffer.len();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        let end = if buffer.last() == Some(&b'\n') {
                            buffer.len() - 1
                        } else {
                            buffer.len()
                        };
                        spans.push(start..end);
                    }
                    Err(e) => {
                        read_error = Some(e.to_string());
                        break;
                    }
                }
            }
            let block: Vec<&[u8]> = spans.iter().map(|r| &buffer[r.clone()]).collect();
            let done = block.len() < BLOCK_LINES;
            let checked = self.check_block(&block);
            for item in checked {
                number += 1;
                let fail = |seq: Option<u64>, kind: FailureKind| Failure {
                    source: source.to_owned(),
                    line: number,
                    seq,
                    kind,
                };
                match item {
                    Checked::Blank => {}
                    Checked::Malformed(e) => return Err(fail(None, FailureKind::Malformed(e))),
                    Checked::Record(record, hash_ok, hmac_ok) => {
                        let seq = record.seq;
                        self.record(record, hash_ok, hmac_ok)
                            .map_err(|kind| fail(Some(seq), kind))?
                    }
                    Checked::Checkpoint(cp) => {
                        let seq = cp.seq;
                        self.checkpoint(cp).map_err(|kind| fail(Some(seq), kind))?
                    }
                }
            }
            if let Some(e) = read_error {
                return Err(Failure {
                    source: source.to_owned(),
                    line: number + 1,
                    seq: None,
                    kind: FailureKind::Malformed(e),
                });
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Parses and hashes a block of lines on every available core.
    fn check_block(&self, block: &[&[u8]]) -> Vec<Checked> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        if workers == 1 || block.len() < 256 {
            let mut scratch = Vec::with_capacity(512);
            return block
                .iter()
                .map(|line| check_line(self.verifier, line, &mut scratch))
                .collect();
        }
        let chunk = block.len().div_ceil(workers);
        std::thread::scope(|scope| {
            let handles: Vec<_> = block
                .chunks(chunk)
                .map(|lines| {
                    scope.spawn(move || {
                        let mut scratch = Vec::with_capacity(512);
                        lines
                            .iter()
                            .map(|line| check_line(self.verifier, line, &mut scratch))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Checked::Malformed("verifier thread failed".into())]
                    })
                })
                .collect()
        })
    }

    fn record(
        &mut self,
        record: RecordFacts,
        hash_ok: bool,
        hmac_ok: bool,
    ) -> Result<(), FailureKind> {
        if record.v != FORMAT_VERSION {
            return Err(FailureKind::UnknownVersion(record.v));
        }
        let anchor = self.first_seq.is_none() && self.verifier.allow_partial;
        if anchor {
            self.seq = record.seq.saturating_sub(1);
            self.head = record.prev_hash;
        }
        // A crafted log may claim the last sequence number; nothing can follow it.
        let Some(expected) = self.seq.checked_add(1) else {
            return Err(FailureKind::Sequence { expected: self.seq, found: record.seq });
        };
        if record.seq != expected {
            return Err(FailureKind::Sequence { expected, found: record.seq });
        }
        if record.prev_hash != self.head {
            return Err(FailureKind::BrokenLink);
        }
        if !hash_ok {
            return Err(FailureKind::HashMismatch);
        }
        if !hmac_ok {
            return Err(FailureKind::HmacMismatch);
        }
        if let Some(trusted) = &self.verifier.trusted
            && trusted.seq == record.seq
        {
            if trusted.hash != record.hash {
                return Err(FailureKind::CheckpointMismatch);
            }
            self.trusted_seen = true;
        }
        self.first_seq.get_or_insert(record.seq);
        self.seq = record.seq;
        self.head = record.hash;
        self.records += 1;
        Ok(())
    }

    fn checkpoint(&mut self, cp: Checkpoint) -> Result<(), FailureKind> {
        if cp.v != FORMAT_VERSION {
            return Err(FailureKind::UnknownVersion(cp.v));
        }
        if self.first_seq.is_none() && self.checkpoints == 0 && cp.seq > 0 {
            // A log that starts at a checkpoint: retention removed the records before it, and
            // its signature vouches for the head they ended at. The next record must link to
            // it, so a gap after the anchor is still a sequence or link failure.
            if self.verifier.keys.is_empty() {
                return Err(FailureKind::UnverifiedAnchor);
            }
            self.check_signature(&cp)?;
            if let Some(trusted) = &self.verifier.trusted
                && trusted.seq <= cp.seq
            {
                // The auditor's checkpoint is at or before the cut: the log goes past it.
                if trusted.seq == cp.seq && trusted.hash != cp.hash {
                    return Err(FailureKind::CheckpointMismatch);
                }
                self.trusted_seen = true;
            }
            self.seq = cp.seq;
            self.head = cp.hash;
            self.anchor = Some(cp.seq);
            self.signatures += 1;
            self.checkpoints += 1;
            self.latest = Some(cp);
            return Ok(());
        }
        // A checkpoint follows the record it covers.
        if cp.seq != self.seq || cp.hash != self.head || self.records == 0 {
            return Err(FailureKind::CheckpointMismatch);
        }
        if self.check_signature(&cp)? {
            self.signatures += 1;
        }
        self.checkpoints += 1;
        self.latest = Some(cp);
        Ok(())
    }

    /// Checks a checkpoint's signature when keys were given; returns whether it was checked.
    fn check_signature(&self, cp: &Checkpoint) -> Result<bool, FailureKind> {
        if self.verifier.keys.is_empty() {
            return Ok(false);
        }
        let key = self
            .verifier
            .keys
            .get(&cp.key_id)
            .ok_or_else(|| FailureKind::UnknownCheckpointKey(cp.key_id.clone()))?;
        let valid = key
            .verify(
                SignatureScheme::Ed25519,
                SignInput::Message(&cp.signed_message()),
                &cp.signature,
            )
            .unwrap_or(false);
        if !valid {
            return Err(FailureKind::BadSignature);
        }
        Ok(true)
    }

    /// Finishes: the log must hold records, and reach the trusted checkpoint if one was given.
    pub fn finish(self) -> Result<Report, Failure> {
        let whole = |kind| Failure { source: "log".into(), line: 0, seq: None, kind };
        let Some(first_seq) = self.first_seq else { return Err(whole(FailureKind::Empty)) };
        if let Some(trusted) = self.verifier.trusted.clone() {
            if !self.trusted_seen {
                return Err(whole(FailureKind::Truncated {
                    last_seq: self.seq,
                    checkpoint_seq: trusted.seq,
                }));
            }
            self.check_signature(&trusted)
                .map_err(|kind| Failure { seq: Some(trusted.seq), ..whole(kind) })?;
        }
        Ok(Report {
            records: self.records,
            first_seq,
            last_seq: self.seq,
            last_hash: hex(&self.head),
            checkpoints: self.checkpoints,
            hmacs_checked: self.verifier.hmac.is_some(),
            signatures_checked: self.signatures,
            latest_checkpoint: self.latest,
            anchor_seq: self.anchor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: an excerpt anchored at the largest sequence number, followed by one more
    /// record, is a sequence failure, not an overflow.
    #[test]
    fn a_log_past_the_last_sequence_number_is_refused_without_overflow() {
        let verifier = Verifier::new(Arc::new(ferrohsm_crypto::AwsLcProvider)).allow_partial(true);
        let mut run = verifier.start();
        let last =
            RecordFacts { v: FORMAT_VERSION, seq: u64::MAX, prev_hash: [1; 32], hash: [2; 32] };
        assert_eq!(run.record(last, true, true), Ok(()));
        let next = RecordFacts { v: FORMAT_VERSION, seq: 0, prev_hash: [2; 32], hash: [3; 32] };
        assert!(matches!(run.record(next, true, true), Err(FailureKind::Sequence { .. })));
    }
}
