//! A cache of verified records and loaded keys, safe to lose at any time.
//!
//! Every operation still reads the record from the store. The cache only skips work when the
//! stored record carries the same metadata tag as one already verified, in which case the
//! verified copy is used; a changed record (new state, version or tag) is verified afresh.
//! Loaded keys are parsed and unsealed once per version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ferrohsm_crypto::{CryptoProvider, PublicKey, SecretKey};
use ferrohsm_seal::{Binding, Sealer};
use ferrohsm_store::{KeyId, KeyRecord};

use crate::{Error, Result};

/// A record whose metadata tag verified, with the keys loaded from it so far.
#[derive(Debug)]
pub(crate) struct VerifiedKey {
    pub(crate) record: Arc<KeyRecord>,
    secrets: RwLock<HashMap<u32, Arc<dyn SecretKey>>>,
    publics: RwLock<HashMap<u32, Arc<dyn PublicKey>>>,
}

#[derive(Debug)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<KeyId, Arc<VerifiedKey>>>,
    capacity: usize,
    pub(crate) hits: std::sync::atomic::AtomicU64,
    pub(crate) misses: std::sync::atomic::AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        KeyCache {
            entries: RwLock::new(HashMap::new()),
            capacity,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// The verified form of `record`, from the cache if its tag matches, else checked now.
    pub(crate) fn verify(
        &self,
        sealer: &Sealer,
        record: Arc<KeyRecord>,
    ) -> Result<Arc<VerifiedKey>> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(hit) = self.hit(&record) {
            self.hits.fetch_add(1, Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Relaxed);
        check_tag(sealer, &record)?;
        let verified = Arc::new(VerifiedKey {
            record: record.clone(),
            secrets: RwLock::new(HashMap::new()),
            publics: RwLock::new(HashMap::new()),
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity
            && !entries.contains_key(&record.id)
            && let Some(victim) = entries.keys().next().copied()
        {
            entries.remove(&victim);
        }
        entries.insert(record.id, verified.clone());
        Ok(verified)
    }

    /// Checks `record` without caching it (for listings, which would churn the cache).
    pub(crate) fn check(&self, sealer: &Sealer, record: &KeyRecord) -> Result<()> {
        // The caller shows `record` itself, so only an identical copy counts as verified.
        if self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.id)
            .is_some_and(|c| *c.record == *record)
        {
            return Ok(());
        }
        check_tag(sealer, record)
    }

    pub(crate) fn remove(&self, id: &KeyId) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn hit(&self, record: &KeyRecord) -> Option<Arc<VerifiedKey>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&record.id)
            .filter(|c| record.tag.is_some() && c.record.tag == record.tag)
            .cloned()
    }
}

fn check_tag(sealer: &Sealer, record: &KeyRecord) -> Result<()> {
    let tag = record.tag.as_ref().ok_or(Error::Integrity(record.id))?;
    sealer.verify(&record.canonical_bytes(), tag).map_err(|_| Error::Integrity(record.id))
}

impl VerifiedKey {
    /// The private or secret key of `version`, unsealed and loaded once.
    pub(crate) fn secret(
        &self,
        provider: &dyn CryptoProvider,
        sealer: &Sealer,
        vault: Option<&dyn ferrohsm_crypto::RemoteKeyVault>,
        version: u32,
    ) -> Result<Arc<dyn SecretKey>> {
        if let Some(key) = self.secrets.read().unwrap_or_else(|p| p.into_inner()).get(&version) {
            return Ok(key.clone());
        }
        let record = &self.record;
        let integrity = Error::Integrity(record.id);
        let stored =
            record.version(version).ok_or(Error::VersionNotFound { key: record.id, version })?;
        let key = match (&stored.external, &stored.sealed) {
            (Some(external), _) => {
                let vault = vault.filter(|v| v.custody() == external.custody).ok_or_else(|| {
                    Error::VaultUnavailable(format!(
                        "no {} key vault is configured for key {}",
                        external.custody, record.id
                    ))
                })?;
                vault.load(record.algorithm, &external.handle).map_err(|e| match e {
                    ferrohsm_crypto::Error::Unavailable(m) => Error::VaultUnavailable(m),
                    // The vault lost the key or holds another one under its handle.
                    _ => Error::Integrity(record.id),
                })?
            }
            (None, Some(sealed)) => {
                let key_id = record.id.to_string();
                let binding = Binding { key_id: &key_id, version, algorithm: record.algorithm };
                let material =
                    sealer.unseal(&binding, sealed).map_err(|_| Error::Integrity(record.id))?;
                provider.load(&material).map_err(|_| Error::Integrity(record.id))?
            }
            (None, None) => return Err(integrity),
        };
        // The unsealed private key must match the authenticated public key.
        if key.public_key_der() != stored.public_key.as_deref() {
            return Err(integrity);
        }
        self.secrets.write().unwrap_or_else(|p| p.into_inner()).insert(version, key.clone());
        Ok(key)
    }

    /// The public key of `version`, parsed once from the authenticated record.
    pub(crate) fn public(
        &self,
        provider: &dyn CryptoProvider,
        version: u32,
    ) -> Result<Arc<dyn PublicKey>> {
        if let Some(key) = self.publics.read().unwrap_or_else(|p| p.into_inner()).get(&version) {
            return Ok(key.clone());
        }
        let record = &self.record;
        let stored =
            record.version(version).ok_or(Error::VersionNotFound { key: record.id, version })?;
        let der = stored.public_key.as_deref().ok_or(Error::Integrity(record.id))?;
        let key =
            provider.load_public(record.algorithm, der).map_err(|_| Error::Integrity(record.id))?;
        self.publics.write().unwrap_or_else(|p| p.into_inner()).insert(version, key.clone());
        Ok(key)
    }
}
