//! Cryptographic operations on stored keys: encrypt, decrypt, sign, verify, wrap, unwrap, public keys, and AES-GCM nonce accounting.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
    /// Encrypts with the current version under AES-256-GCM, binding `aad`.
    pub async fn encrypt(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Encrypted> {
        self.run(ctx, Operation::Encrypt, Some(key), async {
            self.limit("plaintext", plaintext.len())?;
            self.limit("aad", aad.len())?;
            let sealer = &self.inner.sealer;
            let provider = self.inner.provider.as_ref();
            let params = || {
                let mut list = params::secret(sealer, "plaintext", plaintext).to_vec();
                list.extend(params::public(provider, "aad", aad));
                list
            };
            let (verified, version) =
                self.usable(ctx, key, Operation::Encrypt, Usage::Encrypt, None, params).await?;
            self.count_nonce(&verified.record, version).await?;
            let failed = crypto_error(Operation::Encrypt, verified.record.id);
            let body = self
                .with_secret(&verified, version, |secret| {
                    secret.encrypt(plaintext, aad).map_err(failed)
                })
                .await?;
            Ok(Encrypted {
                key_id: verified.record.id,
                key_version: version,
                ciphertext: format::format(version, &body),
                custody: verified.record.custody.clone(),
            })
        })
        .await
    }

    /// Decrypts a `fhsm:v<N>:` ciphertext with the version it names.
    pub async fn decrypt(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<Decrypted> {
        self.run(ctx, Operation::Decrypt, Some(key), async {
            self.limit("ciphertext", ciphertext.len() / 4 * 3)?;
            self.limit("aad", aad.len())?;
            let (version, body) = format::parse(ciphertext)?;
            let provider = self.inner.provider.as_ref();
            let params = || {
                let mut list =
                    params::public(provider, "ciphertext", ciphertext.as_bytes()).to_vec();
                list.extend(params::public(provider, "aad", aad));
                list
            };
            let (verified, version) = self
                .usable(ctx, key, Operation::Decrypt, Usage::Decrypt, Some(version), &params)
                .await?;
            let id = verified.record.id;
            let plaintext = self
                .with_secret(&verified, version, |secret| {
                    secret.decrypt(&body, aad).map_err(|e| match e {
                        ferrohsm_crypto::Error::Unavailable(m) => Error::VaultUnavailable(m),
                        ferrohsm_crypto::Error::KeyMissing(_) => Error::Integrity(id),
                        _ => Error::InvalidCiphertext(
                            "it does not decrypt under this key and associated data",
                        ),
                    })
                })
                .await?;
            Ok(Decrypted {
                key_id: verified.record.id,
                key_version: version,
                plaintext,
                custody: verified.record.custody.clone(),
            })
        })
        .await
    }

    /// Signs a message (hashed here) or a pre-computed digest with the current version.
    /// `scheme` defaults to the algorithm's default scheme.
    pub async fn sign(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        input: SignInput<'_>,
        scheme: Option<SignatureScheme>,
    ) -> Result<Signed> {
        self.run(ctx, Operation::Sign, Some(key), async {
            self.limit_input(input)?;
            let params = || params::signed(self.inner.provider.as_ref(), input, scheme);
            let (verified, version) =
                self.usable(ctx, key, Operation::Sign, Usage::Sign, None, params).await?;
            let scheme = scheme_for(&verified.record, scheme)?;
            let failed = crypto_error(Operation::Sign, verified.record.id);
            let signature = self
                .with_secret(&verified, version, |secret| {
                    secret.sign(scheme, input).map_err(failed)
                })
                .await?;
            Ok(Signed {
                key_id: verified.record.id,
                key_version: version,
                algorithm: scheme,
                signature,
                custody: verified.record.custody.clone(),
            })
        })
        .await
    }

    /// Verifies a signature with `version` (the current version when `None`). Needs only the
    /// authenticated public key, never the private material.
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        input: SignInput<'_>,
        signature: &[u8],
        scheme: Option<SignatureScheme>,
        version: Option<u32>,
    ) -> Result<Verified> {
        self.run(ctx, Operation::Verify, Some(key), async {
            self.limit_input(input)?;
            self.limit("signature", signature.len())?;
            let params = || {
                let provider = self.inner.provider.as_ref();
                let mut list = params::signed(provider, input, scheme);
                list.extend(params::public(provider, "signature", signature));
                list.push(params::optional(
                    "key_version",
                    version.map(|v| v.to_string()).as_deref(),
                ));
                list
            };
            let (verified, version) =
                self.usable(ctx, key, Operation::Verify, Usage::Verify, version, params).await?;
            let scheme = scheme_for(&verified.record, scheme)?;
            let public = verified.public(self.inner.provider.as_ref(), version)?;
            let valid = public
                .verify(scheme, input, signature)
                .map_err(crypto_error(Operation::Verify, verified.record.id))?;
            Ok(Verified {
                key_id: verified.record.id,
                key_version: version,
                algorithm: scheme,
                valid,
            })
        })
        .await
    }

    /// Wraps key material with the current version (AES key wrap with padding, RFC 5649).
    pub async fn wrap(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        key_material: &[u8],
    ) -> Result<Wrapped> {
        self.run(ctx, Operation::Wrap, Some(key), async {
            self.limit("key material", key_material.len())?;
            if key_material.is_empty() {
                return Err(Error::InvalidRequest("key material to wrap cannot be empty".into()));
            }
            let params =
                || params::secret(&self.inner.sealer, "key_material", key_material).to_vec();
            let (verified, version) =
                self.usable(ctx, key, Operation::Wrap, Usage::Wrap, None, params).await?;
            let failed = crypto_error(Operation::Wrap, verified.record.id);
            let body = self
                .with_secret(&verified, version, |secret| secret.wrap(key_material).map_err(failed))
                .await?;
            Ok(Wrapped {
                key_id: verified.record.id,
                key_version: version,
                wrapped: format::format(version, &body),
                custody: verified.record.custody.clone(),
            })
        })
        .await
    }

    /// Unwraps a `fhsm:v<N>:` wrapped key with the version it names.
    pub async fn unwrap(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        wrapped: &str,
    ) -> Result<Unwrapped> {
        self.run(ctx, Operation::Unwrap, Some(key), async {
            self.limit("wrapped key", wrapped.len() / 4 * 3)?;
            let (version, body) = format::parse(wrapped)?;
            let params = || {
                params::public(self.inner.provider.as_ref(), "wrapped", wrapped.as_bytes()).to_vec()
            };
            let (verified, version) = self
                .usable(ctx, key, Operation::Unwrap, Usage::Unwrap, Some(version), &params)
                .await?;
            let id = verified.record.id;
            let key_material = self
                .with_secret(&verified, version, |secret| {
                    secret.unwrap(&body).map_err(|e| match e {
                        ferrohsm_crypto::Error::Unavailable(m) => Error::VaultUnavailable(m),
                        ferrohsm_crypto::Error::KeyMissing(_) => Error::Integrity(id),
                        _ => Error::InvalidCiphertext("it does not unwrap under this key"),
                    })
                })
                .await?;
            Ok(Unwrapped {
                key_id: verified.record.id,
                key_version: version,
                key_material,
                custody: verified.record.custody.clone(),
            })
        })
        .await
    }

    /// The public key of `version` (the current version when `None`) as PEM and DER.
    pub async fn public_key(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        version: Option<u32>,
    ) -> Result<PublicKeyInfo> {
        self.run(ctx, Operation::ExportPublicKey, Some(key), async {
            let verified = self.load(key).await?;
            let record = &verified.record;
            self.authorize(ctx, Operation::ExportPublicKey, Some(record), None, || {
                vec![params::optional("version", version.map(|v| v.to_string()).as_deref())]
            })
            .await?;
            if record.algorithm.is_symmetric() {
                return Err(Error::Unsupported {
                    operation: Operation::ExportPublicKey,
                    algorithm: record.algorithm,
                });
            }
            let version = self.check_use(record, Operation::ExportPublicKey, version)?;
            let der = record
                .version(version)
                .and_then(|v| v.public_key.clone())
                .ok_or(Error::Integrity(record.id))?;
            Ok(PublicKeyInfo {
                key_id: record.id,
                key_version: version,
                algorithm: record.algorithm,
                pem: public_key_pem(&der),
                jwk: crate::jwk::from_spki(record.algorithm, &der),
                der,
                custody: record.custody.clone(),
            })
        })
        .await
    }

    /// Counts one AES-GCM encryption (one random nonce) under `version`, inside a block of
    /// the version's budget this process leased: refused at the budget's limit, a new block
    /// leased in the stored record when the held one is used up (so a crash loses at most a
    /// block, counted as used), and an automatic rotation started when the count reaches
    /// `rotate_at`. Counting is synchronous; only the rare lease awaits a write.
    async fn count_nonce(&self, record: &KeyRecord, version: u32) -> Result<()> {
        // Each round either counts, or leases a block (some of which concurrent encryptions
        // of this process may take first), or fails: a block is never empty, so this ends.
        for _ in 0..LEASE_ROUNDS {
            if self.take_nonce(record, version)? {
                return Ok(());
            }
            self.lease_nonces(record.id, version).await?;
        }
        Err(Error::Conflict(format!(
            "key {} is encrypting too fast to count; try again",
            record.id
        )))
    }

    /// Takes the next encryption of the block held for `version`; false when the block is
    /// used up (or none is held yet). Refused once the budget's limit is reached.
    fn take_nonce(&self, record: &KeyRecord, version: u32) -> Result<bool> {
        let budget = self.inner.keys.nonce_budget;
        let key = (record.id, version);
        let rotate = {
            let mut nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
            // First seen: everything reserved so far counts as used, and no block is held.
            let stored = record.version(version).map_or(0, |v| v.encryptions_reserved);
            let entry =
                nonces.0.entry(key).or_insert(NonceCount { count: stored, ceiling: stored });
            if entry.count >= budget.limit {
                return Err(nonce_budget_spent(record, version, budget));
            }
            if entry.count >= entry.ceiling {
                return Ok(false);
            }
            entry.count += 1;
            entry.count >= budget.rotate_at && nonces.1.insert(key)
        };
        if rotate {
            let hsm = self.clone();
            let id = record.id;
            tokio::spawn(async move {
                let ctx = RequestContext::local("system:nonce-budget");
                if let Err(e) = hsm.rotate_key(&ctx, &KeyRef::Id(id)).await {
                    tracing::error!(key = %id, error = %e, "rotating a key near its AES-GCM nonce budget failed");
                    hsm.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner()).1.remove(&key);
                }
            });
        }
        Ok(true)
    }

    /// Leases the next block of `version`'s encryptions unless the block held still has room:
    /// it takes the `reserve` encryptions after the stored reservation and raises the
    /// reservation past them, in one compare-and-swap write, so processes sharing the store
    /// (replicas) lease disjoint blocks and the stored reservation always covers every
    /// encryption any of them made; what others leased meanwhile is skipped (counted as
    /// used). Leases of one key version are made one at a time, and a caller that finds a
    /// block leased while it waited returns without writing, so concurrent encryptions that
    /// use up a block make one write between them.
    fn lease_nonces(
        &self,
        id: KeyId,
        version: u32,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            let slot = {
                let mut slots =
                    self.inner.keys.reservations.lock().unwrap_or_else(|p| p.into_inner());
                slots.entry((id, version)).or_default().clone()
            };
            // Held across the write: the next caller sees what it leased.
            let _turn = slot.lock().await;
            let budget = self.inner.keys.nonce_budget;
            let room = |hsm: &Hsm| {
                let nonces = hsm.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
                nonces.0.get(&(id, version)).is_some_and(|n| n.count < n.ceiling)
            };
            for _ in 0..LEASE_ROUNDS {
                if room(self) {
                    return Ok(());
                }
                // The stored reservation the successful write started from.
                let start = std::sync::atomic::AtomicU64::new(0);
                let leased = self
                    .modify(&KeyRef::Id(id), |old, next| {
                        let stored = old.version(version).map_or(0, |v| v.encryptions_reserved);
                        if stored >= budget.limit {
                            return Err(nonce_budget_spent(old, version, budget));
                        }
                        start.store(stored, std::sync::atomic::Ordering::Relaxed);
                        let end = stored.saturating_add(budget.reserve).min(budget.limit);
                        if let Some(v) = next.versions.iter_mut().find(|v| v.version == version) {
                            v.encryptions_reserved = end;
                        }
                        Ok(())
                    })
                    .await;
                let info = match leased {
                    // Other processes leasing blocks of the same version won every attempt:
                    // each conflict is someone's progress, so try again (bounded).
                    Err(Error::Conflict(_)) => continue,
                    other => other?,
                };
                let start = start.into_inner();
                let end = info
                    .versions
                    .iter()
                    .find(|v| v.version == version)
                    .map_or(start, |v| v.encryptions);
                let mut nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = nonces.0.get_mut(&(id, version)) {
                    n.count = start.max(n.count);
                    n.ceiling = end;
                }
                return Ok(());
            }
            Err(Error::Conflict(format!("key {id} kept changing; try again")))
        })
    }

    /// The largest share of its AES-GCM nonce budget any key version has used (0 to 1), for
    /// metrics.
    pub fn nonce_budget_used(&self) -> f64 {
        let nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let max = nonces.0.values().map(|n| n.count).max().unwrap_or(0);
        max as f64 / self.inner.keys.nonce_budget.limit.max(1) as f64
    }
}

