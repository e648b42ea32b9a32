//! Key operations of a node, independent of transport: deploying a bundle (online or
//! offline) and listing an owner's keys.

use teekms_attest::document::DOCUMENT_VERSION;
use teekms_attest::{AttestationDocument, TeeKind};
use teekms_core::api::{DamagedKey, KeyInfo, KeyList};
use teekms_core::receipt::ReceiptFields;
use teekms_core::record::DataKeyRecord;
use teekms_core::{Bundle, CoreError, KeyId, NodeKeys, OwnerPublicKey, Receipt, SealingKey};
use teekms_platform::{Platform, PlatformError};
use teekms_store::{Applied, KeyRow, StoreError};

/// Version of a freshly deployed key.
const FIRST_VERSION: u64 = 1;

/// Why a deployment was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The bundle is malformed, altered, or for another node.
    #[error(transparent)]
    Bundle(CoreError),
    /// The authenticated caller is not the bundle's owner.
    #[error(
        "the TLS client certificate belongs to owner {caller}, but the bundle is signed by owner {bundle}"
    )]
    Forbidden {
        /// Caller's fingerprint.
        caller: String,
        /// Bundle owner's fingerprint.
        bundle: String,
    },
    /// The key id already holds different material.
    #[error(
        "key {key_id:?} already exists with different material (kcv {existing}); a key is never overwritten: choose another key id"
    )]
    Conflict {
        /// The key id.
        key_id: String,
        /// KCV of the stored key.
        existing: String,
    },
    /// The stored record under this id failed authentication.
    #[error(transparent)]
    Damaged(CoreError),
    /// A record the deployment depends on is missing from the store (removed by the
    /// host): nothing is decided from its absence.
    #[error("{0}")]
    RecordMissing(String),
    /// The owner deleted a key under this id: deletion is final.
    #[error("key {key_id:?} of this owner was deleted at {at}; deploy under another id")]
    Deleted {
        /// The key id.
        key_id: String,
        /// When it was deleted (Unix seconds).
        at: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key changed concurrently; retrying will settle it.
    #[error("the key was changed by a concurrent request; retry")]
    Concurrent,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Unavailable,
}

/// The outcome of a successful deployment.
#[derive(Debug)]
pub struct Deployed {
    /// The node's signed receipt.
    pub receipt: Receipt,
    /// False if the same key was already present (idempotent retry).
    pub created: bool,
}

/// A node's key set and cluster key, and the operations on them.
pub struct KeyService {
    tee: TeeKind,
    keys: NodeKeys,
    cluster: SealingKey,
}

impl KeyService {
    pub(crate) fn new(tee: TeeKind, keys: NodeKeys, cluster: SealingKey) -> KeyService {
        KeyService { tee, keys, cluster }
    }

    /// The cluster key (seals records; subkeys for the audit MAC and access keys).
    pub(crate) fn cluster(&self) -> &SealingKey {
        &self.cluster
    }

    /// The node's key set (private keys: stays inside the server crate).
    pub(crate) fn keys(&self) -> &NodeKeys {
        &self.keys
    }

    /// The attestation document, optionally for a verifier's nonce.
    pub fn attestation(
        &self,
        platform: &dyn Platform,
        nonce: Option<&[u8]>,
    ) -> Result<AttestationDocument, PlatformError> {
        let statement = self.keys.statement(self.tee, nonce);
        let evidence = platform.evidence(&statement.hash())?;
        Ok(AttestationDocument {
            version: DOCUMENT_VERSION,
            tee: self.tee,
            evidence,
            statement,
            collateral: platform.collateral(),
        })
    }

    /// Deploys a bundle. `caller` is the owner proven by the TLS client certificate, if
    /// any; the bundle's own signature authenticates the owner either way.
    ///
    /// `read` returns the stored row of a key; `insert` durably inserts a row (and the
    /// key's initial state) if its place is free. Nothing is acknowledged before `insert`
    /// returned.
    pub fn deploy(
        &self,
        bundle: &Bundle,
        caller: Option<&OwnerPublicKey>,
        now: u64,
        read: impl Fn(&str, &str) -> Result<Option<KeyRow>, StoreError>,
        insert: impl FnOnce(&DataKeyRecord, KeyRow) -> Result<Applied, DeployError>,
    ) -> Result<Deployed, DeployError> {
        if let Some(caller) = caller
            && *caller != bundle.claimed_owner()
        {
            return Err(DeployError::Forbidden {
                caller: caller.fingerprint(),
                bundle: bundle.claimed_owner().fingerprint(),
            });
        }
        let opened = bundle.open(&self.keys).map_err(DeployError::Bundle)?;
        let owner_fp = opened.owner.fingerprint();
        if let Some(existing) = self.existing(&opened.owner, &opened.key_id, &read)? {
            return self.same_or_conflict(existing, &opened.dek, opened.statement_hash);
        }
        let record = DataKeyRecord {
            owner: opened.owner,
            key_id: opened.key_id.clone(),
            key_version: FIRST_VERSION,
            created_at: now,
            key_policy: opened.key_policy,
            dek: opened.dek,
        };
        let row = KeyRow {
            owner: owner_fp,
            key_id: opened.key_id.as_str().into(),
            key_version: FIRST_VERSION,
            record: record.seal(&self.cluster),
        };
        match insert(&record, row)? {
            Applied::Done => Ok(Deployed {
                receipt: self.receipt(&record, opened.statement_hash),
                created: true,
            }),
            // A concurrent deployment of the same id won the race: compare with it.
            Applied::Conflict => match self.existing(&record.owner, &record.key_id, &read)? {
                Some(existing) => {
                    self.same_or_conflict(existing, &record.dek, opened.statement_hash)
                }
                None => Err(DeployError::Concurrent),
            },
        }
    }

