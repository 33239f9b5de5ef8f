//! How the core audits: the audit keys it derives from the master key, and what each
//! operation's result contributes to its record.

use ferrohsm_audit::AuditKeys;
use ferrohsm_crypto::CryptoProvider;
use ferrohsm_seal::MasterKey;
use ferrohsm_store::KeyId;
use zeroize::Zeroizing;

use crate::wire::{
    Decrypted, Encrypted, KeyInfo, KeyList, PublicKeyInfo, Signed, Unwrapped, Verified, Wrapped,
};
use crate::{Error, Result};

/// The HKDF purpose of the audit HMAC key.
const AUDIT_HMAC_PURPOSE: &str = "audit-hmac/1";
/// The HKDF purpose of the checkpoint signing seed (the number is the key's generation).
const AUDIT_CHECKPOINT_PURPOSE: &str = "audit-checkpoint/1";

/// The audit keys derived from the master key: what an [`crate::Hsm`] uses when it creates its
/// own sink, and what a frontend passes to a sink it opens (such as a file sink).
pub fn derive_audit_keys(provider: &dyn CryptoProvider, master: &MasterKey) -> Result<AuditKeys> {
    let hmac = derive_audit_hmac_key(provider, master)?;
    let seed = master.derive(provider, AUDIT_CHECKPOINT_PURPOSE).map_err(Error::Setup)?;
    AuditKeys::new(provider, &hmac, &seed).map_err(Error::AuditUnavailable)
}

/// The audit HMAC key derived from the master key, for an auditor who checks record HMACs
/// offline. Anyone holding it can forge records that pass the HMAC check (not checkpoint
/// signatures), so hand it only to auditors.
pub fn danger_derive_audit_hmac_key(
    provider: &dyn CryptoProvider,
    master: &MasterKey,
) -> Result<ferrohsm_crypto::SecretBytes> {
    derive_audit_hmac_key(provider, master)
        .map(|k| ferrohsm_crypto::SecretBytes::copy_from(k.as_ref()))
}

pub(crate) fn derive_audit_hmac_key(
    provider: &dyn CryptoProvider,
    master: &MasterKey,
) -> Result<Zeroizing<[u8; 32]>> {
    master.derive(provider, AUDIT_HMAC_PURPOSE).map_err(Error::Setup)
}

/// What a result puts in its audit record: the key, its version, and a short note.
pub(crate) trait Audited {
    fn key(&self) -> Option<KeyId> {
        None
    }
    fn version(&self) -> Option<u32> {
        None
    }
    fn note(&self) -> Option<String> {
        None
    }
    /// Whether the work already committed the success record itself (with its write).
    fn recorded(&self) -> bool {
        false
    }
}

/// A result whose success record may already be written (see [`Audited::recorded`]).
pub(crate) struct Recorded<T> {
    pub(crate) value: T,
    pub(crate) recorded: bool,
}

impl<T: Audited> Audited for Recorded<T> {
    fn key(&self) -> Option<KeyId> {
        self.value.key()
    }
    fn version(&self) -> Option<u32> {
        self.value.version()
    }
    fn note(&self) -> Option<String> {
        self.value.note()
    }
    fn recorded(&self) -> bool {
        self.recorded
    }
}

/// Results of operations on one key version, which a vault may have performed: their records
/// name its custody.
macro_rules! audited_custody {
    ($($ty:ty),+) => {
        $(impl Audited for $ty {
            fn key(&self) -> Option<KeyId> {
                Some(self.key_id)
            }
            fn version(&self) -> Option<u32> {
                Some(self.key_version)
            }
            fn note(&self) -> Option<String> {
                self.custody.as_ref().map(|c| format!("custody {c}"))
            }
        })+
    };
}
audited_custody!(Encrypted, Decrypted, Wrapped, Unwrapped, PublicKeyInfo);

impl Audited for Signed {
    fn key(&self) -> Option<KeyId> {
        Some(self.key_id)
    }
    fn version(&self) -> Option<u32> {
        Some(self.key_version)
    }
    fn note(&self) -> Option<String> {
        Some(match &self.custody {
            Some(custody) => format!("scheme {}, custody {custody}", self.algorithm),
            None => format!("scheme {}", self.algorithm),
        })
    }
}

impl Audited for Verified {
    fn key(&self) -> Option<KeyId> {
        Some(self.key_id)
    }
    fn version(&self) -> Option<u32> {
        Some(self.key_version)
    }
    fn note(&self) -> Option<String> {
        Some(format!(
            "scheme {}, signature {}",
            self.algorithm,
            if self.valid { "valid" } else { "invalid" }
        ))
    }
}

impl Audited for KeyInfo {
    fn key(&self) -> Option<KeyId> {
        Some(self.id)
    }
    fn version(&self) -> Option<u32> {
        Some(self.current_version)
    }
    fn note(&self) -> Option<String> {
        if self.custody == crate::SEALED {
            Some(format!("state {}", self.state))
        } else {
            Some(format!("state {}, custody {}", self.state, self.custody))
        }
    }
}

impl Audited for KeyList {
    fn note(&self) -> Option<String> {
        Some(format!("{} keys", self.keys.len()))
    }
}

impl Audited for Option<ferrohsm_audit::Checkpoint> {
    fn note(&self) -> Option<String> {
        self.as_ref().map(|cp| format!("checkpoint at record {}", cp.seq))
    }
}

/// An export's line count.
impl Audited for u64 {
    fn note(&self) -> Option<String> {
        Some(format!("{self} lines exported"))
    }
}

impl Audited for ferrohsm_policy::Approval {
    fn key(&self) -> Option<KeyId> {
        self.key_id.parse().ok()
    }
    fn note(&self) -> Option<String> {
        Some(format!(
            "approval {} for {}: {} ({} of {} approvals)",
            self.id,
            self.operation,
            self.state.as_str(),
            self.approvals(),
            self.quorum
        ))
    }
}

impl Audited for Vec<ferrohsm_policy::Approval> {
    fn note(&self) -> Option<String> {
        Some(format!("{} approvals", self.len()))
    }
}

/// A key purged by the destruction scheduler: the record is the purge attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) key_id: KeyId,
    pub(crate) versions: u32,
    /// The key vault that destroyed the material, for vault-held keys.
    pub(crate) custody: Option<&'static str>,
    /// Vault handles that could not be destroyed (the vault was unreachable).
    pub(crate) left: Vec<String>,
}

impl Audited for Purged {
    fn key(&self) -> Option<KeyId> {
        Some(self.key_id)
    }
    fn note(&self) -> Option<String> {
        Some(match self.custody {
            None => {
                format!("purge attestation: sealed material of versions 1-{} wiped", self.versions)
            }
            Some(custody) if self.left.is_empty() => format!(
                "purge attestation: material of versions 1-{} destroyed in the {custody} key vault",
                self.versions
            ),
            Some(custody) => format!(
                "purge attestation: versions 1-{} destroyed; the {custody} key vault could not destroy handles {} (remove them with the vendor's tools)",
                self.versions,
                self.left.join(", ")
            ),
        })
    }
}

impl Audited for crate::wire::AuditPage {
    fn note(&self) -> Option<String> {
        Some(format!("{} audit records read", self.records.len()))
    }
}

impl Audited for crate::wire::AuditVerification {
    fn note(&self) -> Option<String> {
        Some(match &self.failure {
            None => format!("audit log verified: {} records", self.records),
            Some(f) => format!("audit log verification failed: {f}"),
        })
    }
}
