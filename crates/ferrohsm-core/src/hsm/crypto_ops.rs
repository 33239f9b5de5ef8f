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
            if let Some(count) = self.take_nonce(&verified.record, version)? {
                self.reserve_nonces(verified.record.id, version, count).await?;
            }
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

    /// Counts one AES-GCM encryption (one random nonce) under `version`: refused at the
    /// budget's limit, a new block reserved in the stored record before the count passes
    /// what is reserved (so a crash loses at most a block, counted as used), and an automatic
    /// rotation started when the count reaches `rotate_at`. The count itself is synchronous;
    /// only the rare reservation awaits a write. Returns the count when it passes what
    /// `record` says is reserved: `reserve_nonces` must then cover it before the encryption.
    pub(super) fn take_nonce(&self, record: &KeyRecord, version: u32) -> Result<Option<u64>> {
        let budget = self.inner.keys.nonce_budget;
        let reserved = record.version(version).map_or(0, |v| v.encryptions_reserved);
        let key = (record.id, version);
        let (count, rotate) = {
            let mut nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
            let count = nonces.0.entry(key).or_insert(reserved);
            if *count >= budget.limit {
                return Err(Error::InvalidState {
                    key: record.id,
                    state: record.state,
                    detail: format!(
                        " (version {version} used its {} AES-GCM encryptions; rotate the key)",
                        budget.limit
                    ),
                    operation: Operation::Encrypt,
                });
            }
            *count += 1;
            let count = *count;
            let rotate = count >= budget.rotate_at && nonces.1.insert(key);
            (count, rotate)
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
        Ok((count > reserved).then_some(count))
    }

    /// Makes sure at least `count` encryptions of `version` are reserved in the stored record
    /// (never lowering a reservation). The writes for one key version are made one at a time,
    /// each reserving a block beyond every encryption counted so far; a caller that finds its
    /// count covered by a write made while it waited returns without writing. So concurrent
    /// encryptions that pass a reservation together (the first ones under a new version or
    /// after a restart) make one write between them instead of one each, which would race
    /// for the record's revision until some ran out of attempts.
    pub(super) fn reserve_nonces(
        &self,
        id: KeyId,
        version: u32,
        count: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            let slot = {
                let mut slots =
                    self.inner.keys.reservations.lock().unwrap_or_else(|p| p.into_inner());
                slots.entry((id, version)).or_default().clone()
            };
            // Held across the write: the next caller sees what it persisted.
            let mut persisted = slot.lock().await;
            if *persisted >= count {
                return Ok(());
            }
            let budget = self.inner.keys.nonce_budget;
            let counted = {
                let nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
                nonces.0.get(&(id, version)).copied().unwrap_or(count).max(count)
            };
            let target = counted.saturating_add(budget.reserve).min(budget.limit);
            let info = self
                .modify(&KeyRef::Id(id), |old, next| {
                    let stored = old.version(version).map_or(0, |v| v.encryptions_reserved);
                    if let Some(v) = next.versions.iter_mut().find(|v| v.version == version) {
                        v.encryptions_reserved = stored.max(target);
                    }
                    Ok(())
                })
                .await?;
            let stored = info.versions.iter().find(|v| v.version == version);
            *persisted = stored.map_or(0, |v| v.encryptions).max(*persisted);
            Ok(())
        })
    }

    /// The largest share of its AES-GCM nonce budget any key version has used (0 to 1), for
    /// metrics.
    pub fn nonce_budget_used(&self) -> f64 {
        let nonces = self.inner.keys.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let max = nonces.0.values().copied().max().unwrap_or(0);
        max as f64 / self.inner.keys.nonce_budget.limit.max(1) as f64
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
