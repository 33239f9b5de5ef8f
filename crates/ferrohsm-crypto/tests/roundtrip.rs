//! Property round trips for every algorithm, and typed errors for misuse.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ferrohsm_crypto::{
    Algorithm, AwsLcProvider, CryptoProvider, Error, HashAlgorithm, SecretKey, SignInput,
    SignatureScheme, decode_pem, public_key_pem,
};
use proptest::prelude::*;

/// One generated key per algorithm, shared by all cases (RSA generation is slow).
fn key(algorithm: Algorithm) -> Arc<dyn SecretKey> {
    static KEYS: OnceLock<HashMap<Algorithm, Arc<dyn SecretKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        Algorithm::ALL
            .iter()
            .map(|alg| {
                let material =
                    AwsLcProvider.generate(*alg).unwrap_or_else(|e| panic!("{alg}: {e}"));
                (*alg, AwsLcProvider.load(&material).unwrap_or_else(|e| panic!("{alg}: {e}")))
            })
            .collect()
    });
    keys[&algorithm].clone()
}

fn digest(hash: HashAlgorithm, msg: &[u8]) -> Vec<u8> {
    use aws_lc_rs::digest;
    let alg = match hash {
        HashAlgorithm::Sha256 => &digest::SHA256,
        HashAlgorithm::Sha384 => &digest::SHA384,
        HashAlgorithm::Sha512 => &digest::SHA512,
        other => panic!("no test digest for {other}"),
    };
    digest::digest(alg, msg).as_ref().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn aes_gcm_round_trips_and_detects_tampering(
        pt in proptest::collection::vec(any::<u8>(), 0..2048),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = key(Algorithm::Aes256Gcm);
        let sealed = key.encrypt(&pt, &aad).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(sealed.len(), 12 + pt.len() + 16);
        prop_assert_eq!(key.decrypt(&sealed, &aad).map(|p| p.expose().to_vec()).ok(), Some(pt.clone()));
        let mut tampered = sealed.clone();
        let at = flip.index(tampered.len());
        tampered[at] ^= 0x01;
        prop_assert!(matches!(key.decrypt(&tampered, &aad), Err(Error::Crypto)));
        let mut other_aad = aad.clone();
        other_aad.push(0);
        prop_assert!(matches!(key.decrypt(&sealed, &other_aad), Err(Error::Crypto)));
        prop_assert!(matches!(key.decrypt(&sealed[..sealed.len() - 1], &aad), Err(Error::Crypto)));
    }

    #[test]
    fn key_wrap_round_trips(material in proptest::collection::vec(any::<u8>(), 1..600)) {
        let key = key(Algorithm::Aes256Gcm);
        let wrapped = key.wrap(&material).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(key.unwrap(&wrapped).map(|k| k.expose().to_vec()).ok(), Some(material));
        let mut tampered = wrapped.clone();
        tampered[0] ^= 0x80;
        prop_assert!(key.unwrap(&tampered).is_err());
    }

    #[test]
    fn every_scheme_signs_and_verifies(msg in proptest::collection::vec(any::<u8>(), 0..512)) {
        for scheme in SignatureScheme::ALL {
            for algorithm in scheme.key_algorithms() {
                let key = key(*algorithm);
                let sig = key.sign(*scheme, SignInput::Message(&msg)).unwrap_or_else(|e| panic!("{scheme}: {e}"));
                prop_assert!(key.verify(*scheme, SignInput::Message(&msg), &sig).unwrap_or(false), "{}", scheme);
                let mut other = msg.clone();
                other.push(1);
                prop_assert!(!key.verify(*scheme, SignInput::Message(&other), &sig).unwrap_or(true), "{}", scheme);
                let mut bad = sig.clone();
                let last = bad.len() - 1;
                bad[last] ^= 0x01;
                prop_assert!(!key.verify(*scheme, SignInput::Message(&msg), &bad).unwrap_or(true), "{}", scheme);

                // A public key loaded from the exported PEM verifies the same signature.
                let der = key.public_key_der().map(<[u8]>::to_vec).unwrap_or_default();
                let pem = public_key_pem(&der);
                let public = AwsLcProvider
                    .load_public(*algorithm, &decode_pem(&pem, "PUBLIC KEY").unwrap_or_default())
                    .unwrap_or_else(|e| panic!("{scheme}: {e}"));
                prop_assert!(public.verify(*scheme, SignInput::Message(&msg), &sig).unwrap_or(false), "{}", scheme);

                // Schemes with a hash also sign and verify a pre-computed digest, interchangeably
                // with the message form.
                if let Some(hash) = scheme.hash() {
                    let d = digest(hash, &msg);
                    let dsig = key.sign(*scheme, SignInput::Digest(&d)).unwrap_or_else(|e| panic!("{scheme}: {e}"));
                    prop_assert!(key.verify(*scheme, SignInput::Message(&msg), &dsig).unwrap_or(false), "{}", scheme);
                    prop_assert!(public.verify(*scheme, SignInput::Digest(&d), &sig).unwrap_or(false), "{}", scheme);
                }
            }
        }
    }
}

