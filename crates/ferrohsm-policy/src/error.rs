//! The policy crate's errors: a policy file that does not load, and refused approval steps.

use std::fmt;

/// A policy file (or policy value) that is invalid, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The field path (`tag_policy[1].dual_control.quorum`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        PolicyError { line: None, field: None, message: message.into() }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, &self.field) {
            (Some(line), Some(field)) => write!(f, "line {line}, {field}: {}", self.message),
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            (None, Some(field)) => write!(f, "{field}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

/// Why an approval step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The requester tried to approve or deny their own request.
    #[error("the requester cannot approve or deny their own request")]
    RequesterCannotVote,
    /// The caller holds none of the approver roles.
    #[error("approving needs one of the roles: {0}")]
    NotAnApprover(String),
    /// The voter's credential shares a person with the requester's or another voter's: the
    /// voter, or someone who minted its token, is that participant or minted theirs.
    #[error(
        "the vote of {voter} does not count: {shared} is behind both {voter}'s credential and that of {other}, who {role} (a vote counts only if nobody in the voter's mint chain is the requester or another voter)"
    )]
    SharedIdentity {
        /// The refused voter.
        voter: String,
        /// The subject both credentials lead back to.
        shared: String,
        /// The requester or earlier voter it collides with.
        other: String,
        /// `requested` or `voted`.
        role: &'static str,
    },
    /// The voter's identity does not come from a source the rule accepts.
    #[error(
        "the vote of {actor} does not count: its identity comes from {origin:?}, and this approval accepts approvers only from {accepted}"
    )]
    SourceNotAccepted {
        /// The refused voter.
        actor: String,
        /// Where its identity comes from.
        origin: String,
        /// The accepted sources.
        accepted: String,
    },
    /// The rule demands certificate-bound credentials.
    #[error(
        "the vote of {0} does not count: this approval needs approvers whose token is bound to their client certificate"
    )]
    CertificateRequired(String),
    /// The approver already voted on this request.
    #[error("{0} has already voted on this request")]
    AlreadyVoted(String),
    /// The approval is not pending (it is approved, denied, expired or executed).
    #[error("the approval is {0}")]
    NotPending(&'static str),
    /// The approval has expired.
    #[error("the approval expired")]
    Expired,
    /// The approval has not reached its quorum (or was denied).
    #[error("the approval is {state}: {approvals} of {quorum} approvals")]
    NotApproved {
        /// The approval's state.
        state: &'static str,
        /// Approvals so far.
        approvals: usize,
        /// Approvals needed.
        quorum: u32,
    },
    /// The approval was already used.
    #[error("the approval was already executed")]
    AlreadyExecuted,
    /// The request differs from the approved one (operation, key or parameters).
    #[error("the request does not match the approved operation, key and parameters")]
    Mismatch,
    /// Only the requester may execute an approved request.
    #[error("only the requester may execute the approved request")]
    WrongRequester,
}

impl ApprovalError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalError::RequesterCannotVote
            | ApprovalError::NotAnApprover(_)
            | ApprovalError::SharedIdentity { .. }
            | ApprovalError::SourceNotAccepted { .. }
            | ApprovalError::CertificateRequired(_)
            | ApprovalError::WrongRequester => "forbidden",
            ApprovalError::Mismatch => "invalid_request",
            _ => "conflict",
        }
    }
}
