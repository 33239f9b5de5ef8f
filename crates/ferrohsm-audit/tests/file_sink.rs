//! The file sink: durability, group commit under concurrency, segment rotation, recovery from
//! a torn tail and from a real `kill -9`, and random sequences that always verify.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::sync::Arc;

use ferrohsm_audit::{
    AuditEntry, AuditKeys, AuditSink, Error, FileAuditConfig, FileAuditSink, Outcome, Report,
    Verifier, segment_files,
};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};
use proptest::prelude::*;

const HMAC_KEY: [u8; 32] = [0x51; 32];
const SEED: [u8; 32] = [0x52; 32];

fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(AwsLcProvider)
}

fn keys() -> Arc<AuditKeys> {
    Arc::new(AuditKeys::new(provider().as_ref(), &HMAC_KEY, &SEED).unwrap())
}

fn open(config: FileAuditConfig) -> FileAuditSink {
    FileAuditSink::open(config, provider(), keys()).unwrap()
}

fn entry(i: u64) -> AuditEntry {
    let mut e = AuditEntry::new("svc", "sign", Outcome::Success, format!("req-{i}"));
    e.key_id = Some("0190a5c4-1111-7000-8000-000000000001".into());
    e
}

fn verify_dir(dir: &Path) -> Report {
    let keys = keys();
    let verifier =
        Verifier::new(provider()).hmac_key(&HMAC_KEY).public_key(keys.public_key_der()).unwrap();
    let mut run = verifier.start();
    for file in segment_files(dir).unwrap() {
        let name = file.display().to_string();
        run.feed(&name, BufReader::new(std::fs::File::open(&file).unwrap()))
            .unwrap_or_else(|f| panic!("{f}"));
    }
    run.finish().unwrap_or_else(|f| panic!("{f}"))
}

#[tokio::test]
async fn records_survive_reopen_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(FileAuditConfig::new(dir.path()));
    for i in 1..=5 {
        assert_eq!(sink.append(entry(i)).await.unwrap().seq, i);
    }
    sink.close().await.unwrap();
    assert!(matches!(sink.append(entry(6)).await, Err(Error::Unavailable(_))));
    drop(sink);
    let sink = open(FileAuditConfig::new(dir.path()));
    assert!(sink.recovery().is_none());
    assert_eq!(
        sink.latest_checkpoint().await.unwrap().map(|c| c.seq),
        Some(5),
        "close wrote a checkpoint"
    );
    assert_eq!(sink.append(entry(6)).await.unwrap().seq, 6);
    sink.close().await.unwrap();
    let report = verify_dir(dir.path());
    assert_eq!((report.records, report.last_seq, report.checkpoints), (6, 6, 2));
}

#[tokio::test]
async fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _sink = open(FileAuditConfig::new(dir.path()));
    assert!(matches!(
        FileAuditSink::open(FileAuditConfig::new(dir.path()), provider(), keys()),
        Err(Error::Locked(_))
    ));
}

#[tokio::test]
async fn segments_rotate_and_checkpoints_follow_the_record_count() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        FileAuditConfig::new(dir.path()).segment_max_bytes(4096).checkpoint_every_records(25);
    let sink = open(config);
    for i in 1..=200 {
        sink.append(entry(i)).await.unwrap();
    }
    sink.close().await.unwrap();
    let segments = segment_files(dir.path()).unwrap();
    assert!(segments.len() > 5, "{} segments", segments.len());
    let report = verify_dir(dir.path());
    assert_eq!(report.records, 200);
    assert!(report.checkpoints >= 8, "{} checkpoints", report.checkpoints);
    // An export is the same lines, and verifies as one file.
    let sink = open(FileAuditConfig::new(dir.path()));
    let mut export = Vec::new();
    let lines = sink.export(&mut export).await.unwrap();
    assert_eq!(lines, 200 + report.checkpoints);
    let verifier = Verifier::new(provider()).hmac_key(&HMAC_KEY);
    assert_eq!(verifier.verify_reader("export", export.as_slice()).unwrap().records, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_form_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(open(FileAuditConfig::new(dir.path()).segment_max_bytes(1 << 20)));
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(10_000);
            for i in 0..10_000u64 {
                seqs.push(sink.append(entry(writer * 100_000 + i)).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for seq in task.await.unwrap() {
            assert!(all.insert(seq), "sequence {seq} handed out twice");
        }
    }
    assert_eq!(all.len(), 80_000);
    assert_eq!(all.iter().max(), Some(&80_000));
    sink.close().await.unwrap();
    let report = verify_dir(dir.path());
    assert_eq!((report.records, report.first_seq, report.last_seq), (80_000, 1, 80_000));
}

#[tokio::test]
async fn a_torn_tail_is_reported_cut_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(FileAuditConfig::new(dir.path()));
    for i in 1..=10 {
        sink.append(entry(i)).await.unwrap();
    }
    drop(sink);
    let last = segment_files(dir.path()).unwrap().pop().unwrap();
    let good_len = std::fs::metadata(&last).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(br#"{"type":"record","v":1,"seq":11,"id":"01"#).unwrap();
    drop(file);

    let sink = open(FileAuditConfig::new(dir.path()));
    let recovery = sink.recovery().cloned().expect("a recovery is reported");
    assert_eq!(recovery.offset, good_len);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good_len, "the torn tail was cut off");
    let noted = sink.record_recovery().await.unwrap().unwrap();
    assert_eq!(noted.action, "audit.recovered");
    assert_eq!(noted.seq, 11, "the chain continues after the last good record");
    sink.close().await.unwrap();
    let report = verify_dir(dir.path());
    assert_eq!(report.last_seq, 11);
}

