//! Mutable sealed records: a key's lifecycle state and access keys
//! (spec/sealed-record-v1.md). Their plaintext is JSON; the seal (AES-256-GCM under the
//! cluster key, associated data binding kind, id and revision) makes them tamper-evident.

use serde::{Deserialize, Serialize};

use crate::access::{AccessGrant, Operation};
use crate::{CoreError, KeyId, OwnerPublicKey, SealingKey};
use teekms_attest::hexbytes::HexBytes;

/// Record kind of key states.
pub const KEY_STATE_KIND: &str = "key-state";
/// Record kind of access keys.
pub const ACCESS_KEY_KIND: &str = "access-key";
/// Record kind of an owner's own record (the key ids it deleted).
pub const OWNER_STATE_KIND: &str = "owner-state";

/// Default waiting period of a scheduled deletion (7 days).
pub const DEFAULT_DELETION_WAIT: u64 = 7 * 24 * 3600;

/// A key's lifecycle state (one per owner and key id; its revision increases with
/// every change, and a change is stored only over the revision it was made from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    /// Revision of this state (1 for the first stored state).
    pub revision: u64,
    /// The version new encryptions use.
    pub current_version: u64,
    /// Versions below this no longer decrypt.
    pub min_decryption_version: u64,
    /// Disabled keys refuse every data operation.
    pub enabled: bool,
    /// When set: the key is pending deletion and is deleted at this time (Unix seconds).
    pub deletion_at: Option<u64>,
    /// The key policy text (JSON, spec/key-policy-v1.md).
    pub policy: String,
}

impl KeyState {
    /// The state of a key as deployed: stored with it, at revision 1 (a key without a
    /// stored state is damaged, never taken to be in this state).
    pub fn initial(policy: String) -> KeyState {
        KeyState {
            revision: 1,
            current_version: 1,
            min_decryption_version: 1,
            enabled: true,
            deletion_at: None,
            policy,
        }
    }

    /// Seals this state for `owner`'s key `key_id`.
    pub fn seal(&self, key: &SealingKey, owner: &OwnerPublicKey, key_id: &KeyId) -> Vec<u8> {
        let json = zeroize::Zeroizing::new(serde_json::to_vec(self).expect("serializes"));
        key.seal(
            KEY_STATE_KIND,
            &crate::record::DataKeyRecord::record_id(owner, key_id),
            self.revision,
            &json,
        )
    }

    /// Opens a stored state.
    pub fn open(
        key: &SealingKey,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        revision: u64,
        record: &[u8],
    ) -> Result<KeyState, CoreError> {
        let id = crate::record::DataKeyRecord::record_id(owner, key_id);
        let plain = key.open(KEY_STATE_KIND, &id, revision, record)?;
        let state: KeyState =
            serde_json::from_slice(&plain).map_err(|e| CoreError::RecordMalformed {
                kind: KEY_STATE_KIND,
                id: id.clone(),
                reason: e.to_string(),
            })?;
        if state.revision != revision {
            return Err(CoreError::RecordMalformed {
                kind: KEY_STATE_KIND,
                id,
                reason: "revision does not match the record's place".into(),
            });
        }
        Ok(state)
    }
}

/// An owner's own record: the key ids it deleted, so that a deleted id stays deleted
/// (an old bundle deployed again is refused). One per owner, stored with the owner's
/// first key or access key; its revision increases with every deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerState {
    /// Revision of this record (1 when first stored).
    pub revision: u64,
    /// Deleted key ids, with when each was deleted (Unix seconds).
    pub deleted: std::collections::BTreeMap<String, u64>,
}

impl OwnerState {
    /// An owner's first record: nothing deleted.
    pub fn initial() -> OwnerState {
        OwnerState {
            revision: 1,
            deleted: Default::default(),
        }
    }

