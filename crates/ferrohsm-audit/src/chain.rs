//! The hash chain: sequence numbers, links and seals, shared by every sink.

use std::sync::Arc;

use ferrohsm_crypto::CryptoProvider;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::record::{CheckpointTag, FORMAT_VERSION, GENESIS_HASH, RecordTag};
use crate::{AuditEntry, AuditKeys, AuditRecord, Checkpoint, Result};

/// The head of a chain and what it takes to extend it: sinks in other crates (a database
/// sink) seal their records with it, so every sink writes the same format and chain.
#[derive(Debug)]
pub struct Chain {
    provider: Arc<dyn CryptoProvider>,
    keys: Arc<AuditKeys>,
    seq: u64,
    head: [u8; 32],
    scratch: Vec<u8>,
    /// Random bits drawn once; record ids mix them with the sequence number, so ids are unique
    /// without a system call per record.
    id_seed: [u8; 10],
}

impl Chain {
    /// A chain continuing after record `seq` with hash `head` (0 and zeros for a new log).
    pub fn resume(
        provider: Arc<dyn CryptoProvider>,
        keys: Arc<AuditKeys>,
        seq: u64,
        head: [u8; 32],
    ) -> Self {
        let mut id_seed = [0u8; 10];
        // A failed draw leaves zeros; ids stay unique through the sequence number and time.
        let _ = provider.fill_random(&mut id_seed);
        Chain { provider, keys, seq, head, scratch: Vec::with_capacity(512), id_seed }
    }

    /// A new, empty chain.
    pub fn new(provider: Arc<dyn CryptoProvider>, keys: Arc<AuditKeys>) -> Self {
        Self::resume(provider, keys, 0, GENESIS_HASH)
    }

    /// The last sealed record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The last sealed record's sequence number and hash.
    pub fn head(&self) -> crate::AuditHead {
        crate::AuditHead { seq: self.seq, hash: self.head }
    }

    /// Continues after record `seq` with hash `head` instead (after recovering from a failed
    /// write, whose records were never acknowledged).
    pub fn reset(&mut self, seq: u64, head: [u8; 32]) {
        self.seq = seq;
        self.head = head;
    }

    /// Seals `entry` as the next record.
    pub fn seal(&mut self, entry: AuditEntry) -> AuditRecord {
        let mut record = AuditRecord {
            kind: RecordTag,
            v: FORMAT_VERSION,
            seq: self.seq + 1,
            id: self.next_id(),
            ts: now(),
            actor: entry.actor,
            action: entry.action,
            key_id: entry.key_id,
            key_version: entry.key_version,
            outcome: entry.outcome,
            request_id: entry.request_id,
            session: entry.session,
            client_fingerprint: entry.client_fingerprint,
            source_ip: entry.source_ip,
            message: entry.message,
            prev_hash: self.head,
            hash: [0; 32],
            hmac: [0; 32],
        };
        record.canonical_into(&mut self.scratch);
        record.hash = self.provider.sha256(&self.scratch);
        record.hmac = self.keys.tag(&record.hash);
        self.seq = record.seq;
        self.head = record.hash;
        record
    }

    /// A UUIDv7 for the next record: the current time in milliseconds, then the seed with the
    /// next sequence number folded into it.
    fn next_id(&self) -> uuid::Uuid {
        let mut random = self.id_seed;
        for (byte, seq) in random[2..].iter_mut().zip((self.seq + 1).to_be_bytes()) {
            *byte ^= seq;
        }
        let millis = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }

    /// A signed checkpoint of the current head, or `None` for an empty log.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        if self.seq == 0 {
            return Ok(None);
        }
        let mut checkpoint = Checkpoint {
            kind: CheckpointTag,
            v: FORMAT_VERSION,
            seq: self.seq,
            hash: self.head,
            ts: now(),
            key_id: self.keys.key_id().to_owned(),
            signature: Vec::new(),
        };
        checkpoint.signature = self.keys.sign(&checkpoint.signed_message())?;
        Ok(Some(checkpoint))
    }
}

fn now() -> String {
    // Formatting a UTC timestamp as RFC 3339 cannot fail; the epoch is a safe, visible fallback.
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}
