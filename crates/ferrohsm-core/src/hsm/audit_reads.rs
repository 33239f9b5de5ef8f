//! Reading the HSM's own audit log (checkpoints, export, pages, verification), recording failed
//! authentications, and recording events of the server around the HSM (TLS certificates).

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
    /// Writes a signed checkpoint of the audit chain now and returns the latest checkpoint.
    pub async fn checkpoint_audit(&self, ctx: &RequestContext) -> Result<Option<Checkpoint>> {
        self.run(ctx, Operation::CheckpointAudit, None, async {
            self.authorize(ctx, Operation::CheckpointAudit, None, None, Vec::new).await?;
            self.inner.audit.sink.checkpoint().await.map_err(Error::AuditUnavailable)
        })
        .await
    }

    /// The latest signed checkpoint, without writing one.
    pub async fn latest_checkpoint(&self, ctx: &RequestContext) -> Result<Option<Checkpoint>> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            self.inner.audit.sink.latest_checkpoint().await.map_err(Error::AuditUnavailable)
        })
        .await
    }

    /// Writes the whole audit log as NDJSON (what `ferrohsm-audit-verify` checks) and returns
    /// the number of lines. The export's own record follows it, so the next export holds it.
    pub async fn export_audit(
        &self,
        ctx: &RequestContext,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            // Everything up to the checkpoint current now is in the export once it completes:
            // recorded, so retention knows an auditor holds it (see `apply_retention`).
            let through =
                self.inner.audit.sink.latest_checkpoint().await.map_err(Error::AuditUnavailable)?;
            let lines = self.inner.audit.sink.export(out).await.map_err(Error::AuditUnavailable)?;
            if let Some(cp) = through {
                crate::retention::record_export(self, ctx, lines, cp.seq).await?;
            }
            Ok(lines)
        })
        .await
    }

    /// A page of audit records matching `query`, oldest first. The read itself is recorded.
    pub async fn audit_records(
        &self,
        ctx: &RequestContext,
        query: AuditQuery,
    ) -> Result<AuditPage> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            let (filter, after, limit) = parse_query(&query)?;
            let page = self
                .inner
                .audit
                .sink
                .query(&filter, after, limit)
                .await
                .map_err(Error::AuditUnavailable)?;
            let next_cursor =
                page.more.then(|| page.records.last().map(|r| r.seq.to_string())).flatten();
            Ok(AuditPage { next_cursor, records: page.records })
        })
        .await
    }

    /// Verifies the whole audit log as an auditor would (chain, HMACs, checkpoint signatures)
    /// and reports the first bad record. A memory sink holds only recent records, so its log
    /// is checked as an excerpt.
    pub async fn verify_audit(&self, ctx: &RequestContext) -> Result<AuditVerification> {
        self.run(ctx, Operation::ReadAudit, None, async {
            self.authorize(ctx, Operation::ReadAudit, None, None, Vec::new).await?;
            let partial = self.inner.audit.sink.kind() == "memory";
            let verifier = ferrohsm_audit::Verifier::new(self.inner.provider.clone())
                .hmac_key(self.inner.audit.hmac_key.as_ref())
                .public_key(&self.inner.audit.public_der)
                .map_err(Error::Crypto)?
                .allow_partial(partial);
            let mut writer = VerifyWriter::new(verifier.start());
            self.inner.audit.sink.export(&mut writer).await.map_err(Error::AuditUnavailable)?;
            let _ = std::io::Write::flush(&mut writer);
            let result = match writer.failure {
                Some(failure) => Err(failure),
                None => writer.verification.finish(),
            };
            Ok(match result {
                Ok(report) => AuditVerification {
                    valid: true,
                    records: report.records,
                    signatures_checked: report.signatures_checked,
                    first_seq: Some(report.first_seq),
                    last_seq: Some(report.last_seq),
                    partial,
                    failure: None,
                },
                Err(failure) => AuditVerification {
                    valid: false,
                    records: 0,
                    signatures_checked: 0,
                    first_seq: None,
                    last_seq: None,
                    partial,
                    failure: Some(failure.to_string()),
                },
            })
        })
        .await
    }

    /// Records an event of the server around the HSM that auditors must see although no key is
    /// involved, such as a TLS certificate issued or renewed by ACME. `action` is namespaced by
    /// its component (`tls.…`); callers write these rarely (each is a deliberate step, or a
    /// failure retried with backoff), so they are not rate limited.
    pub async fn record_server_event(
        &self,
        ctx: &RequestContext,
        action: &str,
        outcome: ferrohsm_audit::Outcome,
        message: String,
    ) -> Result<()> {
        let mut entry = AuditEntry::new(&ctx.actor, action, outcome, ctx.request_id.clone());
        entry.message = Some(message);
        let written = self.inner.audit.sink.append(entry).await;
        let counter =
            if written.is_ok() { &self.inner.audit.written } else { &self.inner.audit.failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        written.map(|_| ()).map_err(Error::AuditUnavailable)
    }

    /// Records a request that failed authentication (the frontend decided; the core keeps the
    /// record). `ctx` carries what is known: source IP, request id, perhaps a claimed subject.
    /// Failures count against the source's rate limit (by IP for a remote caller with no
    /// actor); beyond it this returns `RateLimited` without writing a record, so a flood of bad
    /// credentials cannot grow the audit log without bound.
    pub async fn record_authentication_failure(
        &self,
        ctx: &RequestContext,
        reason: &str,
    ) -> Result<()> {
        let source = source_key(ctx);
        let limited = self.inner.audit.refusals.failure(&source);
        let reason = format!("unauthenticated: {reason}");
        if !self.inner.audit.refusals.admit(&source) {
            self.inner.audit.refusals.count(&source, "authenticate", &reason);
            return limited.map_err(|retry_after| Error::RateLimited { retry_after });
        }
        let entry = AuditEntry {
            actor: ctx.actor.clone(),
            action: "authenticate".to_owned(),
            key_id: None,
            key_version: None,
            outcome: Outcome::Denied,
            request_id: ctx.request_id.clone(),
            session: ctx.session.clone(),
            client_fingerprint: ctx.client_fingerprint.clone(),
            source_ip: ctx.source_ip.map(|ip| ip.to_string()),
            message: Some(reason),
        };
        let written = self.inner.audit.sink.append(entry).await;
        let counter =
            if written.is_ok() { &self.inner.audit.written } else { &self.inner.audit.failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        written.map_err(Error::AuditUnavailable)?;
        limited.map_err(|retry_after| Error::RateLimited { retry_after })
    }
}
