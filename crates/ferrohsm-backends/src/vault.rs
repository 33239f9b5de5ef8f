//! The key vault a server may keep key material in: the one place that turns its settings
//! into a [`RemoteKeyVault`] (today a PKCS#11 token, `ferrohsm-pkcs11`).

use std::path::PathBuf;
use std::sync::Arc;

use ferrohsm_crypto::RemoteKeyVault;
use ferrohsm_pkcs11::{Pkcs11Config, Pkcs11Vault};

use crate::{Error, Result};

/// Where the PKCS#11 token's user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The first line of a file (readable by the server only).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// How to reach a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// The PKCS#11 module (for SoftHSM2 `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
}

impl VaultConfig {
    /// Reads the PIN, loads the module, finds the token and logs in: a missing module or token
    /// or a wrong PIN is reported here, at start-up.
    pub fn open(&self) -> Result<Arc<dyn RemoteKeyVault>> {
        let config_error = |e: ferrohsm_crypto::Error| Error::Config(format!("PKCS#11: {e}"));
        let pin = match &self.pin {
            PinSource::File(path) => Pkcs11Config::pin_from_file(path),
            PinSource::Env(name) => Pkcs11Config::pin_from_env(name),
        }
        .map_err(config_error)?;
        let vault = Pkcs11Vault::open(Pkcs11Config {
            module: self.module.clone(),
            token_label: self.token_label.clone(),
            pin,
            max_idle_sessions: 16,
        })
        .map_err(config_error)?;
        Ok(Arc::new(vault))
    }
}