/// How many rounds an encryption may spend on leasing blocks of the nonce budget (each lost
/// to other processes' leases, or used up by this process's other encryptions) before it is
/// answered `conflict`.
const LEASE_ROUNDS: u32 = 16;

/// The refusal of an encryption under a version whose AES-GCM budget is spent.
fn nonce_budget_spent(record: &KeyRecord, version: u32, budget: NonceBudget) -> Error {
    Error::InvalidState {
        key: record.id,
        state: record.state,
        detail: format!(
            " (version {version} used its {} AES-GCM encryptions; rotate the key)",
            budget.limit
        ),
        operation: Operation::Encrypt,
    }
}

fn scheme_for(record: &KeyRecord, scheme: Option<SignatureScheme>) -> Result<SignatureScheme> {
    let scheme = scheme
        .or(record.algorithm.default_scheme())
        .ok_or(Error::Unsupported { operation: Operation::Sign, algorithm: record.algorithm })?;
    if !record.algorithm.supports_scheme(scheme) {
        return Err(Error::InvalidRequest(format!(
            "{scheme} cannot be used with a {} key",
            record.algorithm
        )));
    }
    Ok(scheme)
}

/// Maps a provider error during `operation` on `key`: caller mistakes keep their meaning, a
/// vault that lost the key is an integrity failure, anything else is an internal failure.
fn crypto_error(operation: Operation, key: KeyId) -> impl Fn(ferrohsm_crypto::Error) -> Error {
    move |e| match e {
        ferrohsm_crypto::Error::InvalidInput(msg) => Error::InvalidRequest(msg),
        ferrohsm_crypto::Error::Unsupported { algorithm, .. } => {
            Error::Unsupported { operation, algorithm }
        }
        ferrohsm_crypto::Error::Unavailable(msg) => Error::VaultUnavailable(msg),
        ferrohsm_crypto::Error::KeyMissing(_) => Error::Integrity(key),
        other => Error::Crypto(other),
    }
}

