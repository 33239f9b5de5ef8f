//! The policy file: tag policies (narrowed access, dual control, retention) and rate limits,
//! parsed from TOML and validated with the line and field of every mistake.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::Deserialize;
use time::Duration;
use toml::Spanned;

use crate::duration::parse_duration;
use crate::{Operation, PolicyError, Role};

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Tag policies, in file order.
    pub tag_policies: Vec<TagPolicy>,
    /// Dual control of operations that act on no key (`issue_token`, `revoke_token`,
    /// `manage_policy`).
    pub global_dual_control: Option<DualControl>,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
}

/// Rules for keys whose tags match.
#[derive(Debug, Clone, PartialEq)]
pub struct TagPolicy {
    /// A unique name, shown in denials and approvals.
    pub name: String,
    /// The tags a key must carry (all of them) for the policy to apply.
    pub matches: BTreeMap<String, String>,
    /// When set, only these roles may act on matching keys.
    pub roles: Option<Vec<Role>>,
    /// Actors with the `service` role that may use matching keys. A service may use a key only
    /// if some matching policy lists it.
    pub services: Vec<String>,
    /// Operations that need approval.
    pub dual_control: Option<DualControl>,
    /// How long a key may live, and its destruction grace period.
    pub retention: Retention,
}

/// Dual control for some operations on matching keys.
#[derive(Debug, Clone, PartialEq)]
pub struct DualControl {
    /// The operations under dual control.
    pub operations: Vec<Operation>,
    /// Distinct approvers needed, other than the requester.
    pub quorum: u32,
    /// Roles that may approve.
    pub approver_roles: Vec<Role>,
    /// How long an approval stays valid.
    pub expires_after: Duration,
    /// When not empty, only approvers whose identity comes from one of these sources count
    /// (a keyset issuer, `bootstrap` or `minted`).
    pub approver_issuers: Vec<String>,
    /// Whether approvers must hold a token bound to their client certificate.
    pub require_certificate: bool,
}

/// Retention settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retention {
    /// The longest a version may stay current before the key is due for rotation.
    pub max_age: Option<Duration>,
    /// The grace period between scheduling destruction and purging.
    pub destruction_grace: Option<Duration>,
}

/// Token-bucket rate limits, per actor (or per source address for unauthenticated callers).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// The bucket size: the largest burst.
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_second: f64,
    /// How many actors' buckets are remembered (least recently used are forgotten).
    pub max_actors: usize,
    /// The cost of each operation (1 when not listed).
    pub weights: HashMap<Operation, u32>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            capacity: 1000,
            refill_per_second: 500.0,
            max_actors: 100_000,
            weights: HashMap::from([(Operation::CreateKey, 20), (Operation::RotateKey, 20)]),
        }
    }
}

