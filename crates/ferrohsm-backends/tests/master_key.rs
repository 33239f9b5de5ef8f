//! The master key kept only wrapped by a PKCS#11 token's key (SoftHSM2 in a temporary
//! directory; each test runs itself again with `SOFTHSM2_CONF` set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use ferrohsm_backends::{PinSource, VaultConfig};
use ferrohsm_pkcs11::testing;

const LABEL: &str = "ferrohsm-root";
const PIN: &str = "1357";

fn config() -> VaultConfig {
    VaultConfig {
        module: testing::SOFTHSM2_MODULE.into(),
        token_label: LABEL.into(),
        pin: PinSource::Env("FERROHSM_TEST_PKCS11_PIN".into()),
    }
}

#[test]
fn the_master_key_is_wrapped_by_the_token_and_useless_without_it() {
    let name = "the_master_key_is_wrapped_by_the_token_and_useless_without_it";
    let env = [("FERROHSM_TEST_PKCS11_PIN", PIN)];
    let Some(dir) = testing::rerun_with_token(name, LABEL, PIN, &env) else { return };
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("master.key.pkcs11");

    // First start: a new master key, written only wrapped.
    let first = config().master_key("ferrohsm-master", &file).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("ferrohsm-master-key-pkcs11-v1\nferrohsm-master\n"), "{text}");
    assert!(!text.contains(&ferrohsm_crypto::b64::encode(first.as_ref())), "never in the clear");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Later starts: the same key.
    assert_eq!(*config().master_key("ferrohsm-master", &file).unwrap(), *first);

    // Another root key name, a damaged file: clear refusals.
    let err = config().master_key("other", &file).unwrap_err().to_string();
    assert!(err.contains("ferrohsm-master"), "{err}");
    let damaged = data.path().join("damaged");
    std::fs::write(&damaged, text.replace("ferrohsm-master\n", "ferrohsm-master\nA").as_bytes())
        .unwrap();
    assert!(config().master_key("ferrohsm-master", &damaged).is_err());

    // Without the token (gone after a reset), the file opens nothing.
    let (tokens, away) = (dir.join("tokens"), dir.join("away"));
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir_all(&tokens).unwrap();
    testing::reset_module().unwrap();
    let err = config().master_key("ferrohsm-master", &file).unwrap_err().to_string();
    assert!(err.contains(LABEL), "{err}");

    // A different token with the same label (a fresh one) does not open it either.
    testing::init_token(&dir, LABEL, PIN).unwrap();
    testing::reset_module().unwrap();
    let err = config().master_key("ferrohsm-master", &file).unwrap_err().to_string();
    assert!(err.contains("no key labelled"), "{err}");

    // The original token back: the key again.
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    testing::reset_module().unwrap();
    assert_eq!(*config().master_key("ferrohsm-master", &file).unwrap(), *first);
}

#[test]
fn an_existing_master_key_is_adopted_by_the_token_without_replacing_a_wrapped_one() {
    let name = "an_existing_master_key_is_adopted_by_the_token_without_replacing_a_wrapped_one";
    let env = [("FERROHSM_TEST_PKCS11_PIN", PIN)];
    if testing::rerun_with_token(name, LABEL, PIN, &env).is_none() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("master.key.pkcs11");
    let bytes = [42u8; 32];
    let master = ferrohsm_seal::MasterKey::from_bytes(&bytes).unwrap();
    config().adopt_master_key("adopted", &file, &master).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&ferrohsm_crypto::b64::encode(&bytes)), "never in the clear");
    assert_eq!(*config().master_key("adopted", &file).unwrap(), bytes, "the same key opens");
    // A wrapped key already there is never replaced.
    let other = ferrohsm_seal::MasterKey::from_bytes(&[7u8; 32]).unwrap();
    let err = config().adopt_master_key("adopted", &file, &other).unwrap_err().to_string();
    assert!(err.contains("writing"), "{err}");
    assert_eq!(*config().master_key("adopted", &file).unwrap(), bytes);
}
