//! The `ferrohsm-audit-verify` binary, run as a real process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::process::Command;
use std::sync::Arc;

use ferrohsm_audit::{AuditEntry, AuditKeys, AuditSink, MemoryAuditSink, Outcome};
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider, b64};

fn run(args: &[&str]) -> (i32, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_ferrohsm-audit-verify")).args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

#[tokio::test]
async fn verifies_reports_and_names_the_first_bad_record() {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let keys = Arc::new(AuditKeys::new(provider.as_ref(), &[7; 32], &[8; 32]).unwrap());
    let sink = MemoryAuditSink::new(provider, keys.clone());
    for i in 1..=12 {
        sink.append(AuditEntry::new("ops", "rotate_key", Outcome::Success, format!("r{i}")))
            .await
            .unwrap();
    }
    sink.close().await.unwrap();
    let mut export = Vec::new();
    sink.export(&mut export).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("export.ndjson");
    let key = dir.path().join("audit.key");
    let public = dir.path().join("audit.pem");
    std::fs::write(&log, &export).unwrap();
    std::fs::write(&key, b64::encode(&[7; 32])).unwrap();
    std::fs::write(&public, keys.public_key_pem()).unwrap();
    let (log, key, public) =
        (log.to_str().unwrap(), key.to_str().unwrap(), public.to_str().unwrap());

    let (code, text) = run(&["--audit-key", key, "--public-key", public, log]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("OK: 12 records (1..12), 1 checkpoints, HMACs verified, 1 checkpoint signatures verified"), "{text}");

    // Keep the checkpoint it printed; later truncation is caught against it.
    let checkpoint_line = text
        .lines()
        .find_map(|l| l.split_once("truncation): ").map(|(_, cp)| cp.to_owned()))
        .unwrap();
    let kept = dir.path().join("kept.json");
    std::fs::write(&kept, &checkpoint_line).unwrap();

    let text_log = String::from_utf8(export.clone()).unwrap();
    let edited = text_log.replacen("\"r7\"", "\"r7x\"", 1);
    std::fs::write(log, edited).unwrap();
    let (code, text) = run(&["--audit-key", key, "--public-key", public, log]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(":7 (record 7): hash does not match"), "{text}");

    let truncated: String = text_log.lines().take(9).map(|l| format!("{l}\n")).collect();
    std::fs::write(log, truncated).unwrap();
    let (code, text) = run(&["--checkpoint", kept.to_str().unwrap(), log]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("log ends at record 9, but the trusted checkpoint covers record 12"),
        "{text}"
    );

    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["--audit-key"]).0, 2);
    assert_eq!(run(&["/nonexistent/log"]).0, 2);
}
