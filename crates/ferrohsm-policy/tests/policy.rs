//! The role matrix, tag policies, dual control, rate limits and policy-file errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::collections::BTreeMap;
use std::time::{Duration as StdDuration, Instant};

use ferrohsm_policy::{
    Approval, ApprovalError, ApprovalState, Caller, Decision, DefaultPolicyEngine, Operation,
    Parameter, Policy, PolicyEngine, PolicyRequest, Principal, RateLimitConfig, RateLimiter, Role,
};
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn decide(
    engine: &DefaultPolicyEngine,
    actor: &str,
    role: &str,
    op: Operation,
    key: Option<&BTreeMap<String, String>>,
) -> Decision {
    let roles = [role.to_string()];
    engine.decide(&PolicyRequest { actor, roles: &roles, operation: op, key_tags: key })
}

const EXAMPLE: &str = r#"
version = 1

[[tag_policy]]
name = "production"
match = { env = "prod" }
roles = ["admin", "operator", "service"]
services = ["svc-payments"]

[tag_policy.dual_control]
operations = ["schedule_destruction", "rollback_key", "revoke_key"]
quorum = 2
approver_roles = ["admin", "operator"]
expires_after = "24h"

[tag_policy.retention]
max_age = "90d"
destruction_grace = "7d"

[[tag_policy]]
name = "ci-signing"
match = { purpose = "ci-signing" }
services = ["ci-pipeline"]

[[tag_policy]]
name = "crown-jewels"
match = { env = "prod", tier = "0" }
roles = ["admin", "service"]
services = ["svc-payments"]

[tag_policy.dual_control]
operations = ["schedule_destruction"]
quorum = 3
approver_roles = ["admin"]
expires_after = "1h"

[rate_limit]
capacity = 10
refill_per_second = 5
max_actors = 1000
weights = { create_key = 5 }
"#;

/// The full role × operation matrix of SPEC §7, for a key no tag policy governs.
#[test]
fn role_matrix() {
    use Operation::*;
    let expected: &[(Role, &[Operation])] = &[
        (Role::Admin, Operation::ALL),
        (
            Role::Operator,
            &[
                CreateKey,
                ListKeys,
                DescribeKey,
                RotateKey,
                RollbackKey,
                RevokeKey,
                ScheduleDestruction,
                CancelDestruction,
                Encrypt,
                Decrypt,
                Sign,
                Verify,
                Wrap,
                Unwrap,
                ExportPublicKey,
                ListApprovals,
                DescribeApproval,
                Approve,
                DenyApproval,
            ],
        ),
        (
            Role::Auditor,
            &[
                ListKeys,
                DescribeKey,
                ExportPublicKey,
                Verify,
                ListApprovals,
                DescribeApproval,
                ReadAudit,
                CheckpointAudit,
            ],
        ),
        (
            Role::Service,
            &[DescribeKey, ExportPublicKey, Encrypt, Decrypt, Sign, Verify, Wrap, Unwrap],
        ),
    ];
    let engine = DefaultPolicyEngine::new(Policy::from_toml("version = 1").unwrap());
    for (role, allowed) in expected {
        for op in Operation::ALL {
            let d = decide(&engine, "someone", role.as_str(), *op, None);
            assert_eq!(d == Decision::Allow, allowed.contains(op), "{role} {op}: {d:?}");
        }
    }
    // No roles, or only unknown roles: nothing.
    assert!(matches!(
        decide(&engine, "x", "superuser", Operation::DescribeKey, None),
        Decision::Deny(_)
    ));
}

