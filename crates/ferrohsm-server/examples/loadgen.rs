//! A loopback load generator for `cargo xtask bench`: N connections (HTTP/1.1 over TLS 1.3, one
//! per task) each send one request at a time for a fixed duration; it prints one JSON line with
//! ops/s and latency percentiles. Requests are prepared bytes on raw TLS streams, so the client
//! takes as little of the shared cores as possible.
//!
//! `loadgen URL[,URL…] CA_FILE TOKEN SCENARIO CONNECTIONS SECONDS`, where SCENARIO is
//! `encrypt-1k`, `sign-p256`, `sign-rsa2048` or `create-aes`. It creates the key it uses first
//! (through the first URL). With several URLs (replicas of one cluster), the connections are
//! spread over them in turn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark tool")]

use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, ca, token, scenario, connections, seconds] = args.as_slice() else {
        panic!("usage: loadgen URL[,URL…] CA_FILE TOKEN SCENARIO CONNECTIONS SECONDS");
    };
    let urls: Vec<&str> = url.split(',').collect();
    let url = urls[0];
    let connections: usize = connections.parse().unwrap();
    let duration = Duration::from_secs(seconds.parse().unwrap());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let client = || {
        reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    };
    let (algorithm, path, body) = match scenario.as_str() {
        "encrypt-1k" => (
            "aes-256-gcm",
            "encrypt",
            json!({"plaintext": ferrohsm_core::b64::encode(&[0x5a; 1024])}),
        ),
        "sign-p256" => {
            ("ec-p256", "sign", json!({"message": ferrohsm_core::b64::encode(b"build artefact")}))
        }
        "sign-rsa2048" => {
            ("rsa-2048", "sign", json!({"message": ferrohsm_core::b64::encode(b"build artefact")}))
        }
        // Durable key creation: every request writes a new key and its audit record.
        "create-aes" => ("aes-256-gcm", "", json!({"algorithm": "aes-256-gcm"})),
        other => panic!("unknown scenario {other}"),
    };
    let setup = client();
    let created: Value = setup
        .post(format!("{url}/v1/keys"))
        .bearer_auth(token)
        .json(&json!({"algorithm": algorithm}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id =
        created["id"].as_str().unwrap_or_else(|| panic!("create failed: {created}")).to_owned();
    let body = serde_json::to_vec(&body).unwrap();

    // Each task owns one TLS connection and sends prepared HTTP/1.1 requests on it, one at a
    // time: the cheapest client possible, so the machine's cores go to the server.
    let ports: Vec<u16> = urls
        .iter()
        .map(|u| u.rsplit(':').next().unwrap().trim_end_matches('/').parse::<u16>().unwrap())
        .collect();
    let target =
        if path.is_empty() { "/v1/keys".to_owned() } else { format!("/v1/keys/{id}/{path}") };
    let request = format!(
        "POST {target} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut request = request.into_bytes();
    request.extend_from_slice(&body);
    let request = std::sync::Arc::new(request);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&std::fs::read(&args[1]).unwrap())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let warmup = Duration::from_secs(1);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let port = ports[connection % ports.len()];
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            let start = Instant::now();
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut buf = Vec::with_capacity(8192);
            loop {
                let sent = Instant::now();
                if sent.duration_since(start) > warmup + duration {
                    break;
                }
                tls.write_all(&request).await.unwrap();
                let ok = read_response(&mut tls, &mut buf).await;
                if sent.duration_since(start) < warmup {
                    continue;
                }
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "{}",
        json!({
            "scenario": scenario,
            "connections": connections,
            "seconds": duration.as_secs(),
            "ops": all.len(),
            "ops_per_s": all.len() as f64 / duration.as_secs_f64(),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "errors": errors,
        })
    );
}

/// Reads one HTTP/1.1 response; true when its status is 2xx.
async fn read_response(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
) -> bool {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let ok = head.starts_with("http/1.1 2");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + length {
                let n = tls.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-response");
                buf.extend_from_slice(&chunk[..n]);
            }
            return ok;
        }
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}