    fn existing(
        &self,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        read: &impl Fn(&str, &str) -> Result<Option<KeyRow>, StoreError>,
    ) -> Result<Option<DataKeyRecord>, DeployError> {
        let Some(row) = read(&owner.fingerprint(), key_id.as_str())? else {
            return Ok(None);
        };
        DataKeyRecord::open(&self.cluster, owner, key_id, row.key_version, &row.record)
            .map(Some)
            .map_err(DeployError::Damaged)
    }

    fn same_or_conflict(
        &self,
        existing: DataKeyRecord,
        dek: &teekms_core::DataKey,
        statement_hash: [u8; 64],
    ) -> Result<Deployed, DeployError> {
        if existing.dek.ct_eq(dek) {
            Ok(Deployed {
                receipt: self.receipt(&existing, statement_hash),
                created: false,
            })
        } else {
            Err(DeployError::Conflict {
                key_id: existing.key_id.to_string(),
                existing: existing.kcv().to_hex(),
            })
        }
    }

    fn receipt(&self, record: &DataKeyRecord, statement_hash: [u8; 64]) -> Receipt {
        Receipt::sign(
            &self.keys,
            ReceiptFields {
                owner: &record.owner,
                key_id: &record.key_id,
                key_version: record.key_version,
                kcv: record.kcv(),
                created_at: record.created_at,
                statement_hash,
            },
        )
    }

    /// Lists an owner's keys from their stored rows, opening (and so authenticating)
    /// every record. Records that fail are reported, never returned as data.
    ///
    /// A key is listed only with its state record (`states`, the owner's): a key whose
    /// state is missing, does not open, or names another newest version than its rows is
    /// listed under `damaged`, as is a state without any key row.
    pub fn list(
        &self,
        owner: &OwnerPublicKey,
        rows: Vec<KeyRow>,
        states: Vec<teekms_store::StateRow>,
    ) -> KeyList {
        let mut list = KeyList {
            keys: Vec::new(),
            damaged: Vec::new(),
        };
        let mut newest: std::collections::BTreeMap<&str, u64> = Default::default();
        for row in &rows {
            let v = newest.entry(row.key_id.as_str()).or_default();
            *v = (*v).max(row.key_version);
        }
        let mut unsound: std::collections::BTreeMap<String, String> = Default::default();
        let mut with_state = std::collections::BTreeSet::new();
        for teekms_store::StateRow {
            key_id: id,
            revision,
            record,
            ..
        } in &states
        {
            with_state.insert(id.clone());
            let opened = KeyId::new(id).and_then(|key_id| {
                teekms_core::state::KeyState::open(&self.cluster, owner, &key_id, *revision, record)
            });
            match (opened, newest.get(id.as_str())) {
                (Err(e), _) => {
                    unsound.insert(id.clone(), e.to_string());
                }
                (Ok(_), None) => list.damaged.push(DamagedKey {
                    key_id: id.clone(),
                    key_version: 0,
                    error: "the key's state record is stored, but none of its key records".into(),
                }),
                (Ok(state), Some(&v)) if state.current_version != v => {
                    unsound.insert(
                        id.clone(),
                        format!(
                            "the key's state names version {} as current, but its newest stored version is {v}",
                            state.current_version
                        ),
                    );
                }
                (Ok(_), Some(_)) => {}
            }
        }
        for id in newest.keys() {
            if !with_state.contains(*id) {
                unsound.insert(
                    id.to_string(),
                    "the key's state record is missing from the store".into(),
                );
            }
        }
        for row in rows {
            if let Some(why) = unsound.get(&row.key_id) {
                list.damaged.push(DamagedKey {
                    key_id: row.key_id,
                    key_version: row.key_version,
                    error: why.clone(),
                });
                continue;
            }
            let opened = KeyId::new(&row.key_id).and_then(|id| {
                DataKeyRecord::open(&self.cluster, owner, &id, row.key_version, &row.record)
            });
            match opened {
                Ok(rec) => list.keys.push(KeyInfo {
                    key_id: row.key_id,
                    key_version: rec.key_version,
                    created_at: rec.created_at,
                    kcv: rec.kcv(),
                }),
                Err(e) => list.damaged.push(DamagedKey {
                    key_id: row.key_id,
                    key_version: row.key_version,
                    error: e.to_string(),
                }),
            }
        }
        list
    }
}
