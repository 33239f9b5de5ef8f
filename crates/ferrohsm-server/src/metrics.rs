//! Prometheus metrics (SPEC §9): requests and latency per route, crypto operations,
//! authentication failures, rate limiting, key cache, audit writes, keys and approvals by state.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use ferrohsm_core::Hsm;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process-wide recorder (one per process: every server in it shares it).
#[derive(Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl Metrics {
    /// Installs the recorder on first use and returns a handle to it. If another recorder is
    /// already installed (an embedding program's), metrics go there and `/metrics` is empty.
    pub fn global() -> Metrics {
        static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            builder.install_recorder().ok()
        });
        Metrics { handle: handle.clone() }
    }

    /// Counts one answered request.
    pub fn request(&self, route: &str, method: &str, status: StatusCode, elapsed: Duration) {
        let route = route.to_owned();
        let method = method_label(method);
        let code = status.as_u16().to_string();
        metrics::counter!("ferrohsm_http_requests_total", "route" => route.clone(), "method" => method, "status" => code.clone()).increment(1);
        metrics::histogram!("ferrohsm_http_request_duration_seconds", "route" => route.clone(), "method" => method).record(elapsed.as_secs_f64());
        if let Some(op) = crypto_operation(&route) {
            let outcome = if status.is_success() { "success" } else { "error" };
            metrics::counter!("ferrohsm_crypto_operations_total", "operation" => op, "outcome" => outcome).increment(1);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            metrics::counter!("ferrohsm_rate_limited_total", "route" => route).increment(1);
        }
    }

    /// Counts a refused token (the reason is one of a fixed set).
    pub fn auth_failure(&self, reason: &'static str) {
        metrics::counter!("ferrohsm_auth_failures_total", "reason" => reason).increment(1);
    }

    /// The exposition text, with gauges read from the HSM now.
    pub async fn render(&self, hsm: &Hsm) -> String {
        if let Ok(counts) = hsm.key_counts().await {
            for (state, n) in counts {
                metrics::gauge!("ferrohsm_keys", "state" => state.to_string()).set(n as f64);
            }
        }
        if let Ok(counts) = hsm.approval_counts().await {
            for (state, n) in counts {
                metrics::gauge!("ferrohsm_approvals", "state" => state.as_str()).set(n as f64);
            }
        }
        let (hits, misses) = hsm.cache_stats();
        metrics::counter!("ferrohsm_key_cache_hits_total").absolute(hits);
        metrics::counter!("ferrohsm_key_cache_misses_total").absolute(misses);
        let (written, failed) = hsm.audit_stats();
        metrics::counter!("ferrohsm_audit_records_total").absolute(written);
        metrics::counter!("ferrohsm_audit_write_failures_total").absolute(failed);
        metrics::gauge!("ferrohsm_store_damaged_records").set(hsm.damaged_records().len() as f64);
        metrics::gauge!("ferrohsm_aes_gcm_nonce_budget_used_max").set(hsm.nonce_budget_used());
        let writable = if hsm.audit_failure().is_none() { 1.0 } else { 0.0 };
        metrics::gauge!("ferrohsm_audit_writable").set(writable);
        let policy_ok = if hsm.policy_error().is_none() { 1.0 } else { 0.0 };
        metrics::gauge!("ferrohsm_policy_file_ok").set(policy_ok);
        self.handle.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }
}

/// The operation a crypto route performs.
fn crypto_operation(route: &str) -> Option<&'static str> {
    let last = route.rsplit('/').next()?;
    ["encrypt", "decrypt", "sign", "verify", "wrap", "unwrap"]
        .into_iter()
        .find(|op| *op == last && route.starts_with("/v1/keys/"))
}

/// The method as a metric label: a standard method, else `other`, so invented methods sent
/// before authentication cannot grow the label set.
fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}
