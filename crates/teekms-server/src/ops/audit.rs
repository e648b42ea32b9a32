//! Reading and verifying the audit log.

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
        Ok(verification(&key, |from| {
            self.reader().audit_entries(from, PAGE)
        })?)
    }
}

/// Entries read per page.
const PAGE: u64 = 4096;

/// Checks a stored audit log, a page at a time (`read(from)` gives the entries stored at
/// positions `from` and after): the report `teekms audit verify` prints.
pub fn verification(
    key: &[u8; 32],
    mut read: impl FnMut(u64) -> Result<Vec<teekms_store::AuditRow>, teekms_store::StoreError>,
) -> Result<AuditVerification, teekms_store::StoreError> {
    let mut v = teekms_core::audit::LogVerifier::new(key);
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
