//! Every operation FerroHSM performs, as policy and audit records name them.

use std::fmt;
use std::str::FromStr;

use crate::PolicyError;

macro_rules! operations {
    ($($variant:ident => $name:literal: $doc:literal),+ $(,)?) => {
        /// Every operation FerroHSM performs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Operation {
            $(#[doc = $doc] $variant,)+
        }

        impl Operation {
            /// Every operation.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),+];

            /// The stable name used in policy files and audit records.
            pub fn as_str(self) -> &'static str {
                match self { $(Operation::$variant => $name),+ }
            }
        }

        impl FromStr for Operation {
            type Err = PolicyError;
            fn from_str(s: &str) -> Result<Self, PolicyError> {
                match s {
                    $($name => Ok(Operation::$variant),)+
                    other => Err(PolicyError::new(format!("unknown operation {other:?}"))),
                }
            }
        }
    };
}

operations! {
    CreateKey => "create_key": "Create a key.",
    ListKeys => "list_keys": "List keys.",
    DescribeKey => "describe_key": "Read a key's metadata.",
    RotateKey => "rotate_key": "Add a version and make it current.",
    RollbackKey => "rollback_key": "Make another version current.",
    RevokeKey => "revoke_key": "Revoke a key.",
    ScheduleDestruction => "schedule_destruction": "Schedule destruction after a grace period.",
    CancelDestruction => "cancel_destruction": "Cancel a scheduled destruction.",
    PurgeKey => "purge_key": "Wipe a key whose grace period has passed (final destruction).",
    Encrypt => "encrypt": "Encrypt data.",
    Decrypt => "decrypt": "Decrypt data.",
    Sign => "sign": "Sign a message or digest.",
    Verify => "verify": "Verify a signature.",
    Wrap => "wrap": "Wrap key material.",
    Unwrap => "unwrap": "Unwrap key material.",
    ExportPublicKey => "export_public_key": "Export a public key.",
    ListApprovals => "list_approvals": "List approvals.",
    DescribeApproval => "describe_approval": "Read one approval.",
    Approve => "approve": "Approve a pending request.",
    DenyApproval => "deny_approval": "Deny a pending request.",
    ReadAudit => "read_audit": "Read or export the audit log.",
    CheckpointAudit => "checkpoint_audit": "Write a signed audit checkpoint now.",
    ManagePolicy => "manage_policy": "Change the policy in force.",
    IssueToken => "issue_token": "Issue a bearer token signed by the HSM's token key.",
    RevokeToken => "revoke_token": "Revoke bearer tokens by token id or session.",
}

impl Operation {
    /// Whether the operation acts on one key (so tag policies apply to it).
    pub fn targets_key(self) -> bool {
        !matches!(
            self,
            Operation::CreateKey
                | Operation::ListKeys
                | Operation::ListApprovals
                | Operation::DescribeApproval
                | Operation::Approve
                | Operation::DenyApproval
                | Operation::ReadAudit
                | Operation::CheckpointAudit
                | Operation::ManagePolicy
                | Operation::IssueToken
                | Operation::RevokeToken
        )
    }

    /// Whether a `[global_dual_control]` section may put the operation under dual control:
    /// the administrative operations that act on no key.
    pub fn globally_controllable(self) -> bool {
        matches!(self, Operation::IssueToken | Operation::RevokeToken | Operation::ManagePolicy)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
