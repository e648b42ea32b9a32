//! Access keys.

use super::*;

impl Service {
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
            .map(|d| parse_duration(d).and_then(|d| time_after(now, d)))
            .transpose()?;
        let new = access::new_access_key(&self.keyring.cluster().derive(ACCESS_KEY_HASH_LABEL));
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
        let applied = self.commit_change(Job {
            writes: vec![
                register_owner(&owner),
                // Registered owners have a record (see `owner_record`).
                Write::InsertOwnerState {
                    owner: owner.fingerprint(),
                    record: OwnerState::initial().seal(self.keyring.cluster(), &owner),
                },
                Write::PutAccessKey {
                    id: rec.id.clone(),
                    owner: owner.fingerprint(),
                    revision: rec.revision(),
                    expected: 0,
                    record: rec.seal(self.keyring.cluster()),
                },
            ],
            audit: AuditDraft {
                outcome: format!("ok ({})", rec.id),
                ..draft("access-create", caller, None, None, "", now)
            },
            on_conflict: "error: access key id collision",
        })?;
        if applied == Applied::Conflict {
            return Err(OpError::Retry("access key id collision; retry".into()));
        }
        Ok(AccessKeyCreated {
            info: info(&rec),
            token: new.token.to_string(),
            aws_secret_access_key: req.aws.then(|| self.aws_secret(&rec.id).to_string()),
        })
    }

    /// `GET /v1/access-keys`.
    pub fn list_access_keys(&self, caller: &Caller) -> Result<AccessKeyList, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let rows = self.reader().list_access_keys(&owner.fingerprint())?;
        let mut access_keys = Vec::new();
        for row in rows {
            let rec =
                AccessKeyRecord::open(self.keyring.cluster(), &row.id, row.revision, &row.record)
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
        let Some(stored) = self.reader().get_access_key(id)? else {
            self.freshness().check_floor(Floor::AccessKey, id, None)?;
            return Err(not_found());
        };
        let revision = stored.revision;
        let mut rec = AccessKeyRecord::open(self.keyring.cluster(), id, revision, &stored.record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        self.freshness()
            .check_floor(Floor::AccessKey, id, Some(revision))?;
        if rec.owner.0 != owner.0 {
            return Err(not_found());
        }
        if rec.revoked_at.is_none() {
            rec.revoked_at = Some(now);
            let applied = self.commit_change(Job {
                writes: vec![Write::PutAccessKey {
                    id: id.into(),
                    owner: owner.fingerprint(),
                    revision: rec.revision(),
                    expected: revision,
                    record: rec.seal(self.keyring.cluster()),
                }],
                audit: AuditDraft {
                    outcome: format!("ok ({id})"),
                    ..draft("access-revoke", caller, None, None, "", now)
                },
                on_conflict: "error: concurrent change",
            })?;
            if applied == Applied::Conflict {
                return Err(OpError::Retry(
                    "the access key changed concurrently; retry".into(),
                ));
            }
        } else {
            // Revoked already: answered as the revocation was, so a retry after a
            // `freshness_unconfirmed` says the same until a majority holds it.
            self.confirm_by_majority()?;
        }
        Ok(info(&rec))
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

impl Service {
    /// The ids of the keys an access key's scope reaches in its creator's namespace,
    /// sorted (AWS KMS's ListKeys and ListAliases); audited.
    pub fn keys_in_scope(&self, caller: &Caller, now: u64) -> Result<Vec<String>, OpError> {
        self.require_credentials(caller)?;
        let (owner, scope) = match (&caller.access_key, &caller.owner) {
            (Some(grant), _) => (grant.owner, Some(&grant.keys)),
            (None, Some(owner)) => (*owner, None),
            (None, None) => {
                return Err(OpError::Forbidden(
                    "listing keys needs an access key or the owner's certificate".into(),
                ));
            }
        };
        let list = self.list_keys(&owner)?;
        let mut ids: Vec<String> = list
            .keys
            .into_iter()
            .map(|k| k.key_id)
            .filter(|id| scope.is_none_or(|s| s.iter().any(|k| k == "*" || k == id)))
            .collect();
        ids.sort();
        ids.dedup();
        self.audit(AuditDraft {
            owner: Some(owner.fingerprint()),
            ..draft(
                "list-keys",
                caller,
                None,
                None,
                format!("ok ({} keys)", ids.len()),
                now,
            )
        })?;
        Ok(ids)
    }

    /// Records the refusal of a request before any operation ran (malformed, or an
    /// operation this API does not offer), then returns it.
    /// The entry goes to the log of the access key's creator, who sees what its keys
    /// attempted.
    pub fn refuse_request(&self, caller: &Caller, op: &str, err: OpError, now: u64) -> OpError {
        let why = format!("denied: {err}");
        let d = AuditDraft {
            owner: caller.access_key.as_ref().map(|a| a.owner.fingerprint()),
            ..draft(op, caller, None, None, why, now)
        };
        self.refuse(d, err)
    }
}
