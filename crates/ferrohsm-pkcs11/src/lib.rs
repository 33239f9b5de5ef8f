//! A [`RemoteKeyVault`] on a PKCS#11 token (tested with SoftHSM2 2.6.1): keys are generated
//! inside the token as sensitive, non-extractable objects and used there by their `CKA_ID`;
//! FerroHSM keeps only the handle (the hex `CKA_ID`) and the public half.
//!
//! - AES-256-GCM (`CKM_AES_GCM`, 12-byte IV, 128-bit tag, the same `nonce‖ciphertext‖tag`
//!   layout as sealed keys) and RFC 5649 wrap/unwrap (`CKM_AES_KEY_WRAP_PAD`: the bytes to wrap
//!   become a short-lived session object first, since tokens wrap objects, not bytes; only
//!   lengths that are a multiple of 8 bytes, because SoftHSM2 2.6 does not remove the padding
//!   when it unwraps).
//! - RSA-2048/3072/4096 PKCS#1 v1.5 (`CKM_RSA_PKCS` over DigestInfo) and PSS
//!   (`CKM_RSA_PKCS_PSS`, salt = hash length), ECDSA P-256/P-384 (`CKM_ECDSA` over the digest;
//!   the token's `r‖s` is returned as DER). Messages are hashed here, so tokens without the
//!   combined mechanisms (SoftHSM2 2.6 has no `CKM_ECDSA_SHA256`) work. Verification uses the
//!   public key in software.
//! - Ed25519 and ML-DSA are not offered (`supports` says no).
//! - A pool of logged-in sessions; an error that means the token or session went away empties
//!   the pool and the operation is tried once more on a fresh connection, so the vault
//!   recovers when the token comes back. While it cannot be reached every call answers
//!   [`ferrohsm_crypto::Error::Unavailable`].
//!
//! It must never create an extractable private or secret key, read a secret attribute of a
//! vault key, log or return the PIN, or keep a PIN in memory that is not zeroized on drop.

mod der;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ferrohsm_crypto::{
    AEAD_NONCE_LEN, AEAD_TAG_LEN, Algorithm, AwsLcProvider, CryptoProvider, Error, HashAlgorithm,
    PublicKey, RemoteKeyVault, Result, SecretBytes, SecretKey, SignInput, SignatureScheme,
    VaultKey,
};
use zeroize::Zeroizing;

/// How to reach the token.
pub struct Pkcs11Config {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label (slots are found by it: slot numbers change).
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// The most idle sessions kept open.
    pub max_idle_sessions: usize,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .finish()
    }
}

impl Pkcs11Config {
    /// Reads a PIN from a file (its first line; the file should be readable by the server
    /// only).
    pub fn pin_from_file(path: &Path) -> Result<Zeroizing<String>> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidInput(format!("reading the PIN file {}: {}", path.display(), e.kind()))
        })?);
        let pin = text.lines().next().unwrap_or("").trim();
        if pin.is_empty() {
            return Err(Error::InvalidInput(format!("the PIN file {} is empty", path.display())));
        }
        Ok(Zeroizing::new(pin.to_owned()))
    }

    /// Reads a PIN from the environment variable `name`.
    pub fn pin_from_env(name: &str) -> Result<Zeroizing<String>> {
        match std::env::var(name) {
            Ok(pin) if !pin.trim().is_empty() => Ok(Zeroizing::new(pin.trim().to_owned())),
            _ => Err(Error::InvalidInput(format!("the environment variable {name} holds no PIN"))),
        }
    }
}

/// What the label of every key FerroHSM generates starts with (then the key's name or id).
pub const KEY_LABEL_PREFIX: &str = "ferrohsm:";

/// A logged-in session, the generation of the connection that opened it, and the handles of
/// the key objects it has found. PKCS#11 promises a handle only to the session that found it,
/// so handles are cached per session, and forgotten after any destruction by this vault.
struct Pooled {
    generation: u64,
    session: Session,
    objects: Objects,
}

