//! Google Wycheproof vectors against every provider: each applicable vector, valid or invalid,
//! must give its expected result. `acceptable` vectors may go either way (decided per group by
//! the library), and are counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, KeyMaterial, SecretBytes, SignInput, SignatureScheme,
};
use wycheproof::{HashFunction, TestResult};

/// Every provider the crate ships; each test runs for each of them.
fn providers() -> Vec<Box<dyn CryptoProvider>> {
    vec![Box::new(AwsLcProvider)]
}

/// Tallies outcomes and the vectors that went wrong.
#[derive(Default)]
struct Tally {
    passed: usize,
    acceptable: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, what: &str, tc_id: usize, expected: &TestResult, accepted: bool) {
        match (expected, accepted) {
            (TestResult::Valid, true) | (TestResult::Invalid, false) => self.passed += 1,
            (TestResult::Acceptable, _) => self.acceptable += 1,
            (expected, accepted) => self
                .failures
                .push(format!("{what} tc {tc_id}: expected {expected:?}, accepted={accepted}")),
        }
    }

    fn finish(self, what: &str, minimum: usize) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} failures: {:#?}",
            self.failures.len(),
            self.failures
        );
        assert!(
            self.passed >= minimum,
            "{what}: only {} vectors ran (expected at least {minimum})",
            self.passed
        );
        eprintln!("{what}: {} passed, {} acceptable", self.passed, self.acceptable);
    }
}

fn aes_key(
    provider: &dyn CryptoProvider,
    raw: &[u8],
) -> Option<std::sync::Arc<dyn ferrohsm_crypto::SecretKey>> {
    let material =
        KeyMaterial::from_sealed_bytes(Algorithm::Aes256Gcm, SecretBytes::copy_from(raw));
    provider.load(&material).ok()
}

#[test]
fn aes_256_gcm() {
    for provider in providers() {
        let mut tally = Tally::default();
        let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm)
            .unwrap_or_else(|e| panic!("{e:?}"));
        for group in set.test_groups {
            // Applicable: the algorithm's only shape, a 256-bit key, 96-bit nonce, 128-bit tag.
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for test in group.tests {
                let Some(key) = aes_key(provider.as_ref(), &test.key) else {
                    tally.check("aes-gcm", test.tc_id, &test.result, false);
                    continue;
                };
                let mut sealed = test.nonce.to_vec();
                sealed.extend_from_slice(&test.ct);
                sealed.extend_from_slice(&test.tag);
                let opened = key.decrypt(&sealed, &test.aad);
                let accepted = matches!(&opened, Ok(pt) if pt.expose() == test.pt.as_slice());
                tally.check("aes-gcm", test.tc_id, &test.result, accepted);
                // Our own encryption of a valid vector's plaintext must open again.
                if test.result == TestResult::Valid {
                    let ours = key.encrypt(&test.pt, &test.aad).unwrap_or_else(|e| panic!("{e}"));
                    let back = key.decrypt(&ours, &test.aad).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(back.expose(), test.pt.as_slice());
                }
            }
        }
        tally.finish("aes-256-gcm", 60);
    }
}

#[test]
fn aes_256_key_wrap_with_padding() {
    for provider in providers() {
        let mut tally = Tally::default();
        let set = wycheproof::keywrap::TestSet::load(
            wycheproof::keywrap::TestName::AesKeyWrapWithPadding,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        for group in set.test_groups {
            if group.key_size != 256 {
                continue;
            }
            for test in group.tests {
                let Some(key) = aes_key(provider.as_ref(), &test.key) else {
                    tally.check("kwp", test.tc_id, &test.result, false);
                    continue;
                };
                let unwrapped = key.unwrap(&test.ct);
                let accepted = matches!(&unwrapped, Ok(k) if k.expose() == test.pt.as_slice());
                tally.check("kwp", test.tc_id, &test.result, accepted);
                if test.result == TestResult::Valid && !test.pt.is_empty() {
                    // RFC 5649 is deterministic: our wrap must equal the vector.
                    let wrapped = key.wrap(&test.pt).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(wrapped, test.ct.to_vec(), "kwp tc {}", test.tc_id);
                }
            }
        }
        tally.finish("aes-256-kwp", 20);
    }
}

fn verify_groups<'a>(
    provider: &dyn CryptoProvider,
    tally: &mut Tally,
    what: &str,
    algorithm: Algorithm,
    scheme: SignatureScheme,
    spki: &[u8],
    tests: impl IntoIterator<Item = (usize, &'a TestResult, &'a [u8], &'a [u8])>,
) {
    let key = provider.load_public(algorithm, spki);
    for (tc_id, result, msg, sig) in tests {
        let accepted = match &key {
            Ok(key) => key.verify(scheme, SignInput::Message(msg), sig).unwrap_or(false),
            Err(_) => false,
        };
        tally.check(what, tc_id, result, accepted);
    }
}

#[test]
fn ecdsa_p256_and_p384_der() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let cases = [
        (TestName::EcdsaSecp256r1Sha256, Algorithm::EcP256, SignatureScheme::EcdsaP256Sha256),
        (TestName::EcdsaSecp384r1Sha384, Algorithm::EcP384, SignatureScheme::EcdsaP384Sha384),
    ];
    for provider in providers() {
        for (name, algorithm, scheme) in cases {
            let mut tally = Tally::default();
            let set = TestSet::load(name).unwrap_or_else(|e| panic!("{e:?}"));
            for group in &set.test_groups {
                let tests =
                    group.tests.iter().map(|t| (t.tc_id, &t.result, &t.msg[..], &t.sig[..]));
                verify_groups(
                    provider.as_ref(),
                    &mut tally,
                    scheme.as_str(),
                    algorithm,
                    scheme,
                    &group.der,
                    tests,
                );
            }
            tally.finish(scheme.as_str(), 300);
        }
    }
}