impl Hsm {
    /// Runs `op` with the key of `version`. Sealed material is used in place. A vault-held
    /// key's calls go to the vault, which may wait on a device or a network, so they run where
    /// blocking is allowed (never stalling the async workers) and a bounded number at once
    /// ([`HsmBuilder::vault_limits`]): a vault that hangs holds that many threads, and later
    /// calls answer 503 after the wait instead of queueing without bound.
    async fn with_secret<T>(
        &self,
        verified: &VerifiedKey,
        version: u32,
        op: impl FnOnce(&dyn ferrohsm_crypto::SecretKey) -> Result<T>,
    ) -> Result<T> {
        let held = verified.record.version(version).is_some_and(|v| v.external.is_some());
        if !held {
            let secret = self.secret(verified, version)?;
            return op(secret.as_ref());
        }
        let wait = self.inner.keys.vault_wait;
        let busy = || {
            Error::VaultUnavailable(format!(
                "the key vault is busy: no operation finished within {} ms",
                wait.as_millis()
            ))
        };
        let _turn = tokio::time::timeout(wait, self.inner.keys.vault_calls.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        blocking(|| {
            let secret = self.secret(verified, version)?;
            op(secret.as_ref())
        })
    }
}

/// Runs `f`, which may block, without stalling the other tasks of a multi-threaded runtime
/// (its worker hands them to another thread first). On a single-threaded runtime, where
/// that is impossible, `f` runs in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
