//! SoftHSM2 tokens for tests (feature `testing`): a configuration file and an initialised
//! token in a directory the test owns.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module initialises, and a test may not change its
//! own environment (no `unsafe`), so a test using a token runs itself again as a child
//! process with the variable set ([`rerun_with_token`]).
#![allow(clippy::panic, reason = "test support: a failure here is the failed test's report")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `softhsm2` package puts the module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The variable a child process finds its token directory in.
const CHILD: &str = "FERROHSM_SOFTHSM_TEST_DIR";

/// Writes a SoftHSM2 configuration for `dir/tokens` and initialises a token `label` with the
/// user PIN `pin` there; returns the configuration file (the value of `SOFTHSM2_CONF`).
pub fn init_token(dir: &Path, label: &str, pin: &str) -> Result<PathBuf, String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
    let conf = dir.join("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        tokens.display()
    );
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", pin])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .map_err(|e| format!("running softhsm2-util (is softhsm2 installed?): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(conf)
}

/// In the test process: makes a token `label`/`pin` in a new temporary directory and runs
/// the test `name` of the current test binary again in a child with `SOFTHSM2_CONF` set,
/// returning `None` once the child passed (it panics with the child's output if not). In the
/// child: returns the token's directory, for the test body to run.
pub fn rerun_with_token(
    name: &str,
    label: &str,
    pin: &str,
    env: &[(&str, &str)],
) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(CHILD) {
        return Some(PathBuf::from(dir));
    }
    assert!(
        Path::new(SOFTHSM2_MODULE).exists(),
        "SoftHSM2 is not installed (cargo xtask test installs it)"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    let conf = init_token(dir.path(), label, pin).unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test binary: {e}"));
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running the child test: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed in its child:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    None
}

/// How many objects of the token `token_label` carry `CKA_LABEL` = `label` (a key's name is
/// its objects' label), seen from a separate session of this process.
pub fn objects_labelled(token_label: &str, pin: &str, label: &str) -> Result<usize, String> {
    let session = user_session(token_label, pin)?;
    let found = session
        .find_objects(&[cryptoki::object::Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| e.to_string())?;
    Ok(found.len())
}

/// Destroys every object labelled `label` behind the vault's back (as an operator with the
/// vendor's tools might); returns how many there were.
pub fn destroy_labelled(token_label: &str, pin: &str, label: &str) -> Result<usize, String> {
    let session = user_session(token_label, pin)?;
    let found = session
        .find_objects(&[cryptoki::object::Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| e.to_string())?;
    for object in &found {
        session.destroy_object(*object).map_err(|e| e.to_string())?;
    }
    Ok(found.len())
}

/// For each object labelled `label`: its class and the operations its attributes allow
/// (`"private: sign"`, `"secret: decrypt, encrypt, unwrap, wrap"`), sorted.
pub fn operations_allowed(
    token_label: &str,
    pin: &str,
    label: &str,
) -> Result<Vec<String>, String> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let session = user_session(token_label, pin)?;
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| e.to_string())?;
    let mut described = Vec::new();
    for object in found {
        let wanted = [
            AttributeType::Class,
            AttributeType::Decrypt,
            AttributeType::Derive,
            AttributeType::Encrypt,
            AttributeType::Sign,
            AttributeType::Unwrap,
            AttributeType::Verify,
            AttributeType::Wrap,
        ];
        let mut class = "other";
        let mut allowed = Vec::new();
        for attribute in session.get_attributes(object, &wanted).map_err(|e| e.to_string())? {
            match attribute {
                Attribute::Class(c) if c == ObjectClass::PRIVATE_KEY => class = "private",
                Attribute::Class(c) if c == ObjectClass::PUBLIC_KEY => class = "public",
                Attribute::Class(c) if c == ObjectClass::SECRET_KEY => class = "secret",
                Attribute::Decrypt(true) => allowed.push("decrypt"),
                Attribute::Derive(true) => allowed.push("derive"),
                Attribute::Encrypt(true) => allowed.push("encrypt"),
                Attribute::Sign(true) => allowed.push("sign"),
                Attribute::Unwrap(true) => allowed.push("unwrap"),
                Attribute::Verify(true) => allowed.push("verify"),
                Attribute::Wrap(true) => allowed.push("wrap"),
                _ => {}
            }
        }
        described.push(format!("{class}: {}", allowed.join(", ")));
    }
    described.sort();
    Ok(described)
}

/// A logged-in session on the token `token_label`, separate from any vault's.
fn user_session(token_label: &str, pin: &str) -> Result<cryptoki::session::Session, String> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let pkcs11 = Pkcs11::new(SOFTHSM2_MODULE).map_err(|e| e.to_string())?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => return Err(e.to_string()),
    }
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|t| t.label() == token_label))
        .ok_or_else(|| format!("no token {token_label}"))?;
    let session = pkcs11.open_rw_session(slot).map_err(|e| e.to_string())?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(session)
}

/// Shuts the SoftHSM2 module down under everyone in this process (`C_Finalize`), as a device
/// reset would: open sessions become invalid and the next user must initialise it again.
pub fn reset_module() -> Result<(), String> {
    use cryptoki::error::{Error, RvError};
    let pkcs11 = cryptoki::context::Pkcs11::new(SOFTHSM2_MODULE).map_err(|e| e.to_string())?;
    match pkcs11.finalize() {
        // Nobody had it initialised: it is as reset as it gets.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
