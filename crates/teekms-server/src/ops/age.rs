//! age (spec/age-plugin-v1.md): a key version's age public key, certified by the node;
//! and file keys sealed to it, unwrapped for callers the key's policy admits.

use super::*;

impl Service {
    /// `GET /v1/keys/{id}/age-recipient`: the current version's age public key and the
    /// node's signature on it (a `describe`).
    pub fn age_recipient(
        &self,
        caller: &Caller,
        key: &str,
        owner: Option<&str>,
        now: u64,
    ) -> Result<AgeRecipient, OpError> {
        let owner = self.owner_for(caller, owner)?;
        let l = self.load(&owner, &key_id(key)?)?;
        self.gate("age-recipient", caller, &l, Operation::Describe, now)?;
        let rec = self.version(&l, l.state.current_version)?;
        let public_key =
            *teekms_core::age::key_pair(&rec.dek, &l.owner, &l.key_id, rec.key_version)
                .public_key();
        let message = teekms_core::age::certificate_message(
            &l.owner,
            &l.key_id,
            rec.key_version,
            &public_key,
        );
        let signature = self.keyring.keys().sign(&message);
        self.done("age-recipient", caller, &l, Some(rec.key_version), now)?;
        Ok(AgeRecipient {
            owner_public_key: teekms_attest::hexbytes::HexBytes(l.owner.0),
            key_id: l.key_id.to_string(),
            key_version: rec.key_version,
            public_key: teekms_attest::hexbytes::HexBytes(public_key),
            signature: B64(signature.to_vec()),
        })
    }

    /// `POST /v1/age/unwrap`: a file key sealed to a key version's age key, opened for a
    /// caller the key's policy admits to `decrypt` (its state and versions checked as
    /// for `decrypt`).
    pub fn age_unwrap(
        &self,
        caller: &Caller,
        req: AgeUnwrapRequest,
        now: u64,
    ) -> Result<(AgeUnwrapResponse, AuditDraft), OpError> {
        let owner = self.owner_for(caller, Some(&req.owner))?;
        let l = self.load(&owner, &key_id(&req.key_id)?)?;
        self.gate("age-unwrap", caller, &l, Operation::Decrypt, now)?;
        let rec = self.usable_version("age-unwrap", caller, &l, req.key_version, now)?;
        let private = teekms_core::age::key_pair(&rec.dek, &l.owner, &l.key_id, rec.key_version);
        let aad = teekms_core::age::seal_aad(&l.owner, &l.key_id, rec.key_version);
        let file_key = match teekms_core::hpke::open(
            &private,
            &req.enc.0,
            teekms_core::age::HPKE_INFO,
            &aad,
            &req.ciphertext.0,
        ) {
            Ok(k) if k.len() == 16 => k,
            _ => {
                return Err(self.refuse(
                    key_draft(
                        "age-unwrap",
                        caller,
                        &l,
                        Some(rec.key_version),
                        "error: the stanza did not open",
                        now,
                    ),
                    OpError::Decrypt(
                        "the age stanza does not open with this key version (altered, or for another key)".into(),
                    ),
                ));
            }
        };
        let audit = key_draft("age-unwrap", caller, &l, Some(rec.key_version), "ok", now);
        Ok((
            AgeUnwrapResponse {
                file_key: SecretB64(file_key),
            },
            audit,
        ))
    }
}
