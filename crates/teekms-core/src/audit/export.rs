//! Exported audit logs (spec/audit-export-v1.md): JSON lines a node writes for a range
//! of its log, ending with a checkpoint it signs with its attested key; anyone holding
//! the node's evidence verifies them offline, and consecutive exports join.
//!
//! The MACs of the entries need the cluster's audit key, which never leaves a TEE: the
//! node checks them (and the chain) while it exports, and signs the chain hash it
//! reached. Offline, the chain is recomputed from the lines (the chain hash commits to
//! every field of every entry, MAC included) and must reach the signed hash.

use serde::{Deserialize, Serialize};
use teekms_attest::codec::Writer;
use teekms_attest::hexbytes::HexBytes;

use super::{AuditDraft, AuditEntry, canonical, chain_hash};
use crate::api::B64;

/// The version of the export format.
pub const EXPORT_VERSION: u32 = 1;
/// Domain-separation label of the checkpoint's signed bytes.
pub const CHECKPOINT_LABEL: &[u8] = b"teekms/v1/audit-checkpoint";

/// One line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportLine {
    /// The first line: where the range starts, and the chain hash before it.
    Start {
        /// [`EXPORT_VERSION`].
        version: u32,
        /// The first position of the range.
        from: u64,
        /// The chain hash after entry `from - 1` (zeros before the first entry).
        prev: HexBytes<32>,
    },
    /// An entry shown in full, with the chain hash after it.
    Entry {
        /// The entry's fields, as `audit tail --json` shows them.
        #[serde(flatten)]
        entry: Box<ExportedEntry>,
    },
    /// Entries the exporter may not see (another owner's), as the chain hash after the
    /// last of them.
    Link {
        /// The first position left out.
        from: u64,
        /// The last position left out.
        to: u64,
        /// The chain hash after entry `to`.
        head: HexBytes<32>,
    },
    /// The last line: the range, the chain hash reached, signed by the node.
    Checkpoint(Checkpoint),
}

/// An entry and the chain hash after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEntry {
    /// Position.
    pub seq: u64,
    /// See [`AuditDraft`].
    pub time: u64,
    /// See [`AuditDraft`].
    pub operation: String,
    /// See [`AuditDraft`].
    pub owner: Option<String>,
    /// See [`AuditDraft`].
    pub key_id: Option<String>,
    /// See [`AuditDraft`].
    pub key_version: Option<u64>,
    /// See [`AuditDraft`].
    pub outcome: String,
    /// See [`AuditDraft`].
    pub caller: String,
    /// The chain hash after the previous entry.
    pub prev: HexBytes<32>,
    /// The entry's MAC under the audit key.
    pub mac: HexBytes<32>,
    /// The chain hash after this entry.
    pub head: HexBytes<32>,
}

impl ExportedEntry {
    /// `entry` with the chain hash after it (computed).
    pub fn of(entry: &AuditEntry) -> ExportedEntry {
        let d = &entry.draft;
        ExportedEntry {
            seq: entry.seq,
            time: d.time,
            operation: d.operation.clone(),
            owner: d.owner.clone(),
            key_id: d.key_id.clone(),
            key_version: d.key_version,
            outcome: d.outcome.clone(),
            caller: d.caller.clone(),
            prev: entry.prev,
            mac: entry.mac,
            head: HexBytes(entry_hash(entry)),
        }
    }

    fn entry(&self) -> AuditEntry {
        AuditEntry {
            seq: self.seq,
            draft: AuditDraft {
                time: self.time,
                operation: self.operation.clone(),
                owner: self.owner.clone(),
                key_id: self.key_id.clone(),
                key_version: self.key_version,
                outcome: self.outcome.clone(),
                caller: self.caller.clone(),
            },
            prev: self.prev,
            mac: self.mac,
        }
    }
}

/// The chain hash after `entry`.
pub fn entry_hash(entry: &AuditEntry) -> [u8; 32] {
    chain_hash(
        &canonical(entry.seq, &entry.draft, &entry.prev.0),
        &entry.mac.0,
    )
}

/// The signed end of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The node that made the export (its attested signing key signed this).
    pub node_id: String,
    /// The first position of the range.
    pub from: u64,
    /// The chain hash before it.
    pub prev: HexBytes<32>,
    /// The last position of the range (`from - 1` for an empty one).
    pub to: u64,
    /// The chain hash after entry `to`.
    pub head: HexBytes<32>,
    /// When the node signed, Unix seconds (its clock).
    pub time: u64,
    /// How many entries are shown in full.
    pub shown: u64,
    /// SHA-256 over the positions of the entries shown in full (u64 big-endian each):
    /// none can be turned into a link unnoticed.
    pub shown_digest: HexBytes<32>,
    /// Ed25519 over [`Checkpoint::signed_bytes`].
    pub signature: B64,
}

