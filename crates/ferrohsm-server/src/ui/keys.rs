//! The keys pages: the filtered, paged list; one key with its versions and the lifecycle
//! actions the caller's role allows; the public key download.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ferrohsm_api::{Algorithm, KeyInfo, KeyState, RevocationReason};
use ferrohsm_core::{KeyRef, ListQuery, Operation};
use maud::{Markup, html};

use super::layout::{self, Section, button_form};
use super::{
    Posted, Signed, UiError, html_response, list_link, notice_of, query_pairs, redirect, when,
};
use crate::app::AppState;
use crate::convert;

/// Keys per page.
const PAGE: u32 = 50;

/// The list's filters, as the query string carries them.
#[derive(Debug, Default)]
struct Filters {
    name_prefix: String,
    tag: String,
    state: String,
    algorithm: String,
    cursor: Option<String>,
}

impl Filters {
    fn parse(uri: &Uri) -> Result<Filters, UiError> {
        let mut f = Filters::default();
        for (name, value) in query_pairs(uri)? {
            let value = value.trim().to_owned();
            match name.as_str() {
                "name_prefix" => f.name_prefix = value,
                "tag" => f.tag = value,
                "state" => f.state = value,
                "algorithm" => f.algorithm = value,
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

    /// The core query these filters ask for.
    fn query(&self) -> Result<ListQuery, UiError> {
        let mut query = ListQuery { limit: PAGE as usize, ..ListQuery::default() };
        if !self.name_prefix.is_empty() {
            if self.name_prefix.chars().count() > 128 {
                return Err(UiError::invalid("a name prefix has at most 128 characters"));
            }
            query.name_prefix = Some(self.name_prefix.clone());
        }
        for tag in self.tag.split_whitespace() {
            let (k, v) = tag
                .split_once(':')
                .or_else(|| tag.split_once('='))
                .ok_or_else(|| UiError::invalid("write a tag filter as key:value"))?;
            query.tags.push((k.to_owned(), v.to_owned()));
        }
        if !self.state.is_empty() {
            query.state = Some(convert::key_state(KeyState::from_wire(&self.state))?);
        }
        if !self.algorithm.is_empty() {
            query.algorithm = Some(convert::algorithm(Algorithm::from_wire(&self.algorithm))?);
        }
        if let Some(cursor) = &self.cursor {
            query.cursor =
                Some(cursor.parse().map_err(|_| UiError::invalid("the page cursor is not valid"))?);
        }
        Ok(query)
    }

    /// The address of this page of the list with these filters.
    fn link(&self, cursor: Option<&str>) -> String {
        let fields = [
            ("name_prefix", &self.name_prefix),
            ("tag", &self.tag),
            ("state", &self.state),
            ("algorithm", &self.algorithm),
        ];
        list_link("/ui/keys", &fields, cursor)
    }
}

/// `GET /ui/keys`
pub(crate) async fn list(
    State(s): State<AppState>,
    who: Signed,
    uri: Uri,
) -> Result<Response, UiError> {
    let filters = Filters::parse(&uri)?;
    let list = convert::key_list(s.hsm().list_keys(&who.ctx, &filters.query()?).await?);
    let body = html! {
        form.filters method="get" action="/ui/keys" role="search" aria-label="Filter keys" {
            label { "Name starts with" input type="text" name="name_prefix" value=(filters.name_prefix) maxlength="128"; }
            label { "Tag (key:value)" input type="text" name="tag" value=(filters.tag) placeholder="team:payments"; }
            label { "State" select name="state" {
                option value="" selected[filters.state.is_empty()] { "any" }
                @for state in KeyState::ALL {
                    option value=(state.as_str()) selected[filters.state == state.as_str()] { (state.as_str()) }
                }
            } }
            label { "Algorithm" select name="algorithm" {
                option value="" selected[filters.algorithm.is_empty()] { "any" }
                @for alg in Algorithm::ALL {
                    option value=(alg.as_str()) selected[filters.algorithm == alg.as_str()] { (alg.as_str()) }
                }
            } }
            button type="submit" { "Filter" }
            a.button.secondary href="/ui/keys" { "Clear" }
        }
        @if list.keys.is_empty() {
            p.muted { "No keys match." }
        } @else {
            div.table-wrap {
                table.keys {
                    caption.visually-hidden { "Keys, oldest first" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Algorithm" } th scope="col" { "State" } th scope="col" { "Version" } th scope="col" { "Tags" } th scope="col" { "Created" } } }
                    tbody {
                        @for key in &list.keys {
                            tr {
                                th scope="row" {
                                    a href=(format!("/ui/keys/{}", key.id)) { (display_name(key)) }
                                    br; code.id { (key.id) }
                                }
                                td { (key.algorithm) }
                                td { (state_badge(key.state)) }
                                td { (key.current_version) }
                                td { (layout::tags(&key.tags)) }
                                td { (when(key.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if filters.cursor.is_some() {
                a href=(filters.link(None)) { "First page" }
            }
            @if let Some(next) = &list.next_cursor {
                a rel="next" href=(filters.link(Some(next))) { "Next page" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, layout::page("Keys", Section::Keys, &who, None, body)))
}

fn display_name(key: &KeyInfo) -> String {
    key.name.clone().unwrap_or_else(|| "(unnamed)".to_owned())
}

pub(crate) fn state_badge(state: KeyState) -> Markup {
    html! { span class=(format!("badge state-{}", state.as_str())) { (state.as_str()) } }
}

fn key_ref(key: &str) -> Result<KeyRef, UiError> {
    key.parse::<KeyRef>().map_err(|e| UiError::from(crate::error::ApiError::from(e)))
}

/// `GET /ui/keys/{key}`
pub(crate) async fn detail(
    State(s): State<AppState>,
    who: Signed,
    Path(key): Path<String>,
    uri: Uri,
) -> Result<Response, UiError> {
    let key = convert::key_info(s.hsm().describe_key(&who.ctx, &key_ref(&key)?).await?);
    let asymmetric = key.algorithm != Algorithm::Aes256Gcm;
    let body = html! {
        section aria-labelledby="facts" {
            h2 #facts { "Key" }
            dl.facts {
                dt { "Id" } dd { code { (key.id) } }
                dt { "Name" } dd { (display_name(&key)) }
                @if !key.description.is_empty() { dt { "Description" } dd { (key.description) } }
                dt { "Algorithm" } dd { (key.algorithm) }
                dt { "Custody" } dd { (key.custody) }
                dt { "State" } dd { (state_badge(key.state)) }
                dt { "Usages" } dd { (key.usages.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")) }
                dt { "Tags" } dd { (layout::tags(&key.tags)) }
                dt { "Current version" } dd { (key.current_version) }
                dt { "Created" } dd { (when(key.created_at)) " by " (key.created_by) }
                dt { "Updated" } dd { (when(key.updated_at)) }
                @if let Some(r) = &key.revocation {
                    dt { "Revoked" } dd { (when(r.at)) " — " (r.reason) @if let Some(c) = &r.comment { " — " (c) } }
                }
                @if let Some(t) = key.destroy_after { dt { "Destroyed after" } dd { (when(t)) } }
                @if let Some(t) = key.destroyed_at { dt { "Destroyed" } dd { (when(t)) } }
            }
            @if asymmetric && key.state != KeyState::Destroyed && who.may(Operation::ExportPublicKey) {
                p { a.button.secondary href=(format!("/ui/keys/{}/public.pem", key.id)) download { "Download the public key (PEM)" } }
            }
        }
        section aria-labelledby="versions" {
            h2 #versions { "Versions" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Version" } th scope="col" { "State" } th scope="col" { "Created" } th scope="col" { "Encryptions" } } }
                    tbody {
                        @for v in key.versions.iter().rev() {
                            tr {
                                th scope="row" { (v.version) @if v.version == key.current_version { " (current)" } }
                                td { (v.state) }
                                td { (when(v.created_at)) }
                                td { (v.encryptions) }
                            }
                        }
                    }
                }
            }
        }
        (actions(&who, &key))
    };
    let title = format!("Key {}", display_name(&key));
    let page = layout::page(&title, Section::Keys, &who, notice_of(&uri), body);
    Ok(html_response(StatusCode::OK, page))
}

/// The lifecycle actions the caller's role allows and the key's state permits.
fn actions(who: &Signed, key: &KeyInfo) -> Markup {
    let base = format!("/ui/keys/{}", key.id);
    let active = key.state == KeyState::Active;
    let revocable = active
        || (key.state == KeyState::Revoked
            && key.revocation.as_ref().is_some_and(|r| r.reason != RevocationReason::Compromised));
    let destroyable = active || key.state == KeyState::Revoked;
    let any = (active && who.may(Operation::RotateKey))
        || (active && key.versions.len() > 1 && who.may(Operation::RollbackKey))
        || (revocable && who.may(Operation::RevokeKey))
        || (destroyable && who.may(Operation::ScheduleDestruction))
        || (key.state == KeyState::PendingDestruction && who.may(Operation::CancelDestruction));
    html! {
        @if any {
            section.actions aria-labelledby="actions" {
                h2 #actions { "Actions" }
                p.hint { "Policy may require approval first: you will then see the approval request to share." }
                @if active && who.may(Operation::RotateKey) {
                    div.action {
                        h3 { "Rotate" }
                        p { "Add a version and make it current. Older versions still decrypt and verify." }
                        (button_form(who, &format!("{base}/rotate"), "Rotate", &[]))
                    }
                }
                @if active && key.versions.len() > 1 && who.may(Operation::RollbackKey) {
                    div.action {
                        h3 { "Roll back" }
                        form.inline method="post" action=(format!("{base}/rollback")) {
                            input type="hidden" name="_csrf" value=(who.csrf());
                            label { "Make version "
                                select name="version" {
                                    @for v in key.versions.iter().rev().filter(|v| v.version != key.current_version) {
                                        option value=(v.version) { (v.version) }
                                    }
                                }
                                " current"
                            }
                            button type="submit" { "Roll back" }
                        }
                    }
                }
                @if revocable && who.may(Operation::RevokeKey) {
                    div.action {
                        h3 { "Revoke" }
                        form.stack method="post" action=(format!("{base}/revoke")) {
                            input type="hidden" name="_csrf" value=(who.csrf());
                            label for="reason" { "Reason" }
                            select #reason name="reason" {
                                // A revoked key may only be escalated to compromised.
                                @for r in RevocationReason::ALL.iter().filter(|r| active || **r == RevocationReason::Compromised) {
                                    option value=(r.as_str()) { (r.as_str()) }
                                }
                            }
                            label for="revoke-comment" { "Comment (optional)" }
                            input #revoke-comment type="text" name="comment" maxlength="1024";
                            label.check { input type="checkbox" name="confirm" value="yes" required; " I understand that a revoked key no longer encrypts or signs" }
                            button.danger type="submit" { "Revoke" }
                        }
                    }
                }
                @if destroyable && who.may(Operation::ScheduleDestruction) {
                    div.action {
                        h3 { "Schedule destruction" }
                        form.stack method="post" action=(format!("{base}/destroy")) {
                            input type="hidden" name="_csrf" value=(who.csrf());
                            label for="grace" { "Grace period in days (empty: the policy's or the server's default)" }
                            input #grace type="number" name="grace_days" min="0" max="36500" inputmode="numeric";
                            label.check { input type="checkbox" name="confirm" value="yes" required; " I understand that the key material is wiped when the grace period ends" }
                            button.danger type="submit" { "Schedule destruction" }
                        }
                    }
                }
                @if key.state == KeyState::PendingDestruction && who.may(Operation::CancelDestruction) {
                    div.action {
                        h3 { "Cancel destruction" }
                        (button_form(who, &format!("{base}/cancel-destroy"), "Cancel destruction", &[]))
                    }
                }
            }
        }
    }
}

/// `GET /ui/keys/{key}/public.pem`
pub(crate) async fn public_pem(
    State(s): State<AppState>,
    who: Signed,
    Path(key): Path<String>,
) -> Result<Response, UiError> {
    let public = convert::public_key(s.hsm().public_key(&who.ctx, &key_ref(&key)?, None).await?);
    let file = format!("attachment; filename=\"{}-v{}.pem\"", public.key_id, public.key_version);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        public.pem,
    )
        .into_response())
}

/// A lifecycle action, as its REST route runs it (`approval` names an approved request being
/// executed).
pub(crate) enum Action {
    Rotate,
    Rollback(u32),
    Revoke(ferrohsm_core::RevocationReason, Option<String>),
    Destroy(Option<time::Duration>),
    CancelDestroy,
}

impl Action {
    /// Runs the action; the page to go to next.
    pub(crate) async fn run(
        self,
        s: &AppState,
        ctx: &ferrohsm_core::RequestContext,
        key: &KeyRef,
    ) -> Result<Response, UiError> {
        let hsm = s.hsm();
        let (result, notice) = match self {
            Action::Rotate => (hsm.rotate_key(ctx, key).await, "rotated"),
            Action::Rollback(v) => (hsm.rollback_key(ctx, key, v).await, "rolled-back"),
            Action::Revoke(reason, comment) => {
                (hsm.revoke_key(ctx, key, reason, comment).await, "revoked")
            }
            Action::Destroy(grace) => {
                (hsm.schedule_destruction(ctx, key, grace).await, "destruction-scheduled")
            }
            Action::CancelDestroy => {
                (hsm.cancel_destruction(ctx, key).await, "destruction-cancelled")
            }
        };
        match result {
            Ok(info) => Ok(redirect(&format!("/ui/keys/{}?notice={notice}", info.id))),
            Err(ferrohsm_core::Error::ApprovalRequired(approval)) => {
                Ok(redirect(&format!("/ui/approvals/{}?notice=approval-required", approval.id)))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `POST /ui/keys/{key}/{action}`
pub(crate) async fn act(
    State(s): State<AppState>,
    Path((key, action)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, UiError> {
    let form = &posted.form;
    let action = match action.as_str() {
        "rotate" => Action::Rotate,
        "rollback" => Action::Rollback(
            form.text("version")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| UiError::invalid("choose the version to roll back to"))?,
        ),
        "revoke" => {
            confirmed(form)?;
            let reason = form.text("reason").unwrap_or_else(|| "unspecified".to_owned());
            let reason = convert::revocation_reason(RevocationReason::from_wire(&reason))?;
            Action::Revoke(reason, form.text("comment"))
        }
        "destroy" => {
            confirmed(form)?;
            let grace = match form.text("grace_days") {
                None => None,
                Some(days) => Some(
                    days.parse::<i64>()
                        .ok()
                        .filter(|d| (0..=36_500).contains(d))
                        .map(time::Duration::days)
                        .ok_or_else(|| {
                            UiError::invalid(
                                "the grace period is a whole number of days, 0 to 36500",
                            )
                        })?,
                ),
            };
            Action::Destroy(grace)
        }
        "cancel-destroy" => Action::CancelDestroy,
        _ => {
            return Err(UiError::page(
                StatusCode::NOT_FOUND,
                "not_found",
                "There is no such action.",
            ));
        }
    };
    action.run(&s, &posted.who.ctx, &key_ref(&key)?).await
}

fn confirmed(form: &super::FormData) -> Result<(), UiError> {
    if form.get("confirm") == Some("yes") {
        Ok(())
    } else {
        Err(UiError::invalid("tick the confirmation box to go ahead"))
    }
}
