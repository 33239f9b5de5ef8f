//! Dual control: approvals and votes (SPEC §6, docs/policy.md).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{ApprovalState, Operation, Role};

/// An approval request as callers see it. It is also the body of a 202 answer, when policy
/// puts the requested operation under dual control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalInfo {
    /// The id (send it as `X-Approval-Id` when repeating the request).
    pub id: Uuid,
    /// The operation it authorizes.
    pub operation: Operation,
    /// The key it authorizes the operation on (empty for operations on no key).
    #[serde(default)]
    pub key_id: String,
    /// Who asked; only they may execute it.
    pub requester: String,
    /// The subjects behind the requester's credential (the requester, then who minted it).
    #[serde(default)]
    pub requester_identity: Vec<String>,
    /// Exactly what will run, in order: operation, key, every parameter. The approval binds
    /// a keyed digest of this list.
    #[serde(default)]
    pub parameters: Vec<ParameterInfo>,
    /// The parameters on one line (`name=value; …`).
    #[serde(default)]
    pub summary: String,
    /// The policy that required it.
    pub policy: String,
    /// How many approvals it needs.
    pub quorum: u32,
    /// How many it has.
    pub approvals: u32,
    /// Roles whose holders may approve.
    pub approver_roles: Vec<Role>,
    /// When not empty, only approvers whose identity comes from these sources count.
    #[serde(default)]
    pub approver_issuers: Vec<String>,
    /// Whether approvers need certificate-bound tokens.
    #[serde(default)]
    pub require_certificate: bool,
    /// The state.
    pub state: ApprovalState,
    /// The votes so far.
    pub votes: Vec<VoteInfo>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires unless executed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was executed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub executed_at: Option<OffsetDateTime>,
}

/// One vote on an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoteInfo {
    /// The approver.
    pub actor: String,
    /// Where the approver's identity comes from (`bootstrap`, `minted` or a keyset issuer).
    #[serde(default)]
    pub source: String,
    /// The subjects behind the approver's credential.
    #[serde(default)]
    pub identity: Vec<String>,
    /// Approve (true) or deny (false).
    pub approve: bool,
    /// Their note.
    #[serde(default)]
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One named parameter of an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParameterInfo {
    /// The name (`operation`, `key_id`, `grace_seconds`, …).
    pub name: String,
    /// The value.
    pub value: String,
}

/// Approvals, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalList {
    /// The approvals.
    pub approvals: Vec<ApprovalInfo>,
}

/// `POST /v1/approvals/{id}/approve` and `…/deny` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// A note recorded with the vote: at most 1024 characters, no control characters but
    /// newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub comment: Option<String>,
}
