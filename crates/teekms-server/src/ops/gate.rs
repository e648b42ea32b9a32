//! Who is asking and whether they may: the caller of a request, the owner it names,
//! the key policy and the key's state (default deny), and the audit entry of every
//! operation and every refusal. Every operation authorizes and drafts its audit entry
//! here, and nowhere else.

use super::*;

pub(super) fn bad(msg: impl Into<String>) -> OpError {
    OpError::BadRequest(msg.into())
}

/// The associated data a request binds: its raw `aad`, or the canonical encoding of
/// its encryption context (spec/envelope-v1.md), never both.
pub(super) fn bound_aad(
    aad: Option<B64>,
    context: Option<&EncryptionContext>,
) -> Result<Vec<u8>, OpError> {
    match (aad, context) {
        (Some(_), Some(_)) => Err(bad(
            "give either associated data (aad) or an encryption context, not both",
        )),
        (Some(a), None) => Ok(a.0),
        (None, Some(c)) => context_aad(c).map_err(|e| bad(e.to_string())),
        (None, None) => Ok(Vec::new()),
    }
}

/// An outcome with the encryption context in clear, as AWS KMS records it in CloudTrail:
/// `ok (context {"k":"v"})`.
pub(super) fn with_context(outcome: &str, context: Option<&EncryptionContext>) -> String {
    match context.filter(|c| !c.is_empty()) {
        Some(c) => format!(
            "{outcome} (context {})",
            serde_json::to_string(c).expect("a string map serializes")
        ),
        None => outcome.to_owned(),
    }
}

pub(super) fn key_id(s: &str) -> Result<KeyId, OpError> {
    KeyId::new(s).map_err(|e| bad(e.to_string()))
}

pub(super) fn draft(
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
pub(super) fn key_draft(
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

pub(super) fn seal_for(caller: &Caller, op: &str, secret: &[u8]) -> SecretAnswer {
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

impl Service {
    pub(super) fn reader(&self) -> std::sync::MutexGuard<'_, Box<dyn teekms_store::Store>> {
        self.readers.get()
    }

    /// Records `draft` durably (an audit entry with no other write).
    pub(super) fn audit(&self, draft: AuditDraft) -> Result<(), OpError> {
        self.writer.submit(Job {
            writes: Vec::new(),
            audit: draft,
            on_conflict: "error",
        })?;
        Ok(())
    }

    /// Records a refusal, then returns it.
    pub(super) fn refuse(&self, d: AuditDraft, err: OpError) -> OpError {
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
        let hash_key = self.keyring.cluster().derive(ACCESS_KEY_HASH_LABEL);
        let refused = |caller: &Caller, why: String| {
            self.refuse_credential(caller, OpError::Unauthenticated(why), now)
        };
        let (id, hash) = match access::parse_access_token(&hash_key, token) {
            Ok(x) => x,
            Err(e) => return Err(refused(&caller, e.to_string())),
        };
        let stored = self.reader().get_access_key(&id)?;
        let Some(teekms_store::Revisioned { revision, record }) = stored else {
            self.freshness().check_floor(Floor::AccessKey, &id, None)?;
            return Err(refused(&caller, format!("unknown access key {id}")));
        };
        let rec = AccessKeyRecord::open(self.keyring.cluster(), &id, revision, &record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        self.freshness()
            .check_floor(Floor::AccessKey, &id, Some(revision))?;
        match rec.grant(&hash, now) {
            Ok(grant) => {
                caller.access_key = Some(grant);
                Ok(caller)
            }
            Err(why) => Err(refused(&caller, why)),
        }
    }

    /// Refuses credentials that do not verify. On a connection with no other identity
    /// the request is anonymous: counted, not logged one by one; otherwise audited.
    pub(super) fn refuse_credential(&self, caller: &Caller, err: OpError, now: u64) -> OpError {
        if caller.is_anonymous() {
            self.count_anonymous(caller);
            return err;
        }
        let why = format!("denied: {}", err);
        self.refuse(draft("authenticate", caller, None, None, why, now), err)
    }

    /// The owner whose key a request names: `owner` (a fingerprint) if given, else the
    /// caller's own namespace (its owner certificate, or its access key's creator).
    pub(super) fn owner_for(
        &self,
        caller: &Caller,
        owner: Option<&str>,
    ) -> Result<OwnerPublicKey, OpError> {
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
    pub(super) fn require_credentials(&self, caller: &Caller) -> Result<(), OpError> {
        if !caller.is_anonymous() {
            return Ok(());
        }
        self.count_anonymous(caller);
        Err(OpError::Unauthenticated(
            "key operations need credentials: the owner's TLS client certificate, an access key (Authorization: Bearer), or an attested workload".into(),
        ))
    }

    /// Version `v` of a key, if it may still be used (from `min_decryption_version` to
    /// the current version); a refusal is audited.
    pub(super) fn usable_version(
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
    pub(super) fn gate(
        &self,
        op_name: &str,
        caller: &Caller,
        l: &Loaded,
        op: Operation,
        now: u64,
    ) -> Result<(), OpError> {
        let key = Some((&l.owner, &l.key_id));
        let refuse = |err: OpError| {
            let why = format!("denied: {}", err.reason());
            self.refuse(draft(op_name, caller, key, None, why, now), err)
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
                    lifecycle::Deletion::NoLongerDue => OpError::Retry(format!(
                        "key {:?} was changed concurrently (its deletion cancelled); retry",
                        l.key_id
                    )),
                    _ => OpError::NotFound(format!("key {:?} was deleted", l.key_id)),
                });
            }
            return Err(refuse(OpError::PendingDeletion(format!(
                "key {:?} is pending deletion (at {}); its owner can cancel that with `teekms key cancel-deletion`",
                l.key_id,
                teekms_attest::format_rfc3339(at)
            ))));
        }
        if !l.state.enabled {
            return Err(refuse(OpError::Disabled(format!(
                "key {:?} is disabled",
                l.key_id
            ))));
        }
        Ok(())
    }

    /// Owner-only administration.
    pub(super) fn gate_owner(
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

    pub(super) fn done(
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
