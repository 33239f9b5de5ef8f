//! Dual-control approvals: a request bound to one operation, key and parameter digest, that
//! M distinct approvers other than the requester must approve before it runs, once.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{ApprovalError, ApprovalRule, Operation, Role};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalState {
    /// Waiting for approvers.
    Pending,
    /// Quorum reached; the requester may execute it.
    Approved,
    /// An approver denied it.
    Denied,
    /// It passed its expiry before being executed.
    Expired,
    /// It was used.
    Executed,
}

impl ApprovalState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Executed => "executed",
        }
    }
}

/// A principal: a subject as vouched for by an issuer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The issuer that vouches for the subject.
    pub iss: String,
    /// The subject.
    pub sub: String,
}

/// Who requests or votes: what a credential says about its holder. Frontends fill it from the
/// verified token; dual control compares these, never bare subject strings.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The subject.
    pub actor: &'a str,
    /// The roles the credential grants.
    pub roles: &'a [String],
    /// Who minted the credential, the root first (empty for a credential from a root source).
    pub minted_by: &'a [Principal],
    /// Where the identity comes from: a keyset issuer, `bootstrap` or `minted`.
    pub source: &'a str,
    /// Whether the credential is bound to the client certificate the caller presented.
    pub certificate_bound: bool,
}

impl Caller<'_> {
    /// The subjects behind this caller: itself and everyone who minted its credential.
    fn people(&self) -> Vec<String> {
        std::iter::once(self.actor.to_owned())
            .chain(self.minted_by.iter().map(|p| p.sub.clone()))
            .collect()
    }
}

/// One named parameter of an approved operation, shown to approvers and bound by the
/// approval's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// The name (`operation`, `key_id`, `grace_seconds`…).
    pub name: String,
    /// The value, as text.
    pub value: String,
}

impl Parameter {
    /// A parameter.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Parameter { name: name.into(), value: value.into() }
    }
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Who.
    pub actor: String,
    /// The subjects behind the voter's credential (the voter, then its mint chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity: Vec<String>,
    /// Where the voter's identity comes from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Their comment.
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An approval request and its votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The id callers pass back in `X-Approval-Id`.
    pub id: Uuid,
    /// The operation approved.
    pub operation: Operation,
    /// The key it acts on.
    pub key_id: String,
    /// A keyed digest of exactly the parameters below, so a changed request is not covered.
    pub params_digest: String,
    /// What will run: operation, key and every parameter, in order (shown to approvers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// Who asked (and the only one who may execute it).
    pub requester: String,
    /// The subjects behind the requester's credential (the requester, then its mint chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requester_identity: Vec<String>,
    /// The tag policy that demanded it.
    pub policy: String,
    /// Approvals needed.
    pub quorum: u32,
    /// Roles that may approve.
    pub approver_roles: Vec<Role>,
    /// When not empty, only voters whose identity comes from one of these sources count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approver_issuers: Vec<String>,
    /// Whether voters must hold a certificate-bound credential.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_certificate: bool,
    /// The stored state (see [`Approval::state_at`] for the effective one).
    pub state: ApprovalState,
    /// Votes cast.
    pub votes: Vec<Vote>,
    /// When it was requested.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being valid.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was executed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub executed_at: Option<OffsetDateTime>,
    /// Incremented on every change (optimistic concurrency in stores).
    pub revision: u64,
    /// An integrity tag set by whoever stores it.
    pub tag: Option<String>,
}

impl Approval {
    /// A new pending approval of `parameters` (whose keyed digest is `params_digest`).
    pub fn new(
        rule: &ApprovalRule,
        operation: Operation,
        key_id: String,
        parameters: Vec<Parameter>,
        params_digest: String,
        requester: &Caller<'_>,
        now: OffsetDateTime,
    ) -> Self {
        Approval {
            id: Uuid::now_v7(),
            operation,
            key_id,
            params_digest,
            parameters,
            requester: requester.actor.to_owned(),
            requester_identity: requester.people(),
            policy: rule.policy.clone(),
            quorum: rule.quorum,
            approver_roles: rule.approver_roles.clone(),
            approver_issuers: rule.approver_issuers.clone(),
            require_certificate: rule.require_certificate,
            state: ApprovalState::Pending,
            votes: Vec::new(),
            created_at: now,
            expires_at: now + rule.expires_after,
            executed_at: None,
            revision: 1,
            tag: None,
        }
    }