impl Checkpoint {
    /// The canonical bytes the node signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_label(CHECKPOINT_LABEL);
        w.str(&self.node_id)
            .u64(self.from)
            .bytes(&self.prev.0)
            .u64(self.to)
            .bytes(&self.head.0)
            .u64(self.time)
            .u64(self.shown)
            .bytes(&self.shown_digest.0);
        w.finish()
    }
}

/// Builds an export's lines while the node walks its log (the node checks each entry's
/// MAC and chain before it is added).
pub struct ExportBuilder {
    from: u64,
    prev: [u8; 32],
    head: [u8; 32],
    next: u64,
    shown: u64,
    shown_digest: aws_lc_rs::digest::Context,
    pending_link: Option<(u64, u64, [u8; 32])>,
}

impl ExportBuilder {
    /// An export from position `from`, whose chain hash before it is `prev`; returns the
    /// builder and the start line.
    pub fn start(from: u64, prev: [u8; 32]) -> (ExportBuilder, ExportLine) {
        let builder = ExportBuilder {
            from,
            prev,
            head: prev,
            next: from,
            shown: 0,
            shown_digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            pending_link: None,
        };
        let line = ExportLine::Start {
            version: EXPORT_VERSION,
            from,
            prev: HexBytes(prev),
        };
        (builder, line)
    }

    /// Adds the next entry, in full (`shown`) or folded into a link; returns the lines
    /// ready to be written (a link is written once an entry in full follows, or at the
    /// end). The entry must be the next position and chain from the last.
    pub fn push(&mut self, entry: &AuditEntry, shown: bool) -> Vec<ExportLine> {
        assert_eq!(entry.seq, self.next, "entries in order");
        let head = entry_hash(entry);
        self.head = head;
        self.next += 1;
        if !shown {
            let from = self.pending_link.map_or(entry.seq, |(from, _, _)| from);
            self.pending_link = Some((from, entry.seq, head));
            return Vec::new();
        }
        self.shown += 1;
        self.shown_digest.update(&entry.seq.to_be_bytes());
        let mut lines: Vec<ExportLine> = self.take_link().into_iter().collect();
        lines.push(ExportLine::Entry {
            entry: Box::new(ExportedEntry::of(entry)),
        });
        lines
    }

    fn take_link(&mut self) -> Option<ExportLine> {
        self.pending_link
            .take()
            .map(|(from, to, head)| ExportLine::Link {
                from,
                to,
                head: HexBytes(head),
            })
    }

    /// Ends the export: a pending link, then the checkpoint signed by `sign`.
    pub fn finish(
        mut self,
        node_id: &str,
        time: u64,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Vec<ExportLine> {
        let mut lines: Vec<ExportLine> = self.take_link().into_iter().collect();
        let mut checkpoint = Checkpoint {
            node_id: node_id.to_owned(),
            from: self.from,
            prev: HexBytes(self.prev),
            to: self.next - 1,
            head: HexBytes(self.head),
            time,
            shown: self.shown,
            shown_digest: HexBytes(
                self.shown_digest
                    .finish()
                    .as_ref()
                    .try_into()
                    .expect("32 bytes"),
            ),
            signature: B64(Vec::new()),
        };
        checkpoint.signature = B64(sign(&checkpoint.signed_bytes()).to_vec());
        lines.push(ExportLine::Checkpoint(checkpoint));
        lines
    }
}

/// What a verified export covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Its checkpoint (signature verified).
    pub checkpoint: Checkpoint,
    /// Entries shown in full.
    pub shown: u64,
    /// Entries left out as links (another owner's).
    pub linked: u64,
}

