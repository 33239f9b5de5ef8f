//! [`RemoteKeyStore`]: any [`KeyStore`] paired with the [`RemoteKeyVault`] that holds the
//! material of its vault-held versions.
//!
//! Metadata, versions, policy state and revisions stay in the inner store (memory, files,
//! SQLite…); the vault holds only key material, named by the handle a version records. The
//! pair keeps two promises the inner store cannot keep alone:
//!
//! - no record is written that names material its vault does not hold: every new vault-held
//!   version (create, rotation, import) must name this vault's custody and a handle the vault
//!   resolves to the key the version says (same algorithm, same public key);
//! - material is destroyed in the vault only after the tombstone that forgets it is durable
//!   (a purge that loses a race with a cancellation destroys nothing), and every handle the
//!   vault could not destroy is reported rather than silently left behind.
//!
//! Sealed versions pass through unchanged, so one store can hold keys of both custodies.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferrohsm_crypto::RemoteKeyVault;

use crate::{
    DamagedRecord, Error, KeyId, KeyName, KeyRecord, KeyStore, KeyVersion, ListQuery, Page, Result,
    VersionState,
};

/// How often a purge tries to destroy each handle before reporting it as left behind.
const DESTROY_ATTEMPTS: u64 = 3;

/// A [`KeyStore`] whose vault-held versions are checked against, and destroyed in, a
/// [`RemoteKeyVault`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RemoteKeyStore {
    inner: Arc<dyn KeyStore>,
    vault: Arc<dyn RemoteKeyVault>,
}

/// A version's vault-held material, as [`RemoteKeyStore::check_material`] checks it.
#[derive(Debug, Clone, Copy)]
pub struct Material<'a> {
    /// The key.
    pub key: KeyId,
    /// The version number.
    pub version: u32,
    /// The key's algorithm.
    pub algorithm: ferrohsm_crypto::Algorithm,
    /// Where the material is held.
    pub external: &'a crate::ExternalMaterial,
    /// The version's public key (asymmetric keys).
    pub public_key: Option<&'a [u8]>,
}

/// The outcome of [`RemoteKeyStore::purge_material`].
#[derive(Debug)]
pub struct PurgedMaterial {
    /// The stored tombstone.
    pub record: Arc<KeyRecord>,
    /// How many vault-held versions the purged key had.
    pub destroyed: usize,
    /// Handles the vault could not destroy (they must be removed with the vendor's tools).
    pub left: Vec<String>,
}

impl RemoteKeyStore {
    /// Pairs `inner` (which keeps every record) with `vault` (which keeps the material of
    /// versions whose custody is the vault's).
    pub fn new(inner: Arc<dyn KeyStore>, vault: Arc<dyn RemoteKeyVault>) -> Self {
        RemoteKeyStore { inner, vault }
    }

    /// The vault.
    pub fn vault(&self) -> &Arc<dyn RemoteKeyVault> {
        &self.vault
    }

    /// The store every record lives in.
    pub fn inner(&self) -> &Arc<dyn KeyStore> {
        &self.inner
    }

    /// Checks the vault-held versions of `record` numbered above `known` (the versions a
    /// stored predecessor already had were checked when they were written).
    pub async fn admit(&self, record: &KeyRecord, known: u32) -> Result<()> {
        for version in record.versions.iter().filter(|v| v.version > known) {
            self.admit_version(record, version).await?;
        }
        Ok(())
    }

    async fn admit_version(&self, record: &KeyRecord, version: &KeyVersion) -> Result<()> {
        let Some(external) = &version.external else { return Ok(()) };
        if version.state == VersionState::Destroyed {
            return Ok(());
        }
        let material = Material {
            key: record.id,
            version: version.version,
            algorithm: record.algorithm,
            external,
            public_key: version.public_key.as_deref(),
        };
        self.check_material(material).await
    }

