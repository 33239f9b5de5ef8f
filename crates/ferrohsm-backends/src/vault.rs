//! The key vault a server may keep key material in: the one place that turns its settings
//! into a [`RemoteKeyVault`] (today a PKCS#11 token, `ferrohsm-pkcs11`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrohsm_crypto::{AwsLcProvider, CryptoProvider, RemoteKeyVault, b64};
use ferrohsm_pkcs11::{Pkcs11Config, Pkcs11Vault};
use ferrohsm_seal::MasterKey;
use zeroize::Zeroizing;

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
        Ok(Arc::new(self.pkcs11()?))
    }

    /// The master key of a data directory whose only copy is `file`, wrapped (AES-256-GCM)
    /// by the token's root key labelled `object`. The first time (no `file`), a new random
    /// master key is made, wrapped and written (mode 0600), and the root key is generated in
    /// the token if it has none; after that, without that token the file opens nothing.
    pub fn master_key(&self, object: &str, file: &Path) -> Result<Zeroizing<[u8; 32]>> {
        let vault = self.pkcs11()?;
        let config = |what: String| Error::Config(format!("the master key in the token: {what}"));
        let aad = format!("{MASTER_FORMAT}\n{object}");
        let text = match std::fs::read_to_string(file) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                AwsLcProvider.fill_random(key.as_mut()).map_err(|e| config(e.to_string()))?;
                let master =
                    MasterKey::from_bytes(key.as_ref()).map_err(|e| config(e.to_string()))?;
                Self::write_wrapped(&vault, object, file, &master)?;
                return Ok(key);
            }
            Err(e) => return Err(config(format!("reading {}: {e}", file.display()))),
        };
        let mut lines = text.lines();
        let (Some(MASTER_FORMAT), Some(label), Some(wrapped), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(config(format!("{} is not a wrapped master key", file.display())));
        };
        if label != object {
            return Err(config(format!(
                "{} was wrapped by the token key {label:?}, not {object:?}",
                file.display()
            )));
        }
        let wrapped =
            b64::decode(wrapped).map_err(|_| config(format!("{} is damaged", file.display())))?;
        let root = vault.root_key(object, false).map_err(|e| config(e.to_string()))?;
        let key = root.decrypt(&wrapped, aad.as_bytes()).map_err(|_| {
            config(format!(
                "the token's key {object:?} does not open {} (another token, or a damaged file)",
                file.display()
            ))
        })?;
        let key: [u8; 32] = key
            .expose()
            .try_into()
            .map_err(|_| config(format!("{} holds no 32-byte key", file.display())))?;
        Ok(Zeroizing::new(key))
    }

    /// Moves an existing master key into the token: wraps `master` with the token's root key
    /// labelled `object` (generated if the token has none) and writes it to `file`, which must
    /// not exist, then opens the file through the token again and checks that it yields the
    /// same key (removing the file if not). The caller then wipes the key's clear copy.
    pub fn adopt_master_key(&self, object: &str, file: &Path, master: &MasterKey) -> Result<()> {
        let config = |what: String| Error::Config(format!("the master key in the token: {what}"));
        if file.exists() {
            return Err(config(format!("writing {}: it already exists", file.display())));
        }
        // Written and checked under another name, then renamed: a crash leaves either no
        // wrapped key or a checked one, never an unchecked one under the real name.
        let staged = file.with_extension("pkcs11.new");
        let _ = std::fs::remove_file(&staged);
        let vault = self.pkcs11()?;
        Self::write_wrapped(&vault, object, &staged, master)?;
        let same = self.master_key(object, &staged).is_ok_and(|opened| {
            MasterKey::from_bytes(opened.as_ref()).is_ok_and(|opened| opened.same_as(master))
        });
        if !same {
            let _ = std::fs::remove_file(&staged);
            return Err(config(format!(
                "{} did not open to the same key; nothing was changed",
                staged.display()
            )));
        }
        std::fs::rename(&staged, file)
            .and_then(|()| sync_parent(file))
            .map_err(|e| config(format!("renaming {} into place: {e}", staged.display())))
    }

    /// Wraps `master` with the token key `object` (made if missing) into a new `file`.
    fn write_wrapped(
        vault: &Pkcs11Vault,
        object: &str,
        file: &Path,
        master: &MasterKey,
    ) -> Result<()> {
        let config = |what: String| Error::Config(format!("the master key in the token: {what}"));
        let aad = format!("{MASTER_FORMAT}\n{object}");
        let root = vault.root_key(object, true).map_err(|e| config(e.to_string()))?;
        let wrapped =
            master.wrap_with(root.as_ref(), aad.as_bytes()).map_err(|e| config(e.to_string()))?;
        let body = format!("{MASTER_FORMAT}\n{object}\n{}\n", b64::encode(&wrapped));
        write_new(file, body.as_bytes())
            .map_err(|e| config(format!("writing {}: {e}", file.display())))
    }

    fn pkcs11(&self) -> Result<Pkcs11Vault> {
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
        Ok(vault)
    }
}

/// The first line of a wrapped master key file.
const MASTER_FORMAT: &str = "ferrohsm-master-key-pkcs11-v1";

/// Writes a new file readable by its owner only, durably; never replaces one.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_parent(path)
}

/// Makes a change to `path`'s directory entry durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
