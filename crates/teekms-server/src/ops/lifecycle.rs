//! Key lifecycle: metadata, rotation, state, deletion, policy, export.

use super::*;

impl Service {
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
        let rows = self.reader().key_versions(&l.fp, l.key_id.as_str())?;
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
            owner: l.fp.clone(),
            current_version: l.state.current_version,
            min_decryption_version: l.state.min_decryption_version,
            enabled: l.state.enabled,
            deletion_at: l.state.deletion_at,
            exportable: l.policy.exportable,
            versions,
            arn: teekms_core::arn::key_arn(&self.settings.aws_region, &l.owner, l.key_id.as_str()),
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
                let why = format!("error: {}", e.reason());
                return Err(self.refuse(key_draft(op, caller, &l, None, why, now), e));
            }
        };
        next.revision = l.state.revision + 1;
        let fp = l.fp.clone();
        let mut writes = Vec::new();
        if let Some(rec) = &new_version {
            writes.push(Write::InsertKey(KeyRow {
                owner: fp.clone(),
                key_id: l.key_id.to_string(),
                key_version: rec.key_version,
                record: rec.seal(self.keyring.cluster()),
            }));
        }
        writes.push(Write::PutState {
            owner: fp,
            key_id: l.key_id.to_string(),
            revision: next.revision,
            expected: l.state.revision,
            record: next.seal(self.keyring.cluster(), &l.owner, &l.key_id),
        });
        // Whatever the outcome, the next use reads the stored state again: forgotten
        // once the change is durable, so no request that starts after the answer sees
        // the old state (a load that read before the commit is not cached, see
        // `KeyCache`).
        let applied = self.commit_change(Job {
            writes,
            audit: key_draft(
                op,
                caller,
                &l,
                new_version.as_ref().map(|r| r.key_version),
                "ok",
                now,
            ),
            on_conflict: "error: a concurrent change won; not applied",
        });
        self.cache.forget(&l.fp, l.key_id.as_str());
        let applied = applied?;
        if applied == Applied::Conflict {
            return Err(OpError::Retry(
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
        let min = self.settings.min_deletion_wait;
        let wait = match wait {
            Some(w) => parse_duration(w)?,
            None => DEFAULT_DELETION_WAIT.max(min),
        };
        if wait < min {
            return Err(bad(format!(
                "the waiting period must be at least {} on this node ({min} s; `teekms serve --min-deletion-wait`)",
                days(min)
            )));
        }
        let at = time_after(now, wait)?;
        self.change("schedule-deletion", caller, key, now, |_, s| {
            s.deletion_at = Some(at);
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
        let aad = format!("{}/{}/{}", l.fp, l.key_id, rec.key_version);
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
        let mut by_state = std::collections::BTreeMap::from([
            ("enabled", 0),
            ("disabled", 0),
            ("pending_deletion", 0),
        ]);
        for row in states {
            let Ok(key_id) = KeyId::new(&row.key_id) else {
                continue;
            };
            let Some(owner) = super::registered_owner(&mut **self.reader(), &row.owner)? else {
                continue;
            };
            let Ok(state) = KeyState::open(
                self.keyring.cluster(),
                &owner,
                &key_id,
                row.revision,
                &row.record,
            ) else {
                continue;
            };
            if state.deletion_at.is_some_and(|t| t <= now)
                && self.delete_due(&owner, &key_id, now)? == Deletion::Deleted
            {
                deleted += 1;
                continue;
            }
            let label = match (state.deletion_at, state.enabled) {
                (Some(_), _) => "pending_deletion",
                (None, true) => "enabled",
                (None, false) => "disabled",
            };
            *by_state.entry(label).or_default() += 1;
        }
        crate::metrics::METRICS.keys(by_state);
        Ok(deleted)
    }

    /// Deletes every version and the state of a key whose waiting period is over, and
    /// adds its id to the owner's record of deleted ids in the same job (deletion is
    /// final: the id is never deployed again).
    ///
    /// Decided on the state as stored now, and applied only over that revision: a
    /// cancellation (or any change) that commits first wins, and the deletion is decided
    /// again on what it left.
    pub(super) fn delete_due(
        &self,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        now: u64,
    ) -> Result<Deletion, OpError> {
        let fp = owner.fingerprint();
        let id = key_id.as_str();
        for _ in 0..5 {
            let floor_id = format!("{fp}/{id}");
            let Some(stored) = self.reader().get_state(&fp, id)? else {
                self.freshness()
                    .check_floor(Floor::KeyState, &floor_id, None)?;
                return Ok(Deletion::AlreadyGone);
            };
            let state = KeyState::open(
                self.keyring.cluster(),
                owner,
                key_id,
                stored.revision,
                &stored.record,
            )
            .map_err(|e| OpError::Damaged(e.to_string()))?;
            self.freshness()
                .check_floor(Floor::KeyState, &floor_id, Some(stored.revision))?;
            if state.deletion_at.is_none_or(|t| t > now) {
                return Ok(Deletion::NoLongerDue);
            }
            let record = self.owner_record(owner);
            let mut next = match record {
                Ok(super::OwnerRecord::Stored(state)) => state,
                Err(e @ OpError::Store(_)) => return Err(e),
                Ok(super::OwnerRecord::New) | Err(_) => {
                    return Err(OpError::Damaged(format!(
                        "the record of owner {fp} is missing or damaged; key {id:?} is not deleted until the store is restored"
                    )));
                }
            };
            let expected = next.revision;
            next.revision += 1;
            next.deleted.entry(id.to_owned()).or_insert(now);
            let job = Job {
                writes: vec![
                    Write::DeleteKey {
                        owner: fp.clone(),
                        key_id: id.into(),
                        revision: stored.revision,
                    },
                    Write::PutOwnerState {
                        owner: fp.clone(),
                        revision: next.revision,
                        expected,
                        record: next.seal(self.keyring.cluster(), owner),
                    },
                ],
                audit: AuditDraft {
                    time: now,
                    operation: "delete".into(),
                    owner: Some(fp.clone()),
                    key_id: Some(id.into()),
                    key_version: None,
                    outcome: "ok (waiting period over)".into(),
                    caller: "node".into(),
                },
                on_conflict: "error: the key or its owner's record changed concurrently; decided again",
            };
            let applied = self.commit_change(job);
            self.cache.forget(&fp, id);
            if applied? == Applied::Done {
                return Ok(Deletion::Deleted);
            }
        }
        Err(OpError::Retry(format!(
            "key {id:?} could not be deleted: it or its owner's record kept changing; it is tried again at the next sweep"
        )))
    }
}

/// What [`Service::delete_due`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Deletion {
    /// Deleted now.
    Deleted,
    /// There was nothing left to delete.
    AlreadyGone,
    /// A change committed first: the key is no longer due (its deletion was cancelled).
    NoLongerDue,
}

/// A duration in whole days and the rest in hours, as a person reads it ("7 days",
/// "1 day 12 h", "2 h").
fn days(secs: u64) -> String {
    let (d, h) = (secs / 86_400, secs % 86_400 / 3600);
    match (d, h) {
        (0, h) => format!("{h} h"),
        (1, 0) => "1 day".into(),
        (d, 0) => format!("{d} days"),
        (1, h) => format!("1 day {h} h"),
        (d, h) => format!("{d} days {h} h"),
    }
}
