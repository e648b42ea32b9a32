//! Using the keys: envelope operations, lifecycle, access keys and the audit log, with
//! default-deny authorization and an audit entry for every operation and every denial.
//!
//! Every function here blocks (store reads, the writer's commit) and runs on the
//! blocking pool. Nothing is acknowledged before its audit entry is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use teekms_attest::policy::parse_duration;
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
use teekms_core::state::{AccessKeyRecord, DEFAULT_DELETION_WAIT, KeyState};
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
    /// The node is shutting down or its store failed.
    Unavailable,
    /// Something that must not happen; logged.
    Internal(String),
}

impl From<teekms_store::StoreError> for OpError {
    fn from(e: teekms_store::StoreError) -> Self {
        OpError::Internal(format!("store: {e}"))
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
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<(String, String), Loaded>>);

impl KeyCache {
    fn get(&self, fp: &str, key_id: &str) -> Option<Loaded> {
        self.0
            .lock()
            .expect("cache lock")
            .get(&(fp.to_owned(), key_id.to_owned()))
            .cloned()
    }

    fn put(&self, fp: String, key_id: String, key: Loaded) {
        let mut map = self.0.lock().expect("cache lock");
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert((fp, key_id), key);
    }

    fn forget(&self, fp: &str, key_id: &str) {
        self.0
            .lock()
            .expect("cache lock")
            .remove(&(fp.to_owned(), key_id.to_owned()));
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
    fn reader(&self) -> std::sync::MutexGuard<'_, teekms_store::SqliteStore> {
        self.reader.lock().expect("reader lock")
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
        };
        let Some(token) = token else {
            return Ok(caller);
        };
        let hash_key = self.service.cluster().derive(ACCESS_KEY_HASH_LABEL);
        let refused = |caller: &Caller, why: String| {
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
        let Some((revision, record)) = stored else {
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
        match owner {
            Some(fp) => {
                let pk = self
                    .reader()
                    .owner_key(fp)?
                    .and_then(|pk| <[u8; 32]>::try_from(pk.as_slice()).ok())
                    .map(OwnerPublicKey)
                    // The row checks itself: a fingerprint is the hash of its key.
                    .filter(|pk| pk.fingerprint() == fp);
                pk.ok_or_else(|| OpError::NotFound(format!("no owner {fp} on this node")))
            }
            None => caller
                .owner
                .or_else(|| caller.access_key.as_ref().map(|a| a.owner))
                .ok_or_else(|| {
                    bad("name the key's owner (\"owner\": its fingerprint); this caller has no namespace of its own")
                }),
        }
    }

    fn load(&self, owner: &OwnerPublicKey, key_id: &KeyId) -> Result<Loaded, OpError> {
        let fp = owner.fingerprint();
        if let Some(hit) = self.cache.get(&fp, key_id.as_str()) {
            return Ok(hit);
        }
        let (stored, latest) = {
            let r = self.reader();
            (
                r.get_state(&fp, key_id.as_str())?,
                r.get_key(&fp, key_id.as_str())?,
            )
        };
        let Some(latest) = latest else {
            return Err(OpError::NotFound(format!("no key {key_id:?}")));
        };
        let state = match stored {
            Some((revision, record)) => {
                KeyState::open(self.service.cluster(), owner, key_id, revision, &record)
                    .map_err(|e| OpError::Damaged(e.to_string()))?
            }
            None => {
                let rec = self.open_row(owner, key_id, &latest)?;
                KeyState::initial(rec.key_policy.clone())
            }
        };
        // A stored policy that no longer parses admits nobody but the owner.
        let policy = KeyPolicy::parse(&state.policy).unwrap_or_else(|e| {
            tracing::warn!(key = %key_id, error = %e, "key policy does not parse; default deny");
            KeyPolicy::parse("{}").expect("the empty policy parses")
        });
        let loaded = Arc::new(LoadedKey {
            owner: *owner,
            key_id: key_id.clone(),
            state,
            policy,
            versions: Mutex::new(HashMap::new()),
        });
        self.cache.put(fp, key_id.to_string(), loaded.clone());
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
            .get_key_version(&l.owner.fingerprint(), l.key_id.as_str(), version)?
            .ok_or_else(|| {
                OpError::NotFound(format!("key {:?} has no version {version}", l.key_id))
            })?;
        let rec = Arc::new(self.open_row(&l.owner, &l.key_id, &row)?);
        l.versions
            .lock()
            .expect("versions lock")
            .insert(version, rec.clone());
        Ok(rec)
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
                self.delete_due(&l.owner.fingerprint(), l.key_id.as_str(), now)?;
                return Err(OpError::NotFound(format!("key {:?} was deleted", l.key_id)));
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
            draft(
                op_name,
                caller,
                Some((&l.owner, &l.key_id)),
                None,
                format!("denied: {why}"),
                now,
            ),
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
        self.audit(draft(
            op,
            caller,
            Some((&l.owner, &l.key_id)),
            version,
            "ok",
            now,
        ))
    }

    // ---- envelope operations -------------------------------------------------------

    /// `encrypt`: a small payload under the key's current version.
    pub fn encrypt(
        &self,
        caller: &Caller,
        req: EncryptRequest,
        now: u64,
    ) -> Result<(CiphertextResponse, AuditDraft), OpError> {
        let owner = self.owner_for(caller, req.owner.as_deref())?;
        let l = self.load(&owner, &key_id(&req.key_id)?)?;
        self.gate("encrypt", caller, &l, Operation::Encrypt, now)?;
        let rec = self.version(&l, l.state.current_version)?;
        let aad = req.aad.map(|a| a.0).unwrap_or_default();
        let ct = envelope::seal(
            &l.owner,
            &l.key_id,
            rec.key_version,
            &rec.dek,
            &req.plaintext.0,
            &aad,
        )
        .map_err(|e| bad(e.to_string()))?;
        let audit = draft(
            "encrypt",
            caller,
            Some((&l.owner, &l.key_id)),
            Some(rec.key_version),
            "ok",
            now,
        );
        let resp = CiphertextResponse {
            key_id: l.key_id.to_string(),
            key_version: rec.key_version,
            ciphertext: B64(ct),
        };
        Ok((resp, audit))
    }

    /// Opens a ciphertext for `op` (decrypt or re-encrypt), with every check.
    fn open_envelope(
        &self,
        op_name: &str,
        op: Operation,
        caller: &Caller,
        ciphertext: &[u8],
        aad: &[u8],
        now: u64,
    ) -> Result<(Loaded, u64, Zeroizing<Vec<u8>>), OpError> {
        let env = Envelope::parse(ciphertext).map_err(|e| bad(e.to_string()))?;
        let h = &env.header;
        let l = self.load(&h.owner, &h.key_id)?;
        self.gate(op_name, caller, &l, op, now)?;
        let key = Some((&l.owner, &l.key_id));
        if h.key_version < l.state.min_decryption_version {
            let why = format!(
                "version {} of key {:?} is below its min_decryption_version {}",
                h.key_version, l.key_id, l.state.min_decryption_version
            );
            return Err(self.refuse(
                draft(
                    op_name,
                    caller,
                    key,
                    Some(h.key_version),
                    format!("denied: {why}"),
                    now,
                ),
                OpError::Forbidden(why),
            ));
        }
        let rec = self.version(&l, h.key_version)?;
        match env.open(&rec.dek, aad) {
            Ok(pt) => Ok((l, h.key_version, pt)),
            Err(e) => Err(self.refuse(
                draft(
                    op_name,
                    caller,
                    key,
                    Some(h.key_version),
                    "error: ciphertext did not decrypt",
                    now,
                ),
                OpError::Decrypt(e.to_string()),
            )),
        }
    }

    /// `decrypt`.
    pub fn decrypt(
        &self,
        caller: &Caller,
        req: DecryptRequest,
        now: u64,
    ) -> Result<(SecretResponse, AuditDraft), OpError> {
        let aad = req.aad.map(|a| a.0).unwrap_or_default();
        let (l, version, pt) = self.open_envelope(
            "decrypt",
            Operation::Decrypt,
            caller,
            &req.ciphertext.0,
            &aad,
            now,
        )?;
        let audit = draft(
            "decrypt",
            caller,
            Some((&l.owner, &l.key_id)),
            Some(version),
            "ok",
            now,
        );
        let (plaintext, sealed) = seal_for(caller, "decrypt", &pt);
        let resp = SecretResponse {
            key_id: l.key_id.to_string(),
            key_version: version,
            ciphertext: None,
            plaintext,
            sealed,
        };
        Ok((resp, audit))
    }

    /// `generate-data-key`: a fresh 256-bit key, returned and wrapped under the key.
    pub fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
        now: u64,
    ) -> Result<(SecretResponse, AuditDraft), OpError> {
        let owner = self.owner_for(caller, req.owner.as_deref())?;
        let l = self.load(&owner, &key_id(&req.key_id)?)?;
        self.gate(
            "generate-data-key",
            caller,
            &l,
            Operation::GenerateDataKey,
            now,
        )?;
        let rec = self.version(&l, l.state.current_version)?;
        let fresh = DataKey::generate();
        let aad = req.aad.map(|a| a.0).unwrap_or_default();
        let wrapped = envelope::seal(
            &l.owner,
            &l.key_id,
            rec.key_version,
            &rec.dek,
            fresh.expose(),
            &aad,
        )
        .map_err(|e| bad(e.to_string()))?;
        let audit = draft(
            "generate-data-key",
            caller,
            Some((&l.owner, &l.key_id)),
            Some(rec.key_version),
            "ok",
            now,
        );
        let (plaintext, sealed) = seal_for(caller, "generate-data-key", fresh.expose());
        let resp = SecretResponse {
            key_id: l.key_id.to_string(),
            key_version: rec.key_version,
            ciphertext: Some(B64(wrapped)),
            plaintext,
            sealed,
        };
        Ok((resp, audit))
    }

