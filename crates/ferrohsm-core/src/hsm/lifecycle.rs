//! Key lifecycle: create, list, describe, rotate, roll back, revoke, schedule and cancel destruction, purge (SPEC §3).

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
    /// Creates a key with fresh material as version 1.
    pub async fn create_key(&self, ctx: &RequestContext, request: CreateKey) -> Result<KeyInfo> {
        self.run(ctx, Operation::CreateKey, None, async {
            let name = validate::name(request.name.as_deref())?;
            let description = validate::description(request.description.as_deref())?;
            validate::tags(&request.tags)?;
            let usages = validate::usages(request.algorithm, request.usages.as_deref())?;
            let vault = self.custody_for(request.custody.as_deref(), request.algorithm)?;
            let params = || {
                let usages: Vec<&str> = usages.iter().map(|u| u.as_str()).collect();
                let mut list = vec![
                    Parameter::new("algorithm", request.algorithm.to_string()),
                    params::optional("name", request.name.as_deref()),
                    Parameter::new("tags", params::tags(&request.tags)),
                    Parameter::new("usages", usages.join(", ")),
                ];
                if let Some(vault) = &vault {
                    list.push(Parameter::new("custody", vault.custody()));
                }
                list
            };
            self.authorize(ctx, Operation::CreateKey, None, Some(&request.tags), params).await?;
            if let Some(name) = &name
                && self.inner.keys.store.find_by_name(name).await?.is_some()
            {
                return Err(Error::Conflict(format!("the name {name} is already taken")));
            }
            let id = KeyId::generate();
            let label = name.as_ref().map_or_else(|| id.to_string(), |n| n.to_string());
            let fresh = self.fresh(vault.as_ref(), (id, 1), request.algorithm, &label).await?;
            let now = OffsetDateTime::now_utc();
            let record = KeyRecord {
                id,
                name,
                description,
                algorithm: request.algorithm,
                usages,
                tags: request.tags,
                state: KeyState::Active,
                revocation: None,
                destroy_after: None,
                destroyed_at: None,
                current_version: 1,
                versions: vec![self.new_version(id, 1, &fresh, now)?],
                created_at: now,
                updated_at: now,
                created_by: ctx.actor.clone(),
                custody: vault.as_ref().map(|v| v.custody().to_owned()),
                revision: 1,
                tag: None,
            };
            let record = self.tagged(record);
            // `fresh` already had the remote store check the new material, so the write goes
            // to the inner store (which keeps every record) without checking it twice.
            let store =
                self.inner.keys.remote.as_ref().map_or(&self.inner.keys.store, |r| r.inner());
            let created = match &self.inner.keys.joint {
                // One commit for the key and its record: the success record is known now.
                Some(joint) => {
                    let success: Result<KeyInfo> = Ok(KeyInfo::from(&record));
                    let entry = super::audit_entry(ctx, Operation::CreateKey, None, &success);
                    joint.create_audited(record, entry).await.map(|(stored, _)| Recorded {
                        value: KeyInfo::from(stored.as_ref()),
                        recorded: true,
                    })
                }
                None => store.create(record).await.map(|stored| Recorded {
                    value: KeyInfo::from(stored.as_ref()),
                    recorded: false,
                }),
            };
            // A create the store refused holds nothing; its token objects go. (An error whose
            // outcome is unknown keeps them: the record may have been written.)
            if let Err(e) = &created
                && refused(e.code())
            {
                self.discard(&fresh).await;
            }
            Ok(created?)
        })
        .await
        .map(|r| r.value)
    }

    /// One page of keys, each integrity-checked.
    pub async fn list_keys(&self, ctx: &RequestContext, query: &ListQuery) -> Result<KeyList> {
        self.run(ctx, Operation::ListKeys, None, async {
            self.authorize(ctx, Operation::ListKeys, None, None, Vec::new).await?;
            let page = self.inner.keys.store.list(query).await?;
            let engine = self.inner.control.policy.engine();
            let mut keys = Vec::with_capacity(page.keys.len());
            for record in &page.keys {
                self.inner.keys.cache.check(&self.inner.sealer, record)?;
                // Keys whose tag policies exclude the caller are left out of the page (which may
                // then hold fewer than `limit` keys; the cursor still continues correctly).
                let request = PolicyRequest {
                    actor: &ctx.actor,
                    roles: &ctx.roles,
                    operation: Operation::ListKeys,
                    key_tags: Some(&record.tags),
                };
                if engine.decide(&request) == Decision::Allow {
                    keys.push(KeyInfo::from(record.as_ref()));
                }
            }
            Ok(KeyList { keys, next_cursor: page.next_cursor.map(|c| c.to_string()) })
        })
        .await
    }

    /// A key's metadata.
    pub async fn describe_key(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.run(ctx, Operation::DescribeKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::DescribeKey, Some(&verified.record), None, Vec::new)
                .await?;
            Ok(KeyInfo::from(verified.record.as_ref()))
        })
        .await
    }

    /// Adds a version with fresh material and makes it current. The key must be active.
    pub async fn rotate_key(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.rotate(ctx, key, None).await
    }

    /// [`Hsm::rotate_key`], refused with `conflict` when `due` says the stored record no
    /// longer needs it (checked before new material is made, and again on the record the
    /// write replaces).
    pub(super) async fn rotate(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        due: Option<&(dyn Fn(&KeyRecord) -> bool + Sync)>,
    ) -> Result<KeyInfo> {
        let not_due =
            || Error::Conflict("the key was rotated meanwhile; it is no longer due".into());
        self.run(ctx, Operation::RotateKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::RotateKey, Some(&verified.record), None, Vec::new)
                .await?;
            let record = &verified.record;
            require_state(record, Operation::RotateKey, &[KeyState::Active])?;
            if due.is_some_and(|due| !due(record)) {
                return Err(not_due());
            }
            let vault = self.vault_of(record)?;
            let label =
                record.name.as_ref().map_or_else(|| record.id.to_string(), |n| n.to_string());
            let next_version = u32::try_from(record.versions.len() + 1).unwrap_or(u32::MAX);
            let fresh = self
                .fresh(vault.as_ref(), (record.id, next_version), record.algorithm, &label)
                .await?;
            let rotated = self
                .modify(key, |old, next| {
                    require_state(old, Operation::RotateKey, &[KeyState::Active])?;
                    if due.is_some_and(|due| !due(old)) {
                        return Err(not_due());
                    }
                    let version = u32::try_from(old.versions.len() + 1).map_err(|_| {
                        Error::InvalidRequest("the key has too many versions".into())
                    })?;
                    next.versions.push(self.new_version(
                        old.id,
                        version,
                        &fresh,
                        next.updated_at,
                    )?);
                    next.current_version = version;
                    Ok(())
                })
                .await;
            if let Err(e) = &rotated
                && refused(e.code())
            {
                self.discard(&fresh).await;
            }
            rotated
        })
        .await
    }

    /// Makes `version` current again. History is kept; the key must be active and the version
    /// not destroyed.
    pub async fn rollback_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        version: u32,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::RollbackKey, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(ctx, Operation::RollbackKey, Some(&verified.record), None, || {
                let current = verified.record.current_version.to_string();
                vec![
                    Parameter::new("current_version", current),
                    Parameter::new("version", version.to_string()),
                ]
            })
            .await?;
            self.modify(key, |old, next| {
                require_state(old, Operation::RollbackKey, &[KeyState::Active])?;
                let target =
                    old.version(version).ok_or(Error::VersionNotFound { key: old.id, version })?;
                if target.state == VersionState::Destroyed {
                    return Err(version_destroyed(old, version, Operation::RollbackKey));
                }
                next.current_version = version;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Revokes a key. An active key may be revoked for any reason; a revoked key may only be
    /// revoked again to escalate its reason to `compromised`.
    pub async fn revoke_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        reason: RevocationReason,
        comment: Option<String>,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::RevokeKey, Some(key), async {
            if let Some(c) = &comment {
                validate::description(Some(c))?;
            }
            let verified = self.load(key).await?;
            let params = || {
                vec![
                    Parameter::new("reason", reason.to_string()),
                    params::optional("comment", comment.as_deref()),
                ]
            };
            self.authorize(ctx, Operation::RevokeKey, Some(&verified.record), None, params).await?;
            self.modify(key, |old, next| {
                let escalation = old.state == KeyState::Revoked
                    && reason == RevocationReason::Compromised
                    && old
                        .revocation
                        .as_ref()
                        .is_some_and(|r| r.reason != RevocationReason::Compromised);
                if old.state != KeyState::Active && !escalation {
                    return Err(invalid_state(old, Operation::RevokeKey));
                }
                next.state = KeyState::Revoked;
                next.revocation =
                    Some(Revocation { reason, comment: comment.clone(), at: next.updated_at });
                Ok(())
            })
            .await
        })
        .await
    }

    /// Schedules destruction after `grace` (else the key's tag policy's grace, else the
    /// configured default). The key must be active or revoked; until it is purged it can be
    /// cancelled, and it refuses every cryptographic use.
    pub async fn schedule_destruction(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        grace: Option<Duration>,
    ) -> Result<KeyInfo> {
        self.run(ctx, Operation::ScheduleDestruction, Some(key), async {
            if grace.is_some_and(|g| g.is_negative() || g > MAX_DESTRUCTION_GRACE) {
                return Err(Error::InvalidRequest(
                    "the destruction grace period must be between zero and 100 years".into(),
                ));
            }
            let verified = self.load(key).await?;
            // The request's grace, else the key's tag policy, else the configured default:
            // decided before approval so approvers see the period that will apply.
            let policy_grace =
                self.inner.control.policy.engine().destruction_grace(&verified.record.tags);
            let (grace, origin) = match (grace, policy_grace) {
                (Some(g), _) => (g, "requested"),
                (None, Some(g)) => (g, "the key's tag policy"),
                (None, None) => (self.inner.keys.destruction_grace, "the server default"),
            };
            self.authorize(
                ctx,
                Operation::ScheduleDestruction,
                Some(&verified.record),
                None,
                || vec![params::grace(grace, origin)],
            )
            .await?;
            self.modify(key, |old, next| {
                require_state(
                    old,
                    Operation::ScheduleDestruction,
                    &[KeyState::Active, KeyState::Revoked],
                )?;
                next.state = KeyState::PendingDestruction;
                let after = next.updated_at.checked_add(grace).ok_or_else(|| {
                    Error::InvalidRequest("the destruction grace period is out of range".into())
                })?;
                next.destroy_after = Some(after);
                Ok(())
            })
            .await
        })
        .await
    }

    /// Cancels a scheduled destruction, returning the key to the state it had.
    pub async fn cancel_destruction(&self, ctx: &RequestContext, key: &KeyRef) -> Result<KeyInfo> {
        self.run(ctx, Operation::CancelDestruction, Some(key), async {
            let verified = self.load(key).await?;
            self.authorize(
                ctx,
                Operation::CancelDestruction,
                Some(&verified.record),
                None,
                Vec::new,
            )
            .await?;
            self.modify(key, |old, next| {
                require_state(old, Operation::CancelDestruction, &[KeyState::PendingDestruction])?;
                next.state =
                    if old.revocation.is_some() { KeyState::Revoked } else { KeyState::Active };
                next.destroy_after = None;
                Ok(())
            })
            .await
        })
        .await
    }

    pub(super) async fn purge(
        &self,
        ctx: &RequestContext,
        id: KeyId,
        now: OffsetDateTime,
    ) -> Result<Purged> {
        let verified = self.load(&KeyRef::Id(id)).await?;
        let old = &verified.record;
        self.authorize(ctx, Operation::PurgeKey, Some(old), None, Vec::new).await?;
        require_state(old, Operation::PurgeKey, &[KeyState::PendingDestruction])?;
        if old.destroy_after.is_none_or(|t| t > now) {
            return Err(invalid_state(old, Operation::PurgeKey));
        }
        let vault = self.vault_of(old)?;
        let mut next = successor(old);
        next.state = KeyState::Destroyed;
        next.destroy_after = None;
        next.destroyed_at = Some(next.updated_at);
        for v in &mut next.versions {
            v.state = VersionState::Destroyed;
            v.sealed = None;
            v.external = None;
        }
        let versions = u32::try_from(next.versions.len()).unwrap_or(u32::MAX);
        self.inner.keys.cache.remove(&id);
        // With a vault, the remote store destroys the material once the tombstone is committed
        // (before it, a concurrent cancellation could win and keep a key whose material was
        // gone); a handle the vault cannot destroy now is named in the purge record.
        let left = match &self.inner.keys.remote {
            Some(remote) => remote.purge_material(self.tagged(next)).await?.left,
            None => {
                self.inner.keys.store.purge(self.tagged(next)).await?;
                Vec::new()
            }
        };
        self.inner.keys.cache.remove(&id);
        Ok(Purged { key_id: id, versions, custody: vault.map(|v| v.custody()), left })
    }

    /// Generates material off the async runtime (RSA generation can take seconds) and returns
    /// it with its public key.
    pub(super) async fn generate(
        &self,
        algorithm: Algorithm,
    ) -> Result<(KeyMaterial, Option<Vec<u8>>)> {
        let provider = self.inner.provider.clone();
        tokio::task::spawn_blocking(move || {
            let material = provider.generate(algorithm).map_err(Error::Crypto)?;
            let public = provider
                .load(&material)
                .map_err(Error::Crypto)?
                .public_key_der()
                .map(<[u8]>::to_vec);
            Ok((material, public))
        })
        .await
        .map_err(|e| {
            Error::Crypto(ferrohsm_crypto::Error::InvalidInput(format!(
                "key generation task failed: {e}"
            )))
        })?
    }

    pub(super) fn new_version(
        &self,
        id: KeyId,
        version: u32,
        fresh: &Fresh,
        now: OffsetDateTime,
    ) -> Result<KeyVersion> {
        let (public_key, sealed, external) = match fresh {
            Fresh::Sealed(material, public_key) => {
                let key_id = id.to_string();
                let binding = Binding { key_id: &key_id, version, algorithm: material.algorithm() };
                let sealed = self.inner.sealer.seal(&binding, material).map_err(Error::Setup)?;
                (public_key.clone(), Some(sealed), None)
            }
            Fresh::Vault(custody, key) => (
                key.public_key_der.clone(),
                None,
                Some(ExternalMaterial {
                    custody: (*custody).to_owned(),
                    handle: key.handle.clone(),
                }),
            ),
        };
        Ok(KeyVersion {
            version,
            created_at: now,
            state: VersionState::Active,
            public_key,
            sealed,
            encryptions_reserved: 0,
            external,
        })
    }

    /// The vault a new key's material goes to (`None`: sealed): the requested custody, else
    /// the configured default.
    fn custody_for(
        &self,
        requested: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Option<Arc<dyn RemoteKeyVault>>> {
        let custody = requested.unwrap_or(&self.inner.keys.default_custody);
        if custody == crate::SEALED {
            return Ok(None);
        }
        let vault = self.inner.keys.vault.as_ref().filter(|v| v.custody() == custody);
        let Some(vault) = vault else {
            let available = match &self.inner.keys.vault {
                Some(v) => format!("{} or {}", crate::SEALED, v.custody()),
                None => crate::SEALED.to_owned(),
            };
            return Err(Error::InvalidRequest(format!(
                "custody {custody:?} is not available on this server (it offers {available})"
            )));
        };
        if !vault.supports(algorithm) {
            return Err(Error::Unsupported { operation: Operation::CreateKey, algorithm });
        }
        Ok(Some(vault.clone()))
    }

    /// The vault holding an existing key's material (`None`: sealed).
    pub(super) fn vault_of(&self, record: &KeyRecord) -> Result<Option<Arc<dyn RemoteKeyVault>>> {
        let Some(custody) = &record.custody else { return Ok(None) };
        match self.inner.keys.vault.as_ref().filter(|v| v.custody() == custody) {
            Some(vault) => Ok(Some(vault.clone())),
            None => Err(Error::VaultUnavailable(format!(
                "no {custody} key vault is configured for key {}",
                record.id
            ))),
        }
    }

    /// New material for version `for_version` of a key: generated here and sealed, or
    /// generated in `vault` and checked there by the remote store at once (a failure then
    /// discards it and is the vault's fault, never the caller's).
    async fn fresh(
        &self,
        vault: Option<&Arc<dyn RemoteKeyVault>>,
        for_version: (KeyId, u32),
        algorithm: Algorithm,
        label: &str,
    ) -> Result<Fresh> {
        match vault {
            None => {
                let (material, public_key) = self.generate(algorithm).await?;
                Ok(Fresh::Sealed(material, public_key))
            }
            Some(vault) => {
                let (vault, label) = (vault.clone(), label.to_owned());
                let custody = vault.custody();
                let key = tokio::task::spawn_blocking(move || vault.generate(algorithm, &label))
                    .await
                    .map_err(|e| Error::VaultUnavailable(format!("generating: {e}")))?
                    .map_err(vault_error)?;
                let fresh = Fresh::Vault(custody, key);
                if let (Some(remote), Fresh::Vault(custody, key)) =
                    (&self.inner.keys.remote, &fresh)
                {
                    let external = ExternalMaterial {
                        custody: (*custody).to_owned(),
                        handle: key.handle.clone(),
                    };
                    let material = ferrohsm_store::Material {
                        key: for_version.0,
                        version: for_version.1,
                        algorithm,
                        external: &external,
                        public_key: key.public_key_der.as_deref(),
                    };
                    if let Err(e) = remote.check_material(material).await {
                        self.discard(&fresh).await;
                        return Err(match e {
                            ferrohsm_store::Error::Unavailable { what, .. } => {
                                Error::VaultUnavailable(what)
                            }
                            other => {
                                tracing::error!(error = %other, "the key vault does not hold the key it generated");
                                Error::Crypto(ferrohsm_crypto::Error::KeyRejected(algorithm))
                            }
                        });
                    }
                }
                Ok(fresh)
            }
        }
    }

    /// Destroys vault material that no record came to hold (a failed create or rotation).
    async fn discard(&self, fresh: &Fresh) {
        let (Fresh::Vault(custody, key), Some(vault)) = (fresh, self.inner.keys.vault.clone())
        else {
            return;
        };
        if vault.custody() != *custody {
            return;
        }
        let handle = key.handle.clone();
        let destroyed = tokio::task::spawn_blocking(move || vault.destroy(&handle)).await;
        if !matches!(destroyed, Ok(Ok(()))) {
            tracing::warn!(handle = %key.handle, "an unused key could not be destroyed in the vault");
        }
    }

    pub(super) fn tagged(&self, mut record: KeyRecord) -> KeyRecord {
        record.tag = None;
        record.tag = Some(self.inner.sealer.authenticate(&record.canonical_bytes()));
        record
    }

    /// Read-modify-write with optimistic concurrency: `change` edits a successor of the stored
    /// record; a concurrent change makes it start again from a fresh read.
    pub(super) async fn modify(
        &self,
        key: &KeyRef,
        change: impl Fn(&KeyRecord, &mut KeyRecord) -> Result<()>,
    ) -> Result<KeyInfo> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let verified = self.load(key).await?;
            let mut next = successor(&verified.record);
            change(&verified.record, &mut next)?;
            match self.inner.keys.store.update(self.tagged(next)).await {
                Ok(stored) => return Ok(KeyInfo::from(stored.as_ref())),
                Err(ferrohsm_store::Error::Conflict { .. }) if attempt < WRITE_ATTEMPTS => continue,
                Err(ferrohsm_store::Error::Conflict { id, .. }) => {
                    return Err(Error::Conflict(format!("key {id} kept changing; try again")));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn successor(record: &KeyRecord) -> KeyRecord {
    let mut next = record.clone();
    next.revision += 1;
    next.updated_at = OffsetDateTime::now_utc().max(record.updated_at);
    next.tag = None;
    next
}

fn require_state(record: &KeyRecord, operation: Operation, allowed: &[KeyState]) -> Result<()> {
    if allowed.contains(&record.state) { Ok(()) } else { Err(invalid_state(record, operation)) }
}

/// New material for a version.
pub(super) enum Fresh {
    /// Generated here, to be sealed, with its public key.
    Sealed(KeyMaterial, Option<Vec<u8>>),
    /// Generated in the vault of this custody.
    Vault(&'static str, VaultKey),
}

/// A vault's refusal as the core reports it.
fn vault_error(e: ferrohsm_crypto::Error) -> Error {
    match e {
        ferrohsm_crypto::Error::Unavailable(m) => Error::VaultUnavailable(m),
        ferrohsm_crypto::Error::InvalidInput(m) => Error::InvalidRequest(m),
        other => Error::Crypto(other),
    }
}

/// Whether a write was refused outright (nothing was written), as opposed to failing in a
/// way that may have written it (a failed fsync after the rename, a lost connection).
fn refused(code: &str) -> bool {
    matches!(code, "conflict" | "invalid_state" | "invalid_request" | "not_found")
}
