//! The audit log: a hash chain of MAC'd entries (spec/audit-v1.md).
//!
//! Entry `n` carries `prev` = the chain hash after entry `n-1` (all zeros for the first)
//! and `mac` = HMAC-SHA256(audit key, canonical bytes of its fields). The chain hash after
//! it is SHA-256(canonical bytes | mac). The audit key is derived from the cluster key,
//! so only a TEE holding it can write entries that verify; altering an entry breaks its
//! MAC, deleting or reordering entries breaks `seq` or `prev`.

use serde::{Deserialize, Serialize};
use teekms_attest::codec::Writer;
use teekms_attest::hexbytes::HexBytes;
use zeroize::Zeroizing;

pub mod export;
pub mod stored;

const ENTRY_LABEL: &[u8] = b"teekms/v1/audit-entry";
/// The subkey label of the audit MAC key (see [`crate::SealingKey::derive`]).
pub const AUDIT_KEY_LABEL: &str = "teekms/v1/audit-mac";

/// What an operation asks to have recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditDraft {
    /// Node clock, Unix seconds (informational: the host controls it).
    pub time: u64,
    /// Operation name (`encrypt`, `rotate`, `access-create`, ...).
    pub operation: String,
    /// Fingerprint of the key's owner, when a key is concerned.
    pub owner: Option<String>,
    /// The key id, when a key is concerned.
    pub key_id: Option<String>,
    /// The key version used, when one is.
    pub key_version: Option<u64>,
    /// `ok`, or `denied: ...` / `error: ...`.
    pub outcome: String,
    /// The caller: `owner:<fp>`, `access-key:<id>`, `workload:<claims digest>`, joined
    /// by `+`; or `anonymous`.
    pub caller: String,
}

/// A chained entry as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// The recorded fields.
    #[serde(flatten)]
    pub draft: AuditDraft,
    /// Chain hash after the previous entry.
    pub prev: HexBytes<32>,
    /// HMAC-SHA256 of the canonical bytes under the audit key.
    pub mac: HexBytes<32>,
}

fn canonical(seq: u64, d: &AuditDraft, prev: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::with_label(ENTRY_LABEL);
    w.u64(seq)
        .u64(d.time)
        .str(&d.operation)
        .opt_bytes(d.owner.as_deref().map(str::as_bytes))
        .opt_bytes(d.key_id.as_deref().map(str::as_bytes))
        .opt_bytes(d.key_version.map(u64::to_be_bytes).as_ref().map(|b| &b[..]))
        .str(&d.outcome)
        .str(&d.caller)
        .bytes(prev);
    w.finish()
}

fn chain_hash(canonical: &[u8], mac: &[u8; 32]) -> [u8; 32] {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(canonical);
    h.update(mac);
    h.finish().as_ref().try_into().expect("32 bytes")
}

/// The writer's view of the chain: the next position and the hash to chain from.
pub struct AuditChain {
    /// The MAC key, its HMAC key schedule made once (every entry is MAC'd with it).
    mac_key: aws_lc_rs::hmac::Key,
    next_seq: u64,
    head: [u8; 32],
}

impl AuditChain {
    /// A chain continuing after `last` (the newest stored entry, if any). If that entry's
    /// MAC does not verify, the chain still continues from it (so the node keeps
    /// serving) and the break is returned, to be logged; `audit verify` reports it.
    pub fn resume(
        key: Zeroizing<[u8; 32]>,
        last: Option<&AuditEntry>,
    ) -> (AuditChain, Option<AuditBreak>) {
        let mut broken = None;
        let (next_seq, head) = match last {
            None => (1, [0u8; 32]),
            Some(e) => {
                let c = canonical(e.seq, &e.draft, &e.prev.0);
                if crate::hmac256(key.as_ref(), &[&c]) != e.mac.0 {
                    broken = Some(AuditBreak {
                        seq: e.seq,
                        reason: "the newest entry's MAC does not verify".into(),
                    });
                }
                (e.seq + 1, chain_hash(&c, &e.mac.0))
            }
        };
        (
            AuditChain {
                mac_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_ref()),
                next_seq,
                head,
            },
            broken,
        )
    }

    /// Appends a draft: the entry to store.
    pub fn append(&mut self, draft: AuditDraft) -> AuditEntry {
        let c = canonical(self.next_seq, &draft, &self.head);
        let mac: [u8; 32] = aws_lc_rs::hmac::sign(&self.mac_key, &c)
            .as_ref()
            .try_into()
            .expect("32 bytes");
        let entry = AuditEntry {
            seq: self.next_seq,
            draft,
            prev: HexBytes(self.head),
            mac: HexBytes(mac),
        };
        self.head = chain_hash(&c, &mac);
        self.next_seq += 1;
        entry
    }

    /// The position and chain hash after the last appended entry.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.next_seq - 1, self.head)
    }

    /// Forgets appends that were not stored (a failed transaction).
    pub fn reset_to(&mut self, head: (u64, [u8; 32])) {
        self.next_seq = head.0 + 1;
        self.head = head.1;
    }
}

