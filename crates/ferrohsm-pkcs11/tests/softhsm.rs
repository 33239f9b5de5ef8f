//! The PKCS#11 vault against a real SoftHSM2 token initialised in a temporary directory
//! (`cargo xtask test` installs Debian's `softhsm2`).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module initialises, and a test may not change its
//! own environment (no `unsafe`), so each test runs itself again as a child process with the
//! variable set for its private token directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, Error, RemoteKeyVault, SignInput, SignatureScheme,
};
use ferrohsm_pkcs11::{Pkcs11Config, Pkcs11Vault, testing};
use zeroize::Zeroizing;

const MODULE: &str = testing::SOFTHSM2_MODULE;
const LABEL: &str = "ferrohsm-test";
const PIN: &str = "4321";

/// Runs `body` in a child process whose SoftHSM2 has one fresh token, `LABEL`.
fn with_token(test: &str, body: impl FnOnce(&Path)) {
    if let Some(dir) = testing::rerun_with_token(test, LABEL, PIN, &[]) {
        body(&dir);
    }
}

fn config(pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        token_label: LABEL.into(),
        pin: Zeroizing::new(pin.into()),
        max_idle_sessions: 4,
    }
}

fn vault() -> Pkcs11Vault {
    Pkcs11Vault::open(config(PIN)).unwrap()
}

#[test]
fn aes_keys_encrypt_decrypt_wrap_and_unwrap_inside_the_token() {
    with_token("aes_keys_encrypt_decrypt_wrap_and_unwrap_inside_the_token", |_| {
        let vault = vault();
        let created = vault.generate(Algorithm::Aes256Gcm, "orders").unwrap();
        assert!(created.public_key_der.is_none());
        assert_eq!(created.handle.len(), 32);
        let key = vault.load(Algorithm::Aes256Gcm, &created.handle).unwrap();
        for size in [0, 1, 1024, 65_536] {
            let plain = vec![7u8; size];
            let sealed = key.encrypt(&plain, b"aad").unwrap();
            assert_eq!(sealed.len(), 12 + size + 16);
            assert_eq!(key.decrypt(&sealed, b"aad").unwrap().expose(), plain.as_slice());
            assert!(matches!(key.decrypt(&sealed, b"other aad"), Err(Error::Crypto)));
            let mut tampered = sealed.clone();
            tampered[12] ^= 1;
            if size > 0 {
                assert!(matches!(key.decrypt(&tampered, b"aad"), Err(Error::Crypto)));
            }
        }
        assert!(matches!(key.decrypt(&[0; 10], b""), Err(Error::Crypto)));
        let secret = b"a data key of 32 bytes, 256 bits";
        // SoftHSM2 2.6 does not strip RFC 5649 padding on unwrap, so lengths that are not a
        // multiple of 8 are refused before they reach the token.
        assert!(matches!(key.wrap(&secret[..31]), Err(Error::InvalidInput(_))));
        let wrapped = key.wrap(secret).unwrap();
        assert_eq!(key.unwrap(&wrapped).unwrap().expose(), secret);
        let mut bad = wrapped.clone();
        bad[3] ^= 1;
        assert!(matches!(key.unwrap(&bad), Err(Error::Crypto)));
        assert!(matches!(key.unwrap(&[0; 7]), Err(Error::Crypto)));
        assert!(key.sign(SignatureScheme::EcdsaP256Sha256, SignInput::Message(b"x")).is_err());
        // Two handles are two keys.
        let other = vault.generate(Algorithm::Aes256Gcm, "other").unwrap();
        let other = vault.load(Algorithm::Aes256Gcm, &other.handle).unwrap();
        assert!(other.decrypt(&key.encrypt(b"x", b"").unwrap(), b"").is_err());
    });
}