#[test]
fn ed25519() {
    for provider in providers() {
        let mut tally = Tally::default();
        let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
            .unwrap_or_else(|e| panic!("{e:?}"));
        for group in &set.test_groups {
            let tests = group.tests.iter().map(|t| (t.tc_id, &t.result, &t.msg[..], &t.sig[..]));
            verify_groups(
                provider.as_ref(),
                &mut tally,
                "ed25519",
                Algorithm::Ed25519,
                SignatureScheme::Ed25519,
                &group.der,
                tests,
            );
        }
        tally.finish("ed25519", 100);
    }
}

fn rsa_algorithm(key_size: usize) -> Option<Algorithm> {
    match key_size {
        2048 => Some(Algorithm::Rsa2048),
        3072 => Some(Algorithm::Rsa3072),
        4096 => Some(Algorithm::Rsa4096),
        _ => None,
    }
}

#[test]
fn rsa_pkcs1_v15() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    for provider in providers() {
        let mut tally = Tally::default();
        for name in TestName::all() {
            let set = TestSet::load(name).unwrap_or_else(|e| panic!("{e:?}"));
            for group in &set.test_groups {
                let scheme = match group.hash {
                    HashFunction::Sha2_256 => SignatureScheme::RsaPkcs1Sha256,
                    HashFunction::Sha2_384 => SignatureScheme::RsaPkcs1Sha384,
                    HashFunction::Sha2_512 => SignatureScheme::RsaPkcs1Sha512,
                    _ => continue,
                };
                let Some(algorithm) = rsa_algorithm(group.key_size) else { continue };
                let tests =
                    group.tests.iter().map(|t| (t.tc_id, &t.result, &t.msg[..], &t.sig[..]));
                verify_groups(
                    provider.as_ref(),
                    &mut tally,
                    scheme.as_str(),
                    algorithm,
                    scheme,
                    &group.der,
                    tests,
                );
            }
        }
        tally.finish("rsa-pkcs1", 500);
    }
}

#[test]
fn rsa_pss() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    for provider in providers() {
        let mut tally = Tally::default();
        for name in TestName::all() {
            let set = TestSet::load(name).unwrap_or_else(|e| panic!("{e:?}"));
            for group in &set.test_groups {
                // Applicable: MGF1 with the message hash and a salt as long as the hash.
                let (scheme, len) = match group.hash {
                    HashFunction::Sha2_256 => (SignatureScheme::RsaPssSha256, 32),
                    HashFunction::Sha2_384 => (SignatureScheme::RsaPssSha384, 48),
                    HashFunction::Sha2_512 => (SignatureScheme::RsaPssSha512, 64),
                    _ => continue,
                };
                if group.mgf != wycheproof::Mgf::Mgf1
                    || group.mgf_hash != Some(group.hash)
                    || group.salt_size != len
                {
                    continue;
                }
                let Some(algorithm) = rsa_algorithm(group.key_size) else { continue };
                let tests =
                    group.tests.iter().map(|t| (t.tc_id, &t.result, &t.msg[..], &t.sig[..]));
                verify_groups(
                    provider.as_ref(),
                    &mut tally,
                    scheme.as_str(),
                    algorithm,
                    scheme,
                    &group.der,
                    tests,
                );
            }
        }
        tally.finish("rsa-pss", 100);
    }
}

#[test]
fn ml_dsa() {
    use wycheproof::mldsa_verify::{TestName, TestSet};
    let cases = [
        (TestName::MlDsa44Verify, Algorithm::MlDsa44, SignatureScheme::MlDsa44),
        (TestName::MlDsa65Verify, Algorithm::MlDsa65, SignatureScheme::MlDsa65),
        (TestName::MlDsa87Verify, Algorithm::MlDsa87, SignatureScheme::MlDsa87),
    ];
    for provider in providers() {
        for (name, algorithm, scheme) in cases {
            let mut tally = Tally::default();
            let set = TestSet::load(name).unwrap_or_else(|e| panic!("{e:?}"));
            for group in &set.test_groups {
                // Our API signs with the empty context only; vectors with a context do not apply.
                let tests = group
                    .tests
                    .iter()
                    .filter(|t| t.ctx.as_ref().is_none_or(|c| c.is_empty()))
                    .map(|t| (t.tc_id, &t.result, &t.msg[..], &t.sig[..]));
                verify_groups(
                    provider.as_ref(),
                    &mut tally,
                    scheme.as_str(),
                    algorithm,
                    scheme,
                    &group.der,
                    tests,
                );
            }
            tally.finish(scheme.as_str(), 10);
        }
    }
}
