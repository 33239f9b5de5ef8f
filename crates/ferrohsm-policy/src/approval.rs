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

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Who.
    pub actor: String,
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
    /// A digest of the operation's parameters, so a changed request is not covered.
    pub params_digest: String,
    /// Who asked (and the only one who may execute it).
    pub requester: String,
    /// The tag policy that demanded it.
    pub policy: String,
    /// Approvals needed.
    pub quorum: u32,
    /// Roles that may approve.
    pub approver_roles: Vec<Role>,
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
    /// A new pending approval.
    pub fn new(
        rule: &ApprovalRule,
        operation: Operation,
        key_id: String,
        params_digest: String,
        requester: String,
        now: OffsetDateTime,
    ) -> Self {
        Approval {
            id: Uuid::now_v7(),
            operation,
            key_id,
            params_digest,
            requester,
            policy: rule.policy.clone(),
            quorum: rule.quorum,
            approver_roles: rule.approver_roles.clone(),
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

    /// Records an approval by `actor`. Reaching the quorum makes it approved.
    pub fn approve(
        &mut self,
        actor: &str,
        roles: &[String],
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), ApprovalError> {
        self.vote(actor, roles, comment, now, true)
    }

    /// Records a denial by `actor`: one denial rejects the request.
    pub fn deny(
        &mut self,
        actor: &str,
        roles: &[String],
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), ApprovalError> {
        self.vote(actor, roles, comment, now, false)
    }

    fn vote(
        &mut self,
        actor: &str,
        roles: &[String],
        comment: Option<String>,
        now: OffsetDateTime,
        approve: bool,
    ) -> Result<(), ApprovalError> {
        match self.state_at(now) {
            ApprovalState::Pending => {}
            ApprovalState::Expired => return Err(ApprovalError::Expired),
            other => return Err(ApprovalError::NotPending(other.as_str())),
        }
        if actor == self.requester {
            return Err(ApprovalError::RequesterCannotVote);
        }
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
        self.votes.push(Vote { actor: actor.to_owned(), approve, comment, at: now });
        if !approve {
            self.state = ApprovalState::Denied;
        } else if self.approvals() >= self.quorum as usize {
            self.state = ApprovalState::Approved;
        }
        self.revision += 1;
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
