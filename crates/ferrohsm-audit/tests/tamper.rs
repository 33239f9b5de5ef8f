//! The tamper matrix: each kind of tampering is detected and the right record is named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::sync::Arc;

use ferrohsm_audit::{
    AuditEntry, AuditKeys, AuditRecord, AuditSink, Checkpoint, Failure, FailureKind, Line,
    MemoryAuditSink, Outcome, Report, Verifier, parse_line,
};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};
use proptest::prelude::*;

const HMAC_KEY: [u8; 32] = [0x11; 32];
const SEED: [u8; 32] = [0x22; 32];

fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(AwsLcProvider)
}

fn keys(seed: [u8; 32]) -> Arc<AuditKeys> {
    Arc::new(AuditKeys::new(provider().as_ref(), &HMAC_KEY, &seed).unwrap())
}

/// A log of `n` records with a checkpoint after every 10th, as lines.
fn log(n: u64) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let sink = MemoryAuditSink::new(provider(), keys(SEED));
        for i in 1..=n {
            let mut e = AuditEntry::new(
                format!("user-{}", i % 3),
                "encrypt",
                Outcome::Success,
                format!("req-{i}"),
            );
            e.key_id = Some("0190a5c4-1111-7000-8000-000000000001".into());
            e.key_version = Some(1);
            sink.append(e).await.unwrap();
            if i % 10 == 0 {
                sink.checkpoint().await.unwrap();
            }
        }
        let mut out = Vec::new();
        sink.export(&mut out).await.unwrap();
        String::from_utf8(out).unwrap().lines().map(str::to_owned).collect()
    })
}

fn verifier() -> Verifier {
    Verifier::new(provider()).hmac_key(&HMAC_KEY).public_key(keys(SEED).public_key_der()).unwrap()
}

fn verify_with(v: &Verifier, lines: &[String]) -> Result<Report, Failure> {
    v.verify_reader("export.ndjson", lines.join("\n").as_bytes())
}

fn verify(lines: &[String]) -> Result<Report, Failure> {
    verify_with(&verifier(), lines)
}

fn record(line: &str) -> AuditRecord {
    match parse_line(line.as_bytes()).unwrap() {
        Line::Record(r) => r,
        Line::Checkpoint(_) => panic!("not a record"),
    }
}

fn checkpoint(line: &str) -> Checkpoint {
    match parse_line(line.as_bytes()).unwrap() {
        Line::Checkpoint(c) => c,
        Line::Record(_) => panic!("not a checkpoint"),
    }
}

/// Index of the line holding record `seq`.
fn at(lines: &[String], seq: u64) -> usize {
    lines.iter().position(|l| l.contains(r#""type":"record""#) && record(l).seq == seq).unwrap()
}

fn rehash(r: &mut AuditRecord) {
    let mut buf = Vec::new();
    r.canonical_into(&mut buf);
    r.hash = AwsLcProvider.sha256(&buf);
}

#[test]
fn an_untouched_log_verifies() {
    let lines = log(25);
    let report = verify(&lines).unwrap();
    assert_eq!((report.records, report.first_seq, report.last_seq), (25, 1, 25));
    assert_eq!((report.checkpoints, report.signatures_checked), (2, 2));
    assert!(report.hmacs_checked);
    assert_eq!(report.latest_checkpoint.map(|c| c.seq), Some(20));
}

#[test]
fn an_edited_field_is_named() {
    let mut lines = log(20);
    let i = at(&lines, 5);
    lines[i] = lines[i].replace("user-2", "user-0");
    let failure = verify(&lines).unwrap_err();
    assert_eq!(
        (failure.seq, failure.kind, failure.line),
        (Some(5), FailureKind::HashMismatch, i as u64 + 1)
    );
}

#[test]
fn a_deleted_record_is_named() {
    let mut lines = log(20);
    lines.remove(at(&lines, 7));
    let failure = verify(&lines).unwrap_err();
    assert_eq!(failure.seq, Some(8));
    assert_eq!(failure.kind, FailureKind::Sequence { expected: 7, found: 8 });
}

#[test]
fn swapped_records_are_named() {
    let mut lines = log(20);
    let (a, b) = (at(&lines, 12), at(&lines, 13));
    lines.swap(a, b);
    let failure = verify(&lines).unwrap_err();
    assert_eq!(failure.seq, Some(13));
    assert_eq!(failure.kind, FailureKind::Sequence { expected: 12, found: 13 });
    assert_eq!(failure.line, a as u64 + 1);
}

#[test]
fn a_forged_record_is_named() {
    // The forger knows the format and links correctly, but not the HMAC key.
    let mut lines = log(20);
    let mut forged = record(&lines[at(&lines, 4)]);
    forged.actor = "mallory".into();
    rehash(&mut forged);
    forged.hmac = [0xab; 32];
    let i = at(&lines, 4);
    lines[i] = serde_json::to_string(&forged).unwrap();
    // Rechain everything after it so only the HMAC can tell.
    let mut prev = forged.hash;
    for seq in 5..=20 {
        let j = at(&lines, seq);
        let mut r = record(&lines[j]);
        r.prev_hash = prev;
        rehash(&mut r);
        prev = r.hash;
        lines[j] = serde_json::to_string(&r).unwrap();
    }
    let failure = verify(&lines).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(4), FailureKind::HmacMismatch));

    // An inserted extra record breaks the sequence where it stands.
    let mut lines = log(20);
    let mut extra = record(&lines[at(&lines, 6)]);
    extra.seq = 7;
    extra.prev_hash = extra.hash;
    rehash(&mut extra);
    lines.insert(at(&lines, 7), serde_json::to_string(&extra).unwrap());
    let failure = verify(&lines).unwrap_err();
    assert_eq!(failure.seq, Some(7));
    assert!(matches!(failure.kind, FailureKind::HmacMismatch), "{failure}");
}

