//! Using the keys: envelope operations, lifecycle, access keys and the audit log, with
//! default-deny authorization and an audit entry for every operation and every denial.
//!
//! Every function here blocks (store reads, the writer's commit) and runs on the
//! blocking pool. Nothing is acknowledged before its audit entry is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use teekms_attest::policy::{parse_duration, time_after};
use teekms_attest::{Freshness, Policy, TeeKind, verify_document};
use teekms_core::access::{self, AttestedWorkload, Caller, KeyPolicy, Operation};
use teekms_core::api::{
    AccessKeyCreateRequest, AccessKeyCreated, AccessKeyInfo, AccessKeyList, AuditTail,
    AuditVerification, B64, CiphertextResponse, DecryptRequest, EXPORT_INFO, EncryptRequest,
    ExportRequest, ExportResponse, FetchRequest, FetchResponse, GenerateDataKeyRequest,
    KeyDescription, KeyInfo, ReEncryptRequest, SEALED_RESPONSE_INFO, SealedSecret, SecretB64,
    SecretResponse,
};
use teekms_core::audit::{AuditDraft, AuditEntry};
use teekms_core::envelope::{self, Envelope};
use teekms_core::record::DataKeyRecord;
use teekms_core::state::{AccessKeyRecord, DEFAULT_DELETION_WAIT, KeyState, OwnerState};
use teekms_core::{DataKey, KeyId, OwnerPublicKey};
use teekms_store::{Applied, KeyRow, Write};
use zeroize::Zeroizing;

use crate::api::AppState;
use crate::writer::Job;

/// Label of the subkey that hashes access-key secrets.
pub const ACCESS_KEY_HASH_LABEL: &str = "teekms/v1/access-key-hash";

/// What a connection proved about its client.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The client's address (where anonymous refusals are counted).
    pub peer: Option<std::net::IpAddr>,
    /// The owner of an Ed25519 client certificate.
    pub owner: Option<OwnerPublicKey>,
    /// SHA-256 of the client certificate's SPKI, if one was presented.
    pub client_spki: Option<[u8; 32]>,
    /// A workload that attested on this connection.
    pub workload: Mutex<Option<AttestedWorkload>>,
}

/// Why an operation was refused or failed. Messages are safe to return to the caller.
#[derive(Debug)]
pub enum OpError {
    /// The request is malformed.
    BadRequest(String),
    /// No credentials where some are needed.
    Unauthenticated(String),
    /// Not allowed (default deny).
    Forbidden(String),
    /// No such key (or it was deleted).
    NotFound(String),
    /// The key is disabled or pending deletion.
    KeyState(String),
    /// A concurrent change won; retrying settles it.
    Conflict(String),
    /// A stored record failed authentication.
    Damaged(String),
    /// The ciphertext does not decrypt.
    Decrypt(String),
    /// The node is shutting down or its store failed; a retry may succeed.
    Unavailable,
    /// The node has no room for this now (stream memory); a retry shortly may succeed.
    Busy(String),
    /// Something that must not happen; logged.
    Internal(String),
}

impl From<teekms_store::StoreError> for OpError {
    fn from(e: teekms_store::StoreError) -> Self {
        // Mostly a store that cannot be reached (a PostgreSQL restart): the next attempt
        // reconnects, so the caller is told to retry; the cause goes to the log only.
        tracing::error!(error = %e, "store read failed");
        OpError::Unavailable
    }
}

impl From<crate::writer::Unavailable> for OpError {
    fn from(_: crate::writer::Unavailable) -> Self {
        OpError::Unavailable
    }
}

/// A key as loaded for an operation: its state (stored, or the initial one), and the
/// versions opened so far.
pub struct LoadedKey {
    owner: OwnerPublicKey,
    /// The owner's fingerprint, made once (every audit entry names it).
    fp: String,
    key_id: KeyId,
    state: KeyState,
    policy: KeyPolicy,
    versions: Mutex<HashMap<u64, Arc<DataKeyRecord>>>,
}

type Loaded = Arc<LoadedKey>;