    /// `re-encrypt`: opened and sealed again inside the node; the plaintext never leaves.
    pub fn re_encrypt(
        &self,
        caller: &Caller,
        req: ReEncryptRequest,
        now: u64,
    ) -> Result<(CiphertextResponse, AuditDraft), OpError> {
        let aad = req.aad.map(|a| a.0).unwrap_or_default();
        let (src, src_version, pt) = self.open_envelope(
            "re-encrypt",
            Operation::ReEncrypt,
            caller,
            &req.ciphertext.0,
            &aad,
            now,
        )?;
        let dst_owner = match &req.destination_owner {
            Some(fp) => self.owner_for(caller, Some(fp))?,
            None => src.owner,
        };
        let dst_id = match &req.destination_key_id {
            Some(id) => key_id(id)?,
            None => src.key_id.clone(),
        };
        let dst = self.load(&dst_owner, &dst_id)?;
        self.gate("re-encrypt", caller, &dst, Operation::Encrypt, now)?;
        let rec = self.version(&dst, dst.state.current_version)?;
        let dst_aad = req.destination_aad.map(|a| a.0).unwrap_or(aad);
        let ct = envelope::seal(
            &dst.owner,
            &dst.key_id,
            rec.key_version,
            &rec.dek,
            &pt,
            &dst_aad,
        )
        .map_err(|e| bad(e.to_string()))?;
        let outcome = format!("ok (from {:?} version {src_version})", src.key_id.as_str());
        let audit = draft(
            "re-encrypt",
            caller,
            Some((&dst.owner, &dst.key_id)),
            Some(rec.key_version),
            outcome,
            now,
        );
        let resp = CiphertextResponse {
            key_id: dst.key_id.to_string(),
            key_version: rec.key_version,
            ciphertext: B64(ct),
        };
        Ok((resp, audit))
    }

