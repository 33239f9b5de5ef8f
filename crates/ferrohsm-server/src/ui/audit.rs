//! The audit pages (filtered records, search by correlation id, the latest checkpoint, a full
//! verification, export) and the health page (components and the counters operators watch).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use ferrohsm_api::{AuditQuery, Outcome};
use ferrohsm_core::Operation;
use maud::{Markup, html};

use super::layout::{self, Section};
use super::{Posted, Signed, UiError, html_response, list_link, notice_of, query_pairs, redirect};
use crate::app::{AppState, off_runtime};
use crate::convert;

/// Records per page.
const PAGE: u32 = 100;

/// The filters of the records page, as the query string carries them.
#[derive(Debug, Default)]
struct Filters {
    actor: String,
    action: String,
    key_id: String,
    outcome: String,
    request_id: String,
    since: String,
    until: String,
    cursor: Option<String>,
}

impl Filters {
    fn parse(uri: &Uri) -> Result<Filters, UiError> {
        let mut f = Filters::default();
        for (name, value) in query_pairs(uri)? {
            let value = value.trim().to_owned();
            match name.as_str() {
                "actor" => f.actor = value,
                "action" => f.action = value,
                "key_id" => f.key_id = value,
                "outcome" => f.outcome = value,
                "request_id" => f.request_id = value,
                "since" => f.since = value,
                "until" => f.until = value,
                "cursor" if !value.is_empty() => f.cursor = Some(value),
                "cursor" | "notice" => {}
                _ => {
                    return Err(UiError::invalid(
                        "the address names a filter this page does not have",
                    ));
                }
            }
        }
        Ok(f)
    }

