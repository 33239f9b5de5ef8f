//! Conversions between the REST contract (`ferrohsm-api`) and the core's own types. The
//! contract's enumerations travel as the same strings as the core's, so each conversion goes
//! through the wire name; the tests below check that every core value has a known contract
//! value, and back.

use ferrohsm_api as api;
use ferrohsm_core as core;
use ferrohsm_core::wire;

use crate::error::ApiError;

/// Implements the two directions for one enumeration: contract → core refuses `Unknown`
/// (and any value the core does not know) with a 400 naming the accepted values; core →
/// contract cannot fail (the contract test keeps the two lists equal).
macro_rules! enum_conversions {
    ($($to_core:ident, $to_api:ident: $api:ty => $core:ty, $what:literal;)+) => {
        $(
            /// The core's value for a contract value, or a 400 naming the accepted ones.
            pub(crate) fn $to_core(value: $api) -> Result<$core, ApiError> {
                value.as_str().parse::<$core>().map_err(|_| {
                    let known: Vec<&str> = <$api>::ALL.iter().map(|v| v.as_str()).collect();
                    ApiError::invalid(format!(
                        concat!("unknown ", $what, "; expected one of: {}"),
                        known.join(", ")
                    ))
                })
            }

            /// The contract's value for a core value.
            pub(crate) fn $to_api(value: $core) -> $api {
                <$api>::from_wire(value.as_str())
            }
        )+
    };
}

enum_conversions! {
    algorithm, api_algorithm: api::Algorithm => core::Algorithm, "algorithm";
    usage, api_usage: api::Usage => core::Usage, "usage";
    scheme, api_scheme: api::SignatureScheme => core::SignatureScheme, "signature scheme";
    key_state, api_key_state: api::KeyState => core::KeyState, "key state";
    revocation_reason, api_revocation_reason: api::RevocationReason => core::RevocationReason, "revocation reason";
    role, api_role: api::Role => core::Role, "role";
}

/// The contract's version state for a core version state.
pub(crate) fn api_version_state(value: core::VersionState) -> api::VersionState {
    api::VersionState::from_wire(value.as_str())
}

/// The contract's approval state for a core approval state.
pub(crate) fn api_approval_state(value: core::ApprovalState) -> api::ApprovalState {
    api::ApprovalState::from_wire(value.as_str())
}

/// The contract's operation for a core operation.
pub(crate) fn api_operation(value: core::Operation) -> api::Operation {
    api::Operation::from_wire(value.as_str())
}

/// A create request for the core.
pub(crate) fn create_key(body: api::CreateKey) -> Result<wire::CreateKey, ApiError> {
    Ok(wire::CreateKey {
        name: body.name,
        description: body.description,
        algorithm: algorithm(body.algorithm)?,
        usages: body.usages.map(|u| u.into_iter().map(usage).collect()).transpose()?,
        tags: body.tags,
        custody: body.custody.map(custody).transpose()?,
    })
}

