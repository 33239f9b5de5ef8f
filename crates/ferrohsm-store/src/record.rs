//! The stored form of a key: metadata, immutable versions with sealed material, and the rules
//! a change of record must obey.

use std::collections::{BTreeMap, BTreeSet};

use ferrohsm_crypto::{Algorithm, Usage, b64};
use ferrohsm_seal::{MetadataTag, SealedMaterial};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, KeyId, KeyName, KeyState, Result, RevocationReason, VersionState};

/// A key as the store keeps it. Key material appears only sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The server-assigned id (immutable).
    pub id: KeyId,
    /// The optional unique name (immutable).
    pub name: Option<KeyName>,
    /// Free text.
    pub description: String,
    /// The algorithm (immutable).
    pub algorithm: Algorithm,
    /// What the key may be used for.
    pub usages: BTreeSet<Usage>,
    /// Policy tags.
    pub tags: BTreeMap<String, String>,
    /// The lifecycle state.
    pub state: KeyState,
    /// Set once the key is revoked, and kept through later states.
    pub revocation: Option<Revocation>,
    /// Set while the key is pending destruction: when it may be purged.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroy_after: Option<OffsetDateTime>,
    /// Set when the key was purged.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroyed_at: Option<OffsetDateTime>,
    /// The version encrypt, sign and wrap use.
    pub current_version: u32,
    /// Every version ever created, numbered from 1 without gaps.
    pub versions: Vec<KeyVersion>,
    /// Creation time (immutable).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The actor who created the key (immutable).
    pub created_by: String,
    /// The key vault holding every version's material (`pkcs11`), chosen at creation and
    /// immutable; `None` for material sealed in the store. Left out of the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custody: Option<String>,
    /// Incremented by one on every change; the store refuses a change based on a stale read.
    pub revision: u64,
    /// Authenticates every other field (see [`KeyRecord::canonical_bytes`]); set by the core.
    pub tag: Option<MetadataTag>,
}

/// Why and when a key was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The reason.
    pub reason: RevocationReason,
    /// An optional free-text note.
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Key material held by a key vault (a PKCS#11 token) rather than sealed in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalMaterial {
    /// The vault's custody name (`pkcs11`).
    pub custody: String,
    /// The vault's handle for the key (not a secret).
    pub handle: String,
}

/// One immutable key version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersion {
    /// The version number, from 1.
    pub version: u32,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether its material still exists.
    pub state: VersionState,
    /// The SubjectPublicKeyInfo DER of asymmetric versions.
    #[serde(with = "option_b64")]
    pub public_key: Option<Vec<u8>>,
    /// The sealed material; `None` once destroyed, and for material held in a key vault.
    pub sealed: Option<SealedMaterial>,
    /// Where the material is when a key vault holds it (the version then has no sealed
    /// material); `None` once destroyed. Left out of the JSON when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMaterial>,
    /// How many AES-GCM encryptions (each with a random nonce) this version has used or
    /// reserved. Reserved in blocks ahead of use, so a crash loses at most a block of count
    /// (counted as used); it only ever grows. Zero for other algorithms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub encryptions_reserved: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

mod option_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&ferrohsm_crypto::b64::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| ferrohsm_crypto::b64::decode(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The fields the metadata tag covers: all of them but the tag, borrowed, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    format: &'static str,
    id: &'a KeyId,
    name: &'a Option<KeyName>,
    description: &'a str,
    algorithm: &'a Algorithm,
    usages: &'a BTreeSet<Usage>,
    tags: &'a BTreeMap<String, String>,
    state: &'a KeyState,
    revocation: &'a Option<Revocation>,
    #[serde(with = "time::serde::rfc3339::option")]
    destroy_after: &'a Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    destroyed_at: &'a Option<OffsetDateTime>,
    current_version: u32,
    versions: Vec<CanonicalVersion<'a>>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: &'a OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: &'a OffsetDateTime,
    created_by: &'a str,
    revision: u64,
    /// Left out for sealed keys, so records written before the field existed keep their tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    custody: Option<&'a str>,
}

#[derive(Serialize)]
struct CanonicalVersion<'a> {
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: &'a OffsetDateTime,
    state: &'a VersionState,
    public_key: Option<String>,
    /// The sealed material's own HMAC binds its content; including it here binds the version
    /// list to exactly this material.
    sealed_hmac: Option<String>,
    /// Left out while zero, so records written before the field existed keep their tags.
    #[serde(skip_serializing_if = "is_zero")]
    encryptions_reserved: &'a u64,
    /// Where a vault holds the material (left out for sealed material, as above).
    #[serde(skip_serializing_if = "Option::is_none")]
    external: Option<&'a ExternalMaterial>,
}

