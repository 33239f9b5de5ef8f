//! The approvals pages: the pending list, one request with exactly what it would run and its
//! votes, approve or deny with a comment, and (for the requester, once approved) running it.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use ferrohsm_api::{ApprovalInfo, ApprovalState, Operation as ApiOperation};
use ferrohsm_core::{KeyRef, Operation};
use maud::{Markup, html};

use super::keys::Action;
use super::layout::{self, Section};
use super::{Posted, Signed, UiError, html_response, notice_of, redirect, when};
use crate::app::AppState;
use crate::convert;

/// How many approvals the list reads (newest first).
const LIST: usize = 200;

fn id_of(id: &str) -> Result<uuid::Uuid, UiError> {
    uuid::Uuid::parse_str(id).map_err(|_| UiError::invalid("the approval id is not a UUID"))
}

fn state_badge(state: ApprovalState) -> Markup {
    html! { span class=(format!("badge approval-{}", state.as_str())) { (state.as_str()) } }
}

/// `GET /ui/approvals` (pending only unless `?all=1`).
pub(crate) async fn list(
    State(s): State<AppState>,
    who: Signed,
    uri: Uri,
) -> Result<Response, UiError> {
    let all = uri.query().is_some_and(|q| q.split('&').any(|p| p == "all=1"));
    let approvals: Vec<ApprovalInfo> =
        s.hsm().list_approvals(&who.ctx, LIST).await?.iter().map(convert::approval).collect();
    let shown: Vec<&ApprovalInfo> =
        approvals.iter().filter(|a| all || a.state == ApprovalState::Pending).collect();
    let body = html! {
        p {
            @if all {
                "Every request (the newest " (LIST) "). " a href="/ui/approvals" { "Show pending only" }
            } @else {
                "Requests waiting for approval. " a href="/ui/approvals?all=1" { "Show every request" }
            }
        }
        @if shown.is_empty() {
            p.muted { "Nothing to show." }
        } @else {
            div.table-wrap {
                table.approvals {
                    thead { tr { th scope="col" { "Request" } th scope="col" { "Requested by" } th scope="col" { "Approvals" } th scope="col" { "State" } th scope="col" { "Expires" } } }
                    tbody {
                        @for a in &shown {
                            tr {
                                th scope="row" {
                                    a href=(format!("/ui/approvals/{}", a.id)) { (a.operation) }
                                    @if !a.key_id.is_empty() { " on " code { (a.key_id) } }
                                }
                                td { (a.requester) }
                                td { (a.approvals) " of " (a.quorum) }
                                td { (state_badge(a.state)) }
                                td { (when(a.expires_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = layout::page("Approvals", Section::Approvals, &who, None, body);
    Ok(html_response(StatusCode::OK, page))
}

/// `GET /ui/approvals/{id}`
pub(crate) async fn detail(
    State(s): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, UiError> {
    let a = convert::approval(&s.hsm().describe_approval(&who.ctx, id_of(&id)?).await?);
    let mine = a.requester == who.ctx.actor;
    let voted = a.votes.iter().any(|v| v.actor == who.ctx.actor);
    let eligible =
        a.approver_roles.iter().any(|r| who.ctx.roles.iter().any(|mine| mine == r.as_str()))
            && (!a.require_certificate || who.ctx.certificate_bound);
    let can_vote = a.state == ApprovalState::Pending
        && !mine
        && !voted
        && eligible
        && who.may(Operation::Approve);
    let runnable = a.state == ApprovalState::Approved && mine && execution(&a).is_some();
    let base = format!("/ui/approvals/{}", a.id);
    let body = html! {
        section aria-labelledby="what" {
            h2 #what { "What would run" }
            p { "Approving authorizes exactly these parameters; the request cannot run with any other." }
            div.table-wrap {
                table.parameters {
                    thead { tr { th scope="col" { "Parameter" } th scope="col" { "Value" } } }
                    tbody {
                        @for p in &a.parameters {
                            tr { th scope="row" { code { (p.name) } } td { (p.value) } }
                        }
                    }
                }
            }
            @if !a.key_id.is_empty() {
                p { a href=(format!("/ui/keys/{}", a.key_id)) { "Open the key" } }
            }
        }
        section aria-labelledby="request" {
            h2 #request { "Request" }
            dl.facts {
                dt { "Id" } dd { code { (a.id) } }
                dt { "State" } dd { (state_badge(a.state)) }
                dt { "Requested by" } dd { (a.requester) @if a.requester_identity.len() > 1 { " (credential from " (a.requester_identity[1..].join(" → ")) ")" } }
                dt { "Policy" } dd { (a.policy) }
                dt { "Approvals" } dd { (a.approvals) " of " (a.quorum) }
                dt { "Who may approve" } dd { (a.approver_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) " — not the requester, once each" @if a.require_certificate { "; certificate-bound tokens only" } }
                dt { "Created" } dd { (when(a.created_at)) }
                dt { "Expires" } dd { (when(a.expires_at)) }
                @if let Some(t) = a.executed_at { dt { "Executed" } dd { (when(t)) } }
            }
        }
        section aria-labelledby="votes" {
            h2 #votes { "Votes" }
            @if a.votes.is_empty() {
                p.muted { "No votes yet." }
            } @else {
                div.table-wrap {
                    table.votes {
                        thead { tr { th scope="col" { "Approver" } th scope="col" { "Vote" } th scope="col" { "Comment" } th scope="col" { "When" } } }
                        tbody {
                            @for v in &a.votes {
                                tr {
                                    th scope="row" { (v.actor) }
                                    td { @if v.approve { "approve" } @else { "deny" } }
                                    td { (v.comment.as_deref().unwrap_or("")) }
                                    td { (when(v.at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if can_vote {
            section.actions aria-labelledby="vote" {
                h2 #vote { "Your vote" }
                form.stack method="post" action=(format!("{base}/approve")) {
                    input type="hidden" name="_csrf" value=(who.csrf());
                    label for="comment" { "Comment (optional, recorded with your vote)" }
                    textarea #comment name="comment" rows="2" maxlength="1024" {}
                    div.buttons {
                        button type="submit" { "Approve" }
                        button.danger type="submit" formaction=(format!("{base}/deny")) { "Deny" }
                    }
                }
            }
        } @else if a.state == ApprovalState::Pending && mine {
            p.hint { "You asked for this; other approvers must vote. Share this page's address with them." }
        }
        @if runnable {
            section.actions aria-labelledby="run" {
                h2 #run { "Run it" }
                p { "The quorum is reached. Run the approved request now (once)." }
                (layout::button_form(&who, &format!("{base}/execute"), &format!("Run {}", a.operation), &[]))
            }
        } @else if a.state == ApprovalState::Approved && mine {
            p.hint { "Approved: repeat the original request with the header " code { "X-Approval-Id: " (a.id) } "." }
        }
    };
    let title = format!("Approval: {}", a.operation);
    let page = layout::page(&title, Section::Approvals, &who, notice_of(&uri), body);
    Ok(html_response(StatusCode::OK, page))
}

/// The dashboard action an approved request stands for, from the exact parameters it binds
/// (only key lifecycle operations run from here; others are repeated by the client that asked).
fn execution(a: &ApprovalInfo) -> Option<Action> {
    let param = |name: &str| a.parameters.iter().find(|p| p.name == name).map(|p| p.value.as_str());
    match a.operation {
        ApiOperation::RotateKey => Some(Action::Rotate),
        ApiOperation::RollbackKey => param("version")?.parse().ok().map(Action::Rollback),
        ApiOperation::RevokeKey => {
            let reason = ferrohsm_api::RevocationReason::from_wire(param("reason")?);
            let reason = convert::revocation_reason(reason).ok()?;
            let comment = param("comment").filter(|c| *c != "(none)").map(str::to_owned);
            Some(Action::Revoke(reason, comment))
        }
        ApiOperation::ScheduleDestruction => {
            // `N (readable; origin)`: only a requested period was part of the request.
            let value = param("grace_seconds")?;
            let (seconds, rest) = value.split_once(' ')?;
            let requested = rest.ends_with("; requested)");
            let seconds: i64 = seconds.parse().ok()?;
            Some(Action::Destroy(requested.then(|| time::Duration::seconds(seconds))))
        }
        ApiOperation::CancelDestruction => Some(Action::CancelDestroy),
        _ => None,
    }
}

/// `POST /ui/approvals/{id}/{approve|deny|execute}`
pub(crate) async fn act(
    State(s): State<AppState>,
    Path((id, vote)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, UiError> {
    let id = id_of(&id)?;
    let ctx = &posted.who.ctx;
    let comment = posted.form.text("comment");
    match vote.as_str() {
        "approve" => {
            s.hsm().approve(ctx, id, comment).await?;
            Ok(redirect(&format!("/ui/approvals/{id}?notice=approved")))
        }
        "deny" => {
            s.hsm().deny(ctx, id, comment).await?;
            Ok(redirect(&format!("/ui/approvals/{id}?notice=denied")))
        }
        "execute" => {
            let a = convert::approval(&s.hsm().describe_approval(ctx, id).await?);
            let action = execution(&a).ok_or_else(|| {
                UiError::invalid("this request is run by repeating it with X-Approval-Id")
            })?;
            let key = a
                .key_id
                .parse::<KeyRef>()
                .map_err(|e| UiError::from(crate::error::ApiError::from(e)))?;
            let ctx = ferrohsm_core::RequestContext { approval_id: Some(id), ..ctx.clone() };
            action.run(&s, &ctx, &key).await
        }
        _ => Err(UiError::page(StatusCode::NOT_FOUND, "not_found", "There is no such action.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(operation: ApiOperation, params: &[(&str, &str)]) -> ApprovalInfo {
        ApprovalInfo {
            id: uuid::Uuid::nil(),
            operation,
            key_id: String::new(),
            requester: "op".into(),
            requester_identity: Vec::new(),
            parameters: params
                .iter()
                .map(|(n, v)| ferrohsm_api::ParameterInfo { name: (*n).into(), value: (*v).into() })
                .collect(),
            summary: String::new(),
            policy: "p".into(),
            quorum: 2,
            approvals: 2,
            approver_roles: Vec::new(),
            approver_issuers: Vec::new(),
            require_certificate: false,
            state: ApprovalState::Approved,
            votes: Vec::new(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            expires_at: time::OffsetDateTime::UNIX_EPOCH,
            executed_at: None,
        }
    }

    #[test]
    fn an_approved_destruction_runs_with_exactly_the_grace_it_was_approved_with() {
        let requested = approval(
            ApiOperation::ScheduleDestruction,
            &[("grace_seconds", "172800 (2 days; requested)")],
        );
        assert!(matches!(
            execution(&requested),
            Some(Action::Destroy(Some(g))) if g == time::Duration::days(2)
        ));
        let default = approval(
            ApiOperation::ScheduleDestruction,
            &[("grace_seconds", "604800 (7 days; the server default)")],
        );
        assert!(matches!(execution(&default), Some(Action::Destroy(None))));
    }

    #[test]
    fn revocations_and_rollbacks_carry_their_parameters_and_crypto_requests_do_not_run_here() {
        let revoke =
            approval(ApiOperation::RevokeKey, &[("reason", "superseded"), ("comment", "(none)")]);
        assert!(matches!(execution(&revoke), Some(Action::Revoke(_, None))));
        let rollback = approval(ApiOperation::RollbackKey, &[("version", "3")]);
        assert!(matches!(execution(&rollback), Some(Action::Rollback(3))));
        assert!(execution(&approval(ApiOperation::Encrypt, &[])).is_none());
        assert!(execution(&approval(ApiOperation::RollbackKey, &[("version", "x")])).is_none());
    }
}
