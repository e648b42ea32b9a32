//! Envelope operations, workload fetch, and streams' keys.

use super::*;

impl Service {
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
        let aad = bound_aad(req.aad, req.context.as_ref())?;
        let ct = envelope::seal(
            &l.owner,
            &l.key_id,
            rec.key_version,
            &rec.dek,
            &req.plaintext.0,
            &aad,
        )
        .map_err(|e| bad(e.to_string()))?;
        let outcome = with_context("ok", req.context.as_ref());
        let audit = key_draft("encrypt", caller, &l, Some(rec.key_version), outcome, now);
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
        let rec = self.usable_version(op_name, caller, &l, h.key_version, now)?;
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
        let aad = bound_aad(req.aad, req.context.as_ref())?;
        let (l, version, pt) = self.open_envelope(
            "decrypt",
            Operation::Decrypt,
            caller,
            &req.ciphertext.0,
            &aad,
            now,
        )?;
        let outcome = with_context("ok", req.context.as_ref());
        let audit = key_draft("decrypt", caller, &l, Some(version), outcome, now);
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
        let fresh = random_secret(req.number_of_bytes.unwrap_or(32))?;
        let aad = bound_aad(req.aad, req.context.as_ref())?;
        let wrapped = envelope::seal(&l.owner, &l.key_id, rec.key_version, &rec.dek, &fresh, &aad)
            .map_err(|e| bad(e.to_string()))?;
        let audit = key_draft(
            "generate-data-key",
            caller,
            &l,
            Some(rec.key_version),
            with_context("ok", req.context.as_ref()),
            now,
        );
        let (plaintext, sealed) = seal_for(caller, "generate-data-key", &fresh);
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
        let aad = bound_aad(req.aad, req.context.as_ref())?;
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
        let dst_aad = match (req.destination_aad, &req.destination_context) {
            (None, None) => aad,
            (a, c) => bound_aad(a, c.as_ref())?,
        };
        let ct = envelope::seal(
            &dst.owner,
            &dst.key_id,
            rec.key_version,
            &rec.dek,
            &pt,
            &dst_aad,
        )
        .map_err(|e| bad(e.to_string()))?;
        let outcome = with_context(
            &format!("ok (from {:?} version {src_version})", src.key_id.as_str()),
            req.destination_context.as_ref().or(req.context.as_ref()),
        );
        let audit = key_draft(
            "re-encrypt",
            caller,
            &dst,
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

    /// `generate-random`: bytes from the node's generator (AWS KMS's GenerateRandom),
    /// for any caller with credentials; sealed to an attested workload.
    pub fn generate_random(
        &self,
        caller: &Caller,
        number_of_bytes: u32,
        now: u64,
    ) -> Result<(SecretAnswer, AuditDraft), OpError> {
        self.require_credentials(caller)?;
        let bytes = random_secret(number_of_bytes)?;
        let audit = draft("generate-random", caller, None, None, "ok", now);
        Ok((seal_for(caller, "generate-random", &bytes), audit))
    }

    /// `fetch`: a key version's material for an attested workload, sealed to its key.
    pub fn fetch(
        &self,
        caller: &Caller,
        key: &str,
        req: FetchRequest,
        now: u64,
    ) -> Result<(FetchResponse, AuditDraft), OpError> {
        self.require_credentials(caller)?;
        let Some(pk) = caller.workload_hpke_key() else {
            return Err(OpError::Forbidden(
                "fetch is for attested workloads (the key is sealed to their attested key); owners use export".into(),
            ));
        };
        let owner = self.owner_for(caller, req.owner.as_deref())?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate("fetch", caller, &l, Operation::Fetch, now)?;
        let v = req.version.unwrap_or(l.state.current_version);
        let rec = self.usable_version("fetch", caller, &l, v, now)?;
        let (enc, ct) =
            teekms_core::hpke::seal(&pk, SEALED_RESPONSE_INFO, b"fetch", rec.dek.expose())
                .expect("sealing to a verified X25519 key does not fail");
        let audit = key_draft("fetch", caller, &l, Some(v), "ok", now);
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
        let rec = self.usable_version(name, caller, &l, v, now)?;
        Ok((l.owner, l.key_id.clone(), rec))
    }

    /// Room in the node's stream memory for a stream that may hold `needs` bytes (its
    /// chunks are 2^`chunk_log2` bytes), waiting a little for other streams to end; a
    /// refusal is audited. Blocks: called on the stream's own thread.
    pub fn stream_room(
        &self,
        caller: &Caller,
        op: &str,
        key: (&OwnerPublicKey, &KeyId, u64),
        needs: u64,
        chunk_log2: u8,
    ) -> Result<crate::budget::Reservation, OpError> {
        use crate::budget::{NoRoom, STREAM_WAIT};
        let refused = match self.streams.reserve(needs, STREAM_WAIT) {
            Ok(room) => return Ok(room),
            Err(NoRoom::TooLarge { needs, total }) => OpError::BadRequest(format!(
                "a stream of 2^{chunk_log2} byte chunks needs {} MiB of stream memory, more than this node's {} MiB (--stream-memory); use a smaller chunk size",
                needs >> 20,
                total >> 20
            )),
            Err(NoRoom::Busy) => OpError::Busy(
                "the node's stream memory is in use by other streams; retry shortly".into(),
            ),
        };
        let outcome = format!("refused: {}", refused.reason());
        Err(match self.stream_done(caller, op, key, outcome) {
            Ok(()) => refused,
            Err(e) => e,
        })
    }

    /// Records the end of a stream through the node (its start was authorized, and
    /// refusals audited, by [`Service::stream_key`]).
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
}

/// Largest secret `generate-data-key` and `generate-random` make (AWS KMS's limit).
pub const MAX_RANDOM_BYTES: u32 = 1024;

/// `n` random bytes (1 to [`MAX_RANDOM_BYTES`]) from AWS-LC's generator.
fn random_secret(n: u32) -> Result<Zeroizing<Vec<u8>>, OpError> {
    if !(1..=MAX_RANDOM_BYTES).contains(&n) {
        return Err(bad(format!(
            "number of bytes must be 1 to {MAX_RANDOM_BYTES}, not {n}"
        )));
    }
    let mut out = Zeroizing::new(vec![0u8; n as usize]);
    aws_lc_rs::rand::fill(&mut out).expect("AWS-LC's generator does not fail");
    Ok(out)
}
