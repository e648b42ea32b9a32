//! Deploying a bundle (online, or offline into a stopped node's data dir) and listing an
//! owner's keys.

use teekms_core::Bundle;
use teekms_core::api::{DamagedKey, KeyList};

use super::*;

/// Version of a freshly deployed key.
const FIRST_VERSION: u64 = 1;

/// The outcome of a successful deployment.
#[derive(Debug)]
pub struct Deployed {
    /// The node's signed receipt.
    pub receipt: Receipt,
    /// False if the same key was already present (idempotent retry).
    pub created: bool,
}

/// Who deploys: the owner proven by the TLS client certificate (online), or nobody but
/// the bundle's own signature (an offline import).
#[derive(Clone, Copy)]
pub enum Deployer<'a> {
    /// An owner's TLS client certificate; it must be the bundle's signer.
    Owner(&'a OwnerPublicKey),
    /// No certificate (an offline import, or a deployment over a connection without one):
    /// the bundle's signature alone authenticates its owner.
    BundleSigner,
}

impl Service {
    /// Deploys a bundle: the key's row, its initial state, the owner's registration and
    /// the audit entry in one durable job, decided on the owner's record (a deleted key
    /// id stays deleted). An existing key under the id is compared, never overwritten.
    pub fn deploy(
        &self,
        deployer: Deployer<'_>,
        bundle: &Bundle,
        now: u64,
    ) -> Result<Deployed, OpError> {
        if let Deployer::Owner(caller) = deployer
            && *caller != bundle.claimed_owner()
        {
            return Err(OpError::Forbidden(format!(
                "the TLS client certificate belongs to owner {}, but the bundle is signed by owner {}",
                caller.fingerprint(),
                bundle.claimed_owner().fingerprint()
            )));
        }
        let opened = bundle.open(self.keyring.keys()).map_err(OpError::Bundle)?;
        if let Some(existing) = self.existing(&opened.owner, &opened.key_id)? {
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
        match self.insert_deployed(deployer, &record, now)? {
            Applied::Done => Ok(Deployed {
                receipt: self.keyring.receipt(&record, opened.statement_hash),
                created: true,
            }),
            // A concurrent deployment of the same id won the race: compare with it.
            Applied::Conflict => match self.existing(&record.owner, &record.key_id)? {
                Some(existing) => {
                    self.same_or_conflict(existing, &record.dek, opened.statement_hash)
                }
                None => Err(OpError::Retry(
                    "the key was changed by a concurrent request; retry".into(),
                )),
            },
        }
    }

    /// Queues the deployment's job, if the owner's record allows it.
    fn insert_deployed(
        &self,
        deployer: Deployer<'_>,
        record: &DataKeyRecord,
        now: u64,
    ) -> Result<Applied, OpError> {
        let owner = &record.owner;
        let fp = owner.fingerprint();
        let key_id = record.key_id.to_string();
        let deployed_by = match deployer {
            Deployer::Owner(c) => format!("owner:{}", c.fingerprint()),
            Deployer::BundleSigner => format!("bundle:{fp}"),
        };
        let audit = |outcome: String| AuditDraft {
            caller: deployed_by.clone(),
            ..draft(
                "deploy",
                &Caller::default(),
                Some((owner, &record.key_id)),
                Some(record.key_version),
                outcome,
                now,
            )
        };
        let mut writes = match self.owner_record(owner)? {
            OwnerRecord::Stored(state) => {
                if let Some(&at) = state.deleted.get(&key_id) {
                    let refused = OpError::Deleted(format!(
                        "key {key_id:?} of this owner was deleted at {at}; deploy under another id"
                    ));
                    return Err(self.refuse(audit(format!("denied: {refused}")), refused));
                }
                vec![Write::CheckOwnerState {
                    owner: fp.clone(),
                    revision: state.revision,
                }]
            }
            OwnerRecord::New => {
                let first = OwnerState::initial();
                vec![
                    Write::InsertOwnerState {
                        owner: fp.clone(),
                        record: first.seal(self.keyring.cluster(), owner),
                    },
                    Write::CheckOwnerState {
                        owner: fp.clone(),
                        revision: first.revision,
                    },
                ]
            }
        };
        let state = KeyState::initial(record.key_policy.clone());
        writes.push(register_owner(owner));
        writes.push(Write::PutState {
            owner: fp.clone(),
            key_id: key_id.clone(),
            revision: state.revision,
            expected: 0,
            record: state.seal(self.keyring.cluster(), owner, &record.key_id),
        });
        writes.push(Write::InsertKey(KeyRow {
            owner: fp,
            key_id,
            key_version: record.key_version,
            record: record.seal(self.keyring.cluster()),
        }));
        self.commit_change(Job {
            writes,
            audit: audit("ok".into()),
            on_conflict: "ok (already present; compared)",
        })
    }

    /// The key stored under the bundle's id, opened.
    fn existing(
        &self,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
    ) -> Result<Option<DataKeyRecord>, OpError> {
        let Some(row) = self
            .reader()
            .get_key(&owner.fingerprint(), key_id.as_str())?
        else {
            return Ok(None);
        };
        self.open_row(owner, key_id, &row).map(Some)
    }

    fn same_or_conflict(
        &self,
        existing: DataKeyRecord,
        dek: &DataKey,
        statement_hash: [u8; 64],
    ) -> Result<Deployed, OpError> {
        if existing.dek.ct_eq(dek) {
            Ok(Deployed {
                receipt: self.keyring.receipt(&existing, statement_hash),
                created: false,
            })
        } else {
            Err(OpError::Exists(format!(
                "key {:?} already exists with different material (kcv {}); a key is never overwritten: choose another key id",
                existing.key_id.as_str(),
                existing.kcv().to_hex()
            )))
        }
    }

    /// Lists the owner's keys, opening (and so authenticating) every record. Records
    /// that fail are reported, never returned as data.
    ///
    /// A key is listed only with its state record: a key whose state is missing, does
    /// not open, or names another newest version than its rows is listed under
    /// `damaged`, as is a state without any key row.
    pub fn list_keys(&self, owner: &OwnerPublicKey) -> Result<KeyList, OpError> {
        let fp = owner.fingerprint();
        let (rows, states) = {
            let mut reader = self.reader();
            (reader.list_keys(&fp)?, reader.list_states(&fp)?)
        };
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
                KeyState::open(self.keyring.cluster(), owner, &key_id, *revision, record)
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
                DataKeyRecord::open(
                    self.keyring.cluster(),
                    owner,
                    &id,
                    row.key_version,
                    &row.record,
                )
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
        Ok(list)
    }

    /// Reads and opens `owner`'s record. Its absence beside other rows of the owner (its
    /// registration, a key's state) is damage: the deleted ids it lists must not be
    /// forgotten because a row was removed.
    pub(super) fn owner_record(&self, owner: &OwnerPublicKey) -> Result<OwnerRecord, OpError> {
        let fp = owner.fingerprint();
        let mut store = self.reader();
        match store.get_owner_state(&fp)? {
            Some(stored) => {
                let record = OwnerState::open(
                    self.keyring.cluster(),
                    owner,
                    stored.revision,
                    &stored.record,
                )
                .map_err(|e| OpError::Damaged(e.to_string()))?;
                self.freshness()
                    .check_floor(Floor::OwnerState, &fp, Some(stored.revision))?;
                Ok(OwnerRecord::Stored(record))
            }
            None => {
                self.freshness().check_floor(Floor::OwnerState, &fp, None)?;
                if store.owner_key(&fp)?.is_some() || !store.list_states(&fp)?.is_empty() {
                    return Err(OpError::Damaged(format!(
                        "the record of owner {fp} (the key ids it deleted) is missing from the store; restore the store from a backup"
                    )));
                }
                Ok(OwnerRecord::New)
            }
        }
    }
}

/// An owner's public key as registered in the store. The row checks itself (a
/// fingerprint is the hash of its key): one that does not is taken as absent.
pub(crate) fn registered_owner(
    store: &mut dyn teekms_store::Store,
    fp: &str,
) -> Result<Option<OwnerPublicKey>, teekms_store::StoreError> {
    Ok(store
        .owner_key(fp)?
        .and_then(|pk| <[u8; 32]>::try_from(pk.as_slice()).ok())
        .map(OwnerPublicKey)
        .filter(|pk| pk.fingerprint() == fp))
}

/// An owner's record as the store holds it.
pub(super) enum OwnerRecord {
    /// Stored and opened.
    Stored(OwnerState),
    /// None stored, and no other row of the owner: an owner new to this store.
    New,
}

/// The write that records an owner's public key (so others can name it).
pub fn register_owner(owner: &OwnerPublicKey) -> Write {
    Write::RegisterOwner {
        fingerprint: owner.fingerprint(),
        public_key: owner.0.to_vec(),
    }
}