/// Why an export does not verify: the line (from 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExportError {
    /// The line where verification stopped (0: the file as a whole).
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// Verifies an export: each line parses, positions follow without a gap, each entry
/// chains from the one before, its stated chain hash is the one computed, and the
/// checkpoint — the last line — states the range, the chain hash reached and the
/// entries shown, signed by `node_id`'s attested key `signing_key`.
pub fn verify_export(
    text: &str,
    node_id: &str,
    signing_key: &[u8; 32],
) -> Result<ExportSummary, ExportError> {
    let fail = |line: usize, reason: String| Err(ExportError { line, reason });
    let count = text.lines().count();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let parse = |n: usize, l: &str| -> Result<ExportLine, ExportError> {
        serde_json::from_str(l).map_err(|e| ExportError {
            line: n,
            reason: format!("does not parse: {e}"),
        })
    };
    let Some((n, first)) = lines.next() else {
        return fail(0, "the file is empty".into());
    };
    let ExportLine::Start {
        version,
        from,
        prev,
    } = parse(n, first)?
    else {
        return fail(n, "the first line must be the start of an export".into());
    };
    if version != EXPORT_VERSION {
        return fail(n, format!("export version {version} is not supported"));
    }
    if from == 0 {
        return fail(n, "positions start at 1".into());
    }
    let (mut head, mut next) = (prev.0, from);
    let (mut shown, mut linked) = (0u64, 0u64);
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut previous_was_link = false;
    for (n, text) in lines {
        match parse(n, text)? {
            ExportLine::Start { .. } => return fail(n, "a second start line".into()),
            ExportLine::Entry { entry } => {
                if entry.seq != next {
                    return fail(
                        n,
                        format!(
                            "expected entry {next}, found entry {} (entries left out or reordered)",
                            entry.seq
                        ),
                    );
                }
                if entry.prev.0 != head {
                    return fail(
                        n,
                        format!("entry {next} does not chain from the line before it"),
                    );
                }
                let computed = entry_hash(&entry.entry());
                if computed != entry.head.0 {
                    return fail(
                        n,
                        format!("entry {next}'s stated chain hash is not its own (altered)"),
                    );
                }
                head = computed;
                digest.update(&next.to_be_bytes());
                shown += 1;
                next = match next.checked_add(1) {
                    Some(following) => following,
                    None => return fail(n, "positions past the last one there can be".into()),
                };
                previous_was_link = false;
            }
            ExportLine::Link { from, to, head: h } => {
                if from != next || to < from {
                    return fail(
                        n,
                        format!("a link of entries {from} to {to} where entry {next} was due"),
                    );
                }
                if previous_was_link {
                    return fail(n, "two links in a row (an export writes one)".into());
                }
                // Positions come from the file: none may run past u64.
                let Some(after) = to.checked_add(1) else {
                    return fail(n, "a link past the last position there can be".into());
                };
                linked = linked.saturating_add(after - from);
                head = h.0;
                next = after;
                previous_was_link = true;
            }
            ExportLine::Checkpoint(c) => {
                let stated = (c.from, c.prev.0, c.to, c.head.0, c.shown);
                if stated != (from, prev.0, next - 1, head, shown)
                    || c.shown_digest.0[..] != *digest.finish().as_ref()
                {
                    return fail(
                        n,
                        "the checkpoint does not match the lines before it (lines added, removed or altered)".into(),
                    );
                }
                if c.node_id != node_id {
                    return fail(
                        n,
                        format!(
                            "the checkpoint was signed by node {}, not the one whose evidence was given ({node_id})",
                            c.node_id
                        ),
                    );
                }
                if !teekms_attest::ed25519_verify(signing_key, &c.signed_bytes(), &c.signature.0) {
                    return fail(
                        n,
                        "the checkpoint's signature does not verify against the node's attested key".into(),
                    );
                }
                if n != count {
                    return fail(n + 1, "lines after the checkpoint".into());
                }
                return Ok(ExportSummary {
                    checkpoint: c,
                    shown,
                    linked,
                });
            }
        }
    }
    fail(
        0,
        "the export ends without its checkpoint (cut short?)".into(),
    )
}