    /// `fetch`: a key version's material for an attested workload, sealed to its key.
    pub fn fetch(
        &self,
        caller: &Caller,
        key: &str,
        req: FetchRequest,
        now: u64,
    ) -> Result<(FetchResponse, AuditDraft), OpError> {
        let Some(pk) = caller.workload_hpke_key() else {
            return Err(OpError::Forbidden(
                "fetch is for attested workloads (the key is sealed to their attested key); owners use export".into(),
            ));
        };
        let owner = self.owner_for(caller, req.owner.as_deref())?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate("fetch", caller, &l, Operation::Fetch, now)?;
        let v = req.version.unwrap_or(l.state.current_version);
        if v < l.state.min_decryption_version {
            let why = format!(
                "version {v} of key {:?} is below its min_decryption_version",
                l.key_id
            );
            return Err(self.refuse(
                draft(
                    "fetch",
                    caller,
                    Some((&l.owner, &l.key_id)),
                    Some(v),
                    format!("denied: {why}"),
                    now,
                ),
                OpError::Forbidden(why),
            ));
        }
        let rec = self.version(&l, v)?;
        let (enc, ct) =
            teekms_core::hpke::seal(&pk, SEALED_RESPONSE_INFO, b"fetch", rec.dek.expose())
                .expect("sealing to a verified X25519 key does not fail");
        let audit = draft(
            "fetch",
            caller,
            Some((&l.owner, &l.key_id)),
            Some(v),
            "ok",
            now,
        );
        Ok((
            FetchResponse {
                key_id: l.key_id.to_string(),
                key_version: v,
                kcv: rec.kcv(),
                sealed: SealedSecret {
                    enc: B64(enc.to_vec()),
                    ciphertext: B64(ct),
                },
            },
            audit,
        ))
    }

