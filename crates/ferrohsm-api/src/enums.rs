//! The closed vocabularies of the API (algorithms, usages, states, reasons, roles, …), each a
//! Rust enum with an `Unknown` variant: a client reads a value a newer server sends as
//! `Unknown` instead of failing, and the server refuses `Unknown` in a request. The OpenAPI
//! schema lists the known values only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Declares a string enum with `ALL`, `as_str`, `Display`, strict `FromStr`, tolerant serde
/// and (with the `openapi` feature) a schema that lists the known values.
macro_rules! api_enum {
    (
        $(#[$meta:meta])*
        $ty:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $name:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vmeta])* $variant,)+
            /// A value this version of the contract does not know (a newer server's).
            Unknown,
        }

        impl $ty {
            /// Every known value, in declaration order (all but `Unknown`).
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The value as it travels (`unknown` for [`Self::Unknown`]).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                    $ty::Unknown => "unknown",
                }
            }

            /// The known value named `s`, or `Unknown`.
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($name => $ty::$variant,)+
                    _ => $ty::Unknown,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            /// A known value; anything else (`unknown` included) is refused.
            fn from_str(s: &str) -> Result<Self, Error> {
                match $ty::from_wire(s) {
                    $ty::Unknown => Err(Error::UnknownValue { what: $what, value: s.to_owned() }),
                    known => Ok(known),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok($ty::from_wire(&s))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($name),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

api_enum! {
    /// A key algorithm (SPEC §3).
    Algorithm, "algorithm" {
        /// AES-256 in GCM mode; also AES key wrap with padding (RFC 5649).
        Aes256Gcm => "aes-256-gcm",
        /// RSA with a 2048-bit modulus.
        Rsa2048 => "rsa-2048",
        /// RSA with a 3072-bit modulus.
        Rsa3072 => "rsa-3072",
        /// RSA with a 4096-bit modulus.
        Rsa4096 => "rsa-4096",
        /// ECDSA on NIST P-256.
        EcP256 => "ec-p256",
        /// ECDSA on NIST P-384.
        EcP384 => "ec-p384",
        /// EdDSA on Curve25519.
        Ed25519 => "ed25519",
        /// ML-DSA-44 (FIPS 204).
        MlDsa44 => "ml-dsa-44",
        /// ML-DSA-65 (FIPS 204).
        MlDsa65 => "ml-dsa-65",
        /// ML-DSA-87 (FIPS 204).
        MlDsa87 => "ml-dsa-87",
    }
}

api_enum! {
    /// Where a key's material is kept.
    Custody, "custody" {
        /// Sealed under the master key in the server's own store.
        Sealed => "sealed",
        /// Generated and used inside a PKCS#11 token; never exported.
        Pkcs11 => "pkcs11",
    }
}

impl Custody {
    /// `sealed`: what a response from a server without custody support means.
    pub fn sealed() -> Custody {
        Custody::Sealed
    }
}

api_enum! {
    /// What a key may be used for.
    Usage, "usage" {
        /// Encrypt data.
        Encrypt => "encrypt",
        /// Decrypt data.
        Decrypt => "decrypt",
        /// Sign messages or digests.
        Sign => "sign",
        /// Verify signatures.
        Verify => "verify",
        /// Wrap other key material.
        Wrap => "wrap",
        /// Unwrap key material.
        Unwrap => "unwrap",
    }
}

api_enum! {
    /// A signature scheme.
    SignatureScheme, "signature scheme" {
        /// RSASSA-PKCS1-v1_5 with SHA-256.
        RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
        /// RSASSA-PKCS1-v1_5 with SHA-384.
        RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
        /// RSASSA-PKCS1-v1_5 with SHA-512.
        RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
        /// RSASSA-PSS with SHA-256.
        RsaPssSha256 => "rsa-pss-sha256",
        /// RSASSA-PSS with SHA-384.
        RsaPssSha384 => "rsa-pss-sha384",
        /// RSASSA-PSS with SHA-512.
        RsaPssSha512 => "rsa-pss-sha512",
        /// ECDSA on P-256 with SHA-256 (DER signatures).
        EcdsaP256Sha256 => "ecdsa-p256-sha256",
        /// ECDSA on P-384 with SHA-384 (DER signatures).
        EcdsaP384Sha384 => "ecdsa-p384-sha384",
        /// Ed25519 (messages only).
        Ed25519 => "ed25519",
        /// ML-DSA-44 (messages only).
        MlDsa44 => "ml-dsa-44",
        /// ML-DSA-65 (messages only).
        MlDsa65 => "ml-dsa-65",
        /// ML-DSA-87 (messages only).
        MlDsa87 => "ml-dsa-87",
    }
}

api_enum! {
    /// A key's lifecycle state (SPEC §3).
    KeyState, "key state" {
        /// Usable for every operation its usages allow.
        Active => "active",
        /// No new encrypt, sign or wrap; decrypt, verify and unwrap still work unless compromised.
        Revoked => "revoked",
        /// Scheduled for destruction after a grace period; cancellable; no use at all.
        PendingDestruction => "pending_destruction",
        /// Material wiped; only the metadata remains.
        Destroyed => "destroyed",
    }
}

api_enum! {
    /// The state of one key version.
    VersionState, "version state" {
        /// The version's material is held (sealed).
        Active => "active",
        /// The version's material has been wiped.
        Destroyed => "destroyed",
    }
}

api_enum! {
    /// Why a key was revoked (after RFC 5280's reason codes).
    RevocationReason, "revocation reason" {
        /// No reason given.
        Unspecified => "unspecified",
        /// The material is known or suspected to be exposed: all use is refused.
        Compromised => "compromised",
        /// Replaced by another key.
        Superseded => "superseded",
        /// The key's purpose has ended.
        CessationOfOperation => "cessation_of_operation",
        /// The owner's right to the key was withdrawn.
        PrivilegeWithdrawn => "privilege_withdrawn",
    }
}

api_enum! {
    /// The state of an approval request.
    ApprovalState, "approval state" {
        /// Waiting for approvers.
        Pending => "pending",
        /// Quorum reached; the requester may execute it.
        Approved => "approved",
        /// An approver denied it.
        Denied => "denied",
        /// It passed its expiry before being executed.
        Expired => "expired",
        /// It was used.
        Executed => "executed",
    }
}

api_enum! {
    /// An operation, as policies, approvals and audit records name it.
    Operation, "operation" {
        /// Create a key.
        CreateKey => "create_key",
        /// List keys.
        ListKeys => "list_keys",
        /// Read a key's metadata.
        DescribeKey => "describe_key",
        /// Add a version and make it current.
        RotateKey => "rotate_key",
        /// Make another version current.
        RollbackKey => "rollback_key",
        /// Revoke a key.
        RevokeKey => "revoke_key",
        /// Schedule destruction after a grace period.
        ScheduleDestruction => "schedule_destruction",
        /// Cancel a scheduled destruction.
        CancelDestruction => "cancel_destruction",
        /// Wipe a key whose grace period has passed.
        PurgeKey => "purge_key",
        /// Encrypt data.
        Encrypt => "encrypt",
        /// Decrypt data.
        Decrypt => "decrypt",
        /// Sign a message or digest.
        Sign => "sign",
        /// Verify a signature.
        Verify => "verify",
        /// Wrap key material.
        Wrap => "wrap",
        /// Unwrap key material.
        Unwrap => "unwrap",
        /// Export a public key.
        ExportPublicKey => "export_public_key",
        /// List approvals.
        ListApprovals => "list_approvals",
        /// Read one approval.
        DescribeApproval => "describe_approval",
        /// Approve a pending request.
        Approve => "approve",
        /// Deny a pending request.
        DenyApproval => "deny_approval",
        /// Read or export the audit log.
        ReadAudit => "read_audit",
        /// Write a signed audit checkpoint now.
        CheckpointAudit => "checkpoint_audit",
        /// Change the policy in force.
        ManagePolicy => "manage_policy",
        /// Issue a bearer token signed by the HSM's token key.
        IssueToken => "issue_token",
        /// Revoke bearer tokens by token id or session.
        RevokeToken => "revoke_token",
    }
}

api_enum! {
    /// A caller's role (SPEC §7).
    Role, "role" {
        /// Everything, including policy and tokens.
        Admin => "admin",
        /// Key lifecycle and cryptographic operations.
        Operator => "operator",
        /// Reads the audit log and metadata.
        Auditor => "auditor",
        /// Uses the keys a policy grants it.
        Service => "service",
    }
}

api_enum! {
    /// How an audited operation ended.
    Outcome, "outcome" {
        /// It was performed.
        Success => "success",
        /// Policy refused it.
        Denied => "denied",
        /// It failed (bad input, wrong state, internal error).
        Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn known_values_round_trip_and_unknown_ones_are_tolerated_only_when_read() -> TestResult {
        for alg in Algorithm::ALL {
            let json = serde_json::to_string(alg)?;
            assert_eq!(serde_json::from_str::<Algorithm>(&json)?, *alg);
            assert_eq!(alg.as_str().parse::<Algorithm>()?, *alg);
        }
        assert_eq!(serde_json::from_str::<KeyState>("\"archived\"")?, KeyState::Unknown);
        assert_eq!(
            "archived".parse::<KeyState>(),
            Err(Error::UnknownValue { what: "key state", value: "archived".into() })
        );
        assert!("unknown".parse::<Role>().is_err());
        Ok(())
    }
}
