//! Dual control and policy: approvals (list, describe, vote), their sealed storage form, and the policy file under dual control.

#[allow(clippy::wildcard_imports, reason = "the parent module's shared state and helpers")]
use super::*;

impl Hsm {
    /// Up to `limit` approvals, newest first, with their effective state.
    pub async fn list_approvals(
        &self,
        ctx: &RequestContext,
        limit: usize,
    ) -> Result<Vec<Approval>> {
        self.run(ctx, Operation::ListApprovals, None, async {
            self.authorize(ctx, Operation::ListApprovals, None, None, Vec::new).await?;
            let now = OffsetDateTime::now_utc();
            let stored = self
                .inner
                .control
                .approvals
                .list(limit.clamp(1, ferrohsm_store::MAX_LIST_LIMIT))
                .await?;
            let mut list = Vec::with_capacity(stored.len());
            for document in &stored {
                let mut a = self.open_approval(document)?;
                a.state = a.state_at(now);
                list.push(a);
            }
            Ok(list)
        })
        .await
    }

    /// One approval, with its effective state.
    pub async fn describe_approval(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
    ) -> Result<Approval> {
        self.run(ctx, Operation::DescribeApproval, None, async {
            self.authorize(ctx, Operation::DescribeApproval, None, None, Vec::new).await?;
            let mut a = self.load_approval(id).await?;
            a.state = a.state_at(OffsetDateTime::now_utc());
            Ok(a)
        })
        .await
    }

    /// Approves a pending request. The caller must hold an approver role and must not be the
    /// requester; each approver counts once.
    pub async fn approve(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
    ) -> Result<Approval> {
        // The context names the approval so its audit record does, whatever the outcome.
        let ctx = &RequestContext { approval_id: Some(id), ..ctx.clone() };
        self.run(ctx, Operation::Approve, None, self.vote(ctx, id, comment, true)).await
    }

    /// Denies a pending request (one denial rejects it).
    pub async fn deny(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
    ) -> Result<Approval> {
        let ctx = &RequestContext { approval_id: Some(id), ..ctx.clone() };
        self.run(ctx, Operation::DenyApproval, None, self.vote(ctx, id, comment, false)).await
    }