    /// The data key of one version, for streaming through the node (checked like
    /// `encrypt` or `decrypt`; audited by the caller once the stream is done).
    pub fn stream_key(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        key: &str,
        version: Option<u64>,
        op: Operation,
        now: u64,
    ) -> Result<(OwnerPublicKey, KeyId, Arc<DataKeyRecord>), OpError> {
        let owner = self.owner_for(caller, owner)?;
        let l = self.load(&owner, &key_id(key)?)?;
        let name = if op == Operation::Encrypt {
            "stream-encrypt"
        } else {
            "stream-decrypt"
        };
        self.gate(name, caller, &l, op, now)?;
        let v = version.unwrap_or(l.state.current_version);
        if v < l.state.min_decryption_version || v > l.state.current_version {
            let why = format!("version {v} of key {:?} is not usable", l.key_id);
            return Err(self.refuse(
                draft(
                    name,
                    caller,
                    Some((&l.owner, &l.key_id)),
                    Some(v),
                    format!("denied: {why}"),
                    now,
                ),
                OpError::Forbidden(why),
            ));
        }
        let rec = self.version(&l, v)?;
        Ok((l.owner, l.key_id.clone(), rec))
    }

    /// Records the end of a stream through the node (its start was authorized, and
    /// refusals audited, by [`AppState::stream_key`]).
    pub fn stream_done(
        &self,
        caller: &Caller,
        op: &str,
        (owner, key_id, version): (&OwnerPublicKey, &KeyId, u64),
        outcome: String,
    ) -> Result<(), OpError> {
        let now = crate::now_unix();
        self.audit(draft(
            op,
            caller,
            Some((owner, key_id)),
            Some(version),
            outcome,
            now,
        ))
    }

    // ---- lifecycle -------------------------------------------------------------------

    /// `GET /v1/keys/{id}`: metadata, for the owner or callers granted `describe`.
    pub fn describe(
        &self,
        caller: &Caller,
        key: &str,
        owner: Option<&str>,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        let owner = self.owner_for(caller, owner)?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate("describe", caller, &l, Operation::Describe, now)?;
        let description = self.description(&l)?;
        self.done("describe", caller, &l, None, now)?;
        Ok(description)
    }

    fn description(&self, l: &Loaded) -> Result<KeyDescription, OpError> {
        let rows = self
            .reader()
            .key_versions(&l.owner.fingerprint(), l.key_id.as_str())?;
        let mut versions = Vec::new();
        for row in &rows {
            let rec = self.open_row(&l.owner, &l.key_id, row)?;
            versions.push(KeyInfo {
                key_id: l.key_id.to_string(),
                key_version: rec.key_version,
                created_at: rec.created_at,
                kcv: rec.kcv(),
            });
        }
        Ok(KeyDescription {
            key_id: l.key_id.to_string(),
            owner: l.owner.fingerprint(),
            current_version: l.state.current_version,
            min_decryption_version: l.state.min_decryption_version,
            enabled: l.state.enabled,
            deletion_at: l.state.deletion_at,
            exportable: l.policy.exportable,
            versions,
        })
    }