impl KeyRecord {
    /// The canonical encoding that the metadata tag authenticates: every field but the tag.
    /// A destructuring below makes adding a field without covering it a compile error.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let KeyRecord {
            id,
            name,
            description,
            algorithm,
            usages,
            tags,
            state,
            revocation,
            destroy_after,
            destroyed_at,
            current_version,
            versions,
            created_at,
            updated_at,
            created_by,
            revision,
            custody,
            tag: _,
        } = self;
        let versions = versions
            .iter()
            .map(|v| {
                let KeyVersion {
                    version,
                    created_at,
                    state,
                    public_key,
                    sealed,
                    encryptions_reserved,
                    external,
                } = v;
                CanonicalVersion {
                    version: *version,
                    created_at,
                    state,
                    public_key: public_key.as_deref().map(b64::encode),
                    sealed_hmac: sealed.as_ref().map(|s| b64::encode(&s.hmac)),
                    encryptions_reserved,
                    external: external.as_ref(),
                }
            })
            .collect();
        let canonical = Canonical {
            format: "ferrohsm-key-record-v1",
            id,
            name,
            description,
            algorithm,
            usages,
            tags,
            state,
            revocation,
            destroy_after,
            destroyed_at,
            current_version: *current_version,
            versions,
            created_at,
            updated_at,
            created_by,
            revision: *revision,
            custody: custody.as_deref(),
        };
        // Serializing plain data to a Vec cannot fail; an empty encoding would never verify.
        serde_json::to_vec(&canonical).unwrap_or_default()
    }

    /// The version with this number.
    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.versions.get(index)
    }

    /// Checks that this record may be created (uniqueness of id and name is the store's
    /// check): revision 1, active, exactly version 1 and current, and every invariant.
    pub fn check_new(&self) -> Result<()> {
        let bad = |reason: &str| Err(Error::InvalidRecord { id: self.id, reason: reason.into() });
        if self.revision != 1 {
            return bad("a new key starts at revision 1");
        }
        if self.state != KeyState::Active || self.revocation.is_some() {
            return bad("a new key is active");
        }
        if self.versions.len() != 1 || self.current_version != 1 {
            return bad("a new key has exactly version 1, and it is current");
        }
        self.check_invariants()
    }

    /// Checks the invariants every stored record holds, whatever its history.
    pub fn check_invariants(&self) -> Result<()> {
        let bad =
            |reason: &str| Err(Error::InvalidRecord { id: self.id, reason: reason.to_owned() });
        if self.versions.is_empty() {
            return bad("a key has at least one version");
        }
        for (i, v) in self.versions.iter().enumerate() {
            if usize::try_from(v.version).ok() != Some(i + 1) {
                return bad("versions are numbered from 1 without gaps");
            }
            match v.state {
                VersionState::Active if v.sealed.is_none() == v.external.is_none() => {
                    return bad("an active version has its material sealed or in a vault");
                }
                VersionState::Destroyed if v.sealed.is_some() || v.external.is_some() => {
                    return bad("a destroyed version has no material");
                }
                _ => {}
            }
            if v.external.as_ref().is_some_and(|e| Some(&e.custody) != self.custody.as_ref())
                || (v.state == VersionState::Active
                    && self.custody.is_some() != v.external.is_some())
            {
                return bad("a key's versions are all held by the key's custody");
            }
            if self.algorithm.is_symmetric() == v.public_key.is_some() {
                return bad("asymmetric versions, and only those, carry a public key");
            }
        }
        let current = self.version(self.current_version);
        match self.state {
            KeyState::Destroyed => {
                if self.versions.iter().any(|v| v.state != VersionState::Destroyed) {
                    return bad("a destroyed key has no material left");
                }
                if self.destroyed_at.is_none() {
                    return bad("a destroyed key records when it was destroyed");
                }
            }
            _ => {
                if current.is_none_or(|v| v.state != VersionState::Active) {
                    return bad("the current version exists and is not destroyed");
                }
                if self.destroyed_at.is_some() {
                    return bad("only a destroyed key has a destruction time");
                }
            }
        }
        if (self.state == KeyState::Revoked) && self.revocation.is_none() {
            return bad("a revoked key records its revocation");
        }
        if (self.state == KeyState::PendingDestruction) != self.destroy_after.is_some() {
            return bad("a key pending destruction, and only such a key, has a destruction time");
        }
        if self.state == KeyState::Active && self.revocation.is_some() {
            return bad("an active key has no revocation");
        }
        Ok(())
    }

    /// Checks that `next` may replace `self` in an ordinary update (not a purge).
    pub fn check_update(&self, next: &KeyRecord) -> Result<()> {
        self.check_successor(next)?;
        if next.state == KeyState::Destroyed {
            return Err(Error::IllegalTransition { from: self.state, to: next.state });
        }
        for (old, new) in self.versions.iter().zip(&next.versions) {
            // Everything but the encryption count is immutable, and the count only grows.
            let same = KeyVersion { encryptions_reserved: old.encryptions_reserved, ..new.clone() };
            if *old != same {
                return Err(Error::InvalidRecord {
                    id: self.id,
                    reason: format!("version {} is immutable", old.version),
                });
            }
            if new.encryptions_reserved < old.encryptions_reserved {
                return Err(Error::InvalidRecord {
                    id: self.id,
                    reason: format!("the encryption count of version {} only grows", old.version),
                });
            }
        }
        Ok(())
    }

    /// Checks that `next` may replace `self` as its purge: the destroyed tombstone.
    pub fn check_purge(&self, next: &KeyRecord) -> Result<()> {
        self.check_successor(next)?;
        if next.state != KeyState::Destroyed || next.versions.len() != self.versions.len() {
            return Err(Error::IllegalTransition { from: self.state, to: next.state });
        }
        for (old, new) in self.versions.iter().zip(&next.versions) {
            if old.version != new.version
                || old.created_at != new.created_at
                || old.public_key != new.public_key
            {
                return Err(Error::InvalidRecord {
                    id: self.id,
                    reason: "a purge only wipes material".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// What every successor record must satisfy.
    fn check_successor(&self, next: &KeyRecord) -> Result<()> {
        if next.id != self.id {
            return Err(Error::InvalidRecord { id: self.id, reason: "the id is immutable".into() });
        }
        if next.revision != self.revision + 1 {
            return Err(Error::Conflict {
                id: self.id,
                expected: next.revision,
                found: self.revision + 1,
            });
        }
        let immutable = next.name == self.name
            && next.custody == self.custody
            && next.algorithm == self.algorithm
            && next.created_at == self.created_at
            && next.created_by == self.created_by;
        if !immutable {
            return Err(Error::InvalidRecord {
                id: self.id,
                reason: "name, algorithm, creation time and creator are immutable".into(),
            });
        }
        if next.versions.len() < self.versions.len() {
            return Err(Error::InvalidRecord {
                id: self.id,
                reason: "versions are never removed".into(),
            });
        }
        if !transition_allowed(self, next) {
            return Err(Error::IllegalTransition { from: self.state, to: next.state });
        }
        next.check_invariants()
    }
}

/// The key state graph of SPEC §3.
///
/// - active → revoked, pending_destruction
/// - revoked → revoked (only to escalate a reason to `compromised`), pending_destruction
/// - pending_destruction → active or revoked (cancel: back to what it was), destroyed (purge)
/// - destroyed → nothing
///
/// Staying in the same state is always allowed (rotation, rollback, tag edits) except that a
/// revoked key's revocation may only change by escalation to `compromised`.
pub fn transition_allowed(from: &KeyRecord, to: &KeyRecord) -> bool {
    use KeyState::*;
    let revocation_kept = from.revocation == to.revocation;
    match (from.state, to.state) {
        (Active, Active) | (PendingDestruction, PendingDestruction) => revocation_kept,
        (Active, Revoked) => to.revocation.is_some(),
        (Active, PendingDestruction) => to.revocation.is_none(),
        (Revoked, Revoked) => {
            revocation_kept
                || (from
                    .revocation
                    .as_ref()
                    .is_some_and(|r| r.reason != RevocationReason::Compromised)
                    && to
                        .revocation
                        .as_ref()
                        .is_some_and(|r| r.reason == RevocationReason::Compromised))
        }
        (Revoked, PendingDestruction) => revocation_kept,
        (PendingDestruction, Active) => revocation_kept && from.revocation.is_none(),
        (PendingDestruction, Revoked) => revocation_kept && from.revocation.is_some(),
        (PendingDestruction, Destroyed) => revocation_kept,
        (Destroyed, Destroyed) => false,
        _ => false,
    }
}