#[test]
fn a_chain_recomputed_without_the_hmac_key_is_named() {
    let mut lines = log(20);
    let mut prev = None;
    for seq in 9..=20 {
        let j = at(&lines, seq);
        let mut r = record(&lines[j]);
        if seq == 9 {
            r.message = Some("nothing happened".into());
        }
        if let Some(p) = prev {
            r.prev_hash = p;
        }
        rehash(&mut r);
        prev = Some(r.hash);
        lines[j] = serde_json::to_string(&r).unwrap();
    }
    let failure = verify(&lines).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(9), FailureKind::HmacMismatch));
    // Without the HMAC key, the checkpoint (which the forger cannot re-sign) still catches it.
    let no_hmac = Verifier::new(provider()).public_key(keys(SEED).public_key_der()).unwrap();
    let failure = verify_with(&no_hmac, &lines).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(10), FailureKind::CheckpointMismatch));
}

#[test]
fn a_truncated_tail_is_detected_against_a_kept_checkpoint() {
    let full = log(30);
    let kept = verify(&full).unwrap().latest_checkpoint.unwrap();
    assert_eq!(kept.seq, 30);
    let cut: Vec<String> = full[..at(&full, 25) + 1].to_vec();
    // On its own the shorter log is consistent…
    verify(&cut).unwrap();
    // …but not against the checkpoint the auditor kept.
    let failure = verify_with(&verifier().trusted_checkpoint(kept.clone()), &cut).unwrap_err();
    assert_eq!(failure.kind, FailureKind::Truncated { last_seq: 25, checkpoint_seq: 30 });
    verify_with(&verifier().trusted_checkpoint(kept.clone()), &full).unwrap();
    // A rewritten log that reaches the same length does not match the kept checkpoint.
    let mut rewritten = full.clone();
    let j = at(&rewritten, 30);
    let mut r = record(&rewritten[j]);
    r.request_id = "other".into();
    rehash(&mut r);
    rewritten[j] = serde_json::to_string(&r).unwrap();
    rewritten.truncate(j + 1);
    let no_hmac = Verifier::new(provider()).trusted_checkpoint(kept);
    let failure = verify_with(&no_hmac, &rewritten).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(30), FailureKind::CheckpointMismatch));
}

