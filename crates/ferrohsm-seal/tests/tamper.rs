//! Sealed records and authenticated metadata detect every edit, truncation and move.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test"
)]

use std::sync::Arc;

use ferrohsm_crypto::{Algorithm, AwsLcProvider, CryptoProvider};
use ferrohsm_seal::{Binding, Error, MasterKey, MetadataTag, SealedMaterial, Sealer};
use proptest::prelude::*;

fn sealer(seed: u8) -> Sealer {
    let provider: Arc<dyn CryptoProvider> = Arc::new(AwsLcProvider);
    Sealer::new(provider, &MasterKey::from_bytes(&[seed; 32]).unwrap()).unwrap()
}

const ID: &str = "0190a5c4-1111-7000-8000-000000000001";

fn binding(algorithm: Algorithm) -> Binding<'static> {
    Binding { key_id: ID, version: 3, algorithm }
}

fn integrity(result: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::Integrity))
}

#[test]
fn every_algorithm_round_trips() {
    let sealer = sealer(1);
    for algorithm in
        [Algorithm::Aes256Gcm, Algorithm::EcP384, Algorithm::Ed25519, Algorithm::MlDsa44]
    {
        let material = AwsLcProvider.generate(algorithm).unwrap();
        let sealed = sealer.seal(&binding(algorithm), &material).unwrap();
        assert_eq!(sealer.unseal(&binding(algorithm), &sealed).unwrap(), material);
        // The ciphertext does not contain the material in clear.
        let raw = material.danger_expose();
        assert!(
            !sealed.ciphertext.windows(raw.len().min(16)).any(|w| w == &raw[..raw.len().min(16)])
        );
    }
}

#[test]
fn flipping_any_byte_is_detected() {
    let sealer = sealer(2);
    let material = AwsLcProvider.generate(Algorithm::Aes256Gcm).unwrap();
    let b = binding(Algorithm::Aes256Gcm);
    let sealed = sealer.seal(&b, &material).unwrap();
    for i in 0..sealed.ciphertext.len() {
        for bit in [0x01u8, 0x80] {
            let mut edited = sealed.clone();
            edited.ciphertext[i] ^= bit;
            assert!(integrity(sealer.unseal(&b, &edited)), "ciphertext byte {i}");
        }
    }
    for i in 0..sealed.hmac.len() {
        let mut edited = sealed.clone();
        edited.hmac[i] ^= 0x01;
        assert!(integrity(sealer.unseal(&b, &edited)), "hmac byte {i}");
    }
    let mut edited = sealed.clone();
    edited.format = 2;
    assert!(integrity(sealer.unseal(&b, &edited)));
}

#[test]
fn truncation_is_detected() {
    let sealer = sealer(3);
    let material = AwsLcProvider.generate(Algorithm::EcP256).unwrap();
    let b = binding(Algorithm::EcP256);
    let sealed = sealer.seal(&b, &material).unwrap();
    for len in 0..sealed.ciphertext.len() {
        let mut cut = sealed.clone();
        cut.ciphertext.truncate(len);
        assert!(integrity(sealer.unseal(&b, &cut)), "ciphertext cut to {len}");
    }
    for len in 0..sealed.hmac.len() {
        let mut cut = sealed.clone();
        cut.hmac.truncate(len);
        assert!(integrity(sealer.unseal(&b, &cut)), "hmac cut to {len}");
    }
}

#[test]
fn moving_a_record_to_another_key_version_or_algorithm_is_detected() {
    let sealer = sealer(4);
    let material = AwsLcProvider.generate(Algorithm::Aes256Gcm).unwrap();
    let b = binding(Algorithm::Aes256Gcm);
    let sealed = sealer.seal(&b, &material).unwrap();
    let other_id = "0190a5c4-1111-7000-8000-000000000002";
    for moved in [
        Binding { key_id: other_id, ..b },
        Binding { version: 4, ..b },
        Binding { version: 2, ..b },
        Binding { algorithm: Algorithm::EcP256, ..b },
        // Length-prefixing keeps "id + version" from colliding with a longer id.
        Binding { key_id: "0190a5c4-1111-7000-8000-00000000000", ..b },
    ] {
        assert!(integrity(sealer.unseal(&moved, &sealed)), "{moved:?}");
    }
    // A different master key cannot unseal it either.
    assert!(integrity(self::sealer(5).unseal(&b, &sealed)));
}

#[test]
fn sealed_records_survive_serialization_and_reject_unknown_fields() {
    let sealer = sealer(6);
    let material = AwsLcProvider.generate(Algorithm::Aes256Gcm).unwrap();
    let b = binding(Algorithm::Aes256Gcm);
    let sealed = sealer.seal(&b, &material).unwrap();
    let json = serde_json::to_string(&sealed).unwrap();
    let back: SealedMaterial = serde_json::from_str(&json).unwrap();
    assert_eq!(sealer.unseal(&b, &back).unwrap(), material);
    let extra = json.replacen('{', "{\"extra\":1,", 1);
    assert!(serde_json::from_str::<SealedMaterial>(&extra).is_err());
    assert!(!format!("{sealed:?}").contains(&ferrohsm_crypto::b64::encode(&sealed.ciphertext)));
}

#[test]
fn metadata_edits_are_detected() {
    let sealer = sealer(7);
    let metadata = br#"{"state":"revoked","usages":["encrypt"],"current_version":2}"#;
    let tag = sealer.authenticate(metadata);
    assert!(sealer.verify(metadata, &tag).is_ok());
    let edited = br#"{"state":"active","usages":["encrypt"],"current_version":2}"#;
    assert!(integrity(sealer.verify(edited, &tag)));
    let mut bad_tag = tag.clone();
    bad_tag.0[0] ^= 1;
    assert!(integrity(sealer.verify(metadata, &bad_tag)));
    assert!(integrity(sealer.verify(metadata, &MetadataTag(vec![]))));
    assert!(integrity(self::sealer(8).verify(metadata, &tag)));
}

#[test]
fn fingerprint_identifies_the_master_key_without_revealing_it() {
    assert_eq!(sealer(9).fingerprint(), sealer(9).fingerprint());
    assert_ne!(sealer(9).fingerprint(), sealer(10).fingerprint());
    assert_eq!(sealer(9).fingerprint().len(), 16);
    assert!(!format!("{:?}", sealer(9)).contains("090909"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn unseal_of_seal_is_identity(raw in proptest::array::uniform32(any::<u8>()), version in 1u32.., flip in any::<prop::sample::Index>()) {
        let sealer = sealer(11);
        let material = AwsLcProvider.import(Algorithm::Aes256Gcm, &raw).unwrap();
        let b = Binding { key_id: ID, version, algorithm: Algorithm::Aes256Gcm };
        let sealed = sealer.seal(&b, &material).unwrap();
        prop_assert_eq!(sealer.unseal(&b, &sealed).unwrap(), material);
        let mut edited = sealed.clone();
        let at = flip.index(edited.ciphertext.len());
        edited.ciphertext[at] ^= 0x04;
        prop_assert!(integrity(sealer.unseal(&b, &edited)));
    }
}
