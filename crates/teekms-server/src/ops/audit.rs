//! Reading and verifying the audit log.

use teekms_core::audit::AuditEntry;

use super::*;

impl Service {
    /// Recent entries about the caller's keys or by the caller (owners), read from the
    /// newest backwards a page at a time.
    pub fn audit_tail(&self, caller: &Caller, n: usize) -> Result<AuditTail, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let fp = owner.fingerprint();
        let mut entries = Vec::new();
        let mut before = u64::MAX;
        while entries.len() < n {
            let page = self.reader().audit_entries_before(before, PAGE)?;
            let Some(oldest) = page.last() else {
                break;
            };
            before = oldest.seq;
            for row in &page {
                if let Ok(e) = teekms_core::audit::stored::decode(&row.entry)
                    && (e.draft.owner.as_deref() == Some(&fp) || e.draft.caller.contains(&fp))
                    && entries.len() < n
                {
                    entries.push(e);
                }
            }
        }
        entries.reverse();
        Ok(AuditTail { entries })
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
            .keyring
            .cluster()
            .derive(teekms_core::audit::AUDIT_KEY_LABEL);
        let base = audit_base(&self.keyring, self.reader().as_mut())?;
        Ok(verification(&key, base, |from| {
            self.reader().audit_entries(from, PAGE)
        })?)
    }
}

/// Entries read per page.
const PAGE: u64 = 4096;

/// Checks a stored audit log, a page at a time (`read(from)` gives the entries stored at
/// positions `from` and after), from the pruning checkpoint `base` (the last pruned
/// position and the chain hash after it; `(0, zeros)` if nothing was pruned): the
/// report `teekms audit verify` prints.
pub fn verification(
    key: &[u8; 32],
    (base, head): (u64, [u8; 32]),
    mut read: impl FnMut(u64) -> Result<Vec<teekms_store::AuditRow>, teekms_store::StoreError>,
) -> Result<AuditVerification, teekms_store::StoreError> {
    let mut v = teekms_core::audit::LogVerifier::after(key, base, head);
    let mut from = 1;
    loop {
        let page = read(from)?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for row in &page {
            if let Err(b) = v.push(row.seq, &row.entry) {
                return Ok(AuditVerification {
                    ok: false,
                    entries: b.seq.saturating_sub(1),
                    broken_at: Some(b.seq),
                    reason: Some(b.reason),
                });
            }
        }
    }
    let (n, _) = v.finish();
    Ok(AuditVerification {
        ok: true,
        entries: n,
        broken_at: None,
        reason: None,
    })
}

/// Meta record: the checkpoint kept when entries are pruned (the last pruned position
/// and the chain hash after it), sealed under the cluster key.
const AUDIT_BASE: &str = "audit-base";
/// Meta record: the log is exported without a gap up to this position (sealed).
const AUDIT_EXPORTED: &str = "audit-exported";

/// The last pruned position and the chain hash after it (`(0, zeros)`: nothing pruned).
pub fn audit_base(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
) -> Result<(u64, [u8; 32]), OpError> {
    let Some(record) = store.get_meta(AUDIT_BASE)? else {
        return Ok((0, [0; 32]));
    };
    let bytes = keyring
        .cluster()
        .open(AUDIT_BASE, "audit", 1, &record)
        .map_err(|e| OpError::Damaged(format!("the audit log's pruning checkpoint: {e}")))?;
    let (seq, head) = bytes.split_at_checked(8).ok_or_else(|| {
        OpError::Damaged("the audit log's pruning checkpoint is malformed".into())
    })?;
    Ok((
        u64::from_be_bytes(seq.try_into().expect("8 bytes")),
        head.try_into().map_err(|_| {
            OpError::Damaged("the audit log's pruning checkpoint is malformed".into())
        })?,
    ))
}

/// How far the log was exported without a gap (at least `base`, the last pruned
/// position, already read by the caller).
fn exported_through(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
    base: u64,
) -> Result<u64, OpError> {
    let Some(record) = store.get_meta(AUDIT_EXPORTED)? else {
        return Ok(base);
    };
    let bytes = keyring
        .cluster()
        .open(AUDIT_EXPORTED, "audit", 1, &record)
        .map_err(|e| OpError::Damaged(format!("the audit log's export mark: {e}")))?;
    let through: [u8; 8] = bytes[..]
        .try_into()
        .map_err(|_| OpError::Damaged("the audit log's export mark is malformed".into()))?;
    Ok(u64::from_be_bytes(through).max(base))
}

/// Whether `entry` is about the owner `fp` or made by it (what `audit tail` shows it).
fn concerns(entry: &AuditEntry, fp: &str) -> bool {
    entry.draft.owner.as_deref() == Some(fp) || entry.draft.caller.contains(fp)
}

/// Whether `entry` is about, or made by, an owner other than `fp`.
fn another_owners(entry: &AuditEntry, fp: &str) -> bool {
    entry.draft.owner.as_deref().is_some_and(|o| o != fp)
        || entry
            .draft
            .caller
            .split('+')
            .filter_map(|part| part.strip_prefix("owner:"))
            .any(|o| o != fp)
}