#[test]
fn a_replaced_checkpoint_signature_is_named() {
    let mut lines = log(20);
    let i = lines.iter().position(|l| l.contains(r#""type":"checkpoint""#)).unwrap();
    let mut cp = checkpoint(&lines[i]);
    cp.signature[0] ^= 1;
    lines[i] = serde_json::to_string(&cp).unwrap();
    let failure = verify(&lines).unwrap_err();
    assert_eq!(
        (failure.seq, failure.kind, failure.line),
        (Some(10), FailureKind::BadSignature, i as u64 + 1)
    );

    // A checkpoint signed by a key the auditor does not hold is refused as unknown.
    let mut lines = log(20);
    let other = keys([0x33; 32]);
    let i = lines.iter().position(|l| l.contains(r#""type":"checkpoint""#)).unwrap();
    let mut cp = checkpoint(&lines[i]);
    cp.key_id = other.key_id().to_owned();
    lines[i] = serde_json::to_string(&cp).unwrap();
    assert!(matches!(verify(&lines).unwrap_err().kind, FailureKind::UnknownCheckpointKey(_)));
}

#[test]
fn rotated_checkpoint_keys_still_verify() {
    let (old, new) = (keys(SEED), keys([0x44; 32]));
    let mut lines = log(10);
    // Continue the chain by one record, then checkpoint it under a new key.
    let head = record(&lines[at(&lines, 10)]);
    let mut more = head.clone();
    more.seq = 11;
    more.prev_hash = head.hash;
    more.request_id = "req-11".into();
    rehash(&mut more);
    more.hmac = AwsLcProvider.hmac_sha256(&HMAC_KEY, &more.hash);
    lines.push(serde_json::to_string(&more).unwrap());
    let signer = AwsLcProvider.ed25519_from_seed(&[0x44; 32]).unwrap();
    let mut cp = checkpoint(&lines[lines.iter().position(|l| l.contains("checkpoint")).unwrap()]);
    cp.seq = 11;
    cp.hash = more.hash;
    cp.key_id = new.key_id().to_owned();
    cp.signature = signer
        .sign(
            ferrohsm_crypto::SignatureScheme::Ed25519,
            ferrohsm_crypto::SignInput::Message(&cp.signed_message()),
        )
        .unwrap();
    lines.push(serde_json::to_string(&cp).unwrap());
    let both = verifier().public_key(new.public_key_der()).unwrap();
    let report = verify_with(&both, &lines).unwrap();
    assert_eq!(report.signatures_checked, 2);
    // With only the old key, the new checkpoint is unknown.
    let only_old =
        Verifier::new(provider()).hmac_key(&HMAC_KEY).public_key(old.public_key_der()).unwrap();
    assert!(matches!(
        verify_with(&only_old, &lines).unwrap_err().kind,
        FailureKind::UnknownCheckpointKey(_)
    ));
}

#[test]
fn garbage_and_empty_logs_fail_cleanly() {
    let mut lines = log(3);
    lines.insert(1, "{\"type\":\"record\",\"v\":1}".into());
    assert!(matches!(verify(&lines).unwrap_err().kind, FailureKind::Malformed(_)));
    assert!(matches!(
        verify(&["not json".to_string()]).unwrap_err().kind,
        FailureKind::Malformed(_)
    ));
    assert_eq!(verify(&[]).unwrap_err().kind, FailureKind::Empty);
    // A log that starts after record 1 needs --allow-partial.
    let lines = log(20);
    let excerpt = lines[at(&lines, 5)..].to_vec();
    assert_eq!(verify(&excerpt).unwrap_err().kind, FailureKind::Sequence { expected: 1, found: 5 });
    assert_eq!(verify_with(&verifier().allow_partial(true), &excerpt).unwrap().first_seq, 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any single edit, removal or swap of records is named by the verifier.
    #[test]
    fn any_tampering_is_named(seq in 1u64..=30, kind in 0..3u8) {
        let mut lines = log(30);
        let i = at(&lines, seq);
        let expected_seq = match kind {
            0 => {
                lines[i] = lines[i].replace("req-", "REQ-");
                seq
            }
            1 => {
                lines.remove(i);
                // The next record names the gap; where a checkpoint follows the removed record
                // (every 10th), the checkpoint names it.
                if seq % 10 == 0 { seq } else { seq + 1 }
            }
            _ => {
                let other = at(&lines, if seq == 30 { 29 } else { seq + 1 });
                lines.swap(i, other);
                if seq == 30 { 30 } else { seq + 1 }
            }
        };
        let failure = verify(&lines);
        prop_assert!(failure.is_err(), "undetected: {:?}", failure);
        let failure = failure.unwrap_err();
        prop_assert_eq!(failure.seq, Some(expected_seq), "{}", failure);
    }
}

#[test]
fn in_large_logs_the_first_bad_record_is_named() {
    // Large enough that blocks are checked on several threads.
    let mut lines = log(20_000);
    verify(&lines).unwrap();
    for seq in [17_000u64, 300] {
        let i = at(&lines, seq);
        lines[i] = lines[i].replace("req-", "REQ-");
    }
    let failure = verify(&lines).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(300), FailureKind::HashMismatch));
    let i = at(&lines, 300);
    lines[i] = lines[i].replace("REQ-", "req-");
    let failure = verify(&lines).unwrap_err();
    assert_eq!((failure.seq, failure.kind), (Some(17_000), FailureKind::HashMismatch));
    assert_eq!(failure.line, at(&lines, 17_000) as u64 + 1);
}

#[test]
fn a_full_memory_sink_keeps_the_newest_lines_and_they_verify_as_an_excerpt() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let export = rt.block_on(async {
        let sink = MemoryAuditSink::with_capacity(provider(), keys(SEED), 50);
        for i in 1..=120u64 {
            sink.append(AuditEntry::new("a", "encrypt", Outcome::Success, format!("req-{i}")))
                .await
                .unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(sink.export(&mut out).await.unwrap(), 50);
        out
    });
    let lines: Vec<String> =
        String::from_utf8(export).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(record(&lines[0]).seq, 71);
    assert_eq!(verify(&lines).unwrap_err().kind, FailureKind::Sequence { expected: 1, found: 71 });
    let report = verify_with(&verifier().allow_partial(true), &lines).unwrap();
    assert_eq!((report.first_seq, report.last_seq), (71, 120));
}