impl RateLimitConfig {
    /// The cost of `operation`, never more than the bucket holds.
    pub fn weight(&self, operation: Operation) -> u32 {
        self.weights.get(&operation).copied().unwrap_or(1).clamp(1, self.capacity.max(1))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    #[serde(default)]
    tag_policy: Vec<RawTagPolicy>,
    global_dual_control: Option<RawDualControl>,
    rate_limit: Option<RawRateLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTagPolicy {
    name: Spanned<String>,
    #[serde(rename = "match")]
    matches: Spanned<BTreeMap<String, String>>,
    roles: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    services: Vec<String>,
    dual_control: Option<RawDualControl>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDualControl {
    operations: Spanned<Vec<String>>,
    quorum: Spanned<u32>,
    approver_roles: Spanned<Vec<String>>,
    expires_after: Spanned<String>,
    #[serde(default)]
    approver_issuers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    require_certificate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age: Option<Spanned<String>>,
    destruction_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    capacity: Spanned<u32>,
    refill_per_second: Spanned<f64>,
    max_actors: Option<Spanned<u64>>,
    weights: Option<Spanned<BTreeMap<String, u32>>>,
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().map(|s| line_of(text, &s)),
            field: None,
            message: e.message().to_owned(),
        })?;
        let at = |span: Range<usize>, field: String, message: String| PolicyError {
            line: Some(line_of(text, &span)),
            field: Some(field),
            message,
        };
        if *raw.version.get_ref() != 1 {
            return Err(at(
                raw.version.span(),
                "version".into(),
                "only version 1 is supported".into(),
            ));
        }
        let mut tag_policies = Vec::with_capacity(raw.tag_policy.len());
        for (i, p) in raw.tag_policy.into_iter().enumerate() {
            let field = |name: &str| format!("tag_policy[{i}].{name}");
            let name = p.name.get_ref().trim().to_owned();
            if name.is_empty() {
                return Err(at(p.name.span(), field("name"), "a tag policy needs a name".into()));
            }
            if tag_policies.iter().any(|t: &TagPolicy| t.name == name) {
                return Err(at(
                    p.name.span(),
                    field("name"),
                    format!("the name {name:?} is used twice"),
                ));
            }
            if p.matches.get_ref().is_empty() {
                return Err(at(p.matches.span(), field("match"), "match at least one tag".into()));
            }
            let roles = match &p.roles {
                None => None,
                Some(list) => Some(
                    parse_roles(list.get_ref())
                        .map_err(|e| at(list.span(), field("roles"), e.message))?,
                ),
            };
            let dual_control = p
                .dual_control
                .map(|d| parse_dual_control(text, d, &field("dual_control"), DualScope::Tag))
                .transpose()?;
            let retention = match p.retention {
                None => Retention::default(),
                Some(r) => {
                    let parse = |value: &Option<Spanned<String>>, name: &str| {
                        value
                            .as_ref()
                            .map(|v| {
                                parse_duration(v.get_ref()).map_err(|e| {
                                    at(v.span(), field(&format!("retention.{name}")), e)
                                })
                            })
                            .transpose()
                    };
                    Retention {
                        max_age: parse(&r.max_age, "max_age")?,
                        destruction_grace: parse(&r.destruction_grace, "destruction_grace")?,
                    }
                }
            };
            tag_policies.push(TagPolicy {
                name,
                matches: p.matches.into_inner(),
                roles,
                services: p.services,
                dual_control,
                retention,
            });
        }
        let global_dual_control = raw
            .global_dual_control
            .map(|d| parse_dual_control(text, d, "global_dual_control", DualScope::Global))
            .transpose()?;
        let rate_limit = match raw.rate_limit {
            None => RateLimitConfig::default(),
            Some(r) => {
                let capacity = *r.capacity.get_ref();
                if capacity == 0 {
                    return Err(at(
                        r.capacity.span(),
                        "rate_limit.capacity".into(),
                        "must be at least 1".into(),
                    ));
                }
                let refill = *r.refill_per_second.get_ref();
                if !(refill.is_finite() && refill >= 0.001) {
                    return Err(at(
                        r.refill_per_second.span(),
                        "rate_limit.refill_per_second".into(),
                        "must be a number of at least 0.001".into(),
                    ));
                }
                let max_actors = match &r.max_actors {
                    None => RateLimitConfig::default().max_actors,
                    Some(m) => usize::try_from(*m.get_ref())
                        .ok()
                        .filter(|n| (2..=10_000_000).contains(n))
                        .ok_or_else(|| {
                            at(
                                m.span(),
                                "rate_limit.max_actors".into(),
                                "must be between 2 and 10,000,000".into(),
                            )
                        })?,
                };
                let mut weights = HashMap::new();
                if let Some(listed) = &r.weights {
                    for (op, weight) in listed.get_ref() {
                        let op = op.parse::<Operation>().map_err(|e| {
                            at(listed.span(), "rate_limit.weights".into(), e.message)
                        })?;
                        weights.insert(op, *weight);
                    }
                }
                RateLimitConfig { capacity, refill_per_second: refill, max_actors, weights }
            }
        };
        Ok(Policy { tag_policies, global_dual_control, rate_limit })
    }