#[test]
fn signatures_verify_in_software_and_with_openssl() {
    with_token("signatures_verify_in_software_and_with_openssl", |dir| {
        let vault = vault();
        let provider = AwsLcProvider;
        let cases = [
            (Algorithm::EcP256, vec![SignatureScheme::EcdsaP256Sha256]),
            (Algorithm::EcP384, vec![SignatureScheme::EcdsaP384Sha384]),
            (
                Algorithm::Rsa2048,
                vec![
                    SignatureScheme::RsaPkcs1Sha256,
                    SignatureScheme::RsaPkcs1Sha384,
                    SignatureScheme::RsaPkcs1Sha512,
                    SignatureScheme::RsaPssSha256,
                    SignatureScheme::RsaPssSha384,
                    SignatureScheme::RsaPssSha512,
                ],
            ),
        ];
        let message = b"release-1.2.3.tar.gz";
        for (algorithm, schemes) in cases {
            let created = vault.generate(algorithm, "signer").unwrap();
            let spki = created.public_key_der.clone().unwrap();
            let public = provider.load_public(algorithm, &spki).unwrap();
            let key = vault.load(algorithm, &created.handle).unwrap();
            assert_eq!(
                key.public_key_der(),
                Some(spki.as_slice()),
                "the same public key after load"
            );
            for scheme in schemes {
                let signature = key.sign(scheme, SignInput::Message(message)).unwrap();
                assert!(
                    public.verify(scheme, SignInput::Message(message), &signature).unwrap(),
                    "{scheme}"
                );
                assert!(key.verify(scheme, SignInput::Message(message), &signature).unwrap());
                assert!(!public.verify(scheme, SignInput::Message(b"other"), &signature).unwrap());
                let hash = scheme.hash().unwrap();
                let digest =
                    openssl_digest(dir, hash.to_string().replace('-', "").as_str(), message);
                let over_digest = key.sign(scheme, SignInput::Digest(&digest)).unwrap();
                assert!(public.verify(scheme, SignInput::Message(message), &over_digest).unwrap());
                assert!(key.sign(scheme, SignInput::Digest(&digest[1..])).is_err(), "short digest");
                openssl_verify(dir, &spki, scheme, message, &signature);
            }
            assert!(key.encrypt(b"x", b"").is_err(), "a signing key does not encrypt");
        }
    });
}

fn openssl_digest(dir: &Path, hash: &str, message: &[u8]) -> Vec<u8> {
    let input = dir.join("message");
    std::fs::write(&input, message).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", &format!("-{hash}"), "-binary"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// `openssl dgst -verify` with the public key the vault reported.
fn openssl_verify(
    dir: &Path,
    spki: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) {
    let (key, msg, sig) = (dir.join("public.der"), dir.join("message"), dir.join("signature"));
    std::fs::write(&key, spki).unwrap();
    std::fs::write(&msg, message).unwrap();
    std::fs::write(&sig, signature).unwrap();
    let hash = format!("-{}", scheme.hash().unwrap().to_string().replace('-', ""));
    let mut command = Command::new("openssl");
    command.args(["dgst", &hash, "-keyform", "DER", "-verify"]).arg(&key);
    if scheme.to_string().starts_with("rsa-pss") {
        command.args(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]);
    }
    let out = command.arg("-signature").arg(&sig).arg(&msg).output().unwrap();
    assert!(
        out.status.success(),
        "openssl refused the {scheme} signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn destroy_removes_keys_and_a_record_cannot_name_another_algorithm() {
    with_token("destroy_removes_keys_and_a_record_cannot_name_another_algorithm", |_| {
        let vault = vault();
        let aes = vault.generate(Algorithm::Aes256Gcm, "k").unwrap();
        let ec = vault.generate(Algorithm::EcP256, "e").unwrap();
        vault.destroy(&aes.handle).unwrap();
        vault.destroy(&ec.handle).unwrap();
        vault.destroy(&ec.handle).unwrap();
        assert!(matches!(vault.load(Algorithm::Aes256Gcm, &aes.handle), Err(Error::KeyMissing(_))));
        assert!(matches!(vault.load(Algorithm::EcP256, &ec.handle), Err(Error::KeyMissing(_))));
        assert!(matches!(vault.load(Algorithm::EcP256, "not hex"), Err(Error::InvalidInput(_))));
        // The record's algorithm must match the token's key.
        let p384 = vault.generate(Algorithm::EcP384, "p").unwrap();
        assert!(vault.load(Algorithm::EcP256, &p384.handle).is_err());
        assert!(matches!(vault.generate(Algorithm::Ed25519, "x"), Err(Error::Unsupported { .. })));
    });
}

#[test]
fn a_key_destroyed_behind_a_loaded_key_answers_key_missing() {
    with_token("a_key_destroyed_behind_a_loaded_key_answers_key_missing", |_| {
        let vault = vault();
        let aes = vault.generate(Algorithm::Aes256Gcm, "gone-aes").unwrap();
        let ec = vault.generate(Algorithm::EcP256, "gone-ec").unwrap();
        let (aes_key, ec_key) = (
            vault.load(Algorithm::Aes256Gcm, &aes.handle).unwrap(),
            vault.load(Algorithm::EcP256, &ec.handle).unwrap(),
        );
        // Used once, so their object handles are cached.
        let sealed = aes_key.encrypt(b"x", b"").unwrap();
        let message = SignInput::Message(b"m");
        ec_key.sign(SignatureScheme::EcdsaP256Sha256, message).unwrap();
        vault.destroy(&aes.handle).unwrap();
        vault.destroy(&ec.handle).unwrap();
        let missing = |r: Result<Vec<u8>, Error>| {
            assert!(matches!(&r, Err(Error::KeyMissing(h)) if h.len() == 32), "{r:?}");
        };
        missing(aes_key.encrypt(b"x", b""));
        missing(aes_key.decrypt(&sealed, b"").map(|p| p.expose().to_vec()));
        missing(ec_key.sign(SignatureScheme::EcdsaP256Sha256, message));
        // A new key made afterwards is not reached through the stale handles.
        let other = vault.generate(Algorithm::Aes256Gcm, "after").unwrap();
        assert_ne!(other.handle, aes.handle);
        missing(aes_key.encrypt(b"x", b""));
    });
}

#[test]
fn keys_allow_only_the_operations_of_their_algorithm() {
    with_token("keys_allow_only_the_operations_of_their_algorithm", |_| {
        let vault = vault();
        vault.generate(Algorithm::Aes256Gcm, "flags-aes").unwrap();
        vault.generate(Algorithm::EcP256, "flags-ec").unwrap();
        vault.generate(Algorithm::Rsa2048, "flags-rsa").unwrap();
        let allowed = |name: &str| {
            testing::operations_allowed(LABEL, PIN, &format!("ferrohsm:{name}")).unwrap()
        };
        assert_eq!(allowed("flags-aes"), ["secret: decrypt, encrypt, unwrap, wrap"]);
        assert_eq!(allowed("flags-ec"), ["private: sign", "public: verify"]);
        assert_eq!(allowed("flags-rsa"), ["private: sign", "public: verify"]);
    });
}

#[test]
fn a_wrong_pin_or_label_is_a_clear_start_up_error() {
    with_token("a_wrong_pin_or_label_is_a_clear_start_up_error", |_| {
        let err = Pkcs11Vault::open(config("0000")).unwrap_err();
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("PIN")), "{err}");
        let mut other = config(PIN);
        other.token_label = "no-such-token".into();
        let err = Pkcs11Vault::open(other).unwrap_err();
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("no-such-token")), "{err}");
        let mut module = config(PIN);
        module.module = "/nonexistent/libpkcs11.so".into();
        assert!(matches!(Pkcs11Vault::open(module), Err(Error::Unavailable(_))));
        let debug = format!("{:?}", config(PIN));
        assert!(!debug.contains(PIN), "{debug}");
    });
}