#[tokio::test]
async fn damage_in_the_middle_is_refused_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(FileAuditConfig::new(dir.path()));
    for i in 1..=10 {
        sink.append(entry(i)).await.unwrap();
    }
    drop(sink);
    let last = segment_files(dir.path()).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "garbage that is not a record";
    std::fs::write(&last, lines.join("\n") + "\n").unwrap();
    assert!(matches!(
        FileAuditSink::open(FileAuditConfig::new(dir.path()), provider(), keys()),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read_to_string(&last).unwrap(), lines.join("\n") + "\n", "nothing was cut");
}

/// The child half of `a_process_killed_mid_write_loses_nothing_acknowledged`: appends forever,
/// printing each acknowledged sequence number. Does nothing unless the parent started it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("FERROHSM_AUDIT_CRASH_DIR") else { return };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let sink = Arc::new(open(FileAuditConfig::new(&dir).segment_max_bytes(64 << 10)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for writer in 0..4u64 {
            let (sink, tx) = (sink.clone(), tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let seq = sink.append(entry(writer << 32 | i)).await.unwrap().seq;
                    if tx.send(seq).is_err() {
                        return;
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(seq) = rx.recv().await {
            writeln!(out, "ack {seq}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn a_process_killed_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("FERROHSM_AUDIT_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = HashSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 3000 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.insert(seq.parse::<u64>().unwrap());
        }
    }
    // SIGKILL: no destructor, no final checkpoint, possibly mid-write.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements already printed before the kill count too.
    for line in lines.map_while(Result::ok) {
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.insert(seq.parse::<u64>().unwrap());
        }
    }
    let sink = open(FileAuditConfig::new(dir.path()));
    sink.record_recovery().await_blocking().unwrap();
    drop(sink);
    let report = verify_dir(dir.path());
    let max_acked = *acked.iter().max().unwrap();
    assert!(
        report.last_seq >= max_acked,
        "acknowledged record {max_acked} lost (log ends at {})",
        report.last_seq
    );
    assert_eq!(report.first_seq, 1);
}

/// Runs a future to completion on a fresh runtime (for the synchronous crash test).
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(self)
    }
}
impl<F: std::future::Future> AwaitBlocking for F {}

#[derive(Debug, Clone)]
enum Step {
    Append(u8),
    Checkpoint,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u8..40).prop_map(Step::Append),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random appends, checkpoints, reopenings and (tiny) segment rotations always verify.
    #[test]
    fn random_histories_always_verify(steps in proptest::collection::vec(step(), 1..12), segment in 512u64..8192) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let total = rt.block_on(async {
            let config = || FileAuditConfig::new(dir.path()).segment_max_bytes(segment).checkpoint_every_records(17);
            let mut sink = open(config());
            let mut total = 0u64;
            for step in steps {
                match step {
                    Step::Append(n) => {
                        for _ in 0..n {
                            total += 1;
                            assert_eq!(sink.append(entry(total)).await.unwrap().seq, total);
                        }
                    }
                    Step::Checkpoint => {
                        sink.checkpoint().await.unwrap();
                    }
                    Step::Reopen => {
                        drop(sink);
                        sink = open(config());
                    }
                }
            }
            sink.close().await.unwrap();
            total
        });
        if total > 0 {
            let report = verify_dir(dir.path());
            prop_assert_eq!(report.records, total);
        }
    }
}

#[tokio::test]
async fn a_quiet_log_is_checkpointed_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        FileAuditConfig::new(dir.path()).checkpoint_every(std::time::Duration::from_millis(100));
    let sink = open(config);
    sink.append(entry(1)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sink.latest_checkpoint().await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was written after the interval"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sink.latest_checkpoint().await.unwrap().map(|c| c.seq), Some(1));
}

/// Issue 11: reading from a record on starts near it (an index of record positions), and
/// still yields every later record in order, across segments and after a reopen.
#[tokio::test]
async fn reads_from_a_record_start_near_it_and_miss_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = || FileAuditConfig::new(dir.path()).segment_max_bytes(40_000);
    let sink = open(config());
    for i in 1..=2_000 {
        sink.append(entry(i)).await.unwrap();
    }
    assert!(segment_files(dir.path()).unwrap().len() > 5, "several segments");
    let seqs = |bytes: &[u8]| -> Vec<u64> {
        bytes
            .lines()
            .map(|l| l.unwrap())
            .filter(|l| l.starts_with(r#"{"type":"record""#))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l).unwrap()["seq"].as_u64().unwrap()
            })
            .collect()
    };
    let check = |after: u64, bytes: &[u8]| {
        let got = seqs(bytes);
        let from = got.iter().position(|s| *s == after + 1).unwrap_or_else(|| panic!("{after}"));
        assert_eq!(got[from..], (after + 1..=2_000).collect::<Vec<_>>()[..], "after {after}");
        // Started near the record: at most one index stride (or a segment's start) before it.
        assert!(from <= 256, "after {after}: {from} records read before it");
    };
    for after in [0, 1, 255, 256, 257, 999, 1_500, 1_999] {
        let mut out = Vec::new();
        sink.export_after(after, &mut out).await.unwrap();
        check(after, &out);
    }
    sink.close().await.unwrap();
    drop(sink);
    // After a reopen only segment starts are known; readers learn the rest as they go.
    let sink = open(config());
    for after in [700, 700, 1_234] {
        let mut out = Vec::new();
        sink.export_after(after, &mut out).await.unwrap();
        let got = seqs(&out);
        let from = got.iter().position(|s| *s == after + 1).unwrap();
        assert_eq!(got[from..], (after + 1..=2_000).collect::<Vec<_>>()[..]);
    }
    // Past the end: nothing after it.
    let mut out = Vec::new();
    sink.export_after(5_000, &mut out).await.unwrap();
    assert!(seqs(&out).iter().all(|s| *s <= 2_000));
}