/// Pages of the stored log from `from` to `to`, each entry decoded; a page that does
/// not decode is a broken log.
fn entries_between(
    service: &Service,
    from: u64,
    to: u64,
    mut each: impl FnMut(AuditEntry) -> Result<(), OpError>,
) -> Result<(), OpError> {
    let mut next = from;
    while next <= to {
        let page = service
            .reader()
            .audit_entries(next, PAGE.min(to - next + 1))?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let entry = teekms_core::audit::stored::decode(&row.entry).map_err(|e| {
                OpError::Damaged(format!(
                    "audit entry {} does not decode ({e}); run `teekms audit verify`",
                    row.seq
                ))
            })?;
            next = row.seq + 1;
            each(entry)?;
        }
    }
    Ok(())
}

impl Service {
    /// The owner who administers the whole log: the cluster admin, if there is one.
    fn is_log_admin(&self, fp: &str) -> Result<bool, OpError> {
        if !self.settings.shared_store {
            return Ok(false);
        }
        let admin = crate::node::read_cluster_admin(&self.keyring, self.reader().as_mut())
            .map_err(|e| OpError::Internal(format!("the cluster admin record: {e}")))?;
        Ok(admin.as_deref() == Some(fp))
    }

    /// `GET /v1/audit/export`: entries `from` to `to` (default: the newest) as export
    /// lines (spec/audit-export-v1.md), written through `emit` a page at a time; the
    /// entries about the caller in full (all of them for the cluster admin), the others
    /// as links. Each entry's MAC and chain are checked before it is exported; the
    /// checkpoint is signed with the node's attested key, and the export recorded.
    pub fn audit_export(
        &self,
        caller: &Caller,
        from: Option<u64>,
        to: Option<u64>,
        now: u64,
        mut emit: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let fp = owner.fingerprint();
        let everything = self.is_log_admin(&fp)?;
        let (base, base_head) = audit_base(&self.keyring, self.reader().as_mut())?;
        let last = self.reader().audit_last()?.map_or(0, |row| row.seq);
        let from = from.unwrap_or(base + 1);
        let to = to.unwrap_or(last);
        if from == 0 {
            return Err(OpError::BadRequest(
                "positions start at 1: give --from 1 or more".into(),
            ));
        }
        if from <= base {
            return Err(self.refuse(
                draft(
                    "audit-export",
                    caller,
                    None,
                    None,
                    "denied: range pruned",
                    now,
                ),
                OpError::NotFound(format!(
                    "entries up to {base} were pruned from this node's log; export from {}",
                    base + 1
                )),
            ));
        }
        if to > last || from > to.saturating_add(1) {
            return Err(OpError::BadRequest(format!(
                "the range {from} to {to} is not in the log (entries {} to {last})",
                base + 1
            )));
        }
        let key = self
            .keyring
            .cluster()
            .derive(teekms_core::audit::AUDIT_KEY_LABEL);
        // The chain hash before `from`: the pruning checkpoint's, or the one after entry
        // `from - 1`, whose MAC is checked first (so the start line is as verified as
        // the entries after it, an empty range included).
        let mut verifier = teekms_core::audit::LogVerifier::after(&key, base, base_head);
        let mut prev = base_head;
        if from - 1 > base {
            let mut before = None;
            entries_between(self, from - 1, from - 1, |e| {
                before = Some(e);
                Ok(())
            })?;
            let e = before.ok_or_else(|| {
                OpError::Damaged(format!(
                    "audit entry {} is not in the store; run `teekms audit verify`",
                    from - 1
                ))
            })?;
            verifier = teekms_core::audit::LogVerifier::after(&key, from - 2, e.prev.0);
            verifier.push_entry(e.seq, &e).map_err(|b| {
                OpError::Damaged(format!(
                    "{b}; nothing is exported (run `teekms audit verify`)"
                ))
            })?;
            prev = teekms_core::audit::export::entry_hash(&e);
        }
        let (mut builder, start) = teekms_core::audit::export::ExportBuilder::start(from, prev);
        let mut out = line_bytes(&[start]);
        let mut gone = false;
        entries_between(self, from, to, |e| {
            verifier.push_entry(e.seq, &e).map_err(|b| {
                OpError::Damaged(format!(
                    "{b}; nothing past it is exported (run `teekms audit verify`)"
                ))
            })?;
            let shown = everything || concerns(&e, &fp);
            out.extend(line_bytes(&builder.push(&e, shown)));
            if out.len() >= 1 << 16 {
                gone |= !emit(std::mem::take(&mut out));
            }
            if gone {
                return Err(OpError::BadRequest("the client went away".into()));
            }
            Ok(())
        })?;
        if verifier.finish().0 != to {
            return Err(OpError::Damaged(format!(
                "entries {from} to {to} are not all in the store; run `teekms audit verify`"
            )));
        }
        let node_id = hex::encode(self.keyring.keys().node_id().0);
        let keys = self.keyring.keys();
        out.extend(line_bytes(&builder.finish(&node_id, now, |m| keys.sign(m))));
        // Recorded (and the export mark moved) before the checkpoint is sent: a client
        // holding a checkpoint can always find its export in the log.
        let mut writes = Vec::new();
        let through = exported_through(&self.keyring, self.reader().as_mut(), base)?;
        if from <= through + 1 && to > through {
            writes.push(Write::PutMeta {
                name: AUDIT_EXPORTED.into(),
                record: self
                    .keyring
                    .cluster()
                    .seal(AUDIT_EXPORTED, "audit", 1, &to.to_be_bytes()),
            });
        }
        let outcome = format!("ok: entries {from} to {to}");
        self.writer.submit(Job {
            writes,
            audit: draft("audit-export", caller, None, None, outcome, now),
            on_conflict: "error",
        })?;
        if !emit(out) {
            return Err(OpError::BadRequest("the client went away".into()));
        }
        Ok(())
    }