/// The object handles a session found, by class and `CKA_ID`.
#[derive(Default)]
struct Objects {
    /// By `CKA_ID`, one slot per class (looked up by `&[u8]`: no allocation per operation).
    found: std::collections::HashMap<Vec<u8>, [Option<ObjectHandle>; 4]>,
    /// The vault's destruction count when these were found.
    epoch: u64,
}

/// The most handles one session remembers (it forgets them all when full).
const MAX_CACHED_OBJECTS: usize = 4096;

impl Objects {
    fn class_code(class: ObjectClass) -> usize {
        if class == ObjectClass::SECRET_KEY {
            0
        } else if class == ObjectClass::PRIVATE_KEY {
            1
        } else if class == ObjectClass::PUBLIC_KEY {
            2
        } else {
            3
        }
    }

    fn get(&self, class: ObjectClass, id: &[u8]) -> Option<ObjectHandle> {
        self.found.get(id).and_then(|slots| slots[Self::class_code(class)])
    }

    fn insert(&mut self, class: ObjectClass, id: &[u8], object: ObjectHandle) {
        if self.found.len() >= MAX_CACHED_OBJECTS && !self.found.contains_key(id) {
            self.found.clear();
        }
        self.found.entry(id.to_vec()).or_default()[Self::class_code(class)] = Some(object);
    }

    fn forget(&mut self, class: ObjectClass, id: &[u8]) {
        if let Some(slots) = self.found.get_mut(id) {
            slots[Self::class_code(class)] = None;
        }
    }
}

/// A connection: the loaded module and the token's slot.
struct Connection {
    pkcs11: Pkcs11,
    slot: Slot,
}

struct Inner {
    config: Pkcs11Config,
    connection: Mutex<Option<Connection>>,
    /// Idle sessions, each with the generation of the connection that opened it.
    idle: Mutex<Vec<Pooled>>,
    /// Bumped whenever this vault destroys a key, so no session reuses a handle found before
    /// (a token may give a destroyed object's handle to a new object).
    destroyed: AtomicU64,
    /// Held (shared) around every call into the module, and exclusively by a reset, so the
    /// module is never finalized while another thread is inside it.
    calls: RwLock<()>,
    /// Bumped by every reset; sessions of an older generation are never used or returned.
    generation: AtomicU64,
    /// Set when the token refused the PIN: it is not tried again (tokens lock after a few
    /// wrong PINs) until the vault is opened anew.
    pin_refused: AtomicBool,
    provider: AwsLcProvider,
}

/// The vault. Cheap to clone; every clone shares the connection and the session pool.
#[derive(Clone)]
pub struct Pkcs11Vault {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Vault").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// Whether a token error means the session or the token went away (reconnect and retry).
fn gone(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::SlotIdInvalid,
            _
        )
    )
}

fn unavailable(what: &str, e: &P11Error) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

impl Pkcs11Vault {
    /// Loads the module, finds the token and logs in once (so a wrong PIN or a missing token is
    /// reported at start-up).
    pub fn open(config: Pkcs11Config) -> Result<Pkcs11Vault> {
        let vault = Pkcs11Vault {
            inner: Arc::new(Inner {
                config,
                connection: Mutex::new(None),
                idle: Mutex::new(Vec::new()),
                destroyed: AtomicU64::new(0),
                calls: RwLock::new(()),
                generation: AtomicU64::new(0),
                pin_refused: AtomicBool::new(false),
                provider: AwsLcProvider,
            }),
        };
        vault.check()?;
        Ok(vault)
    }