/// Most keys kept opened in memory.
const CACHE_MAX: usize = 10_000;

/// Opened keys, so that a data operation on a hot key touches neither the store nor the
/// record decryption. This node's own changes invalidate their entry (a node is the only
/// writer of its store; several nodes sharing one store is the cluster's business).
///
/// A change forgets its key once it has committed; a load that read the store before
/// that commit must not put the old state back. So every forget advances a generation,
/// a load notes the generation before it reads, and its result is cached only if no
/// forget happened meanwhile.
pub struct KeyCache {
    enabled: bool,
    keys: Mutex<CachedKeys>,
}

/// The opened keys by owner fingerprint, then key id (looked up by `&str` without
/// allocating), how many there are, and how many forgets have happened.
#[derive(Default)]
struct CachedKeys {
    by_owner: HashMap<String, HashMap<String, Loaded>>,
    count: usize,
    generation: u64,
}

/// The cache's generation when a load began reading the store.
#[derive(Clone, Copy)]
struct Generation(u64);

impl KeyCache {
    /// A cache, or (`enabled` false: a store shared with other nodes, whose changes this
    /// node would not see) none.
    pub fn new(enabled: bool) -> KeyCache {
        KeyCache {
            enabled,
            keys: Mutex::default(),
        }
    }

    /// Whether keys are kept opened (the store is this node's alone).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cached key, or the generation to hand to [`KeyCache::put`] after reading it.
    fn get(&self, fp: &str, key_id: &str) -> Result<Loaded, Generation> {
        let keys = self.keys.lock().expect("cache lock");
        let generation = Generation(keys.generation);
        if !self.enabled {
            return Err(generation);
        }
        keys.by_owner
            .get(fp)
            .and_then(|owned| owned.get(key_id))
            .cloned()
            .ok_or(generation)
    }

    /// Caches a key read from the store, unless some key was forgotten since the read
    /// began (it may have read a state that a change has replaced since).
    fn put(&self, read_at: Generation, fp: String, key_id: String, key: Loaded) {
        if !self.enabled {
            return;
        }
        let mut keys = self.keys.lock().expect("cache lock");
        if keys.generation != read_at.0 {
            return;
        }
        if keys.count >= CACHE_MAX {
            let generation = keys.generation;
            *keys = CachedKeys {
                generation,
                ..CachedKeys::default()
            };
        }
        if keys
            .by_owner
            .entry(fp)
            .or_default()
            .insert(key_id, key)
            .is_none()
        {
            keys.count += 1;
        }
    }

    fn forget(&self, fp: &str, key_id: &str) {
        let mut keys = self.keys.lock().expect("cache lock");
        keys.generation += 1;
        let Some(owned) = keys.by_owner.get_mut(fp) else {
            return;
        };
        if owned.remove(key_id).is_some() {
            // An owner with no opened key left is dropped too: `count` bounds keys, not
            // owners, so empty maps would otherwise pile up between clears.
            if owned.is_empty() {
                keys.by_owner.remove(fp);
            }
            keys.count -= 1;
        }
    }
}

fn bad(msg: impl Into<String>) -> OpError {
    OpError::BadRequest(msg.into())
}

fn key_id(s: &str) -> Result<KeyId, OpError> {
    KeyId::new(s).map_err(|e| bad(e.to_string()))
}

fn draft(
    op: &str,
    caller: &Caller,
    key: Option<(&OwnerPublicKey, &KeyId)>,
    version: Option<u64>,
    outcome: impl Into<String>,
    now: u64,
) -> AuditDraft {
    AuditDraft {
        time: now,
        operation: op.into(),
        owner: key.map(|(o, _)| o.fingerprint()),
        key_id: key.map(|(_, k)| k.to_string()),
        key_version: version,
        outcome: outcome.into(),
        caller: caller.describe(),
    }
}

