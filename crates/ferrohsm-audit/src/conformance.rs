//! The conformance suite every [`AuditSink`] passes (feature `conformance`).
//!
//! A backend's test target runs it with one line, given a [`SinkHarness`]:
//!
//! ```text
//! ferrohsm_audit::sink_conformance_tests!(ferrohsm_audit::conformance::FileHarness::new());
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: failures must stop the test"
)]

use std::sync::Arc;

use async_trait::async_trait;
use ferrohsm_crypto::{AwsLcProvider, CryptoProvider};
use time::OffsetDateTime;

use crate::{
    AuditEntry, AuditFilter, AuditKeys, AuditSink, FileAuditConfig, FileAuditSink, MemoryAuditSink,
    Outcome, Verifier,
};

/// The HMAC key the harnesses seal with.
pub const HMAC_KEY: [u8; 32] = [1; 32];
/// The signing seed the harnesses sign checkpoints with.
pub const SIGNING_SEED: [u8; 32] = [2; 32];

/// The provider and keys every harness uses.
pub fn keys() -> (Arc<dyn CryptoProvider>, Arc<AuditKeys>) {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    let keys = Arc::new(AuditKeys::new(provider.as_ref(), &HMAC_KEY, &SIGNING_SEED).unwrap());
    (provider, keys)
}

/// Opens a sink on storage the harness owns.
#[async_trait]
pub trait SinkHarness: Send + Sync {
    /// Opens the sink; after the previous one was closed and dropped, reopens the same log.
    async fn open(&self) -> Arc<dyn AuditSink>;

    /// Whether the log survives a reopen (false for the memory sink).
    fn durable(&self) -> bool {
        true
    }

    /// A second sink on the same log while the first stays open, as a second replica would
    /// hold; `None` for sinks that allow one writer at a time.
    async fn second(&self) -> Option<Arc<dyn AuditSink>> {
        None
    }
}

/// The memory sink: "reopening" returns the same sink.
#[derive(Debug)]
pub struct MemoryHarness(Arc<MemoryAuditSink>);

impl MemoryHarness {
    /// A harness around a new memory sink.
    pub fn new() -> Self {
        let (provider, keys) = keys();
        MemoryHarness(Arc::new(MemoryAuditSink::new(provider, keys)))
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl SinkHarness for MemoryHarness {
    async fn open(&self) -> Arc<dyn AuditSink> {
        self.0.clone()
    }

    fn durable(&self) -> bool {
        false
    }
}

/// The file sink in a fresh temporary directory.
#[derive(Debug)]
pub struct FileHarness(tempfile::TempDir);

impl FileHarness {
    /// A harness around a new temporary directory.
    pub fn new() -> Self {
        FileHarness(tempfile::tempdir().unwrap())
    }
}

impl Default for FileHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl SinkHarness for FileHarness {
    async fn open(&self) -> Arc<dyn AuditSink> {
        let (provider, keys) = keys();
        // Small segments, so logs here span several (each starts with an anchor checkpoint).
        let config = FileAuditConfig::new(self.0.path().join("audit")).segment_max_bytes(16 << 10);
        Arc::new(FileAuditSink::open(config, provider, keys).unwrap())
    }
}

/// Expands to one `#[tokio::test]` per sink conformance case for the harness expression.
#[macro_export]
macro_rules! sink_conformance_tests {
    ($harness:expr) => {
        $crate::sink_conformance_tests!(@cases $harness;
            appends_chain_and_verify,
            checkpoints_cover_the_head,
            queries_filter_and_page,
            export_after_starts_at_the_cursor,
            reopen_continues_the_chain,
            closed_sinks_refuse_appends,
            import_continues_another_log,
            prune_leaves_a_verifiable_anchor,
            two_sinks_on_one_log_keep_one_chain,
        );
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case(&$harness).await;
            }
        )+
    };
}

fn entry(
    actor: &str,
    action: &str,
    outcome: Outcome,
    request: &str,
    key: Option<&str>,
) -> AuditEntry {
    let mut e = AuditEntry::new(actor, action, outcome, request);
    e.key_id = key.map(str::to_owned);
    e
}