    /// A new logged-in session (connecting first if needed), with its generation. Runs under
    /// the shared `calls` lock.
    fn connect(&self) -> Result<(u64, Session)> {
        let config = &self.inner.config;
        if self.inner.pin_refused.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "the token refused the PIN; fix the PIN and restart (it is not tried again)".into(),
            ));
        }
        let mut connection = self.inner.connection.lock().unwrap_or_else(|p| p.into_inner());
        if connection.is_none() {
            let pkcs11 = Pkcs11::new(&config.module).map_err(|e| {
                Error::Unavailable(format!("loading {}: {e}", config.module.display()))
            })?;
            match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => return Err(unavailable("initializing the module", &e)),
            }
            let slot = pkcs11
                .get_slots_with_initialized_token()
                .map_err(|e| unavailable("listing slots", &e))?
                .into_iter()
                .find(|s| pkcs11.get_token_info(*s).is_ok_and(|t| t.label() == config.token_label));
            let Some(slot) = slot else {
                // Unloaded again, so the next attempt sees the token if it comes back.
                let _ = pkcs11.finalize();
                return Err(Error::Unavailable(format!(
                    "no token labelled {:?}",
                    config.token_label
                )));
            };
            *connection = Some(Connection { pkcs11, slot });
        }
        let Some(c) = connection.as_ref() else {
            return Err(Error::Unavailable("not connected".into()));
        };
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let session =
            c.pkcs11.open_rw_session(c.slot).map_err(|e| unavailable("opening a session", &e))?;
        let pin = AuthPin::new(config.pin.as_str().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                Ok((generation, session))
            }
            Err(P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                self.inner.pin_refused.store(true, Ordering::SeqCst);
                Err(Error::Unavailable("the token refused the PIN".into()))
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                self.inner.pin_refused.store(true, Ordering::SeqCst);
                Err(Error::Unavailable("the token's PIN is locked".into()))
            }
            Err(e) => Err(unavailable("logging in", &e)),
        }
    }

    /// After the token or a session of generation `failed` went away: once, and only when no
    /// other thread is inside the module, closes the pooled sessions, unloads the module and
    /// starts a new generation (a later failure of an older generation resets nothing).
    fn reset(&self, failed: u64) {
        let _exclusive = self.inner.calls.write().unwrap_or_else(|p| p.into_inner());
        if self.inner.generation.load(Ordering::SeqCst) != failed {
            return;
        }
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Some(c) = self.inner.connection.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // Unloaded so the next connection sees the token's current slots.
            let _ = c.pkcs11.finalize();
        }
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `work` on a pooled session; if the token or session went away, once more on a
    /// fresh connection. Errors of `work` itself are mapped by `fail`.
    fn with_session<T>(
        &self,
        work: impl Fn(&Session) -> std::result::Result<T, P11Error>,
        fail: impl Fn(P11Error) -> Error,
    ) -> Result<T> {
        self.run(false, |s, _| work(s), fail)
    }

    /// A pooled session (or a new one), its cached handles forgotten if this vault destroyed a
    /// key since they were found.
    fn checkout(&self) -> Result<Pooled> {
        let pooled = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut pooled = match pooled {
            Some(pooled) => pooled,
            None => {
                let (generation, session) = self.connect()?;
                Pooled { generation, session, objects: Objects::default() }
            }
        };
        let epoch = self.inner.destroyed.load(Ordering::SeqCst);
        if pooled.objects.epoch != epoch {
            pooled.objects = Objects { found: Default::default(), epoch };
        }
        Ok(pooled)
    }

    /// [`Self::with_session`], or with `once` never a second time (work that must not run
    /// twice, like generating a key under a chosen id). `work` also gets the session's cache
    /// of object handles.
    fn run<T>(
        &self,
        once: bool,
        work: impl Fn(&Session, &mut Objects) -> std::result::Result<T, P11Error>,
        fail: impl Fn(P11Error) -> Error,
    ) -> Result<T> {
        for attempt in 0..2 {
            let (failed, error) = {
                let _shared = self.inner.calls.read().unwrap_or_else(|p| p.into_inner());
                let mut pooled = self.checkout()?;
                match work(&pooled.session, &mut pooled.objects) {
                    Ok(value) => {
                        self.give_back(pooled);
                        return Ok(value);
                    }
                    Err(e) if gone(&e) => {
                        tracing::warn!(error = %e, "the PKCS#11 token or session went away; reconnecting");
                        (pooled.generation, e)
                    }
                    Err(e) => {
                        self.give_back(pooled);
                        return Err(fail(e));
                    }
                }
            };
            // Outside the shared lock: the reset waits for every other call to leave.
            self.reset(failed);
            if once || attempt == 1 {
                return Err(unavailable("the token", &error));
            }
        }
        Err(Error::Unavailable("the token".into()))
    }

    fn give_back(&self, pooled: Pooled) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.inner.config.max_idle_sessions.max(1)
            && pooled.generation == self.inner.generation.load(Ordering::SeqCst)
        {
            idle.push(pooled);
        }
    }

    fn find(
        session: &Session,
        id: &[u8],
        class: ObjectClass,
    ) -> std::result::Result<Option<ObjectHandle>, P11Error> {
        let found = session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
        Ok(found.first().copied())
    }

    /// The SubjectPublicKeyInfo of the public key object with `id`.
    fn public_spki(&self, algorithm: Algorithm, id: &[u8]) -> Result<Vec<u8>> {
        let wanted: &[AttributeType] = if algorithm.rsa_modulus_len().is_some() {
            &[AttributeType::Modulus, AttributeType::PublicExponent]
        } else {
            &[AttributeType::EcPoint]
        };
        let attributes = self.with_session(
            |s| match Self::find(s, id, ObjectClass::PUBLIC_KEY)? {
                Some(h) => s.get_attributes(h, wanted).map(Some),
                None => Ok(None),
            },
            |_| Error::KeyRejected(algorithm),
        )?;
        let attributes = attributes.ok_or_else(|| Error::KeyMissing(hex(id)))?;
        let (mut modulus, mut exponent, mut point) = (None, None, None);
        for a in attributes {
            match a {
                Attribute::Modulus(n) => modulus = Some(n),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let spki = match (der::curve(algorithm), modulus, exponent, point) {
            (Some(curve), _, _, Some(p)) => {
                der::ec_spki(curve, der::ec_point(&p).ok_or(Error::KeyRejected(algorithm))?)
            }
            (None, Some(n), Some(e), _) => der::rsa_spki(&n, &e),
            _ => return Err(Error::KeyRejected(algorithm)),
        };
        // The token's key must be the algorithm the record says (size, curve).
        self.inner.provider.load_public(algorithm, &spki)?;
        Ok(spki)
    }
}

impl Pkcs11Vault {
    /// The token's AES-256 key labelled `label`, used to wrap FerroHSM's master key (which is
    /// then kept only wrapped on disk). With `create`, a missing key is generated (sensitive,
    /// non-extractable, for encryption only); without it, a missing key is an error.
    pub fn root_key(&self, label: &str, create: bool) -> Result<Arc<dyn SecretKey>> {
        let by_label = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let found = self.with_session(
            |s| {
                let found = s.find_objects(&by_label)?;
                match found.as_slice() {
                    [h] => s.get_attributes(*h, &[AttributeType::Id]).map(|a| Some(Some(a))),
                    [] => Ok(Some(None)),
                    _ => Ok(None),
                }
            },
            |e| unavailable("finding the root key", &e),
        )?;
        let Some(found) = found else {
            return Err(Error::InvalidInput(format!(
                "the token holds several keys labelled {label:?}; the root key must be unique"
            )));
        };
        let id = found.and_then(|attributes| {
            attributes.into_iter().find_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            })
        });
        let id = match (id, create) {
            (Some(id), _) => id,
            (None, false) => {
                return Err(Error::InvalidInput(format!(
                    "the token holds no key labelled {label:?} (the root key of this data directory)"
                )));
            }
            (None, true) => {
                let mut id = [0u8; 16];
                self.inner.provider.fill_random(&mut id)?;
                let template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Id(id.to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ];
                self.with_session(
                    |s| s.generate_key(&Mechanism::AesKeyGen, &template),
                    |e| unavailable("generating the root key", &e),
                )?;
                id.to_vec()
            }
        };
        self.load(Algorithm::Aes256Gcm, &hex(&id))
    }
}