    /// The state at `now`: pending and approved requests past their expiry are expired.
    pub fn state_at(&self, now: OffsetDateTime) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Approved if now > self.expires_at => {
                ApprovalState::Expired
            }
            state => state,
        }
    }

    /// How many distinct approvers approved.
    pub fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.approve).count()
    }

    /// A one-line, human-readable account of what will run: every parameter, in order.
    pub fn summary(&self) -> String {
        if self.parameters.is_empty() {
            return format!("{} on key {}", self.operation, self.key_id);
        }
        let parts: Vec<String> =
            self.parameters.iter().map(|p| format!("{}={}", p.name, p.value)).collect();
        parts.join("; ")
    }

    /// Records an approval by `voter`. Reaching the quorum makes it approved.
    pub fn approve(
        &mut self,
        voter: &Caller<'_>,
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), ApprovalError> {
        self.vote(voter, comment, now, true)
    }

    /// Records a denial by `voter`: one denial rejects the request.
    pub fn deny(
        &mut self,
        voter: &Caller<'_>,
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), ApprovalError> {
        self.vote(voter, comment, now, false)
    }

    /// The rules of a vote, in order: the approval is pending; the voter is not the requester,
    /// holds an approver role, has not voted; its identity comes from an accepted source and
    /// is certificate bound when the rule demands it; and nobody behind the voter's credential
    /// (the voter and its mint chain) is behind the requester's or an earlier voter's.
    fn vote(
        &mut self,
        voter: &Caller<'_>,
        comment: Option<String>,
        now: OffsetDateTime,
        approve: bool,
    ) -> Result<(), ApprovalError> {
        let actor = voter.actor;
        match self.state_at(now) {
            ApprovalState::Pending => {}
            ApprovalState::Expired => return Err(ApprovalError::Expired),
            other => return Err(ApprovalError::NotPending(other.as_str())),
        }
        if actor == self.requester {
            return Err(ApprovalError::RequesterCannotVote);
        }
        let roles = voter.roles;
        let holds_role = roles
            .iter()
            .filter_map(|r| r.parse::<Role>().ok())
            .any(|r| self.approver_roles.contains(&r));
        if !holds_role {
            let names: Vec<&str> = self.approver_roles.iter().map(|r| r.as_str()).collect();
            return Err(ApprovalError::NotAnApprover(names.join(", ")));
        }
        if self.votes.iter().any(|v| v.actor == actor) {
            return Err(ApprovalError::AlreadyVoted(actor.to_owned()));
        }
        if !self.approver_issuers.is_empty()
            && !self.approver_issuers.iter().any(|i| i == voter.source)
        {
            return Err(ApprovalError::SourceNotAccepted {
                actor: actor.to_owned(),
                origin: voter.source.to_owned(),
                accepted: self.approver_issuers.join(", "),
            });
        }
        if self.require_certificate && !voter.certificate_bound {
            return Err(ApprovalError::CertificateRequired(actor.to_owned()));
        }
        let identity = voter.people();
        self.check_distinct(actor, &identity)?;
        self.votes.push(Vote {
            actor: actor.to_owned(),
            identity,
            source: voter.source.to_owned(),
            approve,
            comment,
            at: now,
        });
        if !approve {
            self.state = ApprovalState::Denied;
        } else if self.approvals() >= self.quorum as usize {
            self.state = ApprovalState::Approved;
        }
        self.revision += 1;
        Ok(())
    }

    /// Refuses a voter whose credential shares anybody with the requester's or an earlier
    /// voter's: one person minting tokens for invented subjects is still one person.
    fn check_distinct(&self, actor: &str, identity: &[String]) -> Result<(), ApprovalError> {
        let requester = if self.requester_identity.is_empty() {
            std::slice::from_ref(&self.requester)
        } else {
            self.requester_identity.as_slice()
        };
        let others = std::iter::once((self.requester.as_str(), requester, "requested")).chain(
            self.votes.iter().map(|v| {
                let identity = if v.identity.is_empty() {
                    std::slice::from_ref(&v.actor)
                } else {
                    &v.identity[..]
                };
                (v.actor.as_str(), identity, "voted")
            }),
        );
        for (other, their_identity, role) in others {
            if let Some(shared) = identity.iter().find(|p| their_identity.contains(p)) {
                return Err(ApprovalError::SharedIdentity {
                    voter: actor.to_owned(),
                    shared: shared.clone(),
                    other: other.to_owned(),
                    role,
                });
            }
        }
        Ok(())
    }

    /// Checks that `requester` may now run `operation` on `key_id` with these parameters, and
    /// marks the approval executed. The caller must persist the change before running the
    /// operation, so that a replay finds it executed.
    pub fn execute(
        &mut self,
        requester: &str,
        operation: Operation,
        key_id: &str,
        params_digest: &str,
        now: OffsetDateTime,
    ) -> Result<(), ApprovalError> {
        if self.operation != operation
            || self.key_id != key_id
            || self.params_digest != params_digest
        {
            return Err(ApprovalError::Mismatch);
        }
        if requester != self.requester {
            return Err(ApprovalError::WrongRequester);
        }
        match self.state_at(now) {
            ApprovalState::Approved => {}
            ApprovalState::Executed => return Err(ApprovalError::AlreadyExecuted),
            ApprovalState::Expired => return Err(ApprovalError::Expired),
            state => {
                return Err(ApprovalError::NotApproved {
                    state: state.as_str(),
                    approvals: self.approvals(),
                    quorum: self.quorum,
                });
            }
        }
        self.state = ApprovalState::Executed;
        self.executed_at = Some(now);
        self.revision += 1;
        Ok(())
    }

    /// Every field but the tag, canonically, for an integrity tag over the approval.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.tag = None;
        serde_json::to_vec(&copy).unwrap_or_default()
    }
}

/// Serializes a policy enum as its wire name and parses it back.
macro_rules! wire_name_serde {
    ($($ty:ty),+) => {$(
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(|e: crate::PolicyError| serde::de::Error::custom(e.message))
            }
        }
    )+};
}
wire_name_serde!(Operation, Role);
