//! The master key: loaded from an environment variable or a file only its owner may read
//! (see [`permitted`]), zeroized on drop.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ferrohsm_crypto::{CryptoProvider, SecretKey, b64};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The 32-byte root secret from which every sealing key is derived.
///
/// It is never printed (`Debug` is redacted) and is zeroized when dropped.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// Takes exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != MASTER_KEY_LEN {
            return Err(Error::InvalidMasterKey("a master key is exactly 32 bytes"));
        }
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(MasterKey(key))
    }

    /// Parses the text form: standard base64 (44 characters) or hex (64 characters) of 32
    /// bytes, surrounding whitespace ignored.
    pub fn from_text(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = Zeroizing::new(if text.len() == 2 * MASTER_KEY_LEN {
            decode_hex(text).ok_or(Error::InvalidMasterKey("64 characters but not hex"))?
        } else {
            b64::decode(text)
                .map_err(|_| Error::InvalidMasterKey("expected base64 or hex of 32 bytes"))?
        });
        Self::from_bytes(&bytes)
    }

    /// Reads the key from the environment variable `var` (text form, see [`MasterKey::from_text`]).
    pub fn from_env(var: &str) -> Result<Self> {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::MissingMasterKey(format!("environment variable {var} is not set"))
        })?);
        Self::from_text(&value)
    }

    /// Reads the key from a regular file that only its owner may read (mode 0600 or
    /// stricter), or, for a server that does not run as root, a root-owned file that its group
    /// may read as well (0640 or 0440): a Kubernetes Secret mounted for a pod's `fsGroup` is
    /// such a file. See [`permitted`]. The file is opened once, and its mode is checked on the
    /// open file, so a path swapped between a check and a read cannot slip another file in.
    /// The file holds either the 32 raw bytes or the text form.
    pub fn from_file(path: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(Error::InvalidMasterKey("the master key file is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if !permitted(meta.uid(), effective_uid(), mode) {
            return Err(Error::InsecurePermissions { path: path.to_path_buf(), mode });
        }
        // Room for the longest text form and more, so reading never reallocates (a
        // reallocation would leave a copy of the key behind, unzeroized).
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE + 2));
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_KEY_FILE as u64 + 1),
            &mut bytes,
        )
        .map_err(io)?;
        if bytes.len() > MAX_KEY_FILE {
            return Err(Error::InvalidMasterKey("the master key file is too long"));
        }
        if bytes.len() == MASTER_KEY_LEN {
            return Self::from_bytes(&bytes);
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::InvalidMasterKey("file is neither 32 raw bytes nor text"))?;
        Self::from_text(text)
    }

    /// Generates a new random key and writes it, base64-encoded, to a new file created with
    /// mode 0600. Fails if the file already exists, so an existing key is never overwritten.
    pub fn generate_file(provider: &dyn CryptoProvider, path: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        provider.fill_random(key.as_mut())?;
        let text = Zeroizing::new(format!("{}\n", b64::encode(key.as_ref())));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(MasterKey(key))
    }

    /// Overwrites a master key file with zeros, durably, then removes it (after the key was
    /// moved elsewhere: its clear copy must not survive on disk).
    pub fn wipe_file(path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(io)?.len();
        let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(io)?;
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.write_all(&zeros).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::remove_file(path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Derives an independent 32-byte key for `purpose` (HKDF-SHA256 with its own salt, so no
    /// derived key equals a sealing key). Used for the audit HMAC key and checkpoint seed.
    pub fn derive(
        &self,
        provider: &dyn CryptoProvider,
        purpose: &str,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        provider.hkdf_sha256(
            self.expose(),
            b"ferrohsm/derive/v1",
            purpose.as_bytes(),
            out.as_mut(),
        )?;
        Ok(out)
    }

    /// Whether `other` is the same key (compared in constant time).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        self.expose().iter().zip(other.expose()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Encrypts this key under `wrapping` (a key held elsewhere, such as a token's), binding
    /// `aad`: the only way its bytes leave this crate. They go to `wrapping`'s `encrypt`, so
    /// the caller must pass a key it trusts (FerroHSM passes the token's root key).
    pub fn wrap_with(&self, wrapping: &dyn SecretKey, aad: &[u8]) -> Result<Vec<u8>> {
        Ok(wrapping.encrypt(self.expose(), aad)?)
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// The longest master key file read (the text forms are 44 or 64 characters, with whitespace).
const MAX_KEY_FILE: usize = 1024;

/// Whether a master key file owned by `owner` with permission bits `mode` may be used by a
/// process whose effective user is `euid` (`None` when it cannot be told):
/// - nobody but the owner may read it (0600, 0400), whoever owns it; or
/// - root owns it, its group may only read it (0640, 0440), and the server is not root
///   itself, so the group is how it reads the file (a Kubernetes Secret under a pod's
///   `fsGroup`). This is PostgreSQL's rule for its key files. A server running as root gets
///   no such allowance: for it the group would only be other people.
///
/// Access for others, and group write or execute, is always refused.
pub(crate) fn permitted(owner: u32, euid: Option<u32>, mode: u32) -> bool {
    if mode & 0o077 == 0 {
        return true;
    }
    owner == 0 && euid.is_some_and(|e| e != 0) && mode & 0o037 == 0
}

/// The process's effective user: the owner of `/proc/self` (Linux; `None` elsewhere).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use ferrohsm_crypto::AwsLcProvider;

    use super::*;

    /// Set for test processes by `.cargo/config.toml`.
    const TEST_VAR: &str = "FERROHSM_TEST_MASTER_KEY";
    const TEST_VALUE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn text_forms() {
        let from_b64 = MasterKey::from_text(TEST_VALUE).unwrap();
        let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        let from_hex = MasterKey::from_text(&format!("  {hex}\n")).unwrap();
        assert_eq!(from_b64.expose(), from_hex.expose());
        assert_eq!(from_b64.expose(), (0u8..32).collect::<Vec<_>>().as_slice());
        for bad in
            ["", "AAEC", &"zz".repeat(32), &b64::encode(&[0u8; 31]), &b64::encode(&[0u8; 33])]
        {
            assert!(
                matches!(MasterKey::from_text(bad), Err(Error::InvalidMasterKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn environment_variable() {
        let key = MasterKey::from_env(TEST_VAR).unwrap();
        assert_eq!(key.expose(), MasterKey::from_text(TEST_VALUE).unwrap().expose());
        assert!(matches!(
            MasterKey::from_env("FERROHSM_TEST_SURELY_UNSET_VARIABLE"),
            Err(Error::MissingMasterKey(_))
        ));
    }

    #[test]
    fn group_read_is_allowed_only_for_root_owned_files_and_a_server_that_is_not_root() {
        // (owner, effective user, mode, permitted)
        let cases = [
            (1000, Some(1000), 0o600, true),
            (1000, Some(1000), 0o400, true),
            (0, Some(0), 0o600, true),
            (65532, Some(0), 0o400, true),
            (0, Some(65532), 0o440, true),
            (0, Some(65532), 0o640, true),
            (0, Some(0), 0o440, false),
            (0, None, 0o440, false),
            (1000, Some(1000), 0o640, false),
            (1000, Some(65532), 0o440, false),
            (0, Some(65532), 0o460, false),
            (0, Some(65532), 0o450, false),
            (0, Some(65532), 0o444, false),
            (0, Some(65532), 0o404, false),
            (0, Some(65532), 0o644, false),
        ];
        for (owner, euid, mode, expected) in cases {
            assert_eq!(permitted(owner, euid, mode), expected, "{owner} {euid:?} {mode:o}");
        }
    }

    #[test]
    fn file_permissions_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let generated = MasterKey::generate_file(&AwsLcProvider, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(MasterKey::from_file(&path).unwrap().expose(), generated.expose());
        // Never overwrites an existing key.
        assert!(matches!(MasterKey::generate_file(&AwsLcProvider, &path), Err(Error::Io { .. })));
        let refused = |path: &Path, loose: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose)).unwrap();
            matches!(MasterKey::from_file(path), Err(Error::InsecurePermissions { mode, .. }) if mode == loose)
        };
        // The file belongs to the test's own user: group read is refused too (for root as
        // well: a server running as root gets no group allowance).
        for loose in [0o644, 0o604, 0o660, 0o650, 0o641, 0o670, 0o640, 0o440] {
            assert!(refused(&path, loose), "{loose:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(MasterKey::from_file(&path).is_ok());
        // Not a regular file, and too long to be a key.
        assert!(matches!(MasterKey::from_file(dir.path()), Err(Error::InvalidMasterKey(_))));
        let long = dir.path().join("long.key");
        std::fs::write(&long, vec![b' '; 4096]).unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(MasterKey::from_file(&long), Err(Error::InvalidMasterKey(_))));

        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(MasterKey::from_file(&raw).unwrap().expose(), &[7u8; 32]);
        assert!(matches!(MasterKey::from_file(&dir.path().join("missing")), Err(Error::Io { .. })));
    }

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let key = MasterKey::from_text(TEST_VALUE).unwrap();
        let a = key.derive(&AwsLcProvider, "audit-hmac/1").unwrap();
        let b = key.derive(&AwsLcProvider, "audit-hmac/2").unwrap();
        assert_ne!(*a, *b);
        assert_eq!(*a, *key.derive(&AwsLcProvider, "audit-hmac/1").unwrap());
        assert_ne!(a.as_slice(), key.expose());
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_text(TEST_VALUE).unwrap();
        assert_eq!(format!("{key:?}"), "MasterKey([REDACTED])");
    }
}
