//! The page shell: head, navigation, the signed-in caller and sign-out, notices, footer.

use ferrohsm_core::Operation;
use maud::{DOCTYPE, Markup, html};

use super::{Signed, when_unix};

/// The stylesheet and script, versioned so a new release is not served from a stale cache.
const CSS: &str = concat!("/ui/static/app.css?v=", env!("CARGO_PKG_VERSION"));
const JS: &str = concat!("/ui/static/app.js?v=", env!("CARGO_PKG_VERSION"));

/// The navigation sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Keys,
    Approvals,
    Audit,
    Health,
}

/// The sections: where, the label, and the operation a role needs to read it (none: any).
const SECTIONS: &[(Section, &str, &str, Option<Operation>)] = &[
    (Section::Keys, "/ui/keys", "Keys", Some(Operation::ListKeys)),
    (Section::Approvals, "/ui/approvals", "Approvals", Some(Operation::ListApprovals)),
    (Section::Audit, "/ui/audit", "Audit", Some(Operation::ReadAudit)),
    (Section::Health, "/ui/health", "Health", None),
];

/// The first section the caller's roles may read: where signing in lands.
pub(crate) fn home(roles: &[String]) -> &'static str {
    SECTIONS
        .iter()
        .find(|(_, _, _, needs)| needs.is_none_or(|op| super::roles_allow(roles, op)))
        .map_or("/ui/health", |(_, href, _, _)| href)
}

/// A confirmation shown at the top of a page after an action: a fixed set, chosen by a query
/// parameter, so no text of the URL is ever shown.
pub(crate) fn notice(name: Option<&str>) -> Option<&'static str> {
    Some(match name? {
        "rotated" => "The key was rotated: a new version is current.",
        "rolled-back" => "The key was rolled back: the chosen version is current.",
        "revoked" => "The key was revoked.",
        "destruction-scheduled" => {
            "Destruction was scheduled; it can be cancelled until the grace period ends."
        }
        "destruction-cancelled" => "The scheduled destruction was cancelled.",
        "approval-required" => {
            "This action needs approval before it runs. Share this page's address with the approvers; once they approve, run it from here."
        }
        "approved" => "Your approval was recorded.",
        "denied" => "Your denial was recorded.",
        "checkpoint" => "A signed checkpoint was written.",
        _ => return None,
    })
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            meta name="referrer" content="same-origin";
            title { (title) " · FerroHSM" }
            link rel="stylesheet" href=(CSS);
            script src=(JS) defer {}
        }
    }
}

/// A page for a signed-in caller.
pub(crate) fn page(
    title: &str,
    section: Section,
    who: &Signed,
    notice: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(home(&who.ctx.roles)) { "FerroHSM" }
                    nav aria-label="Main" {
                        ul {
                            @for (s, href, label, needs) in SECTIONS {
                                @if needs.is_none_or(|op| who.may(op)) { li {
                                    @if *s == section {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                } }
                            }
                        }
                    }
                    div.who {
                        span.identity {
                            span.actor { (who.ctx.actor) }
                            " · " (who.ctx.roles.join(", "))
                            span.expiry { " · session ends " (when_unix(who.expires_at())) }
                        }
                        form method="post" action="/ui/sign-out" {
                            input type="hidden" name="_csrf" value=(who.csrf());
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    @if let Some(text) = notice {
                        p.notice role="status" { (text) }
                    }
                    (body)
                }
                (footer())
            }
        }
    }
}

fn footer() -> Markup {
    html! {
        footer.bottom { "FerroHSM " (env!("CARGO_PKG_VERSION")) }
    }
}

/// A page without navigation (errors, sign-in).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/ui/keys" { "FerroHSM" } }
                main #main.narrow {
                    h1 { (title) }
                    (body)
                }
                (footer())
            }
        }
    }
}

/// The sign-in page.
pub(crate) fn sign_in(csrf: &str, problem: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form.stack method="post" action="/ui/sign-in" {
                input type="hidden" name="_csrf" value=(csrf);
                label for="token" { "Bearer token" }
                textarea #token name="token" rows="5" required autocomplete="off"
                    spellcheck="false" autocapitalize="off"
                    aria-describedby="token-help" {}
                p #token-help.hint {
                    "Paste a token issued to you (" code { "ferrohsm token issue" } " or "
                    code { "ferrohsm-server token" } "). It stays on the server for this session "
                    "only and is checked on every request. A certificate-bound token also needs "
                    "this browser to present its client certificate."
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A small form with one button posting to `action` (plus hidden fields).
pub(crate) fn button_form(
    who: &Signed,
    action: &str,
    label: &str,
    hidden: &[(&str, &str)],
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="_csrf" value=(who.csrf());
            @for (name, value) in hidden {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" { (label) }
        }
    }
}

/// A `key: value` list of tags.
pub(crate) fn tags(tags: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @if tags.is_empty() {
            span.muted { "none" }
        } @else {
            ul.tags {
                @for (k, v) in tags {
                    li { code { (k) ":" (v) } }
                }
            }
        }
    }
}
