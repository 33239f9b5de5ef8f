//! Roles and the role × operation matrix of SPEC §7.

use std::fmt;
use std::str::FromStr;

use crate::{Operation, PolicyError};

/// A role carried by a caller's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Everything, including policy and final destruction.
    Admin,
    /// Key lifecycle except final destruction, approvals, crypto operations.
    Operator,
    /// Read metadata and audit, verify signatures; no crypto with secrets, no changes.
    Auditor,
    /// Crypto operations and describe, on keys a tag policy grants it.
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: &'static [Role] = &[Role::Admin, Role::Operator, Role::Auditor, Role::Service];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    /// Whether the role may perform `operation` at all (before tag policies narrow it).
    ///
    /// | operation | admin | operator | auditor | service |
    /// |---|---|---|---|---|
    /// | create, rotate, rollback, revoke, schedule/cancel destruction | ✓ | ✓ | | |
    /// | purge (final destruction), manage policy, issue and revoke tokens | ✓ | | | |
    /// | list keys | ✓ | ✓ | ✓ | |
    /// | describe, export public key | ✓ | ✓ | ✓ | ✓ |
    /// | encrypt, decrypt, sign, wrap, unwrap | ✓ | ✓ | | ✓ |
    /// | verify | ✓ | ✓ | ✓ | ✓ |
    /// | list/describe approvals | ✓ | ✓ | ✓ | |
    /// | approve, deny | ✓ | ✓ | | |
    /// | read audit, checkpoint audit | ✓ | | ✓ | |
    pub fn allows(self, operation: Operation) -> bool {
        use Operation::*;
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(
                operation,
                PurgeKey | ManagePolicy | IssueToken | RevokeToken | ReadAudit | CheckpointAudit
            ),
            Role::Auditor => matches!(
                operation,
                ListKeys
                    | DescribeKey
                    | ExportPublicKey
                    | Verify
                    | ListApprovals
                    | DescribeApproval
                    | ReadAudit
                    | CheckpointAudit
            ),
            Role::Service => matches!(
                operation,
                DescribeKey | ExportPublicKey | Encrypt | Decrypt | Sign | Verify | Wrap | Unwrap
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Role::ALL.iter().find(|r| r.as_str() == s).copied().ok_or_else(|| {
            PolicyError::new(format!("unknown role {s:?} (admin, operator, auditor, service)"))
        })
    }
}