    /// Applies an owner's change to a key's state (and maybe a new version) atomically
    /// over the state it was made from.
    fn change(
        &self,
        op: &str,
        caller: &Caller,
        key: &str,
        now: u64,
        edit: impl FnOnce(&Loaded, &mut KeyState) -> Result<Option<DataKeyRecord>, OpError>,
    ) -> Result<KeyDescription, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated(format!("{op} needs the owner's TLS client certificate"))
        })?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate_owner(op, caller, &l, now)?;
        let mut next = l.state.clone();
        let new_version = match edit(&l, &mut next) {
            Ok(v) => v,
            Err(e) => {
                let why = match &e {
                    OpError::BadRequest(m) | OpError::Forbidden(m) | OpError::KeyState(m) => {
                        m.clone()
                    }
                    _ => "failed".into(),
                };
                return Err(self.refuse(
                    draft(
                        op,
                        caller,
                        Some((&l.owner, &l.key_id)),
                        None,
                        format!("error: {why}"),
                        now,
                    ),
                    e,
                ));
            }
        };
        next.revision = l.state.revision + 1;
        let fp = l.owner.fingerprint();
        let mut writes = Vec::new();
        if let Some(rec) = &new_version {
            writes.push(Write::InsertKey(KeyRow {
                owner: fp.clone(),
                key_id: l.key_id.to_string(),
                key_version: rec.key_version,
                record: rec.seal(self.service.cluster()),
            }));
        }
        writes.push(Write::PutState {
            owner: fp,
            key_id: l.key_id.to_string(),
            revision: next.revision,
            expected: l.state.revision,
            record: next.seal(self.service.cluster(), &l.owner, &l.key_id),
        });
        // Whatever the outcome, the next use reads the stored state again.
        self.cache.forget(&l.owner.fingerprint(), l.key_id.as_str());
        let applied = self.writer.submit(Job {
            writes,
            audit: draft(
                op,
                caller,
                Some((&l.owner, &l.key_id)),
                new_version.as_ref().map(|r| r.key_version),
                "ok",
                now,
            ),
            on_conflict: "error: a concurrent change won; not applied",
        })?;
        if applied == Applied::Conflict {
            return Err(OpError::Conflict(
                "the key was changed concurrently; retry".into(),
            ));
        }
        self.description(&self.load(&l.owner, &l.key_id)?)
    }

    /// `rotate`: a new version, generated inside the node, for new encryptions.
    pub fn rotate(&self, caller: &Caller, key: &str, now: u64) -> Result<KeyDescription, OpError> {
        self.change("rotate", caller, key, now, |l, s| {
            s.current_version += 1;
            Ok(Some(DataKeyRecord {
                owner: l.owner,
                key_id: l.key_id.clone(),
                key_version: s.current_version,
                created_at: now,
                key_policy: s.policy.clone(),
                dek: DataKey::generate(),
            }))
        })
    }

    /// `enable` / `disable`.
    pub fn set_enabled(
        &self,
        caller: &Caller,
        key: &str,
        enabled: bool,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        let op = if enabled { "enable" } else { "disable" };
        self.change(op, caller, key, now, |_, s| {
            s.enabled = enabled;
            Ok(None)
        })
    }

    /// `schedule-deletion` after a waiting period (at least the node's minimum).
    pub fn schedule_deletion(
        &self,
        caller: &Caller,
        key: &str,
        wait: Option<&str>,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        let min = self.min_deletion_wait;
        let wait = match wait {
            Some(w) => parse_duration(w).map_err(bad)?,
            None => DEFAULT_DELETION_WAIT.max(min),
        };
        if wait < min {
            return Err(bad(format!(
                "the waiting period must be at least {min} s on this node"
            )));
        }
        self.change("schedule-deletion", caller, key, now, |_, s| {
            s.deletion_at = Some(now + wait);
            Ok(None)
        })
    }

    /// `cancel-deletion`.
    pub fn cancel_deletion(
        &self,
        caller: &Caller,
        key: &str,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        self.change("cancel-deletion", caller, key, now, |l, s| {
            if s.deletion_at.is_none() {
                return Err(OpError::KeyState(format!(
                    "key {:?} is not pending deletion",
                    l.key_id
                )));
            }
            s.deletion_at = None;
            Ok(None)
        })
    }

    /// `min-decryption-version`.
    pub fn set_min_decryption_version(
        &self,
        caller: &Caller,
        key: &str,
        version: u64,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        self.change("set-min-decryption-version", caller, key, now, |_, s| {
            if version == 0 || version > s.current_version {
                return Err(bad(format!(
                    "version must be between 1 and the current version {}",
                    s.current_version
                )));
            }
            s.min_decryption_version = version;
            Ok(None)
        })
    }

    /// `GET /v1/keys/{id}/policy` (owner only).
    pub fn get_policy(&self, caller: &Caller, key: &str, now: u64) -> Result<String, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs the owner's TLS client certificate".into())
        })?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate_owner("policy-get", caller, &l, now)?;
        self.done("policy-get", caller, &l, None, now)?;
        Ok(if l.state.policy.is_empty() {
            "{}".into()
        } else {
            l.state.policy.clone()
        })
    }

    /// `PUT /v1/keys/{id}/policy` (owner only; validated strictly).
    pub fn set_policy(
        &self,
        caller: &Caller,
        key: &str,
        text: String,
        now: u64,
    ) -> Result<KeyDescription, OpError> {
        KeyPolicy::parse(&text).map_err(|e| bad(e.to_string()))?;
        self.change("policy-set", caller, key, now, |_, s| {
            s.policy = text;
            Ok(None)
        })
    }

    /// `export`: one version's material, HPKE-wrapped to a key the owner names, only if
    /// the key policy says `exportable`.
    pub fn export(
        &self,
        caller: &Caller,
        key: &str,
        req: ExportRequest,
        now: u64,
    ) -> Result<ExportResponse, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("export needs the owner's TLS client certificate".into())
        })?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate_owner("export", caller, &l, now)?;
        let k = Some((&l.owner, &l.key_id));
        if !l.policy.exportable {
            let why = format!(
                "key {:?} is not exportable (its policy says \"exportable\": false)",
                l.key_id
            );
            return Err(self.refuse(
                draft("export", caller, k, None, format!("denied: {why}"), now),
                OpError::Forbidden(why),
            ));
        }
        let recipient: [u8; 32] = req
            .recipient
            .0
            .as_slice()
            .try_into()
            .map_err(|_| bad("recipient must be a 32-byte X25519 public key"))?;
        let rec = self.version(&l, req.version.unwrap_or(l.state.current_version))?;
        let aad = format!("{}/{}/{}", l.owner.fingerprint(), l.key_id, rec.key_version);
        let (enc, ct) =
            teekms_core::hpke::seal(&recipient, EXPORT_INFO, aad.as_bytes(), rec.dek.expose())
                .map_err(|_| bad("recipient is not a usable X25519 public key"))?;
        self.done("export", caller, &l, Some(rec.key_version), now)?;
        Ok(ExportResponse {
            key_id: l.key_id.to_string(),
            key_version: rec.key_version,
            kcv: rec.kcv(),
            wrapped: SealedSecret {
                enc: B64(enc.to_vec()),
                ciphertext: B64(ct),
            },
        })
    }

    /// Deletes keys whose waiting period is over (run periodically).
    pub fn sweep_deletions(&self, now: u64) -> Result<usize, OpError> {
        let states = self.reader().all_states()?;
        let mut deleted = 0;
        for (fp, id, revision, record) in states {
            let Ok(key_id) = KeyId::new(&id) else {
                continue;
            };
            let Some(pk) = self
                .reader()
                .owner_key(&fp)?
                .and_then(|pk| <[u8; 32]>::try_from(pk.as_slice()).ok())
            else {
                continue;
            };
            let owner = OwnerPublicKey(pk);
            if owner.fingerprint() != fp {
                continue;
            }
            let Ok(state) =
                KeyState::open(self.service.cluster(), &owner, &key_id, revision, &record)
            else {
                continue;
            };
            if state.deletion_at.is_some_and(|t| t <= now) && self.delete_due(&fp, &id, now)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes every version and the state of a key whose waiting period is over.
    fn delete_due(&self, fp: &str, id: &str, now: u64) -> Result<bool, OpError> {
        self.cache.forget(fp, id);
        let job = Job {
            writes: vec![Write::DeleteKey {
                owner: fp.into(),
                key_id: id.into(),
            }],
            audit: AuditDraft {
                time: now,
                operation: "delete".into(),
                owner: Some(fp.into()),
                key_id: Some(id.into()),
                key_version: None,
                outcome: "ok (waiting period over)".into(),
                caller: "node".into(),
            },
            on_conflict: "error: already deleted",
        };
        Ok(self.writer.submit(job)? == Applied::Done)
    }

    // ---- access keys -----------------------------------------------------------------

    /// `POST /v1/access-keys` (owners).
    pub fn create_access_key(
        &self,
        caller: &Caller,
        req: AccessKeyCreateRequest,
        now: u64,
    ) -> Result<AccessKeyCreated, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated(
                "creating access keys needs an owner's TLS client certificate".into(),
            )
        })?;
        if req.keys.is_empty() || req.operations.is_empty() {
            return Err(bad(
                "an access key needs at least one key id (or \"*\") and one operation",
            ));
        }
        for k in &req.keys {
            if k != "*" {
                key_id(k)?;
            }
        }
        if req.description.len() > 1024 {
            return Err(bad("description is longer than 1024 bytes"));
        }
        let expires_at = req
            .expires_in
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(bad)?
            .map(|d| now + d);
        let new = access::new_access_key(&self.service.cluster().derive(ACCESS_KEY_HASH_LABEL));
        let rec = AccessKeyRecord {
            id: new.id.clone(),
            owner: teekms_attest::hexbytes::HexBytes(owner.0),
            secret_hash: teekms_attest::hexbytes::HexBytes(new.secret_hash),
            keys: req.keys,
            operations: req.operations,
            description: req.description,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let applied = self.writer.submit(Job {
            writes: vec![
                register_owner(&owner),
                Write::PutAccessKey {
                    id: rec.id.clone(),
                    owner: owner.fingerprint(),
                    revision: rec.revision(),
                    expected: 0,
                    record: rec.seal(self.service.cluster()),
                },
            ],
            audit: AuditDraft {
                outcome: format!("ok ({})", rec.id),
                ..draft("access-create", caller, None, None, "", now)
            },
            on_conflict: "error: access key id collision",
        })?;
        if applied == Applied::Conflict {
            return Err(OpError::Conflict("access key id collision; retry".into()));
        }
        Ok(AccessKeyCreated {
            info: info(&rec),
            token: new.token.to_string(),
        })
    }

    /// `GET /v1/access-keys`.
    pub fn list_access_keys(&self, caller: &Caller) -> Result<AccessKeyList, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let rows = self.reader().list_access_keys(&owner.fingerprint())?;
        let mut access_keys = Vec::new();
        for (id, revision, record) in rows {
            let rec = AccessKeyRecord::open(self.service.cluster(), &id, revision, &record)
                .map_err(|e| OpError::Damaged(e.to_string()))?;
            if rec.owner.0 == owner.0 {
                access_keys.push(info(&rec));
            }
        }
        Ok(AccessKeyList { access_keys })
    }

    /// `DELETE /v1/access-keys/{id}`: revocation is final.
    pub fn revoke_access_key(
        &self,
        caller: &Caller,
        id: &str,
        now: u64,
    ) -> Result<AccessKeyInfo, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let not_found = || OpError::NotFound(format!("no access key {id} of yours"));
        let (revision, record) = self.reader().get_access_key(id)?.ok_or_else(not_found)?;
        let mut rec = AccessKeyRecord::open(self.service.cluster(), id, revision, &record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        if rec.owner.0 != owner.0 {
            return Err(not_found());
        }
        if rec.revoked_at.is_none() {
            rec.revoked_at = Some(now);
            let applied = self.writer.submit(Job {
                writes: vec![Write::PutAccessKey {
                    id: id.into(),
                    owner: owner.fingerprint(),
                    revision: rec.revision(),
                    expected: revision,
                    record: rec.seal(self.service.cluster()),
                }],
                audit: AuditDraft {
                    outcome: format!("ok ({id})"),
                    ..draft("access-revoke", caller, None, None, "", now)
                },
                on_conflict: "error: concurrent change",
            })?;
            if applied == Applied::Conflict {
                return Err(OpError::Conflict(
                    "the access key changed concurrently; retry".into(),
                ));
            }
        }
        Ok(info(&rec))
    }

    // ---- workloads -------------------------------------------------------------------

    /// A workload presents its attestation document on this connection: its statement
    /// must name the connection's client key, and its evidence must verify. Which keys
    /// it may use is then decided per key, by the key policies' workload entries.
    pub fn attest_workload(
        &self,
        conn: &ConnState,
        doc: teekms_attest::AttestationDocument,
        now: u64,
    ) -> Result<String, OpError> {
        let Some(spki) = conn.client_spki else {
            return Err(OpError::Unauthenticated(
                "a workload attests over a connection with its TLS client certificate".into(),
            ));
        };
        if doc.statement.tls_spki_sha256.0 != spki {
            return Err(OpError::Forbidden(
                "the attestation names another TLS key than this connection's client certificate"
                    .into(),
            ));
        }
        let any = match doc.tee {
            TeeKind::Sim => Policy::sim([0; 32], None),
            tee => Policy::default_for(tee).expect("real TEEs have a default policy"),
        };
        let verdict = verify_document(&doc, &any, Freshness::Offline, now);
        if !verdict.verified {
            return Err(OpError::Forbidden(format!(
                "the workload's evidence does not verify: {}",
                verdict.reasons.join("; ")
            )));
        }
        let claims = serde_json::to_vec(&verdict.claims).expect("claims serialize");
        let digest = hex::encode(teekms_attest::sha256(&claims));
        let workload = AttestedWorkload {
            document: doc,
            report_data: None,
            claims_digest: digest.clone(),
        };
        let caller = Caller {
            owner: conn.owner,
            access_key: None,
            workload: Some(workload.clone()),
        };
        self.audit(draft("workload-attest", &caller, None, None, "ok", now))?;
        *conn.workload.lock().expect("conn lock") = Some(workload);
        Ok(digest)
    }

    /// A workload whose TLS client certificate is an RA-TLS certificate (spec/ratls-v1.md):
    /// its evidence was checked for authenticity in the handshake; here it becomes the
    /// connection's workload, appraised per key policy on each request.
    pub fn ratls_workload(
        ev: &teekms_attest::ratls::RaTlsEvidence,
        now: u64,
    ) -> Result<AttestedWorkload, String> {
        let (document, report_data) = ev
            .document()
            .ok_or("the RA-TLS certificate carries no teekms statement")?;
        let any = match document.tee {
            TeeKind::Sim => Policy::sim([0; 32], None),
            tee => Policy::default_for(tee).expect("real TEEs have a default policy"),
        };
        let verdict =
            teekms_attest::ratls::verify_document_bound(&document, report_data, &any, now);
        if !verdict.verified {
            return Err(format!(
                "the RA-TLS evidence does not verify: {}",
                verdict.reasons.join("; ")
            ));
        }
        let claims = serde_json::to_vec(&verdict.claims).expect("claims serialize");
        Ok(AttestedWorkload {
            document,
            report_data: Some(report_data),
            claims_digest: hex::encode(teekms_attest::sha256(&claims)),
        })
    }

    // ---- audit -----------------------------------------------------------------------

    /// Recent entries about the caller's keys or by the caller (owners).
    pub fn audit_tail(&self, caller: &Caller, n: usize) -> Result<AuditTail, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let fp = owner.fingerprint();
        let mut entries = Vec::new();
        let mut from = 1;
        loop {
            let page = self.reader().audit_entries(from, 4096)?;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            for (_, bytes) in &page {
                if let Ok(e) = serde_json::from_slice::<AuditEntry>(bytes)
                    && (e.draft.owner.as_deref() == Some(&fp) || e.draft.caller.contains(&fp))
                {
                    entries.push(e);
                }
            }
        }
        let skip = entries.len().saturating_sub(n);
        Ok(AuditTail {
            entries: entries.split_off(skip),
        })
    }

    /// The whole chain, checked with the audit key (any owner may ask; the answer
    /// reveals only a count and a position).
    pub fn audit_verify(&self, caller: &Caller) -> Result<AuditVerification, OpError> {
        if caller.owner.is_none() {
            return Err(OpError::Unauthenticated(
                "needs an owner's TLS client certificate".into(),
            ));
        }
        let key = self
            .service
            .cluster()
            .derive(teekms_core::audit::AUDIT_KEY_LABEL);
        let all = self.reader().audit_entries(1, u64::MAX)?;
        Ok(verification(&key, &all))
    }
}