/// Checks that verified exports, in the order given, join into one chain: each starts
/// right after the one before and from the chain hash it reached.
pub fn check_joined(exports: &[ExportSummary]) -> Result<(), String> {
    for (i, pair) in exports.windows(2).enumerate() {
        let (a, b) = (&pair[0].checkpoint, &pair[1].checkpoint);
        if a.to.checked_add(1) != Some(b.from) || b.prev != a.head {
            return Err(format!(
                "export {} (entries {} to {}) does not continue export {} (entries {} to {})",
                i + 2,
                b.from,
                b.to,
                i + 1,
                a.from,
                a.to
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditChain;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use zeroize::Zeroizing;

    fn signer() -> (Ed25519KeyPair, [u8; 32]) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().try_into().unwrap();
        (pair, public)
    }

    fn log(n: u64) -> Vec<AuditEntry> {
        let (mut chain, _) = AuditChain::resume(Zeroizing::new([5; 32]), None);
        (1..=n)
            .map(|i| {
                chain.append(AuditDraft {
                    time: i,
                    operation: "encrypt".into(),
                    owner: Some(if i % 3 == 0 { "other" } else { "me" }.into()),
                    key_id: Some("db".into()),
                    key_version: Some(1),
                    outcome: "ok".into(),
                    caller: "owner:x".into(),
                })
            })
            .collect()
    }

    /// The export of `entries[from-1..to]` as text, another owner's entries as links.
    fn export(entries: &[AuditEntry], from: u64, to: u64, key: &Ed25519KeyPair) -> String {
        let prev = if from == 1 {
            [0; 32]
        } else {
            entry_hash(&entries[from as usize - 2])
        };
        let (mut b, start) = ExportBuilder::start(from, prev);
        let mut lines = vec![start];
        for e in &entries[from as usize - 1..to as usize] {
            lines.extend(b.push(e, e.draft.owner.as_deref() == Some("me")));
        }
        lines.extend(b.finish("node-1", 99, |m| key.sign(m).as_ref().try_into().unwrap()));
        lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn an_export_verifies_and_consecutive_exports_join() {
        let (key, public) = signer();
        let entries = log(10);
        let a = verify_export(&export(&entries, 1, 6, &key), "node-1", &public).unwrap();
        let b = verify_export(&export(&entries, 7, 10, &key), "node-1", &public).unwrap();
        assert_eq!((a.shown, a.linked), (4, 2));
        assert_eq!(b.checkpoint.head.0, entry_hash(&entries[9]));
        check_joined(&[a.clone(), b.clone()]).unwrap();
        assert!(check_joined(&[b, a]).is_err());
        let c = verify_export(&export(&entries, 8, 10, &key), "node-1", &public).unwrap();
        let a = verify_export(&export(&entries, 1, 6, &key), "node-1", &public).unwrap();
        assert!(check_joined(&[a, c]).is_err(), "entry 7 is missing");
    }

    #[test]
    fn every_alteration_is_caught() {
        let (key, public) = signer();
        let (_, stranger) = signer();
        let entries = log(9);
        let good = export(&entries, 1, 9, &key);
        let lines: Vec<&str> = good.lines().collect();
        let check = |text: String| verify_export(&text, "node-1", &public);
        let without = |i: usize| {
            let mut l = lines.clone();
            l.remove(i);
            l.join("\n")
        };
        let replaced = |i: usize, line: String| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l[i] = line;
            l.join("\n")
        };
        assert!(check(good.clone()).is_ok());
        assert!(
            verify_export(&good, "node-1", &stranger).is_err(),
            "another node's key"
        );
        assert!(
            verify_export(&good, "node-2", &public).is_err(),
            "another node"
        );
        assert!(
            check(good.replace("\"ok\"", "\"no\"")).is_err(),
            "an outcome changed"
        );
        assert!(check(without(1)).is_err(), "an entry removed");
        assert!(
            check(without(lines.len() - 1)).is_err(),
            "the checkpoint cut off"
        );
        assert!(check(without(0)).is_err(), "the start removed");
        assert!(
            check(format!("{good}{}", lines[1])).is_err(),
            "a line after the checkpoint"
        );
        // An entry shown in full turned into a link of itself: the chain still reaches
        // the head, the checkpoint's count and digest do not match.
        let first: ExportLine = serde_json::from_str(lines[1]).unwrap();
        let ExportLine::Entry { entry } = first else {
            panic!("entry 1 is mine")
        };
        let as_link = ExportLine::Link {
            from: 1,
            to: 1,
            head: entry.head,
        };
        assert!(check(replaced(1, serde_json::to_string(&as_link).unwrap())).is_err());
        let mut extra: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        extra["surprise"] = 1.into();
        assert!(
            check(replaced(1, extra.to_string())).is_err(),
            "unknown fields"
        );
        assert!(check(String::new()).is_err());
    }

    #[test]
    fn positions_that_would_wrap_are_refused_not_wrapped() {
        let (_, public) = signer();
        let start = format!(
            "{{\"type\":\"start\",\"version\":1,\"from\":1,\"prev\":\"{}\"}}",
            "00".repeat(32)
        );
        let link = format!(
            "{{\"type\":\"link\",\"from\":1,\"to\":18446744073709551615,\"head\":\"{}\"}}",
            "00".repeat(32)
        );
        let err = verify_export(&format!("{start}\n{link}\n"), "node-1", &public).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }
}