    /// `POST /v1/audit/prune`: removes the entries before `before`, keeping a sealed
    /// checkpoint the rest of the chain verifies from. Refused for entries no export
    /// covers (unless `force`); for an owner other than the cluster admin, refused if
    /// any of them is another owner's. The newest entry always stays. Audited.
    pub fn audit_prune(
        &self,
        caller: &Caller,
        before: u64,
        force: bool,
        now: u64,
    ) -> Result<AuditPruned, OpError> {
        let owner = caller.owner.ok_or_else(|| {
            OpError::Unauthenticated("needs an owner's TLS client certificate".into())
        })?;
        let fp = owner.fingerprint();
        // One prune at a time on this node: each decides on the checkpoint it read.
        let _one = self.pruning.lock().expect("prune lock");
        let (base, base_head) = audit_base(&self.keyring, self.reader().as_mut())?;
        let last = self.reader().audit_last()?.map_or(0, |row| row.seq);
        if before <= base + 1 {
            return Ok(AuditPruned {
                pruned_through: base,
                removed: 0,
            });
        }
        if before > last {
            return Err(OpError::BadRequest(format!(
                "the newest entry ({last}) always stays: prune before at most {last}"
            )));
        }
        let through = exported_through(&self.keyring, self.reader().as_mut(), base)?;
        if !force && through < before - 1 {
            return Err(self.refuse(
                draft("audit-prune", caller, None, None, "denied: not exported", now),
                OpError::KeyState(format!(
                    "entries {} to {} were never exported: export them first (`teekms audit export --from {}`), or prune with --force",
                    through + 1,
                    before - 1,
                    through + 1
                )),
            ));
        }
        let everything = self.is_log_admin(&fp)?;
        let key = self
            .keyring
            .cluster()
            .derive(teekms_core::audit::AUDIT_KEY_LABEL);
        let mut verifier = teekms_core::audit::LogVerifier::after(&key, base, base_head);
        let mut foreign = None;
        entries_between(self, base + 1, before - 1, |e| {
            verifier.push_entry(e.seq, &e).map_err(|b| {
                OpError::Damaged(format!("{b}; nothing is pruned from a broken log"))
            })?;
            if !everything && foreign.is_none() && another_owners(&e, &fp) {
                foreign = Some(e.seq);
            }
            Ok(())
        })?;
        if let Some(seq) = foreign {
            return Err(self.refuse(
                draft("audit-prune", caller, None, None, "denied: another owner's entries", now),
                OpError::Forbidden(format!(
                    "entry {seq} is another owner's: only the cluster admin prunes entries of other owners"
                )),
            ));
        }
        let (checked, head) = verifier.finish();
        if checked != before - 1 {
            return Err(OpError::Damaged(format!(
                "entries {} to {} are not all in the store; run `teekms audit verify`",
                base + 1,
                before - 1
            )));
        }
        let mut checkpoint = (before - 1).to_be_bytes().to_vec();
        checkpoint.extend_from_slice(&head);
        let outcome = format!(
            "ok{}: entries {} to {} removed",
            if through < before - 1 {
                " (forced, not exported)"
            } else {
                ""
            },
            base + 1,
            before - 1
        );
        self.writer.submit(Job {
            writes: vec![
                Write::PutMeta {
                    name: AUDIT_BASE.into(),
                    record: self
                        .keyring
                        .cluster()
                        .seal(AUDIT_BASE, "audit", 1, &checkpoint),
                },
                Write::PruneAudit { before },
            ],
            audit: draft("audit-prune", caller, None, None, outcome, now),
            on_conflict: "error",
        })?;
        Ok(AuditPruned {
            pruned_through: before - 1,
            removed: before - 1 - base,
        })
    }
}

/// Export lines as JSON lines.
fn line_bytes(lines: &[teekms_core::audit::export::ExportLine]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, l).expect("lines serialize");
        out.push(b'\n');
    }
    out
}