    /// The tag policies that apply to a key with these tags.
    pub fn matching<'a>(
        &'a self,
        tags: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a TagPolicy> + 'a {
        self.tag_policies.iter().filter(|p| p.matches.iter().all(|(k, v)| tags.get(k) == Some(v)))
    }
}

/// Where a dual-control section stands: in a tag policy (operations on keys) or global.
#[derive(Clone, Copy, PartialEq)]
enum DualScope {
    Tag,
    Global,
}

fn parse_dual_control(
    text: &str,
    d: RawDualControl,
    prefix: &str,
    scope: DualScope,
) -> Result<DualControl, PolicyError> {
    let at = |span: Range<usize>, name: &str, message: String| PolicyError {
        line: Some(line_of(text, &span)),
        field: Some(format!("{prefix}.{name}")),
        message,
    };
    let operations = d
        .operations
        .get_ref()
        .iter()
        .map(|o| o.parse::<Operation>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(d.operations.span(), "operations", e.message))?;
    if operations.is_empty() {
        return Err(at(d.operations.span(), "operations", "list at least one operation".into()));
    }
    if operations.contains(&Operation::PurgeKey) {
        return Err(at(
            d.operations.span(),
            "operations",
            "purges run unattended when the grace period ends; put schedule_destruction under dual control instead".into(),
        ));
    }
    match scope {
        DualScope::Tag => {
            if let Some(op) = operations.iter().find(|o| !o.targets_key()) {
                return Err(at(
                    d.operations.span(),
                    "operations",
                    format!(
                        "{op} does not act on a key, so no tag policy can govern it; use [global_dual_control]"
                    ),
                ));
            }
        }
        DualScope::Global => {
            if let Some(op) = operations.iter().find(|o| !o.globally_controllable()) {
                return Err(at(
                    d.operations.span(),
                    "operations",
                    format!(
                        "{op} cannot be under global dual control (only issue_token, revoke_token and manage_policy)"
                    ),
                ));
            }
        }
    }
    let quorum = *d.quorum.get_ref();
    if !(1..=10).contains(&quorum) {
        return Err(at(d.quorum.span(), "quorum", "must be between 1 and 10".into()));
    }
    let approver_roles = parse_roles(d.approver_roles.get_ref())
        .map_err(|e| at(d.approver_roles.span(), "approver_roles", e.message))?;
    if approver_roles.is_empty() {
        return Err(at(d.approver_roles.span(), "approver_roles", "name at least one role".into()));
    }
    if let Some(r) = approver_roles.iter().find(|r| !r.allows(Operation::Approve)) {
        return Err(at(
            d.approver_roles.span(),
            "approver_roles",
            format!("the {r} role cannot approve"),
        ));
    }
    let expires_after = parse_duration(d.expires_after.get_ref())
        .map_err(|e| at(d.expires_after.span(), "expires_after", e))?;
    let approver_issuers = match d.approver_issuers {
        None => Vec::new(),
        Some(list) => {
            let names = list.get_ref();
            if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
                return Err(at(
                    list.span(),
                    "approver_issuers",
                    "name at least one issuer, none of them empty (leave the field out to accept any)".into(),
                ));
            }
            names.clone()
        }
    };
    Ok(DualControl {
        operations,
        quorum,
        approver_roles,
        expires_after,
        approver_issuers,
        require_certificate: d.require_certificate,
    })
}

fn parse_roles(names: &[String]) -> Result<Vec<Role>, PolicyError> {
    names.iter().map(|n| n.parse()).collect()
}

/// The 1-based line holding the start of `span`.
fn line_of(text: &str, span: &Range<usize>) -> usize {
    text.as_bytes()[..span.start.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}