#[test]
fn import_accepts_exported_keys_and_rejects_mismatches() {
    for algorithm in Algorithm::ALL {
        let material = AwsLcProvider.generate(*algorithm).unwrap_or_else(|e| panic!("{e}"));
        let imported = AwsLcProvider
            .import(*algorithm, material.danger_expose())
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert_eq!(imported, material, "{algorithm}: import must normalise to the same PKCS#8");
        assert!(matches!(
            AwsLcProvider.import(*algorithm, b"definitely not a key"),
            Err(Error::KeyRejected(a)) if a == *algorithm
        ));
    }
    // A key of one algorithm is not accepted as another, even a close relative.
    let rsa2048 = AwsLcProvider.generate(Algorithm::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        AwsLcProvider.import(Algorithm::Rsa3072, rsa2048.danger_expose()),
        Err(Error::KeyRejected(Algorithm::Rsa3072))
    ));
    let p256 = AwsLcProvider.generate(Algorithm::EcP256).unwrap_or_else(|e| panic!("{e}"));
    assert!(AwsLcProvider.import(Algorithm::EcP384, p256.danger_expose()).is_err());
    assert!(AwsLcProvider.import(Algorithm::Aes256Gcm, &[0u8; 16]).is_err());
}

#[test]
fn misuse_gives_typed_errors() {
    let aes = key(Algorithm::Aes256Gcm);
    let ec = key(Algorithm::EcP256);
    let ed = key(Algorithm::Ed25519);
    assert!(matches!(ec.encrypt(b"x", b""), Err(Error::Unsupported { .. })));
    assert!(matches!(ec.wrap(b"x"), Err(Error::Unsupported { .. })));
    assert!(matches!(
        aes.sign(SignatureScheme::EcdsaP256Sha256, SignInput::Message(b"x")),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ec.sign(SignatureScheme::EcdsaP384Sha384, SignInput::Message(b"x")),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ec.sign(SignatureScheme::EcdsaP256Sha256, SignInput::Digest(&[0u8; 31])),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ed.sign(SignatureScheme::Ed25519, SignInput::Digest(&[0u8; 32])),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(aes.decrypt(&[0u8; 27], b""), Err(Error::Crypto)));
    assert!(matches!(aes.wrap(b""), Err(Error::InvalidInput(_))));
    assert!(aes.unwrap(&[0u8; 15]).is_err());
    assert!(matches!(
        AwsLcProvider.load_public(Algorithm::EcP256, b"junk"),
        Err(Error::KeyRejected(_))
    ));
}

#[test]
fn hkdf_and_hmac_match_rfc_vectors() {
    // RFC 5869 test case 1.
    let ikm = [0x0bu8; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let mut okm = [0u8; 42];
    AwsLcProvider.hkdf_sha256(&ikm, &salt, &info, &mut okm).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hex(&okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
    // RFC 4231 test case 2.
    let tag = AwsLcProvider.hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(hex(&tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    assert!(AwsLcProvider.hmac_sha256_verify(b"Jefe", b"what do ya want for nothing?", &tag));
    assert!(!AwsLcProvider.hmac_sha256_verify(b"Jefe", b"what do ya want for nothing!", &tag));
    assert_eq!(
        hex(&AwsLcProvider.sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn prepared_hmac_and_seeded_ed25519() {
    let key = AwsLcProvider.hmac_sha256_key(b"Jefe");
    let tag = key.sign(b"what do ya want for nothing?");
    assert_eq!(tag, AwsLcProvider.hmac_sha256(b"Jefe", b"what do ya want for nothing?"));
    assert!(key.verify(b"what do ya want for nothing?", &tag));
    assert!(!key.verify(b"what do ya want for nothing!", &tag));

    // RFC 8032 test 1: the seed determines the public key.
    let seed: [u8; 32] = (0..32)
        .map(|i| {
            u8::from_str_radix(
                &"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
                    [2 * i..2 * i + 2],
                16,
            )
            .unwrap()
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let signer = AwsLcProvider.ed25519_from_seed(&seed).unwrap();
    let der = signer.public_key_der().unwrap();
    assert_eq!(
        hex(&der[der.len() - 32..]),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let sig = signer.sign(SignatureScheme::Ed25519, SignInput::Message(b"")).unwrap();
    assert_eq!(hex(&sig[..8]), "e5564300c360ac72");
}