/// Verifies a whole export with the harness keys; returns (records, signatures).
pub async fn verify(sink: &dyn AuditSink) -> (u64, u64) {
    let (provider, keys) = keys();
    let mut export = Vec::new();
    sink.export(&mut export).await.unwrap();
    let report = Verifier::new(provider)
        .hmac_key(&HMAC_KEY)
        .public_key(keys.public_key_der())
        .unwrap()
        .verify_reader("export", export.as_slice())
        .unwrap_or_else(|f| panic!("the export does not verify: {f}"));
    (report.records, report.signatures_checked)
}

/// Appends get consecutive sequence numbers; the head is the last one; the export verifies.
pub async fn appends_chain_and_verify(h: &impl SinkHarness) {
    let sink = h.open().await;
    let start = sink.head().await.unwrap().seq;
    let mut last = None;
    for i in 0..50u64 {
        let r = sink
            .append(entry("alice", "encrypt", Outcome::Success, &format!("r{i}"), None))
            .await
            .unwrap();
        assert_eq!(r.seq, start + i + 1);
        last = Some(r);
    }
    let last = last.unwrap();
    let head = sink.head().await.unwrap();
    assert_eq!((head.seq, head.hash), (last.seq, last.hash));
    let concurrent: Vec<_> = (0..20)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move {
                sink.append(entry("bob", "sign", Outcome::Success, &format!("c{i}"), None))
                    .await
                    .unwrap()
                    .seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in concurrent {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (start + 51..=start + 70).collect::<Vec<_>>());
    sink.checkpoint().await.unwrap();
    let (records, signatures) = verify(sink.as_ref()).await;
    assert_eq!(records, start + 70);
    assert!(signatures >= 1);
}

/// A checkpoint covers the head, is what `latest_checkpoint` returns, and is not repeated
/// when nothing was added.
pub async fn checkpoints_cover_the_head(h: &impl SinkHarness) {
    let sink = h.open().await;
    sink.append(entry("alice", "create_key", Outcome::Success, "cp-1", Some("k1"))).await.unwrap();
    let cp = sink.checkpoint().await.unwrap().expect("a checkpoint");
    assert_eq!(cp.seq, sink.head().await.unwrap().seq);
    assert_eq!(cp.hash, sink.head().await.unwrap().hash);
    assert_eq!(sink.latest_checkpoint().await.unwrap(), Some(cp.clone()));
    let again = sink.checkpoint().await.unwrap().expect("still a checkpoint");
    assert_eq!(again.seq, cp.seq);
    verify(sink.as_ref()).await;
}

/// Queries filter on every indexed field, page after a cursor, and say when more matched.
pub async fn queries_filter_and_page(h: &impl SinkHarness) {
    let sink = h.open().await;
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let base = sink.head().await.unwrap().seq;
    for i in 0..30 {
        let actor = if i % 3 == 0 { "q-carol" } else { "q-dave" };
        let outcome = if i % 5 == 0 { Outcome::Denied } else { Outcome::Success };
        let key = format!("q-key-{}", i % 2);
        sink.append(entry(actor, "q-sign", outcome, &format!("q-req-{i}"), Some(&key)))
            .await
            .unwrap();
    }
    let carol = AuditFilter { actor: Some("q-carol".into()), ..AuditFilter::default() };
    let page = sink.query(&carol, base, 4).await.unwrap();
    assert_eq!(page.records.len(), 4);
    assert!(page.more);
    assert!(page.records.iter().all(|r| r.actor == "q-carol"));
    let rest = sink.query(&carol, page.records[3].seq, 100).await.unwrap();
    assert_eq!(rest.records.len(), 6);
    assert!(!rest.more);
    assert!(rest.records.windows(2).all(|w| w[0].seq < w[1].seq));

    let denied_key0 = AuditFilter {
        outcome: Some(Outcome::Denied),
        key_id: Some("q-key-0".into()),
        ..AuditFilter::default()
    };
    let page = sink.query(&denied_key0, base, 100).await.unwrap();
    assert_eq!(page.records.len(), 3, "i in 0, 10, 20");
    let one = AuditFilter { request_id: Some("q-req-7".into()), ..AuditFilter::default() };
    let page = sink.query(&one, 0, 100).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].seq, base + 8);
    let action = AuditFilter {
        action: Some("q-sign".into()),
        since: Some(before),
        ..AuditFilter::default()
    };
    assert_eq!(sink.query(&action, base, 1000).await.unwrap().records.len(), 30);
    let future = AuditFilter {
        until: Some(before),
        action: Some("q-sign".into()),
        ..AuditFilter::default()
    };
    assert!(sink.query(&future, 0, 1000).await.unwrap().records.is_empty());
    let nobody = AuditFilter { actor: Some("nobody".into()), ..AuditFilter::default() };
    assert_eq!(sink.query(&nobody, 0, 10).await.unwrap(), crate::RecordPage::default());
}