/// A requested custody, by its wire name (the core checks that the server offers it).
pub(crate) fn custody(value: api::Custody) -> Result<String, ApiError> {
    match value {
        api::Custody::Unknown => Err(ApiError::invalid(format!(
            "unknown custody; accepted: {}",
            api::Custody::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        known => Ok(known.as_str().to_owned()),
    }
}

/// A key's metadata.
pub(crate) fn key_info(key: wire::KeyInfo) -> api::KeyInfo {
    api::KeyInfo {
        id: *key.id.as_uuid(),
        name: key.name.map(|n| n.as_str().to_owned()),
        description: key.description,
        algorithm: api_algorithm(key.algorithm),
        usages: key.usages.into_iter().map(api_usage).collect(),
        tags: key.tags,
        state: api_key_state(key.state),
        revocation: key.revocation.map(|r| api::Revocation {
            reason: api_revocation_reason(r.reason),
            comment: r.comment,
            at: r.at,
        }),
        destroy_after: key.destroy_after,
        destroyed_at: key.destroyed_at,
        current_version: key.current_version,
        versions: key
            .versions
            .into_iter()
            .map(|v| api::VersionInfo {
                version: v.version,
                created_at: v.created_at,
                state: api_version_state(v.state),
                encryptions: v.encryptions,
            })
            .collect(),
        created_at: key.created_at,
        updated_at: key.updated_at,
        created_by: key.created_by,
        custody: api::Custody::from_wire(&key.custody),
    }
}

/// One page of keys.
pub(crate) fn key_list(list: wire::KeyList) -> api::KeyList {
    api::KeyList {
        keys: list.keys.into_iter().map(key_info).collect(),
        next_cursor: list.next_cursor,
    }
}

/// An encryption's result.
pub(crate) fn encrypted(e: wire::Encrypted) -> api::Encrypted {
    api::Encrypted {
        key_id: *e.key_id.as_uuid(),
        key_version: e.key_version,
        ciphertext: e.ciphertext,
    }
}

/// A decryption's result (the plaintext moves from one zeroizing buffer to another).
pub(crate) fn plaintext(d: wire::Decrypted) -> api::Plaintext {
    api::Plaintext {
        key_id: *d.key_id.as_uuid(),
        key_version: d.key_version,
        plaintext: api::Secret::from(d.plaintext.expose()),
    }
}

/// A signature.
pub(crate) fn signed(s: wire::Signed) -> api::Signed {
    api::Signed {
        key_id: *s.key_id.as_uuid(),
        key_version: s.key_version,
        algorithm: api_scheme(s.algorithm),
        signature: s.signature,
    }
}

/// A verification's result.
pub(crate) fn verified(v: wire::Verified) -> api::Verified {
    api::Verified {
        key_id: *v.key_id.as_uuid(),
        key_version: v.key_version,
        algorithm: api_scheme(v.algorithm),
        valid: v.valid,
    }
}

/// A wrapped key.
pub(crate) fn wrapped(w: wire::Wrapped) -> api::Wrapped {
    api::Wrapped { key_id: *w.key_id.as_uuid(), key_version: w.key_version, wrapped: w.wrapped }
}

/// Unwrapped key material.
pub(crate) fn key_material(u: wire::Unwrapped) -> api::KeyMaterial {
    api::KeyMaterial {
        key_id: *u.key_id.as_uuid(),
        key_version: u.key_version,
        key_material: api::Secret::from(u.key_material.expose()),
    }
}

/// A public key.
pub(crate) fn public_key(p: wire::PublicKeyInfo) -> api::PublicKeyInfo {
    api::PublicKeyInfo {
        key_id: *p.key_id.as_uuid(),
        key_version: p.key_version,
        algorithm: api_algorithm(p.algorithm),
        pem: p.pem,
        der: p.der,
        jwk: p.jwk.map(jwk),
    }
}

/// A JSON Web Key.
pub(crate) fn jwk(j: wire::Jwk) -> api::Jwk {
    api::Jwk {
        kty: j.kty,
        kid: j.kid,
        alg: j.alg,
        use_: j.use_,
        crv: j.crv,
        x: j.x,
        y: j.y,
        n: j.n,
        e: j.e,
    }
}

/// An approval.
pub(crate) fn approval(a: &core::Approval) -> api::ApprovalInfo {
    api::ApprovalInfo {
        id: a.id,
        operation: api_operation(a.operation),
        key_id: a.key_id.clone(),
        requester: a.requester.clone(),
        requester_identity: a.requester_identity.clone(),
        parameters: a
            .parameters
            .iter()
            .map(|p| api::ParameterInfo { name: p.name.clone(), value: p.value.clone() })
            .collect(),
        summary: a.summary(),
        policy: a.policy.clone(),
        quorum: a.quorum,
        approvals: u32::try_from(a.approvals()).unwrap_or(u32::MAX),
        approver_roles: a.approver_roles.iter().map(|r| api_role(*r)).collect(),
        approver_issuers: a.approver_issuers.clone(),
        require_certificate: a.require_certificate,
        state: api_approval_state(a.state),
        votes: a
            .votes
            .iter()
            .map(|v| api::VoteInfo {
                actor: v.actor.clone(),
                source: v.source.clone(),
                identity: v.identity.clone(),
                approve: v.approve,
                comment: v.comment.clone(),
                at: v.at,
            })
            .collect(),
        created_at: a.created_at,
        expires_at: a.expires_at,
        executed_at: a.executed_at,
    }
}

/// The core's audit query for the contract's.
pub(crate) fn audit_query(q: api::AuditQuery) -> Result<wire::AuditQuery, ApiError> {
    let outcome = match q.outcome {
        None => None,
        Some(api::Outcome::Unknown) => {
            return Err(ApiError::invalid(
                "unknown outcome; expected one of: success, denied, error",
            ));
        }
        Some(o) => Some(o.as_str().to_owned()),
    };
    Ok(wire::AuditQuery {
        limit: q.limit.map(|l| l as usize),
        cursor: q.cursor,
        actor: q.actor,
        action: q.action,
        key_id: q.key_id,
        outcome,
        request_id: q.request_id,
        since: q.since,
        until: q.until,
    })
}

/// One audit record, exactly as the log holds it.
pub(crate) fn audit_record(r: core::AuditRecord) -> api::AuditRecord {
    api::AuditRecord {
        kind: "record".to_owned(),
        v: r.v,
        seq: r.seq,
        id: r.id,
        ts: r.ts,
        actor: r.actor,
        action: r.action,
        key_id: r.key_id,
        key_version: r.key_version,
        outcome: api::Outcome::from_wire(r.outcome.as_str()),
        request_id: r.request_id,
        session: r.session,
        client_fingerprint: r.client_fingerprint,
        source_ip: r.source_ip,
        message: r.message,
        prev_hash: core::hex::encode(&r.prev_hash),
        hash: core::hex::encode(&r.hash),
        hmac: core::hex::encode(&r.hmac),
    }
}

/// A page of audit records.
pub(crate) fn audit_page(p: wire::AuditPage) -> api::AuditPage {
    api::AuditPage {
        records: p.records.into_iter().map(audit_record).collect(),
        next_cursor: p.next_cursor,
    }
}

/// The verification of the server's own log.
pub(crate) fn audit_verification(v: wire::AuditVerification) -> api::AuditVerification {
    api::AuditVerification {
        valid: v.valid,
        records: v.records,
        signatures_checked: v.signatures_checked,
        first_seq: v.first_seq,
        last_seq: v.last_seq,
        partial: v.partial,
        failure: v.failure,
    }
}

/// A signed checkpoint.
pub(crate) fn checkpoint(c: core::Checkpoint) -> api::Checkpoint {
    api::Checkpoint {
        kind: "checkpoint".to_owned(),
        v: c.v,
        seq: c.seq,
        hash: core::hex::encode(&c.hash),
        ts: c.ts,
        key_id: c.key_id,
        signature: c.signature,
    }
}

/// A token revocation.
pub(crate) fn token_revocation(r: &core::TokenRevocation) -> api::TokenRevocationInfo {
    api::TokenRevocationInfo {
        matches: r.matches.as_str().to_owned(),
        value: r.value.clone(),
        reason: r.reason.clone(),
        revoked_by: r.revoked_by.clone(),
        revoked_at: r.revoked_at,
        expires_at: r.expires_at,
    }
}

/// The server's health.
pub(crate) fn health(h: wire::Health) -> api::Health {
    let component =
        |c: wire::ComponentHealth| api::ComponentHealth { status: c.status, detail: c.detail };
    api::Health {
        status: h.status,
        version: h.version,
        store: component(h.store),
        audit: component(h.audit),
        seal: component(h.seal),
        policy: component(h.policy),
        keyset: h.keyset.map(component),
        jobs: h.jobs.map(component),
        vault: h.vault.map(component),
        tls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Every value on one side has a known value on the other, and the round trip is the
    /// identity: the contract and the core cannot drift apart unnoticed.
    #[test]
    fn every_core_value_has_its_contract_value_and_back() -> TestResult {
        macro_rules! both_ways {
            ($core:ty, $api:ty, $to_core:ident, $to_api:ident) => {
                for v in <$core>::ALL {
                    let a = $to_api(*v);
                    assert_ne!(a, <$api>::Unknown, "{v:?} is missing from the contract");
                    assert_eq!($to_core(a).ok(), Some(*v));
                }
                assert_eq!(<$core>::ALL.len(), <$api>::ALL.len(), stringify!($api));
            };
        }
        both_ways!(core::Algorithm, api::Algorithm, algorithm, api_algorithm);
        both_ways!(core::Usage, api::Usage, usage, api_usage);
        both_ways!(core::SignatureScheme, api::SignatureScheme, scheme, api_scheme);
        both_ways!(core::KeyState, api::KeyState, key_state, api_key_state);
        both_ways!(
            core::RevocationReason,
            api::RevocationReason,
            revocation_reason,
            api_revocation_reason
        );
        both_ways!(core::Role, api::Role, role, api_role);
        for v in core::VersionState::ALL {
            assert_ne!(api_version_state(*v), api::VersionState::Unknown, "{v:?}");
        }
        assert_eq!(core::VersionState::ALL.len(), api::VersionState::ALL.len());
        for v in core::Operation::ALL {
            assert_ne!(api_operation(*v), api::Operation::Unknown, "{v:?}");
        }
        assert_eq!(core::Operation::ALL.len(), api::Operation::ALL.len());
        for v in api::ApprovalState::ALL {
            let core: core::ApprovalState = serde_json::from_value(serde_json::json!(v.as_str()))?;
            assert_eq!(api_approval_state(core), *v);
        }
        Ok(())
    }

    #[test]
    fn unknown_request_values_are_refused_with_the_accepted_ones() {
        let e = algorithm(api::Algorithm::Unknown).err().map(|e| e.code());
        assert_eq!(e, Some(api::ErrorCode::InvalidRequest));
        let e = role(api::Role::Unknown).err().map(|e| e.code());
        assert_eq!(e, Some(api::ErrorCode::InvalidRequest));
    }
}