#[test]
fn services_need_a_grant_and_tag_policies_narrow_roles() {
    let engine = DefaultPolicyEngine::new(Policy::from_toml(EXAMPLE).unwrap());
    let ci = tags(&[("purpose", "ci-signing")]);
    let prod = tags(&[("env", "prod")]);
    let plain = tags(&[("team", "x")]);
    assert_eq!(
        decide(&engine, "ci-pipeline", "service", Operation::Sign, Some(&ci)),
        Decision::Allow
    );
    assert!(
        matches!(decide(&engine, "other-svc", "service", Operation::Sign, Some(&ci)), Decision::Deny(r) if r.contains("other-svc"))
    );
    assert!(matches!(
        decide(&engine, "ci-pipeline", "service", Operation::Sign, Some(&prod)),
        Decision::Deny(_)
    ));
    assert!(
        matches!(
            decide(&engine, "ci-pipeline", "service", Operation::Sign, Some(&plain)),
            Decision::Deny(_)
        ),
        "no grant, no use"
    );
    assert_eq!(
        decide(&engine, "svc-payments", "service", Operation::Encrypt, Some(&prod)),
        Decision::Allow
    );
    // The auditor is not among production's roles.
    assert!(
        matches!(decide(&engine, "eve", "auditor", Operation::DescribeKey, Some(&prod)), Decision::Deny(r) if r.contains("production"))
    );
    // Operators may use production keys, but not tier-0 ones.
    let jewels = tags(&[("env", "prod"), ("tier", "0")]);
    assert_eq!(
        decide(&engine, "olga", "operator", Operation::Encrypt, Some(&prod)),
        Decision::Allow
    );
    assert!(matches!(
        decide(&engine, "olga", "operator", Operation::Encrypt, Some(&jewels)),
        Decision::Deny(_)
    ));
    // Creating a key with governed tags is governed too.
    assert!(matches!(
        decide(&engine, "olga", "operator", Operation::CreateKey, Some(&jewels)),
        Decision::Deny(_)
    ));
    assert_eq!(
        decide(&engine, "ada", "admin", Operation::CreateKey, Some(&jewels)),
        Decision::Allow
    );
}