fn hex(bytes: &[u8]) -> String {
    ferrohsm_crypto::hex::encode(bytes)
}

fn id_of(handle: &str) -> Result<Vec<u8>> {
    ferrohsm_crypto::hex::decode(handle)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or_else(|| Error::InvalidInput(format!("{handle:?} is not a PKCS#11 key handle")))
}

impl RemoteKeyVault for Pkcs11Vault {
    fn custody(&self) -> &'static str {
        "pkcs11"
    }

    fn supports(&self, algorithm: Algorithm) -> bool {
        matches!(
            algorithm,
            Algorithm::Aes256Gcm
                | Algorithm::EcP256
                | Algorithm::EcP384
                | Algorithm::Rsa2048
                | Algorithm::Rsa3072
                | Algorithm::Rsa4096
        )
    }

    fn generate(&self, algorithm: Algorithm, label: &str) -> Result<VaultKey> {
        if !self.supports(algorithm) {
            return Err(Error::Unsupported { operation: "pkcs11 custody", algorithm });
        }
        let mut id = [0u8; 16];
        self.inner.provider.fill_random(&mut id)?;
        // Prefixed, so no key's label can be taken for the root key's (`root_key`).
        let label: Vec<u8> = format!("{KEY_LABEL_PREFIX}{label}").bytes().take(64).collect();
        let private = |id: &[u8]| {
            vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Id(id.to_vec()),
                Attribute::Label(label.clone()),
            ]
        };
        let public = |id: &[u8]| {
            vec![
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Id(id.to_vec()),
                Attribute::Label(label.clone()),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
            ]
        };
        let failed =
            |e: P11Error| Error::Unavailable(format!("generating a key in the token: {e}"));
        match algorithm {
            Algorithm::Aes256Gcm => {
                let mut template = private(&id);
                template.extend([
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                ]);
                self.run(true, |s, _| s.generate_key(&Mechanism::AesKeyGen, &template), failed)?;
                Ok(VaultKey { handle: hex(&id), public_key_der: None })
            }
            _ => {
                let (mechanism, mut public_template) = match der::curve(algorithm) {
                    Some(curve) => {
                        let mut t = public(&id);
                        t.push(Attribute::EcParams(curve.to_vec()));
                        (Mechanism::EccKeyPairGen, t)
                    }
                    None => {
                        let bits = algorithm.rsa_modulus_len().unwrap_or(256) as u64 * 8;
                        let mut t = public(&id);
                        t.push(Attribute::ModulusBits(bits.into()));
                        t.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                        (Mechanism::RsaPkcsKeyPairGen, t)
                    }
                };
                public_template.push(Attribute::Class(ObjectClass::PUBLIC_KEY));
                let mut private_template = private(&id);
                private_template.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
                // Signing only: a signing key never decrypts or unwraps (no oracle for RSA).
                private_template.extend([
                    Attribute::Sign(true),
                    Attribute::Decrypt(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                ]);
                self.run(
                    true,
                    |s, _| s.generate_key_pair(&mechanism, &public_template, &private_template),
                    failed,
                )?;
                match self.public_spki(algorithm, &id) {
                    Ok(spki) => Ok(VaultKey { handle: hex(&id), public_key_der: Some(spki) }),
                    Err(e) => {
                        // A pair whose public key cannot be read is of no use: not left behind.
                        let _ = self.destroy(&hex(&id));
                        Err(e)
                    }
                }
            }
        }
    }

    fn load(&self, algorithm: Algorithm, handle: &str) -> Result<Arc<dyn SecretKey>> {
        let id = id_of(handle)?;
        let (spki, public) = if algorithm.is_symmetric() {
            let found = self.with_session(
                |s| Self::find(s, &id, ObjectClass::SECRET_KEY),
                |_| Error::KeyRejected(algorithm),
            )?;
            if found.is_none() {
                return Err(Error::KeyMissing(handle.to_owned()));
            }
            (None, None)
        } else {
            let spki = self.public_spki(algorithm, &id)?;
            let public = self.inner.provider.load_public(algorithm, &spki)?;
            (Some(spki), Some(public))
        };
        Ok(Arc::new(TokenKey { vault: self.clone(), algorithm, id, spki, public }))
    }

    fn destroy(&self, handle: &str) -> Result<()> {
        let id = id_of(handle)?;
        // Before and after: no session keeps using a handle found before the objects went.
        self.inner.destroyed.fetch_add(1, Ordering::SeqCst);
        let _bump_again = BumpOnDrop(&self.inner.destroyed);
        self.with_session(
            |s| {
                for object in s.find_objects(&[Attribute::Id(id.clone())])? {
                    s.destroy_object(object)?;
                }
                Ok(())
            },
            |e| Error::Unavailable(format!("destroying a key in the token: {e}")),
        )
    }

    fn check(&self) -> Result<()> {
        self.with_session(|s| s.get_session_info().map(|_| ()), |e| unavailable("the token", &e))
    }
}