/// Deploys a bundle (online, or offline into a stopped node's data dir): the row, the
/// owner's public key and the audit entry in one durable job.
pub fn deploy(
    service: &crate::KeyService,
    reader: &Mutex<teekms_store::SqliteStore>,
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
        |owner, key_id| reader.lock().expect("reader lock").get_key(owner, key_id),
        |owner, row| {
            let audit = AuditDraft {
                time: now,
                operation: "deploy".into(),
                owner: Some(row.owner.clone()),
                key_id: Some(row.key_id.clone()),
                key_version: Some(row.key_version),
                outcome: "ok".into(),
                caller: match caller {
                    Some(c) => format!("owner:{}", c.fingerprint()),
                    None => format!("bundle:{}", owner.fingerprint()),
                },
            };
            let applied = writer
                .submit(Job {
                    writes: vec![register_owner(owner), Write::InsertKey(row)],
                    audit,
                    on_conflict: "ok (already present; compared)",
                })
                .map_err(|_| DeployError::Unavailable)?;
            Ok(match applied {
                Applied::Done => teekms_store::Inserted::New,
                Applied::Conflict => teekms_store::Inserted::AlreadyExists,
            })
        },
    )
}

/// Checks stored audit entries: the report `teekms audit verify` prints.
pub fn verification(key: &[u8; 32], all: &[(u64, Vec<u8>)]) -> AuditVerification {
    match teekms_core::audit::verify_log(key, all.iter().map(|(s, e)| (*s, e.as_slice()))) {
        Ok((n, _)) => AuditVerification {
            ok: true,
            entries: n,
            broken_at: None,
            reason: None,
        },
        Err(b) => AuditVerification {
            ok: false,
            entries: b.seq.saturating_sub(1),
            broken_at: Some(b.seq),
            reason: Some(b.reason),
        },
    }
}

/// The write that records an owner's public key (so others can name it).
pub fn register_owner(owner: &OwnerPublicKey) -> Write {
    Write::RegisterOwner {
        fingerprint: owner.fingerprint(),
        public_key: owner.0.to_vec(),
    }
}

fn info(rec: &AccessKeyRecord) -> AccessKeyInfo {
    AccessKeyInfo {
        id: rec.id.clone(),
        keys: rec.keys.clone(),
        operations: rec.operations.clone(),
        description: rec.description.clone(),
        created_at: rec.created_at,
        expires_at: rec.expires_at,
        revoked_at: rec.revoked_at,
    }
}
