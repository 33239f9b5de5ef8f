//! The policy engine: allow, deny with a reason, or require approval.

use std::collections::BTreeMap;
use std::fmt::Debug;

use time::Duration;

use crate::{Operation, Policy, Role};

/// The policy name approvals opened by `[global_dual_control]` carry.
pub const GLOBAL_POLICY_NAME: &str = "global_dual_control";

/// What is asked, by whom, on which key.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// The authenticated actor.
    pub actor: &'a str,
    /// The actor's roles as the credential states them (unknown names are ignored).
    pub roles: &'a [String],
    /// The operation.
    pub operation: Operation,
    /// The tags of the key acted on (for creation, the tags requested).
    pub key_tags: Option<&'a BTreeMap<String, String>>,
}

/// The answer to a [`PolicyRequest`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason shown to the caller.
    Deny(String),
    /// Allowed only with an approval of this shape.
    RequireApproval(ApprovalRule),
}

/// What an approval for a dual-controlled operation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRule {
    /// The tag policy that demands it.
    pub policy: String,
    /// Distinct approvers needed.
    pub quorum: u32,
    /// Roles that may approve.
    pub approver_roles: Vec<Role>,
    /// How long the approval stays valid.
    pub expires_after: Duration,
    /// When not empty, only approvers whose identity comes from these sources count.
    pub approver_issuers: Vec<String>,
    /// Whether approvers must hold certificate-bound credentials.
    pub require_certificate: bool,
}

impl ApprovalRule {
    fn from_dual_control(policy: &str, dual: &crate::DualControl) -> Self {
        ApprovalRule {
            policy: policy.to_owned(),
            quorum: dual.quorum,
            approver_roles: dual.approver_roles.clone(),
            expires_after: dual.expires_after,
            approver_issuers: dual.approver_issuers.clone(),
            require_certificate: dual.require_certificate,
        }
    }
}

/// Decides requests. Implementations are pure: no I/O, no clocks, no side effects.
pub trait PolicyEngine: Send + Sync + Debug {
    /// The decision for `request`.
    fn decide(&self, request: &PolicyRequest<'_>) -> Decision;

    /// The destruction grace period for a key with these tags, if a policy sets one.
    fn destruction_grace(&self, tags: &BTreeMap<String, String>) -> Option<Duration>;

    /// The longest a version of a key with these tags may stay current.
    fn max_age(&self, tags: &BTreeMap<String, String>) -> Option<Duration>;
}

/// The default engine: the role matrix of SPEC §7, narrowed by tag policies.
#[derive(Debug, Clone, Default)]
pub struct DefaultPolicyEngine {
    policy: Policy,
}

impl DefaultPolicyEngine {
    /// An engine for `policy`.
    pub fn new(policy: Policy) -> Self {
        DefaultPolicyEngine { policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl PolicyEngine for DefaultPolicyEngine {
    /// 1. Some role of the caller must allow the operation (the matrix in [`Role::allows`]).
    /// 2. Each tag policy matching the key may narrow the roles that count.
    /// 3. If only the `service` role is left, some matching policy must list the actor.
    /// 4. Dual control of any matching policy applies (the largest quorum wins), to admins too.
    /// 5. Operations on no key follow `[global_dual_control]` when it lists them.
    fn decide(&self, request: &PolicyRequest<'_>) -> Decision {
        let op = request.operation;
        let mut roles: Vec<Role> = request
            .roles
            .iter()
            .filter_map(|r| r.parse::<Role>().ok())
            .filter(|r| r.allows(op))
            .collect();
        if roles.is_empty() {
            return Decision::Deny(format!("no role of {} allows {op}", request.actor));
        }
        let Some(tags) = request.key_tags else {
            return match &self.policy.global_dual_control {
                Some(dual) if dual.operations.contains(&op) => Decision::RequireApproval(
                    ApprovalRule::from_dual_control(GLOBAL_POLICY_NAME, dual),
                ),
                _ => Decision::Allow,
            };
        };
        let matching: Vec<_> = self.policy.matching(tags).collect();
        for policy in &matching {
            if let Some(allowed) = &policy.roles {
                roles.retain(|r| allowed.contains(r));
                if roles.is_empty() {
                    let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                    return Decision::Deny(format!(
                        "tag policy {} limits these keys to the roles {}",
                        policy.name,
                        names.join(", ")
                    ));
                }
            }
        }
        if roles == [Role::Service]
            && !matching.iter().any(|p| p.services.iter().any(|s| s == request.actor))
        {
            return Decision::Deny(format!(
                "no tag policy grants service {} this key",
                request.actor
            ));
        }
        let rule = matching
            .iter()
            .filter_map(|p| {
                p.dual_control.as_ref().filter(|d| d.operations.contains(&op)).map(|d| (p, d))
            })
            .max_by_key(|(_, d)| d.quorum);
        match rule {
            Some((policy, dual)) => {
                Decision::RequireApproval(ApprovalRule::from_dual_control(&policy.name, dual))
            }
            None => Decision::Allow,
        }
    }

    fn destruction_grace(&self, tags: &BTreeMap<String, String>) -> Option<Duration> {
        // The longest grace of any matching policy: the safest choice.
        self.policy.matching(tags).filter_map(|p| p.retention.destruction_grace).max()
    }

    fn max_age(&self, tags: &BTreeMap<String, String>) -> Option<Duration> {
        self.policy.matching(tags).filter_map(|p| p.retention.max_age).min()
    }
}
