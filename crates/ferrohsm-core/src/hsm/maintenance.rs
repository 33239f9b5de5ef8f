//! Scheduled maintenance: purging keys whose destruction is due and rotating keys that are due,
//! and the leases that let one of several replicas sharing a store run them at a time.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

/// The most buckets one rate-usage report names.
const RATE_USAGE_REPORTED: usize = 1_000;

impl Hsm {
    /// Whether this HSM may run scheduled job `job` now: always with a store of its own; with
    /// a store several replicas share (PostgreSQL), only while it holds the job's lease,
    /// taken or renewed here for `ttl` (judged by the database's clock). A replica that dies
    /// holding it is replaced when `ttl` has passed.
    pub async fn lease(&self, job: &str, ttl: std::time::Duration) -> Result<bool> {
        match &self.inner.control.leases {
            None => Ok(true),
            Some(leases) => Ok(leases.acquire(job, &self.inner.control.holder, ttl).await?),
        }
    }

    /// Whether this HSM shares its rate limits with other processes on the same store
    /// (PostgreSQL replicas); if so, [`Hsm::share_rate_limits`] should run about every half
    /// second.
    pub fn shares_rate_limits(&self) -> bool {
        self.inner.control.rate_usage.is_some()
    }

    /// Reports what this HSM's callers used of their rate limits since the last call (the
    /// 1,000 heaviest buckets; the rest next time), and debits its buckets with what the
    /// same callers used on the other replicas. A caller's limit then holds across all
    /// replicas, up to what they admit between two exchanges. Does nothing without a shared
    /// store.
    pub async fn share_rate_limits(&self) -> Result<()> {
        let Some(shared) = &self.inner.control.rate_usage else { return Ok(()) };
        let limiter = &self.inner.control.policy.limiter;
        let usage = limiter.take_usage(RATE_USAGE_REPORTED);
        let others = match shared.exchange(&self.inner.control.holder, &usage).await {
            Ok(others) => others,
            Err(e) => {
                // Not reported: count it again next time.
                limiter.unreport(&usage);
                return Err(e.into());
            }
        };
        limiter.debit(&others, std::time::Instant::now());
        Ok(())
    }

    /// Purges every key whose destruction grace period ended at or before `now`: its material
    /// is wiped and a tombstone with its metadata remains. Returns the purged ids.
    pub async fn purge_due(&self, ctx: &RequestContext, now: OffsetDateTime) -> Result<Vec<KeyId>> {
        // Refuse (and record) a caller who may not purge at all, even when nothing is due.
        let roles_only = PolicyRequest {
            actor: &ctx.actor,
            roles: &ctx.roles,
            operation: Operation::PurgeKey,
            key_tags: None,
        };
        if let Decision::Deny(reason) = self.inner.control.policy.engine().decide(&roles_only) {
            let refused = async { Err::<Purged, _>(Error::Forbidden(reason)) };
            return self.run(ctx, Operation::PurgeKey, None, refused).await.map(|_| Vec::new());
        }
        let mut due = Vec::new();
        let mut query = ListQuery {
            limit: ferrohsm_store::MAX_LIST_LIMIT,
            state: Some(KeyState::PendingDestruction),
            ..ListQuery::default()
        };
        loop {
            let page = self.inner.keys.store.list(&query).await?;
            due.extend(
                page.keys
                    .iter()
                    .filter(|r| r.destroy_after.is_some_and(|t| t <= now))
                    .map(|r| r.id),
            );
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut purged = Vec::with_capacity(due.len());
        for id in due {
            // One key that cannot be purged (refused by policy, tampered, changed meanwhile)
            // is audited by `run` and skipped; it must not stop the others.
            let key = KeyRef::Id(id);
            match self.run(ctx, Operation::PurgeKey, Some(&key), self.purge(ctx, id, now)).await {
                Ok(_) => purged.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "purge skipped"),
            }
        }
        Ok(purged)
    }

    /// Rotates every active key whose current version is older than the maximum age its tag
    /// policies set (retention), as of `now`. Returns the rotated ids. Rotation goes through
    /// [`Hsm::rotate_key`], so it is authorized and audited like any other.
    pub async fn rotate_due(
        &self,
        ctx: &RequestContext,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyId>> {
        let engine = self.inner.control.policy.engine();
        let mut due = Vec::new();
        let mut query = ListQuery {
            limit: ferrohsm_store::MAX_LIST_LIMIT,
            state: Some(KeyState::Active),
            ..ListQuery::default()
        };
        loop {
            let page = self.inner.keys.store.list(&query).await?;
            for record in &page.keys {
                let Some(max_age) = engine.max_age(&record.tags) else { continue };
                let current = record.version(record.current_version).map(|v| v.created_at);
                if current.is_some_and(|created| created + max_age <= now) {
                    due.push((record.id, record.current_version));
                }
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut rotated = Vec::with_capacity(due.len());
        for (id, listed) in due {
            // Still due when the rotation is written: the version found due is still current
            // in the record the write replaces, so a rotation made meanwhile (by hand, or by
            // another replica) is not repeated.
            let still_due = |record: &KeyRecord| record.current_version == listed;
            // As for purges: a key that cannot be rotated now is audited and skipped.
            match self.rotate(ctx, &KeyRef::Id(id), Some(&still_due)).await {
                Ok(_) => rotated.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "rotation skipped"),
            }
        }
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduled rotation is written only while the version found due is still current:
    /// the second of two racing schedules (two replicas) is refused, not repeated.
    #[tokio::test]
    async fn a_rotation_found_due_is_not_repeated_once_another_made_it() {
        let hsm = Hsm::builder()
            .backend(BackendConfig::memory())
            .master_key(MasterKey::from_bytes(&[7u8; 32]).unwrap())
            .build()
            .await
            .unwrap();
        let ctx = RequestContext::local("system:scheduler");
        let info = hsm
            .create_key(&ctx, crate::CreateKey::new(ferrohsm_crypto::Algorithm::Aes256Gcm))
            .await
            .unwrap();
        let key = KeyRef::Id(info.id);
        let found_due = |record: &KeyRecord| record.current_version == 1;
        let first = hsm.rotate(&ctx, &key, Some(&found_due)).await;
        assert_eq!(first.map(|k| k.current_version).ok(), Some(2));
        let second = hsm.rotate(&ctx, &key, Some(&found_due)).await;
        assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
        let info = hsm.describe_key(&ctx, &key).await.unwrap();
        assert_eq!(info.current_version, 2, "rotated once");
    }
}
