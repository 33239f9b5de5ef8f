//! Bearer tokens the HSM signs, and token revocations (checked on every request).

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
    /// The key this HSM signs bearer tokens with (for publishing and checking them).
    pub fn token_key(&self) -> &TokenKey {
        &self.inner.tokens.key
    }

    /// Signs a token's JWS signing input with the token key: the audited way to issue a
    /// token (`issue_token`, admin only, and under dual control when the policy says so).
    /// `grant` is what the token says; the frontend builds `signing_input` from it and from
    /// the caller's mint chain ([`RequestContext::minted_by`] plus the caller).
    pub async fn issue_token(
        &self,
        ctx: &RequestContext,
        grant: &TokenGrant,
        signing_input: &[u8],
    ) -> Result<Vec<u8>> {
        let issued = self
            .run(ctx, Operation::IssueToken, None, async {
                if grant.ttl > self.inner.tokens.max_lifetime || grant.ttl <= Duration::ZERO {
                    return Err(Error::InvalidRequest(format!(
                        "the lifetime must be between 1 and {} seconds",
                        self.inner.tokens.max_lifetime.whole_seconds()
                    )));
                }
                self.authorize(ctx, Operation::IssueToken, None, None, || {
                    let mut chain: Vec<String> =
                        ctx.minted_by.iter().map(|p| format!("{} ({})", p.sub, p.iss)).collect();
                    chain.push(format!("{} ({})", ctx.actor, ctx.issuer));
                    vec![
                        Parameter::new("sub", grant.subject.clone()),
                        Parameter::new("roles", grant.roles.join(", ")),
                        Parameter::new("ttl_seconds", grant.ttl.whole_seconds().to_string()),
                        params::optional("cert_sha256", grant.cert_sha256.as_deref()),
                        Parameter::new("minted_by", chain.join(" -> ")),
                    ]
                })
                .await?;
                let signature = self.inner.tokens.key.sign(signing_input)?;
                Ok(IssuedToken { subject: grant.subject.clone(), signature })
            })
            .await?;
        Ok(issued.signature)
    }

    /// Revokes every token whose `jti` (or `sid`) is `value`, from now until the longest
    /// lifetime a token may have has passed. Audited as `revoke_token` (admin only).
    pub async fn revoke_token(
        &self,
        ctx: &RequestContext,
        matches: TokenMatch,
        value: &str,
        reason: Option<String>,
    ) -> Result<TokenRevocation> {
        self.run(ctx, Operation::RevokeToken, None, async {
            validate::token_field(matches.as_str(), value)?;
            if let Some(r) = &reason {
                validate::description(Some(r))?;
            }
            self.authorize(ctx, Operation::RevokeToken, None, None, || {
                vec![
                    Parameter::new(matches.as_str(), value),
                    params::optional("reason", reason.as_deref()),
                ]
            })
            .await?;
            let now = OffsetDateTime::now_utc();
            let mut revocation = TokenRevocation {
                id: uuid::Uuid::now_v7(),
                matches,
                value: value.to_owned(),
                reason: reason.clone(),
                revoked_by: ctx.actor.clone(),
                revoked_at: now,
                expires_at: now + self.inner.tokens.max_lifetime + REVOCATION_MARGIN,
                tag: None,
            };
            let tag = self.inner.sealer.authenticate(&revocation.canonical_bytes());
            revocation.tag = Some(ferrohsm_crypto::b64::encode(&tag.0));
            self.inner.tokens.revocations.add(revocation.clone(), now).await?;
            {
                let mut revoked =
                    self.inner.tokens.revoked.write().unwrap_or_else(|p| p.into_inner());
                revoked.0.insert((matches, value.to_owned()));
                revoked.1.insert(revocation.id);
            }
            Ok(RevokedToken(revocation))
        })
        .await
        .map(|r| r.0)
    }

    /// Whether a token with this `jti` and `sid` is revoked (a set lookup; call it on every
    /// request, cached verification or not).
    pub fn is_token_revoked(&self, jti: Option<&str>, sid: Option<&str>) -> bool {
        let revoked = &self.inner.tokens.revoked.read().unwrap_or_else(|p| p.into_inner()).0;
        if revoked.is_empty() {
            return false;
        }
        let hit = |m: TokenMatch, v: Option<&str>| {
            v.is_some_and(|v| revoked.contains(&(m, v.to_owned())))
        };
        hit(TokenMatch::Jti, jti) || hit(TokenMatch::Sid, sid)
    }

    /// Re-reads the live revocations from the store (so revocations made by another replica
    /// take effect here), dropping expired ones and any whose integrity tag fails.
    pub async fn refresh_token_revocations(&self) -> Result<()> {
        if let Some(d) = self.inner.tokens.revocations.damaged().first() {
            // Fail closed: forgetting a revocation could let a revoked token back in.
            return Err(Error::Store(ferrohsm_store::Error::Corrupt {
                record: format!("token revocation {}", d.location),
                reason: d.reason.clone(),
            }));
        }
        let live = self.inner.tokens.revocations.live(OffsetDateTime::now_utc()).await?;
        let known = self.inner.tokens.revoked.read().unwrap_or_else(|p| p.into_inner()).1.clone();
        let mut set = HashSet::with_capacity(live.len());
        let mut ids = HashSet::with_capacity(live.len());
        for r in live {
            // Checked once per revocation. One that fails its tag is reported but still
            // honoured: a forged revocation can only cut a token off, never let one in.
            if !known.contains(&r.id) {
                let genuine = r
                    .tag
                    .as_deref()
                    .and_then(|t| ferrohsm_crypto::b64::decode(t).ok())
                    .is_some_and(|tag| {
                        let tag = ferrohsm_seal::MetadataTag(tag);
                        self.inner.sealer.verify(&r.canonical_bytes(), &tag).is_ok()
                    });
                if !genuine {
                    tracing::error!(revocation = %r.id, "a stored token revocation failed its integrity check; honoured anyway");
                }
            }
            ids.insert(r.id);
            set.insert((r.matches, r.value));
        }
        *self.inner.tokens.revoked.write().unwrap_or_else(|p| p.into_inner()) = (set, ids);
        Ok(())
    }

    /// The longest a bearer token may live.
    pub fn max_token_lifetime(&self) -> Duration {
        self.inner.tokens.max_lifetime
    }
}

/// A revocation, audited with what it matches.
struct RevokedToken(TokenRevocation);

impl Audited for RevokedToken {
    fn note(&self) -> Option<String> {
        Some(format!("tokens with {} {} revoked", self.0.matches.as_str(), self.0.value))
    }
}

/// A token signature, audited with its subject.
struct IssuedToken {
    subject: String,
    signature: Vec<u8>,
}

impl Audited for IssuedToken {
    fn note(&self) -> Option<String> {
        Some(format!("token issued for {}", self.subject))
    }
}