#[test]
fn dual_control_applies_to_listed_operations_and_the_largest_quorum_wins() {
    let engine = DefaultPolicyEngine::new(Policy::from_toml(EXAMPLE).unwrap());
    let prod = tags(&[("env", "prod")]);
    let jewels = tags(&[("env", "prod"), ("tier", "0")]);
    match decide(&engine, "ada", "admin", Operation::RollbackKey, Some(&prod)) {
        Decision::RequireApproval(rule) => {
            assert_eq!((rule.quorum, rule.policy.as_str()), (2, "production"));
            assert_eq!(rule.expires_after, Duration::hours(24));
        }
        other => panic!("{other:?}"),
    }
    match decide(&engine, "ada", "admin", Operation::ScheduleDestruction, Some(&jewels)) {
        Decision::RequireApproval(rule) => {
            assert_eq!((rule.quorum, rule.policy.as_str()), (3, "crown-jewels"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decide(&engine, "ada", "admin", Operation::RotateKey, Some(&prod)), Decision::Allow);
    assert_eq!(engine.destruction_grace(&prod), Some(Duration::days(7)));
    assert_eq!(engine.max_age(&prod), Some(Duration::days(90)));
    assert_eq!(engine.destruction_grace(&tags(&[])), None);
}

fn rule() -> ferrohsm_policy::ApprovalRule {
    ferrohsm_policy::ApprovalRule {
        policy: "production".into(),
        quorum: 2,
        approver_roles: vec![Role::Admin, Role::Operator],
        expires_after: Duration::hours(1),
        approver_issuers: Vec::new(),
        require_certificate: false,
    }
}

fn ops(role: &str) -> Vec<String> {
    vec![role.to_string()]
}

/// A caller from a root source (no mint chain, no certificate).
fn c<'a>(actor: &'a str, roles: &'a [String]) -> Caller<'a> {
    Caller { actor, roles, minted_by: &[], source: "bootstrap", certificate_bound: false }
}

#[test]
fn dual_control_journey() {
    let t0 = OffsetDateTime::now_utc();
    let mut a = Approval::new(
        &rule(),
        Operation::ScheduleDestruction,
        "key-1".into(),
        Vec::new(),
        "digest-1".into(),
        &c("olga", &ops("operator")),
        t0,
    );
    assert_eq!(a.state_at(t0), ApprovalState::Pending);
    assert_eq!(
        a.approve(&c("olga", &ops("operator")), None, t0),
        Err(ApprovalError::RequesterCannotVote)
    );
    assert!(matches!(
        a.approve(&c("sam", &ops("service")), None, t0),
        Err(ApprovalError::NotAnApprover(_))
    ));
    a.approve(&c("ada", &ops("admin")), Some("ok".into()), t0).unwrap();
    assert_eq!(
        a.approve(&c("ada", &ops("admin")), None, t0),
        Err(ApprovalError::AlreadyVoted("ada".into()))
    );
    assert_eq!((a.approvals(), a.state_at(t0)), (1, ApprovalState::Pending), "counted once");
    assert!(matches!(
        a.execute("olga", Operation::ScheduleDestruction, "key-1", "digest-1", t0),
        Err(ApprovalError::NotApproved { approvals: 1, quorum: 2, .. })
    ));
    a.approve(&c("bob", &ops("operator")), None, t0).unwrap();
    assert_eq!(a.state_at(t0), ApprovalState::Approved);
    assert!(matches!(
        a.approve(&c("carl", &ops("admin")), None, t0),
        Err(ApprovalError::NotPending("approved"))
    ));
    // Changed parameters, another key, another operation, another caller: refused.
    assert_eq!(
        a.execute("olga", Operation::ScheduleDestruction, "key-1", "digest-2", t0),
        Err(ApprovalError::Mismatch)
    );
    assert_eq!(
        a.execute("olga", Operation::ScheduleDestruction, "key-2", "digest-1", t0),
        Err(ApprovalError::Mismatch)
    );
    assert_eq!(
        a.execute("olga", Operation::RollbackKey, "key-1", "digest-1", t0),
        Err(ApprovalError::Mismatch)
    );
    assert_eq!(
        a.execute("ada", Operation::ScheduleDestruction, "key-1", "digest-1", t0),
        Err(ApprovalError::WrongRequester)
    );
    a.execute("olga", Operation::ScheduleDestruction, "key-1", "digest-1", t0).unwrap();
    assert_eq!(a.state_at(t0), ApprovalState::Executed);
    assert_eq!(
        a.execute("olga", Operation::ScheduleDestruction, "key-1", "digest-1", t0),
        Err(ApprovalError::AlreadyExecuted)
    );
}

#[test]
fn denial_and_expiry() {
    let t0 = OffsetDateTime::now_utc();
    let mut denied = Approval::new(
        &rule(),
        Operation::RevokeKey,
        "k".into(),
        Vec::new(),
        "d".into(),
        &c("olga", &ops("operator")),
        t0,
    );
    denied.approve(&c("ada", &ops("admin")), None, t0).unwrap();
    denied.deny(&c("bob", &ops("operator")), Some("not today".into()), t0).unwrap();
    assert_eq!(denied.state_at(t0), ApprovalState::Denied);
    assert!(matches!(
        denied.approve(&c("carl", &ops("admin")), None, t0),
        Err(ApprovalError::NotPending("denied"))
    ));
    assert!(matches!(
        denied.execute("olga", Operation::RevokeKey, "k", "d", t0),
        Err(ApprovalError::NotApproved { state: "denied", .. })
    ));

    let mut late = Approval::new(
        &rule(),
        Operation::RevokeKey,
        "k".into(),
        Vec::new(),
        "d".into(),
        &c("olga", &ops("operator")),
        t0,
    );
    let later = t0 + Duration::hours(2);
    assert_eq!(late.approve(&c("ada", &ops("admin")), None, later), Err(ApprovalError::Expired));
    late.approve(&c("ada", &ops("admin")), None, t0).unwrap();
    late.approve(&c("bob", &ops("admin")), None, t0).unwrap();
    assert_eq!(late.state_at(later), ApprovalState::Expired, "an approved request also expires");
    assert_eq!(
        late.execute("olga", Operation::RevokeKey, "k", "d", later),
        Err(ApprovalError::Expired)
    );
}

fn minted(chain: &[&str]) -> Vec<Principal> {
    chain.iter().map(|s| Principal { iss: "ferrohsm".into(), sub: (*s).into() }).collect()
}

/// Issue 10: one admin minting tokens for invented subjects is still one person.
#[test]
fn sock_puppets_and_chained_minting_do_not_count() {
    let t0 = OffsetDateTime::now_utc();
    let operator = ops("operator");
    let new = |requester: &Caller<'_>| {
        let params = vec![Parameter::new("grace_seconds", "0")];
        Approval::new(
            &rule(),
            Operation::ScheduleDestruction,
            "k".into(),
            params,
            "d".into(),
            requester,
            t0,
        )
    };
    let vote = |a: &mut Approval, actor: &str, chain: &[&str]| {
        let chain = minted(chain);
        let voter = Caller { minted_by: &chain, ..c(actor, &operator) };
        a.approve(&voter, None, t0)
    };
    let refused = |r: Result<(), ApprovalError>, shared: &str, other: &str| match r {
        Err(ApprovalError::SharedIdentity { shared: s, other: o, .. }) => {
            assert_eq!((s.as_str(), o.as_str()), (shared, other));
        }
        other => panic!("expected a shared identity, got {other:?}"),
    };

    // Ada requests, then has two tokens she minted approve.
    let mut a = new(&c("ada", &operator));
    refused(vote(&mut a, "puppet-1", &["ada"]), "ada", "ada");
    refused(vote(&mut a, "puppet-2", &["ada"]), "ada", "ada");
    // Chained minting: ada mints x, x mints puppet-3; ada is still behind it.
    refused(vote(&mut a, "puppet-3", &["ada", "x"]), "ada", "ada");
    assert_eq!(a.approvals(), 0);
    let message = vote(&mut a, "puppet-1", &["ada"]).unwrap_err().to_string();
    assert!(message.contains("nobody in the voter's mint chain is the requester"), "{message}");

    // Mallory mints the requester and both voters: every pair shares mallory.
    let chain = minted(&["mallory"]);
    let mut b = new(&Caller { minted_by: &chain, ..c("req", &operator) });
    refused(vote(&mut b, "v1", &["mallory"]), "mallory", "req");
    // Mallory herself voting on a request made with a token she minted.
    refused(vote(&mut b, "mallory", &[]), "mallory", "req");

    // A voter whose token was minted by an earlier voter.
    let mut d = new(&c("olga", &operator));
    vote(&mut d, "bob", &[]).unwrap();
    refused(vote(&mut d, "bobs-friend", &["bob"]), "bob", "bob");
    // An earlier voter's minter voting.
    let mut e = new(&c("olga", &operator));
    vote(&mut e, "carl", &["dee"]).unwrap();
    refused(vote(&mut e, "dee", &[]), "dee", "carl");

    // Two real people (even with tokens minted by a third, uninvolved admin on one side).
    let mut f = new(&c("olga", &operator));
    vote(&mut f, "bob", &["root-admin"]).unwrap();
    vote(&mut f, "carl", &[]).unwrap();
    assert_eq!(f.state_at(t0), ApprovalState::Approved);
    assert_eq!(f.summary(), "grace_seconds=0");
}

#[test]
fn approvers_from_named_sources_and_certificates_only() {
    let t0 = OffsetDateTime::now_utc();
    let operator = ops("operator");
    let mut rule = rule();
    rule.approver_issuers = vec!["corp-idp".into()];
    rule.require_certificate = true;
    let mut a = Approval::new(
        &rule,
        Operation::RollbackKey,
        "k".into(),
        Vec::new(),
        "d".into(),
        &c("olga", &operator),
        t0,
    );
    let from = |actor, source, certificate_bound| Caller {
        source,
        certificate_bound,
        ..c(actor, &operator)
    };
    assert!(matches!(
        a.approve(&from("ada", "bootstrap", true), None, t0),
        Err(ApprovalError::SourceNotAccepted { .. })
    ));
    assert!(matches!(
        a.approve(&from("ada", "minted", true), None, t0),
        Err(ApprovalError::SourceNotAccepted { .. })
    ));
    assert_eq!(
        a.approve(&from("ada", "corp-idp", false), None, t0),
        Err(ApprovalError::CertificateRequired("ada".into()))
    );
    a.approve(&from("ada", "corp-idp", true), None, t0).unwrap();
    a.approve(&from("bob", "corp-idp", true), None, t0).unwrap();
    assert_eq!(a.state_at(t0), ApprovalState::Approved);
}

#[test]
fn global_dual_control_covers_token_issuance_and_policy_changes() {
    let policy = Policy::from_toml(
        r#"
        version = 1
        [global_dual_control]
        operations = ["issue_token", "manage_policy"]
        quorum = 2
        approver_roles = ["admin"]
        expires_after = "1h"
        approver_issuers = ["corp-idp"]
        require_certificate = true
        "#,
    )
    .unwrap();
    let engine = DefaultPolicyEngine::new(policy);
    let admin = ops("admin");
    let ask = |operation| {
        engine.decide(&PolicyRequest { actor: "ada", roles: &admin, operation, key_tags: None })
    };
    match ask(Operation::IssueToken) {
        Decision::RequireApproval(rule) => {
            assert_eq!(rule.policy, ferrohsm_policy::GLOBAL_POLICY_NAME);
            assert_eq!(rule.approver_issuers, ["corp-idp"]);
            assert!(rule.require_certificate);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(ask(Operation::ManagePolicy), Decision::RequireApproval(_)));
    assert_eq!(ask(Operation::RevokeToken), Decision::Allow);
    let operator = ops("operator");
    assert!(matches!(
        engine.decide(&PolicyRequest {
            actor: "olga",
            roles: &operator,
            operation: Operation::IssueToken,
            key_tags: None
        }),
        Decision::Deny(_)
    ));

    let global = |ops: &str, extra: &str| {
        Policy::from_toml(&format!(
            "version = 1\n[global_dual_control]\noperations = {ops}\nquorum = 1\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"\n{extra}"
        ))
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert!(global(r#"["encrypt"]"#, "").unwrap_err().contains("global_dual_control.operations"));
    assert!(global(r#"["revoke_token"]"#, "").is_ok());
    assert!(
        global(r#"["issue_token"]"#, "approver_issuers = []")
            .unwrap_err()
            .contains("approver_issuers")
    );
    let tag = Policy::from_toml(
        "version = 1\n[[tag_policy]]\nname = \"p\"\nmatch = { a = \"b\" }\n[tag_policy.dual_control]\noperations = [\"issue_token\"]\nquorum = 1\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        tag.contains("tag_policy[0].dual_control.operations")
            && tag.contains("[global_dual_control]"),
        "{tag}"
    );
}

proptest! {
    /// Whatever sequence of votes arrives, the request is approved only once `quorum` distinct
    /// approvers other than the requester approved it, with no denial.
    #[test]
    fn quorum_needs_distinct_non_requester_approvers(
        quorum in 1u32..5,
        votes in proptest::collection::vec((0usize..6, any::<bool>()), 0..20),
    ) {
        let t0 = OffsetDateTime::now_utc();
        let people = ["olga", "ada", "bob", "carl", "dee", "eve"];
        let mut rule = rule();
        rule.quorum = quorum;
        let mut a = Approval::new(&rule, Operation::RollbackKey, "k".into(), Vec::new(), "d".into(), &c("olga", &ops("operator")), t0);
        let mut approvers = std::collections::BTreeSet::new();
        let mut denied = false;
        for (who, approve) in votes {
            let actor = people[who];
            let result = if approve { a.approve(&c(actor, &ops("operator")), None, t0) } else { a.deny(&c(actor, &ops("operator")), None, t0) };
            if result.is_ok() {
                prop_assert!(actor != "olga");
                if approve { approvers.insert(actor); } else { denied = true; }
            }
        }
        let approved = a.state_at(t0) == ApprovalState::Approved;
        prop_assert_eq!(approved, !denied && approvers.len() >= quorum as usize);
        prop_assert!(approvers.len() <= quorum as usize, "votes after approval are refused");
    }
}

#[test]
fn bursts_are_limited_with_the_right_wait_and_other_actors_are_unaffected() {
    let config = Policy::from_toml(EXAMPLE).unwrap().rate_limit;
    let limiter = RateLimiter::new(config);
    let t0 = Instant::now();
    for _ in 0..10 {
        limiter.check("alice", Operation::Encrypt, t0).unwrap();
    }
    let wait = limiter.check("alice", Operation::Encrypt, t0).unwrap_err();
    assert_eq!(wait, StdDuration::from_millis(200), "one token at 5 per second");
    limiter.check("bob", Operation::Encrypt, t0).unwrap();
    // After the wait, one more goes through; a weighted operation needs its whole weight.
    limiter.check("alice", Operation::Encrypt, t0 + wait).unwrap();
    let wait = limiter.check("alice", Operation::CreateKey, t0 + wait).unwrap_err();
    assert_eq!(wait, StdDuration::from_secs(1), "five tokens at 5 per second");
}

#[test]
fn the_actor_table_stays_bounded() {
    let config = RateLimitConfig { max_actors: 10_000, ..RateLimitConfig::default() };
    let limiter = RateLimiter::new(config);
    let now = Instant::now();
    for i in 0..1_000_000u32 {
        limiter
            .check(
                &format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                Operation::Verify,
                now,
            )
            .unwrap();
        if i % 100_000 == 0 {
            assert!(limiter.tracked_actors() <= 10_000);
        }
    }
    assert!(limiter.tracked_actors() <= 10_000, "{}", limiter.tracked_actors());
    // A recently seen actor keeps its bucket through generation changes.
    let busy = RateLimiter::new(RateLimitConfig {
        capacity: 2,
        max_actors: 4,
        ..RateLimitConfig::default()
    });
    busy.check("alice", Operation::Verify, now).unwrap();
    busy.check("alice", Operation::Verify, now).unwrap();
    for other in ["b", "c", "d"] {
        busy.check(other, Operation::Verify, now).unwrap();
        assert!(
            busy.check("alice", Operation::Verify, now).is_err(),
            "alice's empty bucket was forgotten"
        );
    }
}

#[test]
fn policy_file_errors_name_the_line_and_field() {
    let cases: &[(&str, usize, Option<&str>, &str)] = &[
        ("version = 2", 1, Some("version"), "only version 1"),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\nrolse = [\"admin\"]",
            5,
            None,
            "unknown field",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\nroles = [\"root\"]",
            5,
            Some("tag_policy[0].roles"),
            "unknown role",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = {}",
            4,
            Some("tag_policy[0].match"),
            "at least one tag",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\n[tag_policy.dual_control]\noperations = [\"revoke_key\"]\nquorum = 0\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"",
            7,
            Some("tag_policy[0].dual_control.quorum"),
            "between 1 and 10",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\n[tag_policy.dual_control]\noperations = [\"revoke_key\"]\nquorum = 1\napprover_roles = [\"admin\"]\nexpires_after = \"soon\"",
            9,
            Some("tag_policy[0].dual_control.expires_after"),
            "not a duration",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\n[tag_policy.dual_control]\noperations = [\"list_keys\"]\nquorum = 1\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"",
            6,
            Some("tag_policy[0].dual_control.operations"),
            "does not act on a key",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\n[tag_policy.dual_control]\noperations = [\"revoke_key\"]\nquorum = 1\napprover_roles = [\"service\"]\nexpires_after = \"1h\"",
            8,
            Some("tag_policy[0].dual_control.approver_roles"),
            "cannot approve",
        ),
        (
            "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { x = \"1\" }\n[[tag_policy]]\nname = \"a\"\nmatch = { y = \"1\" }",
            6,
            Some("tag_policy[1].name"),
            "used twice",
        ),
        (
            "version = 1\n[rate_limit]\ncapacity = 0\nrefill_per_second = 1",
            3,
            Some("rate_limit.capacity"),
            "at least 1",
        ),
        (
            "version = 1\n[rate_limit]\ncapacity = 5\nrefill_per_second = 1\nweights = { teleport = 2 }",
            5,
            Some("rate_limit.weights"),
            "unknown operation",
        ),
        ("version = 1\nthis is not toml", 2, None, ""),
    ];
    for (text, line, field, message) in cases {
        let err = Policy::from_toml(text).unwrap_err();
        assert_eq!(err.line, Some(*line), "{text}\n=> {err}");
        assert_eq!(err.field.as_deref(), *field, "{text}\n=> {err}");
        assert!(err.message.contains(message), "{text}\n=> {err}");
    }
    Policy::from_toml(EXAMPLE).unwrap();
}

#[test]
fn purges_cannot_be_dual_controlled() {
    let text = "version = 1\n[[tag_policy]]\nname = \"a\"\nmatch = { env = \"prod\" }\n[tag_policy.dual_control]\noperations = [\"purge_key\"]\nquorum = 1\napprover_roles = [\"admin\"]\nexpires_after = \"1h\"";
    let err = Policy::from_toml(text).unwrap_err();
    assert_eq!(
        (err.line, err.field.as_deref()),
        (Some(6), Some("tag_policy[0].dual_control.operations"))
    );
    assert!(err.message.contains("schedule_destruction"), "{err}");
}

/// The example in docs/policy.md loads and does what the page says.
#[test]
fn the_documented_example_policy_loads_and_behaves_as_described() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy.md"))
        .unwrap();
    let section = doc.find("## A complete policy file").unwrap();
    let start = section + doc[section..].find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let policy =
        Policy::from_toml(&doc[start..end]).unwrap_or_else(|e| panic!("docs/policy.md: {e}"));
    let engine = DefaultPolicyEngine::new(policy);
    let prod = tags(&[("env", "prod")]);
    let ci = tags(&[("purpose", "ci-signing")]);
    assert!(
        matches!(decide(&engine, "olga", "operator", Operation::ScheduleDestruction, Some(&prod)), Decision::RequireApproval(r) if r.quorum == 2)
    );
    assert_eq!(
        decide(&engine, "svc-payments", "service", Operation::Encrypt, Some(&prod)),
        Decision::Allow
    );
    assert!(matches!(
        decide(&engine, "eve", "auditor", Operation::DescribeKey, Some(&prod)),
        Decision::Deny(_)
    ));
    assert_eq!(
        decide(&engine, "ci-pipeline", "service", Operation::Sign, Some(&ci)),
        Decision::Allow
    );
    assert!(matches!(
        decide(&engine, "svc-payments", "service", Operation::Sign, Some(&ci)),
        Decision::Deny(_)
    ));
}