    pub(super) async fn vote(
        &self,
        ctx: &RequestContext,
        id: uuid::Uuid,
        comment: Option<String>,
        approve: bool,
    ) -> Result<Approval> {
        let operation = if approve { Operation::Approve } else { Operation::DenyApproval };
        self.authorize(ctx, operation, None, None, Vec::new).await?;
        if let Some(c) = &comment {
            validate::description(Some(c))?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut a = self.load_approval(id).await?;
            let now = OffsetDateTime::now_utc();
            let voted = if approve {
                a.approve(&ctx.caller(), comment.clone(), now)
            } else {
                a.deny(&ctx.caller(), comment.clone(), now)
            };
            voted.map_err(Error::Approval)?;
            match self.inner.control.approvals.update(self.seal_approval(&a, now)?).await {
                Ok(()) => {
                    if a.operation == Operation::ManagePolicy
                        && a.state == ApprovalState::Approved
                        && let Err(e) = self.apply_staged_policy(a.id).await
                    {
                        tracing::error!(approval = %a.id, error = %e, "applying the approved policy file failed");
                    }
                    return Ok(a);
                }
                Err(ferrohsm_store::Error::ApprovalConflict(_)) if attempt < WRITE_ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reloads the policy file now, and records the outcome in the audit log. On error the
    /// previous policy stays in force.
    /// When the policy in force puts `manage_policy` under global dual control, the file is
    /// not applied: an approval is opened and the file applies once it is approved.
    pub async fn reload_policy(&self) -> Result<()> {
        self.policy_file_changed(true).await.map(|_| ())
    }

    /// Reads the policy file if it changed (always, with `force`) and puts it in force, or,
    /// when the policy in force puts `manage_policy` under global dual control, opens an
    /// approval (requester `system:policy`; parameters: the file, its SHA-256 and size) and
    /// keeps the new file staged until the approval reaches its quorum. Every outcome is
    /// recorded in the audit log. Returns whether a new policy is in force.
    pub(super) async fn policy_file_changed(&self, force: bool) -> Result<bool> {
        let inner = &self.inner;
        let candidate = match inner.control.policy.read_candidate(inner.provider.as_ref(), force) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(false),
            Err(e) => {
                let message = format!("policy file rejected, previous policy kept: {e}");
                record_policy_event(inner, Outcome::Error, message).await;
                return Err(Error::InvalidPolicy(e));
            }
        };
        let engine = inner.control.policy.engine();
        let dual = engine
            .policy()
            .global_dual_control
            .as_ref()
            .filter(|d| d.operations.contains(&Operation::ManagePolicy));
        let Some(dual) = dual else {
            inner.control.policy.install(candidate);
            record_policy_event(inner, Outcome::Success, "policy file reloaded".into()).await;
            return Ok(true);
        };
        if inner.control.policy.staged().is_some_and(|s| s.candidate.sha256 == candidate.sha256) {
            return Ok(false);
        }
        let rule = ferrohsm_policy::ApprovalRule {
            policy: ferrohsm_policy::GLOBAL_POLICY_NAME.into(),
            quorum: dual.quorum,
            approver_roles: dual.approver_roles.clone(),
            expires_after: dual.expires_after,
            approver_issuers: dual.approver_issuers.clone(),
            require_certificate: dual.require_certificate,
        };
        let path = inner.control.policy.path().map(|p| p.display().to_string()).unwrap_or_default();
        let parameters = params::describe(
            Operation::ManagePolicy,
            None,
            vec![
                Parameter::new("policy_file", path),
                Parameter::new("sha256", candidate.sha256.clone()),
                Parameter::new("size", candidate.size.to_string()),
            ],
        );
        let digest = params::digest(&inner.sealer, &parameters);
        let ctx = RequestContext::local(POLICY_ACTOR);
        let now = OffsetDateTime::now_utc();
        let approval = Approval::new(
            &rule,
            Operation::ManagePolicy,
            String::new(),
            parameters,
            digest,
            &ctx.caller(),
            now,
        );
        inner.control.approvals.create(self.seal_approval(&approval, now)?).await?;
        inner.control.policy.stage(crate::policy::Staged { candidate, approval: approval.id });
        let message = format!(
            "approval_required: the changed policy file waits for approval {} ({} of {} approvals): {}",
            approval.id,
            approval.approvals(),
            approval.quorum,
            approval.summary()
        );
        record_policy_event(inner, Outcome::Denied, message).await;
        Ok(false)
    }

    /// Puts the staged policy file in force once its approval `id` is approved, marking the
    /// approval executed.
    pub(super) async fn apply_staged_policy(&self, id: uuid::Uuid) -> Result<()> {
        let Some(staged) = self.inner.control.policy.staged().filter(|s| s.approval == id) else {
            return Ok(());
        };
        let mut approval = self.load_approval(id).await?;
        let digest = approval.params_digest.clone();
        let now = OffsetDateTime::now_utc();
        approval
            .execute(POLICY_ACTOR, Operation::ManagePolicy, "", &digest, now)
            .map_err(Error::Approval)?;
        self.inner.control.approvals.update(self.seal_approval(&approval, now)?).await?;
        self.inner.control.policy.install(staged.candidate);
        let message = format!("policy file reloaded after approval {id}");
        record_policy_event(&self.inner, Outcome::Success, message).await;
        Ok(())
    }

    /// Why the policy file was last rejected, while it stays broken.
    pub fn policy_error(&self) -> Option<String> {
        self.inner.control.policy.last_error()
    }

    /// The stored form of `approval`: its encoding with an integrity tag inside, plus what the
    /// store needs to see (revision, whether it is still open, when it changed).
    pub(crate) fn seal_approval(
        &self,
        approval: &Approval,
        now: OffsetDateTime,
    ) -> Result<ApprovalDocument> {
        let mut approval = approval.clone();
        approval.tag = None;
        let tag = self.inner.sealer.authenticate(&approval.canonical_bytes());
        approval.tag = Some(ferrohsm_crypto::b64::encode(&tag.0));
        let body = serde_json::to_vec(&approval)
            .map_err(|e| Error::Store(ferrohsm_store::Error::backend("encoding an approval", e)))?;
        Ok(ApprovalDocument {
            id: approval.id,
            revision: approval.revision,
            open: matches!(
                approval.state_at(now),
                ApprovalState::Pending | ApprovalState::Approved
            ),
            updated_at: now,
            body,
        })
    }

    /// The approval in a stored document, if its integrity tag and its id check out.
    pub(crate) fn open_approval(&self, document: &ApprovalDocument) -> Result<Approval> {
        open_approval(&self.inner.sealer, document)
    }

    pub(super) async fn load_approval(&self, id: uuid::Uuid) -> Result<Approval> {
        let document = match self.inner.control.approvals.get(&id).await {
            Err(ferrohsm_store::Error::Corrupt { .. }) => {
                return Err(Error::Forbidden(format!("approval {id} failed its integrity check")));
            }
            other => other?.ok_or(Error::ApprovalNotFound(id))?,
        };
        self.open_approval(&document)
    }
}

/// The actor policy file changes are recorded under (and request their approvals as).
const POLICY_ACTOR: &str = "system:policy";

/// Records a policy file event (by the watcher, [`Hsm::reload_policy`] or an approval): a
/// change of who may do what is itself audited.
async fn record_policy_event(inner: &Inner, outcome: Outcome, message: String) {
    let mut entry = AuditEntry::new(
        POLICY_ACTOR,
        Operation::ManagePolicy.as_str(),
        outcome,
        uuid::Uuid::now_v7().to_string(),
    );
    entry.message = Some(message);
    if let Err(e) = inner.audit.sink.append(entry).await {
        tracing::error!(error = %e, "could not record a policy file event");
    }
}