/// [`draft`] for an operation on a loaded key (its owner's fingerprint made once).
fn key_draft(
    op: &str,
    caller: &Caller,
    l: &LoadedKey,
    version: Option<u64>,
    outcome: impl Into<String>,
    now: u64,
) -> AuditDraft {
    AuditDraft {
        owner: Some(l.fp.clone()),
        key_id: Some(l.key_id.to_string()),
        ..draft(op, caller, None, version, outcome, now)
    }
}

fn seal_for(caller: &Caller, op: &str, secret: &[u8]) -> (Option<SecretB64>, Option<SealedSecret>) {
    match caller.workload_hpke_key() {
        Some(pk) => {
            let (enc, ct) =
                teekms_core::hpke::seal(&pk, SEALED_RESPONSE_INFO, op.as_bytes(), secret)
                    .expect("sealing to a verified X25519 key does not fail");
            (
                None,
                Some(SealedSecret {
                    enc: B64(enc.to_vec()),
                    ciphertext: B64(ct),
                }),
            )
        }
        None => (Some(SecretB64(Zeroizing::new(secret.to_vec()))), None),
    }
}

impl AppState {
    fn reader(&self) -> std::sync::MutexGuard<'_, Box<dyn teekms_store::Store>> {
        self.readers.get()
    }

    /// Records `draft` durably (an audit entry with no other write).
    fn audit(&self, draft: AuditDraft) -> Result<(), OpError> {
        self.writer.submit(Job {
            writes: Vec::new(),
            audit: draft,
            on_conflict: "error",
        })?;
        Ok(())
    }

    /// Records a refusal, then returns it.
    fn refuse(&self, d: AuditDraft, err: OpError) -> OpError {
        match self.audit(d) {
            Ok(()) => err,
            Err(e) => e,
        }
    }

    /// The caller of one request: the connection's identities and an access key, if
    /// the request presents one (a token that does not verify is refused outright).
    pub fn caller(
        &self,
        conn: &ConnState,
        token: Option<&str>,
        now: u64,
    ) -> Result<Caller, OpError> {
        let mut caller = Caller {
            owner: conn.owner,
            access_key: None,
            workload: conn.workload.lock().expect("conn lock").clone(),
            source: conn.peer,
        };
        let Some(token) = token else {
            return Ok(caller);
        };
        let hash_key = self.service.cluster().derive(ACCESS_KEY_HASH_LABEL);
        let refused = |caller: &Caller, why: String| {
            // A token that does not verify, on a connection with no other identity, is
            // an anonymous request: counted, not logged one by one.
            if caller.is_anonymous() {
                self.count_anonymous(caller);
                return OpError::Unauthenticated(why);
            }
            self.refuse(
                draft(
                    "authenticate",
                    caller,
                    None,
                    None,
                    format!("denied: {why}"),
                    now,
                ),
                OpError::Unauthenticated(why),
            )
        };
        let (id, hash) = match access::parse_access_token(&hash_key, token) {
            Ok(x) => x,
            Err(e) => return Err(refused(&caller, e.to_string())),
        };
        let stored = self.reader().get_access_key(&id)?;
        let Some(teekms_store::Revisioned { revision, record }) = stored else {
            return Err(refused(&caller, format!("unknown access key {id}")));
        };
        let rec = AccessKeyRecord::open(self.service.cluster(), &id, revision, &record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        match rec.grant(&hash, now) {
            Ok(grant) => {
                caller.access_key = Some(grant);
                Ok(caller)
            }
            Err(why) => Err(refused(&caller, why)),
        }
    }

    /// The owner whose key a request names: `owner` (a fingerprint) if given, else the
    /// caller's own namespace (its owner certificate, or its access key's creator).
    fn owner_for(&self, caller: &Caller, owner: Option<&str>) -> Result<OwnerPublicKey, OpError> {
        // One answer for an anonymous caller whether or not the owner or key exists, and
        // no entry in anybody's log: such refusals are counted per source and minute.
        self.require_credentials(caller)?;
        match owner {
            Some(fp) => registered_owner(&mut **self.reader(), fp)?
                .ok_or_else(|| OpError::NotFound(format!("no owner {fp} on this node"))),
            None => caller
                .owner
                .or_else(|| caller.access_key.as_ref().map(|a| a.owner))
                .ok_or_else(|| {
                    bad("name the key's owner (\"owner\": its fingerprint); this caller has no namespace of its own")
                }),
        }
    }

    /// Refuses a caller that proved no identity at all: one answer (401) wherever it
    /// asks, and a count instead of an audit entry (see `anonymous`).
    fn require_credentials(&self, caller: &Caller) -> Result<(), OpError> {
        if !caller.is_anonymous() {
            return Ok(());
        }
        self.count_anonymous(caller);
        Err(OpError::Unauthenticated(
            "key operations need credentials: the owner's TLS client certificate, an access key (Authorization: Bearer), or an attested workload".into(),
        ))
    }

    fn load(&self, owner: &OwnerPublicKey, key_id: &KeyId) -> Result<Loaded, OpError> {
        let fp = owner.fingerprint();
        let read_at = match self.cache.get(&fp, key_id.as_str()) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let (stored, latest) = {
            let mut r = self.reader();
            (
                r.get_state(&fp, key_id.as_str())?,
                r.get_key(&fp, key_id.as_str())?,
            )
        };
        // Both records exist, or the key is damaged: no state is ever inferred from a
        // missing row (a state row removed by the host must not bring back the key as
        // deployed: enabled, version 1, its bundle's policy).
        let (revision, record, latest) = match (stored, latest) {
            (None, None) => return Err(OpError::NotFound(format!("no key {key_id:?}"))),
            (Some(stored), Some(latest)) => (stored.revision, stored.record, latest),
            (None, Some(_)) => {
                return Err(OpError::Damaged(format!(
                    "key {key_id:?}: its state record is missing from the store; restore the store from a backup"
                )));
            }
            (Some(_), None) => {
                return Err(OpError::Damaged(format!(
                    "key {key_id:?}: its key records are missing from the store; restore the store from a backup"
                )));
            }
        };
        let state = KeyState::open(self.service.cluster(), owner, key_id, revision, &record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        if latest.key_version != state.current_version {
            return Err(OpError::Damaged(format!(
                "key {key_id:?}: its state names version {} as current, but the newest stored version is {}; restore the store from a backup",
                state.current_version, latest.key_version
            )));
        }
        // A stored policy that no longer parses admits nobody but the owner.
        let policy = KeyPolicy::parse(&state.policy).unwrap_or_else(|e| {
            tracing::warn!(key = %key_id, error = %e, "key policy does not parse; default deny");
            KeyPolicy::parse("{}").expect("the empty policy parses")
        });
        let loaded = Arc::new(LoadedKey {
            owner: *owner,
            fp: fp.clone(),
            key_id: key_id.clone(),
            state,
            policy,
            versions: Mutex::new(HashMap::new()),
        });
        self.cache
            .put(read_at, fp, key_id.to_string(), loaded.clone());
        Ok(loaded)
    }

    fn open_row(
        &self,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        row: &KeyRow,
    ) -> Result<DataKeyRecord, OpError> {
        DataKeyRecord::open(
            self.service.cluster(),
            owner,
            key_id,
            row.key_version,
            &row.record,
        )
        .map_err(|e| OpError::Damaged(e.to_string()))
    }

    fn version(&self, l: &Loaded, version: u64) -> Result<Arc<DataKeyRecord>, OpError> {
        if let Some(rec) = l.versions.lock().expect("versions lock").get(&version) {
            return Ok(rec.clone());
        }
        let row = self
            .reader()
            .get_key_version(&l.fp, l.key_id.as_str(), version)?
            .ok_or_else(|| {
                if (1..=l.state.current_version).contains(&version) {
                    // Every version up to the current one was stored with the state.
                    OpError::Damaged(format!(
                        "version {version} of key {:?} is missing from the store; restore the store from a backup",
                        l.key_id
                    ))
                } else {
                    OpError::NotFound(format!("key {:?} has no version {version}", l.key_id))
                }
            })?;
        let rec = Arc::new(self.open_row(&l.owner, &l.key_id, &row)?);
        l.versions
            .lock()
            .expect("versions lock")
            .insert(version, rec.clone());
        Ok(rec)
    }

    /// Version `v` of a key, if it may still be used (from `min_decryption_version` to
    /// the current version); a refusal is audited.
    fn usable_version(
        &self,
        op_name: &str,
        caller: &Caller,
        l: &Loaded,
        v: u64,
        now: u64,
    ) -> Result<Arc<DataKeyRecord>, OpError> {
        if v < l.state.min_decryption_version || v > l.state.current_version {
            let why = format!(
                "version {v} of key {:?} is not usable (versions {} to {} are)",
                l.key_id, l.state.min_decryption_version, l.state.current_version
            );
            return Err(self.refuse(
                key_draft(op_name, caller, l, Some(v), format!("denied: {why}"), now),
                OpError::Forbidden(why),
            ));
        }
        self.version(l, v)
    }

    /// Checks the key's state and the caller's right to `op`; refusals are audited.
    fn gate(
        &self,
        op_name: &str,
        caller: &Caller,
        l: &Loaded,
        op: Operation,
        now: u64,
    ) -> Result<(), OpError> {
        let key = Some((&l.owner, &l.key_id));
        let refuse = |err: OpError| {
            let why = match &err {
                OpError::Forbidden(m) | OpError::KeyState(m) | OpError::NotFound(m) => m.clone(),
                _ => String::new(),
            };
            self.refuse(
                draft(op_name, caller, key, None, format!("denied: {why}"), now),
                err,
            )
        };
        if let Err(why) = access::authorize(&l.policy, &l.owner, &l.key_id, caller, op, now) {
            return Err(refuse(OpError::Forbidden(why)));
        }
        if op == Operation::Describe {
            return Ok(());
        }
        if let Some(at) = l.state.deletion_at {
            if at <= now {
                // Due: carry the deletion out now rather than at the next sweep.
                return Err(match self.delete_due(&l.owner, &l.key_id, now)? {
                    lifecycle::Deletion::NoLongerDue => OpError::Conflict(format!(
                        "key {:?} was changed concurrently (its deletion cancelled); retry",
                        l.key_id
                    )),
                    _ => OpError::NotFound(format!("key {:?} was deleted", l.key_id)),
                });
            }
            return Err(refuse(OpError::KeyState(format!(
                "key {:?} is pending deletion (at {at}); the owner can cancel it",
                l.key_id
            ))));
        }
        if !l.state.enabled {
            return Err(refuse(OpError::KeyState(format!(
                "key {:?} is disabled",
                l.key_id
            ))));
        }
        Ok(())
    }

    /// Owner-only administration.
    fn gate_owner(
        &self,
        op_name: &str,
        caller: &Caller,
        l: &Loaded,
        now: u64,
    ) -> Result<(), OpError> {
        if caller.owner.as_ref() == Some(&l.owner) {
            return Ok(());
        }
        let why = format!("{op_name} is for the key's owner only");
        Err(self.refuse(
            key_draft(op_name, caller, l, None, format!("denied: {why}"), now),
            OpError::Forbidden(why),
        ))
    }

    fn done(
        &self,
        op: &str,
        caller: &Caller,
        l: &Loaded,
        version: Option<u64>,
        now: u64,
    ) -> Result<(), OpError> {
        self.audit(key_draft(op, caller, l, version, "ok", now))
    }
}

/// Deploys a bundle (online, or offline into a stopped node's data dir): the row, its
/// initial state, the owner's public key and the audit entry in one durable job, decided
/// on the owner's record (a deleted key id stays deleted).
pub fn deploy(
    service: &crate::KeyService,
    readers: &crate::readers::Readers,
    writer: &crate::writer::Writer,
    bundle: &teekms_core::Bundle,
    caller: Option<&OwnerPublicKey>,
    now: u64,
) -> Result<crate::Deployed, crate::DeployError> {
    use crate::DeployError;
    service.deploy(
        bundle,
        caller,
        now,
        |owner, key_id| readers.get().get_key(owner, key_id),
        |record, row| {
            let owner = &record.owner;
            let audit = |outcome: String| AuditDraft {
                time: now,
                operation: "deploy".into(),
                owner: Some(row.owner.clone()),
                key_id: Some(row.key_id.clone()),
                key_version: Some(row.key_version),
                outcome,
                caller: match caller {
                    Some(c) => format!("owner:{}", c.fingerprint()),
                    None => format!("bundle:{}", owner.fingerprint()),
                },
            };
            let owner_state = owner_record(service, &mut **readers.get(), owner)?;
            let mut writes = match owner_state {
                OwnerRecord::Stored(state) => {
                    if let Some(&at) = state.deleted.get(&row.key_id) {
                        let refused = DeployError::Deleted {
                            key_id: row.key_id.clone(),
                            at,
                        };
                        writer
                            .submit(Job {
                                writes: Vec::new(),
                                audit: audit(format!("denied: {refused}")),
                                on_conflict: "error",
                            })
                            .map_err(|_| DeployError::Unavailable)?;
                        return Err(refused);
                    }
                    vec![Write::CheckOwnerState {
                        owner: row.owner.clone(),
                        revision: state.revision,
                    }]
                }
                OwnerRecord::New => {
                    let first = OwnerState::initial();
                    vec![
                        Write::InsertOwnerState {
                            owner: row.owner.clone(),
                            record: first.seal(service.cluster(), owner),
                        },
                        Write::CheckOwnerState {
                            owner: row.owner.clone(),
                            revision: first.revision,
                        },
                    ]
                }
            };
            let state = KeyState::initial(record.key_policy.clone());
            writes.push(register_owner(owner));
            writes.push(Write::PutState {
                owner: row.owner.clone(),
                key_id: row.key_id.clone(),
                revision: state.revision,
                expected: 0,
                record: state.seal(service.cluster(), owner, &record.key_id),
            });
            let audit = audit("ok".into());
            writes.push(Write::InsertKey(row));
            writer
                .submit(Job {
                    writes,
                    audit,
                    on_conflict: "ok (already present; compared)",
                })
                .map_err(|_| DeployError::Unavailable)
        },
    )
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
pub(crate) enum OwnerRecord {
    /// Stored and opened.
    Stored(OwnerState),
    /// None stored, and no other row of the owner: an owner new to this store.
    New,
}

/// Reads and opens `owner`'s record. Its absence beside other rows of the owner (its
/// registration, a key's state) is damage: the deleted ids it lists must not be
/// forgotten because a row was removed.
pub(crate) fn owner_record(
    service: &crate::KeyService,
    store: &mut dyn teekms_store::Store,
    owner: &OwnerPublicKey,
) -> Result<OwnerRecord, crate::DeployError> {
    use crate::DeployError;
    let fp = owner.fingerprint();
    match store.get_owner_state(&fp)? {
        Some(stored) => OwnerState::open(service.cluster(), owner, stored.revision, &stored.record)
            .map(OwnerRecord::Stored)
            .map_err(DeployError::Damaged),
        None if store.owner_key(&fp)?.is_some() || !store.list_states(&fp)?.is_empty() => {
            Err(DeployError::RecordMissing(format!(
                "the record of owner {fp} (the key ids it deleted) is missing from the store; restore the store from a backup"
            )))
        }
        None => Ok(OwnerRecord::New),
    }
}

/// The write that records an owner's public key (so others can name it).
pub fn register_owner(owner: &OwnerPublicKey) -> Write {
    Write::RegisterOwner {
        fingerprint: owner.fingerprint(),
        public_key: owner.0.to_vec(),
    }
}

mod access_keys;
mod anonymous;
mod audit;
mod cluster;
mod envelopes;
mod lifecycle;
mod workload;

pub use anonymous::AnonymousRefusals;
pub use audit::verification;

fn now_minute() -> u64 {
    crate::now_unix() / 60
}