/// `export_after(n)` includes record `n + 1` (it may start earlier, never later).
pub async fn export_after_starts_at_the_cursor(h: &impl SinkHarness) {
    let sink = h.open().await;
    for i in 0..600 {
        sink.append(entry("eve", "verify", Outcome::Success, &format!("e{i}"), None))
            .await
            .unwrap();
    }
    let head = sink.head().await.unwrap().seq;
    let after = head - 100;
    let mut out = Vec::new();
    sink.export_after(after, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| match crate::parse_line(l.as_bytes()) {
            Ok(crate::Line::Record(r)) => Some(r.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.first().is_some_and(|s| *s <= after + 1));
    assert_eq!(seqs.last(), Some(&head));
}

/// A durable log continues the same chain after close and reopen.
pub async fn reopen_continues_the_chain(h: &impl SinkHarness) {
    if !h.durable() {
        return;
    }
    let sink = h.open().await;
    for i in 0..10 {
        sink.append(entry("frank", "wrap", Outcome::Success, &format!("f{i}"), None))
            .await
            .unwrap();
    }
    let head = sink.head().await.unwrap();
    sink.close().await.unwrap();
    drop(sink);
    let sink = h.open().await;
    assert_eq!(sink.head().await.unwrap(), head);
    let next =
        sink.append(entry("frank", "wrap", Outcome::Success, "f-after", None)).await.unwrap();
    assert_eq!(next.seq, head.seq + 1);
    assert_eq!(next.prev_hash, head.hash);
    sink.checkpoint().await.unwrap();
    assert_eq!(verify(sink.as_ref()).await.0, head.seq + 1);
}

/// After `close`, appends are refused as unavailable.
pub async fn closed_sinks_refuse_appends(h: &impl SinkHarness) {
    let sink = h.open().await;
    sink.append(entry("gina", "sign", Outcome::Success, "g1", None)).await.unwrap();
    sink.close().await.unwrap();
    let refused = sink.append(entry("gina", "sign", Outcome::Success, "g2", None)).await;
    assert!(matches!(refused, Err(crate::Error::Unavailable(_))), "{refused:?}");
}

/// Another log's lines imported into an empty log: the export is those lines, the head is
/// theirs, appends continue their chain, and a second import is refused.
pub async fn import_continues_another_log(h: &impl SinkHarness) {
    let (provider, keys) = keys();
    let source = MemoryAuditSink::new(provider, keys);
    for i in 0..25 {
        source
            .append(entry("hana", "sign", Outcome::Success, &format!("h{i}"), None))
            .await
            .unwrap();
        if i == 10 {
            source.checkpoint().await.unwrap();
        }
    }
    source.checkpoint().await.unwrap();
    let mut bytes = Vec::new();
    source.export(&mut bytes).await.unwrap();
    let lines: Vec<String> =
        String::from_utf8(bytes.clone()).unwrap().lines().map(str::to_owned).collect();

    let sink = h.open().await;
    assert_eq!(sink.import(lines.clone()).await.unwrap(), lines.len() as u64);
    assert_eq!(sink.head().await.unwrap(), source.head().await.unwrap());
    assert_eq!(sink.latest_checkpoint().await.unwrap(), source.latest_checkpoint().await.unwrap());
    let mut copied = Vec::new();
    sink.export(&mut copied).await.unwrap();
    assert_eq!(copied, bytes);
    let next = sink.append(entry("hana", "sign", Outcome::Success, "after", None)).await.unwrap();
    assert_eq!(next.seq, 26);
    assert!(sink.import(lines).await.is_err(), "an import needs an empty log");
    sink.checkpoint().await.unwrap();
    assert_eq!(verify(sink.as_ref()).await.0, 26);
}

fn verifier() -> Verifier {
    let (provider, keys) = keys();
    Verifier::new(provider).hmac_key(&HMAC_KEY).public_key(keys.public_key_der()).unwrap()
}

/// Retention: the oldest records go up to a signed checkpoint that becomes the first line;
/// the log verifies from that anchor, appends continue, a gap after the anchor is refused, and
/// nothing newer than the cut or beyond `up_to` goes.
pub async fn prune_leaves_a_verifiable_anchor(h: &impl SinkHarness) {
    let sink = h.open().await;
    for i in 0..400u32 {
        let mut e = entry("ivan", "encrypt", Outcome::Success, &format!("p{i}"), Some("k"));
        e.message = Some("x".repeat(120));
        sink.append(e).await.unwrap();
        if i % 50 == 49 {
            sink.checkpoint().await.unwrap();
        }
    }
    let head = sink.head().await.unwrap().seq;
    let now = OffsetDateTime::now_utc();
    let later = now + time::Duration::days(1);
    assert_eq!(
        sink.prune(now - time::Duration::days(1), u64::MAX).await.unwrap(),
        None,
        "nothing is old enough"
    );
    assert_eq!(sink.prune(later, 0).await.unwrap(), None, "nothing may go past up_to");
    let up_to = head - 100;
    let pruned = sink.prune(later, up_to).await.unwrap().expect("an anchor before up_to");
    assert!(pruned.anchor.seq <= up_to && pruned.anchor.seq >= pruned.first_seq);
    assert_eq!(pruned.records, pruned.anchor.seq - pruned.first_seq + 1);
    assert!(pruned.lines >= pruned.records);

    let mut export = Vec::new();
    sink.export(&mut export).await.unwrap();
    let text = String::from_utf8(export).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        crate::parse_line(first.as_bytes()).unwrap(),
        crate::Line::Checkpoint(pruned.anchor.clone())
    );
    let report = verifier().verify_reader("pruned", text.as_bytes()).unwrap();
    assert_eq!(report.anchor_seq, Some(pruned.anchor.seq));
    assert_eq!((report.first_seq, report.last_seq), (pruned.anchor.seq + 1, head));

    // A gap after the anchor is refused; so is an anchor nobody can check.
    let gap: String =
        text.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| format!("{l}\n")).collect();
    let failure = verifier().verify_reader("gap", gap.as_bytes()).unwrap_err();
    assert!(
        matches!(
            failure.kind,
            crate::FailureKind::Sequence { .. } | crate::FailureKind::BrokenLink
        ),
        "{failure}"
    );
    let (provider, _) = keys();
    let unkeyed =
        Verifier::new(provider).hmac_key(&HMAC_KEY).verify_reader("no key", text.as_bytes());
    assert!(matches!(unkeyed.unwrap_err().kind, crate::FailureKind::UnverifiedAnchor));

    // Appends continue the chain, across a reopen for durable logs.
    sink.append(entry("ivan", "encrypt", Outcome::Success, "after", None)).await.unwrap();
    let sink = if h.durable() {
        sink.close().await.unwrap();
        drop(sink);
        h.open().await
    } else {
        sink
    };
    assert_eq!(sink.head().await.unwrap().seq, head + 1);
    let next =
        sink.append(entry("ivan", "encrypt", Outcome::Success, "reopened", None)).await.unwrap();
    assert_eq!(next.seq, head + 2);
    sink.checkpoint().await.unwrap();
    let mut export = Vec::new();
    sink.export(&mut export).await.unwrap();
    let report = verifier().verify_reader("continued", export.as_slice()).unwrap();
    assert_eq!(report.last_seq, head + 2);
}

/// Two sinks on one log (where the backend allows it) append into one chain: sequence
/// numbers never repeat, every record links to the one before, and the log verifies.
pub async fn two_sinks_on_one_log_keep_one_chain(h: &impl SinkHarness) {
    let first = h.open().await;
    let Some(second) = h.second().await else { return };
    let mut tasks = Vec::new();
    for (n, sink) in [first.clone(), second.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40 {
                let request = format!("replica-{n}-{i}");
                seqs.push(
                    sink.append(entry("jo", "sign", Outcome::Success, &request, None))
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 80, "every append has its own sequence number");
    first.checkpoint().await.unwrap();
    for sink in [&first, &second] {
        assert_eq!(verify(sink.as_ref()).await.0, 80);
    }
}