    /// Seals this record for `owner` (bound to the owner's fingerprint and the revision).
    pub fn seal(&self, key: &SealingKey, owner: &OwnerPublicKey) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("serializes");
        key.seal(OWNER_STATE_KIND, &owner.fingerprint(), self.revision, &json)
    }

    /// Opens `owner`'s stored record.
    pub fn open(
        key: &SealingKey,
        owner: &OwnerPublicKey,
        revision: u64,
        record: &[u8],
    ) -> Result<OwnerState, CoreError> {
        let id = owner.fingerprint();
        let plain = key.open(OWNER_STATE_KIND, &id, revision, record)?;
        let state: OwnerState =
            serde_json::from_slice(&plain).map_err(|e| CoreError::RecordMalformed {
                kind: OWNER_STATE_KIND,
                id: id.clone(),
                reason: e.to_string(),
            })?;
        if state.revision != revision {
            return Err(CoreError::RecordMalformed {
                kind: OWNER_STATE_KIND,
                id,
                reason: "revision does not match the record's place".into(),
            });
        }
        Ok(state)
    }
}

/// An access key as stored: never the secret, only its keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyRecord {
    /// `ak-<16 hex>`.
    pub id: String,
    /// The owner who created it.
    pub owner: HexBytes<32>,
    /// HMAC of the secret under the node's access-key subkey.
    pub secret_hash: HexBytes<32>,
    /// Key ids it reaches (`*`: all of the owner's keys).
    pub keys: Vec<String>,
    /// Operations it may ask for.
    pub operations: Vec<Operation>,
    /// Free text from its creator.
    pub description: String,
    /// Created (Unix seconds, node clock).
    pub created_at: u64,
    /// Expiry (Unix seconds), if any.
    pub expires_at: Option<u64>,
    /// Revoked at (Unix seconds), if revoked.
    pub revoked_at: Option<u64>,
}

impl AccessKeyRecord {
    /// Seals the record (its revision is 1 until revoked, then 2).
    pub fn seal(&self, key: &SealingKey) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("serializes");
        key.seal(ACCESS_KEY_KIND, &self.id, self.revision(), &json)
    }

    /// The record's revision: 1 active, 2 revoked (revocation is final).
    pub fn revision(&self) -> u64 {
        if self.revoked_at.is_some() { 2 } else { 1 }
    }

    /// Opens a stored record of access key `id` at `revision`.
    pub fn open(
        key: &SealingKey,
        id: &str,
        revision: u64,
        record: &[u8],
    ) -> Result<AccessKeyRecord, CoreError> {
        let plain = key.open(ACCESS_KEY_KIND, id, revision, record)?;
        let rec: AccessKeyRecord =
            serde_json::from_slice(&plain).map_err(|e| CoreError::RecordMalformed {
                kind: ACCESS_KEY_KIND,
                id: id.into(),
                reason: e.to_string(),
            })?;
        if rec.id != id || rec.revision() != revision {
            return Err(CoreError::RecordMalformed {
                kind: ACCESS_KEY_KIND,
                id: id.into(),
                reason: "contents do not match the record's place".into(),
            });
        }
        Ok(rec)
    }

    /// The grant this key gives when its secret matches and it is live at `now`.
    pub fn grant(&self, secret_hash: &[u8; 32], now: u64) -> Result<AccessGrant, String> {
        if aws_lc_rs::constant_time::verify_slices_are_equal(&self.secret_hash.0, secret_hash)
            .is_err()
        {
            return Err("access key secret does not match".into());
        }
        self.grant_signed(now)
    }

    /// The grant of a request signed (AWS SigV4) with this key's derived secret
    /// ([`crate::access::aws_secret_access_key`]), whose signature the caller verified:
    /// refused if the key is revoked or expired.
    pub fn grant_signed(&self, now: u64) -> Result<AccessGrant, String> {
        if self.revoked_at.is_some() {
            return Err(format!("access key {} is revoked", self.id));
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            return Err(format!("access key {} has expired", self.id));
        }
        Ok(AccessGrant {
            id: self.id.clone(),
            owner: OwnerPublicKey(self.owner.0),
            keys: self.keys.clone(),
            operations: self.operations.clone(),
            expires_at: self.expires_at,
        })
    }
}
