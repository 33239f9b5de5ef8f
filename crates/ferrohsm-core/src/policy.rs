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
    pub(crate) limiter: RateLimiter,
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
            limiter,
        }
    }

    /// The policy in `path`, which must load.
    pub(crate) fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let (policy, stamp) = read(path)?;
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

    /// Reloads the file if its modification time or size changed.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.file else { return Ok(false) };
        let current = stamp(path);
        if current == *self.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Reloads the file now. On failure the previous policy stays in force and the error is
    /// kept for health reporting.
    pub(crate) fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.file else { return Ok(()) };
        match read(path) {
            Ok((policy, stamp)) => {
                self.limiter.reconfigure(policy.rate_limit.clone());
                *self.engine.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(DefaultPolicyEngine::new(policy));
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!(path = %path.display(), "policy reloaded");
                Ok(())
            }
            Err(e) => {
                // Remember this version of the file so a broken file is reported once.
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp(path);
                tracing::error!(path = %path.display(), error = %e, "policy file rejected; the previous policy stays in force");
                *self.last_error.write().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(e)
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<(Policy, Option<(SystemTime, u64)>), PolicyError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        line: None,
        field: None,
        message: format!("reading {}: {e}", path.display()),
    })?;
    Ok((Policy::from_toml(&text)?, stamp))
}
