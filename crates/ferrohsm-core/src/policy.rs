//! The policy in force, loaded from a file and reloaded when the file changes. A new file that
//! does not validate is reported and the previous policy stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use ferrohsm_policy::{DefaultPolicyEngine, Policy, PolicyError, RateLimiter};

/// The current policy engine and where it came from.
#[derive(Debug)]
pub(crate) struct PolicyHandle {
    engine: RwLock<Arc<DefaultPolicyEngine>>,
    file: Option<PathBuf>,
    /// The file's modification time and length when last read.
    seen: Mutex<Option<(SystemTime, u64)>>,
    last_error: RwLock<Option<String>>,
    /// A changed file waiting for approval (when `manage_policy` is under dual control).
    staged: Mutex<Option<Staged>>,
    /// When the policy in force was put in force.
    since: RwLock<time::OffsetDateTime>,
    pub(crate) limiter: RateLimiter,
}

/// A policy file read and validated, not yet in force.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) policy: Policy,
    /// SHA-256 of the file's bytes, hex.
    pub(crate) sha256: String,
    pub(crate) size: u64,
    stamp: Option<(SystemTime, u64)>,
}

/// A candidate and the approval it waits for.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) candidate: Candidate,
    pub(crate) approval: uuid::Uuid,
}

impl PolicyHandle {
    /// A fixed policy (no file).
    pub(crate) fn fixed(policy: Policy) -> Self {
        let limiter = RateLimiter::new(policy.rate_limit.clone());
        PolicyHandle {
            engine: RwLock::new(Arc::new(DefaultPolicyEngine::new(policy))),
            file: None,
            seen: Mutex::new(None),
            last_error: RwLock::new(None),
            staged: Mutex::new(None),
            since: RwLock::new(time::OffsetDateTime::now_utc()),
            limiter,
        }
    }

    /// The policy in `path`, which must load.
    pub(crate) fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let (policy, stamp, _) = read(path)?;
        let mut handle = Self::fixed(policy);
        handle.file = Some(path.to_path_buf());
        *handle.seen.get_mut().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(handle)
    }

    pub(crate) fn engine(&self) -> Arc<DefaultPolicyEngine> {
        self.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// The error of the last reload that failed, if the file is still broken.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The policy file's path.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the file if its modification time or size changed (or always, with `force`).
    /// A file that does not validate is reported once and kept as the last error; the
    /// policy in force stays.
    pub(crate) fn read_candidate(
        &self,
        provider: &dyn ferrohsm_crypto::CryptoProvider,
        force: bool,
    ) -> Result<Option<Candidate>, PolicyError> {
        let Some(path) = &self.file else { return Ok(None) };
        let current = stamp(path);
        if !force && current == *self.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(None);
        }
        match read(path) {
            Ok((policy, stamp, bytes)) => {
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(Some(Candidate {
                    policy,
                    sha256: ferrohsm_crypto::hex::encode(&provider.sha256(&bytes)),
                    size: bytes.len() as u64,
                    stamp,
                }))
            }
            Err(e) => {
                // Remember this version of the file so a broken file is reported once.
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = current;
                tracing::error!(path = %path.display(), error = %e, "policy file rejected; the previous policy stays in force");
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Puts a candidate in force (and forgets any staged one).
    pub(crate) fn install(&self, candidate: Candidate) {
        self.limiter.reconfigure(candidate.policy.rate_limit.clone());
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(DefaultPolicyEngine::new(candidate.policy));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = candidate.stamp;
        *self.staged.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.since.write().unwrap_or_else(|p| p.into_inner()) = time::OffsetDateTime::now_utc();
        if let Some(path) = &self.file {
            tracing::info!(path = %path.display(), "policy reloaded");
        }
    }

    /// When the policy in force was put in force.
    pub(crate) fn in_force_since(&self) -> time::OffsetDateTime {
        *self.since.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the policy file could not be checked (shown by health until a reload).
    pub(crate) fn set_error(&self, error: String) {
        *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The candidate waiting for approval, if any.
    pub(crate) fn staged(&self) -> Option<Staged> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps a candidate until its approval is approved.
    pub(crate) fn stage(&self, staged: Staged) {
        *self.staged.lock().unwrap_or_else(|p| p.into_inner()) = Some(staged);
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

type Read = (Policy, Option<(SystemTime, u64)>, Vec<u8>);

fn read(path: &Path) -> Result<Read, PolicyError> {
    let stamp = stamp(path);
    let fail = |message: String| PolicyError { line: None, field: None, message };
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| fail(format!("{} is not UTF-8", path.display())))?;
    Ok((Policy::from_toml(text)?, stamp, bytes))
}
