//! Keys: creation, metadata, listing and lifecycle requests (SPEC §3, §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Algorithm, Custody, KeyState, RevocationReason, Usage, VersionState};

/// `POST /v1/keys`: the parameters of a new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// An optional unique name: lower-case letters, digits, `.`, `_` and `-`, starting with a
    /// letter or digit, at most 128 characters, and not a UUID (ids and names share the
    /// `{key}` path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(?![0-9a-f]{32}$)(?![0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$)[a-z0-9][a-z0-9._-]{0,127}$",
            max_length = 128
        )
    )]
    pub name: Option<String>,
    /// Free text: at most 1024 characters, no control characters but newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub description: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// What the key may do (at least one, each allowed by the algorithm: encrypt, decrypt,
    /// wrap and unwrap for AES; sign and verify for the others); every usage the algorithm
    /// allows when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub usages: Option<Vec<Usage>>,
    /// Policy tags (at most 50): keys match `[A-Za-z0-9_./-]{1,64}`, values are at most 256
    /// characters without control characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = tags_schema))]
    pub tags: BTreeMap<String, String>,
    /// Where the material is kept: `sealed` in the server's store, or `pkcs11` in the
    /// server's PKCS#11 token (when it has one); the server's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custody: Option<Custody>,
}

/// The schema of a key's tags, with every rule the server checks.
#[cfg(feature = "openapi")]
fn tags_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let string = |pattern: &str, max: usize| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .max_length(Some(max))
            .build()
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(50))
        .property_names(Some(string(r"^[A-Za-z0-9_./-]{1,64}$", 64)))
        .additional_properties(Some(utoipa::openapi::schema::Schema::Object(string(
            r"^[^\x00-\x1F\x7F-\x9F]*$",
            256,
        ))))
        .build()
}

impl CreateKey {
    /// A request for an unnamed key of `algorithm` with default usages and no tags.
    pub fn new(algorithm: Algorithm) -> Self {
        CreateKey {
            name: None,
            description: None,
            algorithm,
            usages: None,
            tags: BTreeMap::new(),
            custody: None,
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the usages.
    pub fn usages(mut self, usages: &[Usage]) -> Self {
        self.usages = Some(usages.to_vec());
        self
    }
}

/// A key's metadata as callers see it: no material, sealed or otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// The id.
    pub id: Uuid,
    /// The name.
    #[serde(default)]
    pub name: Option<String>,
    /// The description.
    #[serde(default)]
    pub description: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Allowed usages.
    pub usages: Vec<Usage>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The lifecycle state.
    pub state: KeyState,
    /// The revocation, if revoked (kept through later states).
    #[serde(default)]
    pub revocation: Option<Revocation>,
    /// When a key pending destruction may be purged.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub destroy_after: Option<OffsetDateTime>,
    /// When the key was destroyed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub destroyed_at: Option<OffsetDateTime>,
    /// The version encrypt, sign and wrap use.
    pub current_version: u32,
    /// Every version.
    pub versions: Vec<VersionInfo>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Where the material is kept (`sealed` when a server does not say).
    #[serde(default = "Custody::sealed")]
    pub custody: Custody,
}

/// Why and when a key was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revocation {
    /// The reason.
    pub reason: RevocationReason,
    /// The note given with it.
    #[serde(default)]
    pub comment: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// One version's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// The number, from 1.
    pub version: u32,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether its material exists.
    pub state: VersionState,
    /// AES-GCM encryptions this version has used or reserved (at most 2^32; the key rotates
    /// automatically before that).
    #[serde(default)]
    pub encryptions: u64,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// The keys, oldest first.
    pub keys: Vec<KeyInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The query of `GET /v1/keys` (every filter must match).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListKeys {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only keys of this algorithm.
    pub algorithm: Option<Algorithm>,
    /// Only keys in this state.
    pub state: Option<KeyState>,
    /// Only keys carrying every one of these tags (key, value).
    pub tags: Vec<(String, String)>,
    /// Only named keys whose name starts with this.
    pub name_prefix: Option<String>,
}

impl ListKeys {
    /// The query as name-value pairs, in the order the server documents (`tag` repeats).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            pairs.push(("cursor", cursor.clone()));
        }
        if let Some(algorithm) = self.algorithm {
            pairs.push(("algorithm", algorithm.as_str().to_owned()));
        }
        if let Some(state) = self.state {
            pairs.push(("state", state.as_str().to_owned()));
        }
        for (k, v) in &self.tags {
            pairs.push(("tag", format!("{k}:{v}")));
        }
        if let Some(prefix) = &self.name_prefix {
            pairs.push(("name_prefix", prefix.clone()));
        }
        pairs
    }
}

/// `POST /v1/keys/{key}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make current.
    #[serde(deserialize_with = "crate::number::whole")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: u32,
}

/// `POST /v1/keys/{key}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why.
    pub reason: RevocationReason,
    /// A free-text note: at most 1024 characters, no control characters but newline and tab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = r"^[^\x00-\x08\x0B-\x1F\x7F-\x9F]*$")
    )]
    pub comment: Option<String>,
}

/// `POST /v1/keys/{key}/destroy` (the body is optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DestroyRequest {
    /// The grace period in seconds before the key may be purged (0 to 100 years; 0 purges at
    /// once); the policy's or the server's default when omitted.
    #[serde(
        default,
        deserialize_with = "crate::number::whole_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3_155_760_000_i64))]
    pub grace_seconds: Option<i64>,
}
