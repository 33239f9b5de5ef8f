//! Access decisions for FerroHSM (SPEC §7): the role matrix, tag policies read from a TOML
//! policy file, dual-control approvals, and per-actor rate limits.
//!
//! [`PolicyEngine::decide`] answers allow, deny (with a reason) or require-approval for an
//! operation by an actor on a key with given tags. [`Approval`] enforces the dual-control
//! rules: distinct approvers other than the requester, a quorum, expiry, binding to one
//! operation, key and parameter digest, and single execution. [`RateLimiter`] keeps a bounded
//! table of token buckets.
//!
//! This crate only decides: it must never do I/O, keep clocks of its own, or use cryptography.
//! Callers pass the time, read files, compute digests and persist approvals.
//!
//! ```
//! use ferrohsm_policy::{Decision, DefaultPolicyEngine, Operation, Policy, PolicyEngine, PolicyRequest};
//!
//! let policy = Policy::from_toml(r#"
//!     version = 1
//!     [[tag_policy]]
//!     name = "ci-signing"
//!     match = { purpose = "ci-signing" }
//!     services = ["ci-pipeline"]
//! "#).unwrap();
//! let engine = DefaultPolicyEngine::new(policy);
//! let tags = [("purpose".to_string(), "ci-signing".to_string())].into();
//! let roles = ["service".to_string()];
//! let ask = |actor| engine.decide(&PolicyRequest { actor, roles: &roles, operation: Operation::Sign, key_tags: Some(&tags) });
//! assert_eq!(ask("ci-pipeline"), Decision::Allow);
//! assert!(matches!(ask("other-service"), Decision::Deny(_)));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod approval;
mod duration;
mod engine;
mod error;
mod operation;
mod policy;
mod rate;
mod role;

// Public interface:
pub use approval::{Approval, ApprovalState, Caller, Parameter, Principal, Vote};
pub use duration::parse_duration;
pub use engine::{
    ApprovalRule, Decision, DefaultPolicyEngine, GLOBAL_POLICY_NAME, PolicyEngine, PolicyRequest,
};
pub use error::{ApprovalError, PolicyError};
pub use operation::Operation;
pub use policy::{DualControl, Policy, RateLimitConfig, Retention, TagPolicy};
pub use rate::RateLimiter;
pub use role::Role;
