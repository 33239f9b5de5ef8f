//! A loopback load generator for `cargo xtask bench`: N connections (TLS 1.3, one per task)
//! each send one request at a time for a fixed duration; it prints one JSON line with ops/s,
//! latency percentiles and CPU time per request. Over HTTP/1.1 (the default) requests are
//! prepared bytes on raw TLS streams, so the client takes as little of the shared cores as
//! possible; `--http2` sends them with reqwest over HTTP/2 (negotiated by ALPN, checked).
//!
//! `loadgen URL[,URL…] CA_FILE TOKEN SCENARIO CONNECTIONS SECONDS [--http2] [--pids PID,…]`,
//! where SCENARIO is `encrypt-1k`, `sign-p256`, `sign-rsa2048` or `create-aes`. It creates the
//! key it uses first (through the first URL). With several URLs (replicas of one cluster), the
//! connections are spread over them in turn. With `--pids`, the CPU time (user + system, from
//! `/proc/PID/stat`) those server processes spend during the measured seconds, divided by the
//! requests answered in them, is reported as `server_cpu_us_per_op`; the generator's own is
//! `client_cpu_us_per_op`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a benchmark tool")]

use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let all_args: Vec<String> = std::env::args().skip(1).collect();
    let (args, options) = all_args.split_at(all_args.len().min(6));
    let [url, ca, token, scenario, connections, seconds] = args else {
        panic!(
            "usage: loadgen URL[,URL…] CA_FILE TOKEN SCENARIO CONNECTIONS SECONDS [--http2] [--pids PID,…]"
        );
    };
    let http2 = options.iter().any(|o| o == "--http2");
    let pids: Vec<u32> = options
        .iter()
        .skip_while(|o| *o != "--pids")
        .nth(1)
        .map(|list| list.split(',').map(|p| p.parse().unwrap()).collect())
        .unwrap_or_default();
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
    // CPU time of the servers and of this process over the measured seconds (after warm-up).
    let sampler = {
        let pids = pids.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let before = (
                pids.iter().map(|p| cpu_seconds(&p.to_string())).sum::<f64>(),
                cpu_seconds("self"),
            );
            tokio::time::sleep(duration).await;
            let after = (
                pids.iter().map(|p| cpu_seconds(&p.to_string())).sum::<f64>(),
                cpu_seconds("self"),
            );
            (after.0 - before.0, after.1 - before.1)
        })
    };
    let mut tasks = Vec::new();
    if http2 {
        for connection in 0..connections {
            let url = urls[connection % urls.len()].to_owned();
            let (target, token, body, ca) =
                (target.clone(), token.clone(), body.clone(), ca.clone());
            tasks.push(tokio::spawn(async move {
                // A client of its own per task: one HTTP/2 connection each.
                let client = reqwest::Client::builder()
                    .tls_certs_only([ca])
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let send = || {
                    client
                        .post(format!("{url}{target}"))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                };
                let first = send().await.unwrap();
                assert_eq!(
                    first.version(),
                    reqwest::Version::HTTP_2,
                    "the server did not speak HTTP/2"
                );
                let _ = first.bytes().await;
                let mut recorder = Recorder::new(warmup, duration);
                while let Some(sent) = recorder.next_send() {
                    let response = send().await.unwrap();
                    let ok = response.status().is_success();
                    let _ = response.bytes().await.unwrap();
                    recorder.record(sent, ok);
                }
                (recorder.latencies, recorder.errors)
            }));
        }
    }
    for connection in (0..connections).filter(|_| !http2) {
        let port = ports[connection % ports.len()];
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            let mut buf = Vec::with_capacity(8192);
            let mut recorder = Recorder::new(warmup, duration);
            while let Some(sent) = recorder.next_send() {
                tls.write_all(&request).await.unwrap();
                let ok = read_response(&mut tls, &mut buf).await;
                recorder.record(sent, ok);
            }
            (recorder.latencies, recorder.errors)
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
    let (server_cpu, client_cpu) = sampler.await.unwrap();
    let answered = all.len() as f64 + errors as f64;
    let per_op = |seconds: f64| if answered > 0.0 { seconds * 1e6 / answered } else { 0.0 };
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
            "http": if http2 { "2" } else { "1.1" },
            "server_cpu_us_per_op": if pids.is_empty() { Value::Null } else { json!(per_op(server_cpu)) },
            "client_cpu_us_per_op": per_op(client_cpu),
        })
    );
}

/// One connection's latencies (µs) and errors after the warm-up.
struct Recorder {
    start: Instant,
    warmup: Duration,
    end: Duration,
    latencies: Vec<u32>,
    errors: u64,
}

impl Recorder {
    fn new(warmup: Duration, duration: Duration) -> Recorder {
        let latencies = Vec::with_capacity(1 << 16);
        Recorder { start: Instant::now(), warmup, end: warmup + duration, latencies, errors: 0 }
    }

    /// The send time of the next request, or `None` when the run is over.
    fn next_send(&self) -> Option<Instant> {
        let now = Instant::now();
        (now.duration_since(self.start) <= self.end).then_some(now)
    }

    /// Counts a request sent at `sent`, unless it was sent during the warm-up.
    fn record(&mut self, sent: Instant, ok: bool) {
        if sent.duration_since(self.start) < self.warmup {
            return;
        }
        if ok {
            self.latencies.push(sent.elapsed().as_micros() as u32);
        } else {
            self.errors += 1;
        }
    }
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

/// User plus system CPU seconds of process `pid` (or `self`) so far, from `/proc/PID/stat`
/// (clock ticks of 1/100 s, the kernel's fixed USER_HZ).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which may itself hold spaces, start at "state".
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<u64>().unwrap();
    (ticks(11) + ticks(12)) as f64 / 100.0
}
