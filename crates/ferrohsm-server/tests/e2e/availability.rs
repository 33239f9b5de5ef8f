//! Issue 11, availability under attack: what an outsider can make the server keep must stay
//! bounded.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::harness::{Options, TestServer};

async fn metrics_text(server: &TestServer) -> String {
    let r = server.client().get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Sends `count` requests with invented methods and paths, without a token, over a few
/// keep-alive connections.
async fn invented(server: &TestServer, from: usize, count: usize) {
    let tasks: Vec<_> = (0..4)
        .map(|lane| {
            let client = server.client();
            let url = server.url.clone();
            tokio::spawn(async move {
                for i in (from + lane..from + count).step_by(4) {
                    let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
                    let path =
                        if i % 2 == 0 { format!("/healthz?{i}") } else { format!("/nope/{i}") };
                    let r = client.request(method, format!("{url}{path}")).send().await.unwrap();
                    assert!(r.status().is_client_error(), "{}", r.status());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn invented_methods_and_paths_do_not_grow_the_metrics() {
    let server = TestServer::start().await;
    invented(&server, 0, 10_000).await;
    let text = metrics_text(&server).await;
    // No invented method or path became a label, and the whole page stays small (the
    // recorder is shared by every test of this binary, so the bound has room for theirs).
    assert!(!text.contains("\"X1") && !text.contains("/nope/"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.len() < 64 * 1024, "metrics are {} bytes", text.len());
    println!("metrics after 10,000 invented methods and paths: {} bytes", text.len());
}

/// 20,000 bad-token requests from 8 loopback addresses: each address gets a few individual
/// records, the rest are counted into one aggregated record per address and interval, and the
/// counts add up to every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_floods_are_aggregated_in_the_audit_log() {
    const PER_SOURCE: usize = 2_500;
    let server = TestServer::start_with(Options {
        refusal_interval: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (2..10u8)
        .map(|last| {
            let ca = reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap();
            let client = reqwest::Client::builder()
                .tls_certs_only([ca])
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .build()
                .unwrap();
            let url = format!("{}/v1/keys", server.url);
            tokio::spawn(async move {
                let mut statuses = [0usize; 2];
                for _ in 0..PER_SOURCE {
                    let r = client.get(&url).bearer_auth("not.a.token").send().await.unwrap();
                    match r.status().as_u16() {
                        401 => statuses[0] += 1,
                        429 => statuses[1] += 1,
                        other => panic!("{other}"),
                    }
                }
                statuses
            })
        })
        .collect();
    let mut refused = [0usize; 2];
    for t in tasks {
        let s = t.await.unwrap();
        refused[0] += s[0];
        refused[1] += s[1];
    }
    let flood = started.elapsed();
    // Let the last interval's aggregated records be written.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let page = auditor.get("/v1/audit?action=authenticate&limit=1000").await;
    let records = page.body["records"].as_array().unwrap();
    let mut individual = 0u64;
    let mut aggregated = 0u64;
    let mut sources = std::collections::BTreeSet::new();
    for r in records {
        let message = r["message"].as_str().unwrap_or_default();
        sources.insert(r["source_ip"].as_str().unwrap_or_default().to_owned());
        if let Some(rest) = message.strip_prefix("aggregated: ") {
            aggregated += rest.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        } else {
            assert!(message.contains("malformed_token"), "{message}");
            individual += 1;
        }
    }
    assert_eq!(individual + aggregated, (8 * PER_SOURCE) as u64, "every refusal is counted");
    assert_eq!(sources.len(), 8, "{sources:?}");
    // Bounded: a burst of 32 plus one per 10 s per source, and one aggregated record per
    // source per interval.
    let intervals = flood.as_millis() as usize / 500 + 3;
    let bound = 8 * (32 + flood.as_secs() as usize / 10 + 1) + 8 * intervals;
    assert!(records.len() <= bound, "{} records (bound {bound})", records.len());
    println!(
        "{} refusals ({} answered 401, {} answered 429) in {flood:?} left {} audit records ({individual} individual)",
        8 * PER_SOURCE,
        refused[0],
        refused[1],
        records.len()
    );
}
