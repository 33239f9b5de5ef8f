//! Settings from flags, `FERROHSM_*` variables (clap reads both) and named profiles in the
//! config file, in that order of precedence. `ferrohsm login` writes profiles; the file is
//! created 0600 because it holds tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::Global;
use crate::error::{CliError, Result};

/// One profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// CA certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Client key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// The config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file is.
pub fn config_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.config {
        return Some(p.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferrohsm").join("config.toml"))
}

/// Reads the config file (an absent file is empty).
pub fn load(path: &Path) -> Result<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| CliError::input(format!("{}: {}", path.display(), e.message()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(CliError::input(format!("reading {}: {e}", path.display()))),
    }
}

/// Writes the config file, readable by its owner only.
pub fn save(path: &Path, config: &ConfigFile) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |e: std::io::Error| CliError::input(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let text = toml::to_string(config).map_err(|e| CliError::input(e.to_string()))?;
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The effective settings: flags and environment over the profile.
pub fn resolve(global: &Global) -> Result<Profile> {
    let profile = match config_path(global) {
        Some(path) => load(&path)?.profiles.remove(&global.profile).unwrap_or_default(),
        None => Profile::default(),
    };
    Ok(Profile {
        server: global.server.clone().or(profile.server),
        token: global.token.clone().or(profile.token),
        ca_cert: global.ca_cert.clone().or(profile.ca_cert),
        client_cert: global.client_cert.clone().or(profile.client_cert),
        client_key: global.client_key.clone().or(profile.client_key),
    })
}
