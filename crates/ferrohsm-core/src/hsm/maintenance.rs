//! Scheduled maintenance: purging keys whose destruction is due and rotating keys that are due.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
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
                    due.push(record.id);
                }
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        let mut rotated = Vec::with_capacity(due.len());
        for id in due {
            // As for purges: a key that cannot be rotated now is audited and skipped.
            match self.rotate_key(ctx, &KeyRef::Id(id)).await {
                Ok(_) => rotated.push(id),
                Err(e) => tracing::warn!(key = %id, error = %e, "rotation skipped"),
            }
        }
        Ok(rotated)
    }
}