/// Bumps a counter when dropped.
struct BumpOnDrop<'a>(&'a AtomicU64);

impl Drop for BumpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A key held by the token, used by its `CKA_ID`.
struct TokenKey {
    vault: Pkcs11Vault,
    algorithm: Algorithm,
    id: Vec<u8>,
    spki: Option<Vec<u8>>,
    public: Option<Arc<dyn PublicKey>>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported { operation, algorithm: self.algorithm }
    }

    /// Runs `work` with the token object of `class` this key names. The session remembers the
    /// object's handle, so later operations on it skip the search; a handle the token no
    /// longer knows (the object was deleted behind the vault) is looked up once more.
    fn with_object<T>(
        &self,
        class: ObjectClass,
        work: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, P11Error>,
        fail: impl Fn(P11Error) -> Error,
    ) -> Result<T> {
        self.vault
            .run(
                false,
                |s, objects| {
                    if let Some(object) = objects.get(class, &self.id) {
                        match work(s, object) {
                            Err(P11Error::Pkcs11(
                                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                                _,
                            )) => objects.forget(class, &self.id),
                            done => return done.map(Some),
                        }
                    }
                    match Pkcs11Vault::find(s, &self.id, class)? {
                        Some(object) => {
                            objects.insert(class, &self.id, object);
                            work(s, object).map(Some)
                        }
                        None => Ok(None),
                    }
                },
                fail,
            )?
            .ok_or_else(|| Error::KeyMissing(hex(&self.id)))
    }

    fn digest(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
    ) -> Result<(HashAlgorithm, Vec<u8>)> {
        let hash = scheme.hash().ok_or_else(|| self.unsupported("sign"))?;
        let algorithm = match hash {
            HashAlgorithm::Sha384 => &aws_lc_rs::digest::SHA384,
            HashAlgorithm::Sha512 => &aws_lc_rs::digest::SHA512,
            _ => &aws_lc_rs::digest::SHA256,
        };
        match input {
            SignInput::Message(m) => {
                Ok((hash, aws_lc_rs::digest::digest(algorithm, m).as_ref().to_vec()))
            }
            SignInput::Digest(d) if d.len() == hash.output_len() => Ok((hash, d.to_vec())),
            SignInput::Digest(d) => Err(Error::InvalidInput(format!(
                "a {} digest has {} bytes, not {}",
                hash,
                hash.output_len(),
                d.len()
            ))),
        }
    }
}