/// The first entry where the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at entry {seq}: {reason}")]
pub struct AuditBreak {
    /// The position of the first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Verifies a log entry by entry in stored order, so that a long log needs no more
/// memory than a page of it.
pub struct LogVerifier<'k> {
    key: &'k [u8; 32],
    expected_seq: u64,
    head: [u8; 32],
}

impl<'k> LogVerifier<'k> {
    /// A verifier for a log written under `key`, from its first entry.
    pub fn new(key: &'k [u8; 32]) -> LogVerifier<'k> {
        LogVerifier {
            key,
            expected_seq: 1,
            head: [0u8; 32],
        }
    }

    /// A verifier for a log whose entries up to `seq` were pruned, from the checkpoint
    /// kept for them: the chain hash `head` after entry `seq`.
    pub fn after(key: &'k [u8; 32], seq: u64, head: [u8; 32]) -> LogVerifier<'k> {
        LogVerifier {
            key,
            expected_seq: seq + 1,
            head,
        }
    }

    /// Checks the entry stored at `position`.
    pub fn push(&mut self, position: u64, bytes: &[u8]) -> Result<(), AuditBreak> {
        let e = stored::decode(bytes).map_err(|err| AuditBreak {
            seq: position,
            reason: format!("the entry does not parse: {err}"),
        })?;
        self.push_entry(position, &e)
    }

    /// Checks a decoded entry stored at `position`.
    pub fn push_entry(&mut self, position: u64, e: &AuditEntry) -> Result<(), AuditBreak> {
        let broken = |reason: String| AuditBreak {
            seq: position,
            reason,
        };
        if e.seq != position || position != self.expected_seq {
            return Err(broken(format!(
                "expected entry {} here, found entry {} stored at {position} (entries deleted or reordered)",
                self.expected_seq, e.seq
            )));
        }
        let c = canonical(e.seq, &e.draft, &e.prev.0);
        if crate::hmac256(self.key, &[&c]) != e.mac.0 {
            return Err(broken(
                "its MAC does not verify (the entry was altered)".into(),
            ));
        }
        if e.prev.0 != self.head {
            return Err(broken(
                "it does not chain from the entry before it (entries deleted, replaced or reordered)".into(),
            ));
        }
        self.head = chain_hash(&c, &e.mac.0);
        self.expected_seq += 1;
        Ok(())
    }

    /// The number of entries verified and the chain hash after the last one.
    pub fn finish(self) -> (u64, [u8; 32]) {
        (self.expected_seq - 1, self.head)
    }
}

/// Verifies a whole log in stored order: `(stored position, entry bytes)` pairs. Returns
/// the number of entries and the final chain hash.
pub fn verify_log<'a>(
    key: &[u8; 32],
    entries: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<(u64, [u8; 32]), AuditBreak> {
    let mut v = LogVerifier::new(key);
    for (position, bytes) in entries {
        v.push(position, bytes)?;
    }
    Ok(v.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(op: &str) -> AuditDraft {
        AuditDraft {
            time: 1,
            operation: op.into(),
            owner: Some("ab".into()),
            key_id: Some("db".into()),
            key_version: Some(1),
            outcome: "ok".into(),
            caller: "anonymous".into(),
        }
    }

    fn log(n: usize) -> Vec<Vec<u8>> {
        let (mut chain, _) = AuditChain::resume(Zeroizing::new([5; 32]), None);
        (0..n)
            .map(|i| serde_json::to_vec(&chain.append(draft(&format!("op{i}")))).unwrap())
            .collect()
    }

    fn check(entries: &[Vec<u8>]) -> Result<(u64, [u8; 32]), AuditBreak> {
        verify_log(
            &[5; 32],
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (i as u64 + 1, e.as_slice())),
        )
    }

    #[test]
    fn alterations_deletions_and_reorderings_are_caught_at_the_first_broken_entry() {
        let good = log(5);
        assert_eq!(check(&good).unwrap().0, 5);
        let mut altered = good.clone();
        altered[2] = String::from_utf8(altered[2].clone())
            .unwrap()
            .replace("op2", "opX")
            .into_bytes();
        assert_eq!(check(&altered).unwrap_err().seq, 3);
        let mut deleted = good.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted).unwrap_err().seq, 2);
        let mut swapped = good.clone();
        swapped.swap(3, 4);
        assert_eq!(check(&swapped).unwrap_err().seq, 4);
        assert!(
            verify_log(
                &[6; 32],
                good.iter()
                    .enumerate()
                    .map(|(i, e)| (i as u64 + 1, e.as_slice()))
            )
            .is_err()
        );
    }

    #[test]
    fn resume_continues_the_chain() {
        let good = log(3);
        let last: AuditEntry = serde_json::from_slice(&good[2]).unwrap();
        let (mut chain, broken) = AuditChain::resume(Zeroizing::new([5; 32]), Some(&last));
        assert!(broken.is_none());
        let mut all = good.clone();
        all.push(serde_json::to_vec(&chain.append(draft("more"))).unwrap());
        assert_eq!(check(&all).unwrap().0, 4);
        assert!(
            AuditChain::resume(Zeroizing::new([6; 32]), Some(&last))
                .1
                .is_some()
        );
    }
}