    fn fields(&self) -> [(&'static str, &String); 7] {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("key_id", &self.key_id),
            ("outcome", &self.outcome),
            ("request_id", &self.request_id),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The REST query these filters ask for (validated by the same conversion).
    fn query(&self) -> Result<AuditQuery, UiError> {
        let some = |v: &String| (!v.is_empty()).then(|| v.clone());
        Ok(AuditQuery {
            limit: Some(PAGE),
            cursor: self.cursor.clone(),
            actor: some(&self.actor),
            action: some(&self.action),
            key_id: some(&self.key_id),
            outcome: (!self.outcome.is_empty()).then(|| Outcome::from_wire(&self.outcome)),
            request_id: some(&self.request_id),
            since: some(&self.since),
            until: some(&self.until),
        })
    }

    fn link(&self, cursor: Option<&str>) -> String {
        list_link("/ui/audit", &self.fields(), cursor)
    }
}

/// `GET /ui/audit`
pub(crate) async fn records(
    State(s): State<AppState>,
    who: Signed,
    uri: Uri,
) -> Result<Response, UiError> {
    let filters = Filters::parse(&uri)?;
    let query = convert::audit_query(filters.query()?)?;
    let ctx = who.ctx.clone();
    let page = off_runtime(s.hsm(), async move |hsm| hsm.audit_records(&ctx, query).await).await?;
    let page = convert::audit_page(page);
    let checkpoint = s.hsm().latest_checkpoint(&who.ctx).await?.map(convert::checkpoint);
    let notice = notice_of(&uri);
    let body = html! {
        section.checkpoint aria-labelledby="integrity" {
            h2 #integrity { "Integrity" }
            @if let Some(c) = &checkpoint {
                p { "Latest signed checkpoint: record " strong { (c.seq) } " at " (c.ts) ", hash " code.hash { (short(&c.hash)) } "." }
            } @else {
                p.muted { "No signed checkpoint yet." }
            }
            p.buttons {
                a.button href="/ui/audit/verify" { "Verify the whole log" }
                a.button.secondary href="/ui/audit/export" download="ferrohsm-audit.ndjson" { "Export (NDJSON)" }
                @if who.may(Operation::CheckpointAudit) {
                    (layout::button_form(&who, "/ui/audit/checkpoint", "Write a checkpoint now", &[]))
                }
            }
        }
        form.filters method="get" action="/ui/audit" role="search" aria-label="Filter audit records" {
            label { "Correlation id" input type="search" name="request_id" value=(filters.request_id) placeholder="X-Request-Id of a run"; }
            label { "Actor" input type="text" name="actor" value=(filters.actor); }
            label { "Action" input type="text" name="action" value=(filters.action) placeholder="encrypt, create_key, …"; }
            label { "Key id" input type="text" name="key_id" value=(filters.key_id); }
            label { "Outcome" select name="outcome" {
                option value="" selected[filters.outcome.is_empty()] { "any" }
                @for o in Outcome::ALL {
                    option value=(o.as_str()) selected[filters.outcome == o.as_str()] { (o.as_str()) }
                }
            } }
            label { "Since (RFC 3339)" input type="text" name="since" value=(filters.since) placeholder="2026-12-01T00:00:00Z"; }
            label { "Until (RFC 3339)" input type="text" name="until" value=(filters.until); }
            button type="submit" { "Search" }
            a.button.secondary href="/ui/audit" { "Clear" }
        }
        @if page.records.is_empty() {
            p.muted { "No records match." }
        } @else {
            p.count { (page.records.len()) " records" @if page.next_cursor.is_some() { " on this page" } }
            div.table-wrap {
                table.audit {
                    thead { tr {
                        th scope="col" { "Seq" } th scope="col" { "Time" } th scope="col" { "Actor" }
                        th scope="col" { "Action" } th scope="col" { "Key" } th scope="col" { "Outcome" }
                        th scope="col" { "Correlation id" } th scope="col" { "Message" }
                    } }
                    tbody {
                        @for r in &page.records {
                            tr {
                                th scope="row" { (r.seq) }
                                td { time datetime=(r.ts) { (r.ts) } }
                                td { (r.actor) }
                                td { (r.action) }
                                td { @if let Some(k) = &r.key_id { a href=(format!("/ui/keys/{k}")) { code { (short(k)) } } @if let Some(v) = r.key_version { " v" (v) } } }
                                td { span class=(format!("badge outcome-{}", r.outcome.as_str())) { (r.outcome.as_str()) } }
                                td { code { (r.request_id) } }
                                td { (r.message.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if filters.cursor.is_some() { a href=(filters.link(None)) { "First page" } }
            @if let Some(next) = &page.next_cursor { a rel="next" href=(filters.link(Some(next))) { "Next page" } }
        }
    };
    Ok(html_response(StatusCode::OK, layout::page("Audit log", Section::Audit, &who, notice, body)))
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// `GET /ui/audit/verify`: the chain, every HMAC and every checkpoint signature, as
/// `GET /v1/audit/verify` checks them.
pub(crate) async fn verify(State(s): State<AppState>, who: Signed) -> Result<Response, UiError> {
    let ctx = who.ctx.clone();
    let report = off_runtime(s.hsm(), async move |hsm| hsm.verify_audit(&ctx).await).await?;
    let report = convert::audit_verification(report);
    let checkpoint = s.hsm().latest_checkpoint(&who.ctx).await?.map(convert::checkpoint);
    let body = html! {
        @if report.valid {
            p.verdict.ok role="status" { "Verified: the log is intact." }
        } @else {
            p.verdict.bad role="alert" { "Verification failed: " (report.failure.as_deref().unwrap_or("the log does not verify")) }
        }
        dl.facts {
            dt { "Records checked" } dd { (report.records) }
            dt { "Checkpoint signatures checked" } dd { (report.signatures_checked) }
            @if let (Some(first), Some(last)) = (report.first_seq, report.last_seq) {
                dt { "Sequence numbers" } dd { (first) " to " (last) }
            }
            @if report.partial {
                dt { "Scope" } dd { "From the oldest retained record (older records were removed by retention)" }
            }
            dt { "Latest checkpoint" }
            dd {
                @if let Some(c) = &checkpoint { "record " (c.seq) " at " (c.ts) ", hash " code.hash { (short(&c.hash)) } }
                @else { "none yet" }
            }
        }
        p { "Auditors can check the same offline: export the log and run " code { "ferrohsm audit verify" } "." }
        p { a href="/ui/audit" { "Back to the records" } }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page("Audit verification", Section::Audit, &who, None, body),
    ))
}

/// `GET /ui/audit/export`: the REST export, as a download.
pub(crate) async fn export(State(s): State<AppState>, who: Signed) -> Result<Response, UiError> {
    let mut response = crate::app::export_response(&s, who.ctx).await?;
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"ferrohsm-audit.ndjson\""),
    );
    Ok(response)
}

/// `POST /ui/audit/checkpoint`
pub(crate) async fn checkpoint(
    State(s): State<AppState>,
    posted: Posted,
) -> Result<Response, UiError> {
    s.hsm().checkpoint_audit(&posted.who.ctx).await?;
    Ok(redirect("/ui/audit?notice=checkpoint"))
}

/// `GET /ui/health`
pub(crate) async fn health(State(s): State<AppState>, who: Signed) -> Result<Response, UiError> {
    let health = crate::app::health_report(&s).await;
    let hsm = s.hsm();
    let (hits, misses) = hsm.cache_stats();
    let (written, failed) = hsm.audit_stats();
    let counters = s.counters();
    let keys = hsm.key_counts().await.unwrap_or_default();
    let approvals = hsm.approval_counts().await.unwrap_or_default();
    let mut components = vec![
        ("store", &health.store),
        ("audit log", &health.audit),
        ("seal", &health.seal),
        ("policy", &health.policy),
    ];
    if let Some(k) = &health.keyset {
        components.push(("token keyset", k));
    }
    if let Some(j) = &health.jobs {
        components.push(("scheduled jobs", j));
    }
    let body = html! {
        p.verdict.(if health.status == "ok" { "ok" } else { "bad" }) role="status" {
            "Overall: " (health.status) " (version " (health.version) ")"
        }
        section aria-labelledby="components" {
            h2 #components { "Components" }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Component" } th scope="col" { "Status" } th scope="col" { "Detail" } } }
                tbody {
                    @for (name, c) in &components {
                        tr { th scope="row" { (name) } td { span class=(format!("badge health-{}", c.status)) { (c.status) } } td { (c.detail) } }
                    }
                }
            } }
        }
        section aria-labelledby="counters" {
            h2 #counters { "Counters since start" }
            dl.facts {
                dt { "Requests refused by rate limits" } dd { (counters.rate_limited()) }
                dt { "Authentication failures" } dd { (counters.auth_failures()) }
                dt { "Key cache hits / misses" } dd { (hits) " / " (misses) (hit_rate(hits, misses)) }
                dt { "Audit records written" } dd { (written) }
                dt { "Audit write failures" } dd { (failed) }
                dt { "Highest AES-GCM nonce budget used" } dd { (format!("{:.6} %", hsm.nonce_budget_used() * 100.0)) }
                dt { "Damaged store records" } dd { (hsm.damaged_records().len()) }
                dt { "Dashboard sessions" } dd { (s.ui().sessions.len()) }
                dt { "Content-Security-Policy reports" } dd { (s.ui().csp_reports()) }
            }
        }
        section aria-labelledby="inventory" {
            h2 #inventory { "Keys and approvals" }
            dl.facts {
                @for (state, n) in &keys { dt { "Keys " (state.to_string()) } dd { (n) } }
                @for (state, n) in &approvals { dt { "Approvals " (state.as_str()) } dd { (n) } }
            }
        }
        p.hint { "The same figures are exported for Prometheus at " code { "/metrics" } "." }
    };
    Ok(html_response(StatusCode::OK, layout::page("Health", Section::Health, &who, None, body)))
}

fn hit_rate(hits: u64, misses: u64) -> Markup {
    let total = hits + misses;
    html! {
        @if total > 0 { " (" (format!("{:.1}", hits as f64 * 100.0 / total as f64)) " % hits)" }
    }
}