impl SecretKey for TokenKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> Option<&[u8]> {
        self.spki.as_deref()
    }

    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if !self.algorithm.is_symmetric() {
            return Err(self.unsupported("encrypt"));
        }
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        self.vault.inner.provider.fill_random(&mut nonce)?;
        let body = self.with_object(
            ObjectClass::SECRET_KEY,
            |s, key| {
                let mut iv = nonce;
                let params = GcmParams::new(&mut iv, aad, ((AEAD_TAG_LEN * 8) as u64).into())?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
            },
            |_| Error::Crypto,
        )?;
        let mut out = Vec::with_capacity(AEAD_NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        if !self.algorithm.is_symmetric() {
            return Err(self.unsupported("decrypt"));
        }
        if sealed.len() < AEAD_NONCE_LEN + AEAD_TAG_LEN {
            return Err(Error::Crypto);
        }
        let (nonce, body) = sealed.split_at(AEAD_NONCE_LEN);
        let plain = self.with_object(
            ObjectClass::SECRET_KEY,
            |s, key| {
                let mut iv = [0u8; AEAD_NONCE_LEN];
                iv.copy_from_slice(nonce);
                let params = GcmParams::new(&mut iv, aad, ((AEAD_TAG_LEN * 8) as u64).into())?;
                s.decrypt(&Mechanism::AesGcm(params), key, body)
            },
            // SoftHSM2 answers a wrong tag with CKR_GENERAL_ERROR.
            |_| Error::Crypto,
        )?;
        Ok(SecretBytes::new(plain))
    }

    fn wrap(&self, key_material: &[u8]) -> Result<Vec<u8>> {
        if !self.algorithm.is_symmetric() {
            return Err(self.unsupported("wrap"));
        }
        if key_material.is_empty() || !key_material.len().is_multiple_of(8) {
            // SoftHSM2 2.6 unwraps RFC 5649 without removing the padding, so only lengths
            // that need none round-trip exactly (every AES key and most data keys do).
            return Err(Error::InvalidInput(
                "a token-held key wraps key material whose length is a multiple of 8 bytes".into(),
            ));
        }
        self.with_object(
            ObjectClass::SECRET_KEY,
            |s, key| {
                // Tokens wrap objects: the bytes become a session object for the moment.
                let object = s.create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Value(key_material.to_vec()),
                ])?;
                let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, key, object);
                let destroyed = s.destroy_object(object);
                let wrapped = wrapped?;
                destroyed?;
                Ok(wrapped)
            },
            |_| Error::Crypto,
        )
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes> {
        if !self.algorithm.is_symmetric() {
            return Err(self.unsupported("unwrap"));
        }
        if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
            return Err(Error::Crypto);
        }
        let value = self.with_object(
            ObjectClass::SECRET_KEY,
            |s, key| {
                let object = s.unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    key,
                    wrapped,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::Token(false),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                    ],
                )?;
                let value = s.get_attributes(object, &[AttributeType::Value]);
                let destroyed = s.destroy_object(object);
                let value = value?;
                destroyed?;
                Ok(value.into_iter().find_map(|a| match a {
                    Attribute::Value(v) => Some(Zeroizing::new(v)),
                    _ => None,
                }))
            },
            |_| Error::Crypto,
        )?;
        let value = value.ok_or(Error::Crypto)?;
        Ok(SecretBytes::copy_from(&value))
    }

    fn sign(&self, scheme: SignatureScheme, input: SignInput<'_>) -> Result<Vec<u8>> {
        if !self.algorithm.supports_scheme(scheme) {
            return Err(Error::InvalidInput(format!(
                "{scheme} is not a scheme of {}",
                self.algorithm
            )));
        }
        let (hash, digest) = self.digest(scheme, input)?;
        let (mechanism, data) = match scheme {
            SignatureScheme::EcdsaP256Sha256 | SignatureScheme::EcdsaP384Sha384 => {
                (Mechanism::Ecdsa, digest)
            }
            SignatureScheme::RsaPkcs1Sha256
            | SignatureScheme::RsaPkcs1Sha384
            | SignatureScheme::RsaPkcs1Sha512 => {
                let mut data = der::digest_info_prefix(hash).to_vec();
                data.extend_from_slice(&digest);
                (Mechanism::RsaPkcs, data)
            }
            SignatureScheme::RsaPssSha256
            | SignatureScheme::RsaPssSha384
            | SignatureScheme::RsaPssSha512 => {
                let (hash_alg, mgf) = match hash {
                    HashAlgorithm::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                    HashAlgorithm::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
                    _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                };
                let params =
                    PkcsPssParams { hash_alg, mgf, s_len: (hash.output_len() as u64).into() };
                (Mechanism::RsaPkcsPss(params), digest)
            }
            _ => return Err(self.unsupported("sign")),
        };
        let raw = self.with_object(
            ObjectClass::PRIVATE_KEY,
            |s, key| s.sign(&mechanism, key, &data),
            |_| Error::Crypto,
        )?;
        if matches!(mechanism, Mechanism::Ecdsa) {
            der::ecdsa_signature(&raw).ok_or(Error::Crypto)
        } else {
            Ok(raw)
        }
    }

    fn verify(
        &self,
        scheme: SignatureScheme,
        input: SignInput<'_>,
        signature: &[u8],
    ) -> Result<bool> {
        match &self.public {
            Some(public) => public.verify(scheme, input, signature),
            None => Err(self.unsupported("verify")),
        }
    }
}
