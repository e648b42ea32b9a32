//! Reading and verifying the audit log.

use super::*;

impl AppState {
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