    /// Checks that the vault holds `material` (this vault's custody, a handle it resolves,
    /// the recorded public key): what [`Self::admit`] checks of each new version, for a caller
    /// that wants to know before it builds a record (the core, right after generating).
    pub async fn check_material(&self, material: Material<'_>) -> Result<()> {
        let Material { key, version, algorithm, external, public_key } = material;
        let invalid = |reason: String| Error::InvalidRecord { id: key, reason };
        if external.custody != self.vault.custody() {
            return Err(invalid(format!(
                "version {version} is held by a {} vault, but this store's vault is {}",
                external.custody,
                self.vault.custody()
            )));
        }
        let (vault, handle) = (self.vault.clone(), external.handle.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            vault.load(algorithm, &handle).map(|key| key.public_key_der().map(<[u8]>::to_vec))
        })
        .await
        .map_err(|e| Error::Unavailable {
            what: format!("checking a key in the vault: {e}"),
            cause: None,
        })?;
        match loaded {
            Ok(loaded) if loaded.as_deref() == public_key => Ok(()),
            Ok(_) => Err(invalid(format!(
                "the vault's key {} is not the key version {version} records",
                external.handle
            ))),
            Err(ferrohsm_crypto::Error::Unavailable(what)) => {
                Err(Error::Unavailable { what: format!("the key vault: {what}"), cause: None })
            }
            Err(e) => Err(invalid(format!(
                "the vault holds no {algorithm} key {} for version {version} ({e})",
                external.handle
            ))),
        }
    }

    /// Purges like [`KeyStore::purge`], then destroys the vault material of the key's
    /// versions, each handle tried a few times; handles still there are returned in
    /// [`PurgedMaterial::left`]. Nothing is destroyed unless the tombstone was stored.
    pub async fn purge_material(&self, tombstone: KeyRecord) -> Result<PurgedMaterial> {
        let handles: Vec<String> = match self.inner.get(&tombstone.id).await? {
            Some(before) => before
                .versions
                .iter()
                .filter_map(|v| v.external.as_ref())
                .filter(|e| e.custody == self.vault.custody())
                .map(|e| e.handle.clone())
                .collect(),
            None => Vec::new(),
        };
        let record = self.inner.purge(tombstone).await?;
        let mut left = Vec::new();
        for handle in &handles {
            if !self.destroy(handle).await {
                tracing::error!(key = %record.id, %handle, "a purged key's material could not be destroyed in the key vault");
                left.push(handle.clone());
            }
        }
        Ok(PurgedMaterial { record, destroyed: handles.len(), left })
    }

    async fn destroy(&self, handle: &str) -> bool {
        for attempt in 0..DESTROY_ATTEMPTS {
            let (vault, handle) = (self.vault.clone(), handle.to_owned());
            if matches!(
                tokio::task::spawn_blocking(move || vault.destroy(&handle)).await,
                Ok(Ok(()))
            ) {
                return true;
            }
            if attempt + 1 < DESTROY_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
        false
    }
}

#[async_trait]
impl KeyStore for RemoteKeyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn damaged(&self) -> Vec<DamagedRecord> {
        self.inner.damaged()
    }

    async fn create(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.admit(&record, 0).await?;
        self.inner.create(record).await
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>> {
        self.inner.get(id).await
    }

    async fn find_by_name(&self, name: &KeyName) -> Result<Option<Arc<KeyRecord>>> {
        self.inner.find_by_name(name).await
    }

    async fn update(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        // Only versions the stored record lacks are new; the inner store refuses any change
        // to the others.
        let known = match self.inner.get(&record.id).await? {
            Some(stored) => u32::try_from(stored.versions.len()).unwrap_or(u32::MAX),
            None => 0,
        };
        self.admit(&record, known).await?;
        self.inner.update(record).await
    }

    async fn purge(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        Ok(self.purge_material(record).await?.record)
    }

    async fn import(&self, record: KeyRecord) -> Result<Arc<KeyRecord>> {
        self.admit(&record, 0).await?;
        self.inner.import(record).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.inner.list(query).await
    }

    async fn count(&self) -> Result<usize> {
        self.inner.count().await
    }
}