#[test]
fn the_vault_recovers_when_the_token_comes_back() {
    with_token("the_vault_recovers_when_the_token_comes_back", |dir| {
        let vault = vault();
        let created = vault.generate(Algorithm::Aes256Gcm, "k").unwrap();
        let key = vault.load(Algorithm::Aes256Gcm, &created.handle).unwrap();
        let sealed = key.encrypt(b"kept", b"").unwrap();
        // The module is shut down under the vault (a device reset) and the token is gone
        // when it starts again.
        let tokens = dir.join("tokens");
        let away = dir.join("away");
        std::fs::rename(&tokens, &away).unwrap();
        std::fs::create_dir_all(&tokens).unwrap();
        testing::reset_module().unwrap();
        let gone = key.decrypt(&sealed, b"");
        assert!(matches!(&gone, Err(Error::Unavailable(m)) if m.contains(LABEL)), "{gone:?}");
        assert!(matches!(vault.check(), Err(Error::Unavailable(_))));
        assert!(matches!(vault.generate(Algorithm::Aes256Gcm, "x"), Err(Error::Unavailable(_))));
        // It comes back: the same loaded key works again without restarting anything.
        std::fs::remove_dir_all(&tokens).unwrap();
        std::fs::rename(&away, &tokens).unwrap();
        assert_eq!(key.decrypt(&sealed, b"").unwrap().expose(), b"kept");
        vault.check().unwrap();
    });
}

#[test]
fn the_session_pool_serves_many_threads() {
    with_token("the_session_pool_serves_many_threads", |_| {
        let vault = vault();
        let created = vault.generate(Algorithm::EcP256, "pool").unwrap();
        let key = vault.load(Algorithm::EcP256, &created.handle).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let key = Arc::clone(&key);
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        let msg = i.to_be_bytes();
                        let sig = key
                            .sign(SignatureScheme::EcdsaP256Sha256, SignInput::Message(&msg))
                            .unwrap();
                        assert!(
                            key.verify(
                                SignatureScheme::EcdsaP256Sha256,
                                SignInput::Message(&msg),
                                &sig
                            )
                            .unwrap()
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}
