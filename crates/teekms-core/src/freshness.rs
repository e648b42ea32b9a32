//! Freshness (spec/freshness-v1.md): the epoch chain that lets a node, and its owners,
//! tell the store they are shown from an older copy of it.
//!
//! Every write batch that changes state also stores an [`EpochRecord`]: epoch E, and a
//! hash H that chains the previous H, what the batch changed ([`Change`]) and the audit
//! head. Nodes keep the latest (E, H) in memory; every answer carries it in a [`Stamp`]
//! signed inside the TEE, and owners keep the highest they were shown
//! ([`Acknowledged`]), so that a node restarted on an old copy of its store is caught
//! by the owners who hold newer stamps ([`compare`]).

use serde::{Deserialize, Serialize};
use teekms_attest::VerifiedNode;
use teekms_attest::codec::{Reader, Writer};
use teekms_attest::hexbytes::HexBytes;

use crate::NodeKeys;

/// The HTTP response header that carries a node's [`Stamp`] on every answer.
pub const STAMP_HEADER: &str = "teekms-epoch";
const EPOCH_LABEL: &[u8] = b"teekms/v1/epoch";
const STAMP_LABEL: &[u8] = b"teekms/v1/epoch-stamp";
/// Version byte of an encoded [`EpochRecord`].
const RECORD_VERSION: u8 = 1;
/// Length of an encoded [`EpochRecord`].
pub const RECORD_LEN: usize = 1 + 8 + 32 + 16 + 8 + 32;

/// A point in the epoch chain: (E, H). Epoch 0 with an all-zero hash is the empty store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// E: how many state-changing batches the store has seen.
    pub number: u64,
    /// H: the chain hash after them.
    pub hash: [u8; 32],
}

impl Epoch {
    /// The short form people read: `E/first 12 hex digits of H`.
    pub fn short(&self) -> String {
        format!("{}/{}", self.number, &hex::encode(self.hash)[..12])
    }
}

/// What kind of record a [`Change`] wrote. The numbers are part of the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ChangeKind {
    /// A key version was stored (id `owner/key_id/version`).
    KeyVersion = 1,
    /// A key's state was stored (id `owner/key_id`, version its revision).
    KeyState = 2,
    /// A key was deleted, every version and its state (version: the state revision).
    KeyDeleted = 3,
    /// An access key was stored (version: its revision; 2 is revoked).
    AccessKey = 4,
    /// An owner's record was stored (version: its revision).
    OwnerState = 5,
    /// A cluster record (cluster policy, audit checkpoints) was replaced (id: its name).
    Meta = 6,
    /// An owner's public key was registered.
    Owner = 7,
    /// The audit log was pruned (version: the first entry kept).
    AuditPrune = 8,
}

/// One change of a batch, as the epoch hash covers it.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    /// What was written.
    pub kind: ChangeKind,
    /// Where (see [`ChangeKind`]).
    pub id: &'a str,
    /// Its version or revision.
    pub version: u64,
    /// The sealed record written (empty for a deletion).
    pub record: &'a [u8],
}

/// The sealed record that ends every state-changing batch (spec/freshness-v1.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochRecord {
    /// (E, H) after the batch.
    pub epoch: Epoch,
    /// The writer process that wrote it: random, new at every start. A single node
    /// that finds another incarnation's record after its own knows a second process
    /// writes its store.
    pub incarnation: [u8; 16],
    /// The audit log's head when the batch committed: position and chain hash.
    pub audit_seq: u64,
    /// The MAC of the entry at `audit_seq` (zeros for an empty log).
    pub audit_head: [u8; 32],
}

/// An epoch record that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("the epoch record does not parse: {0}")]
pub struct RecordError(&'static str);

impl EpochRecord {
    /// The canonical bytes (sealed by the node before they are stored).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.epoch.number.to_be_bytes());
        out.extend_from_slice(&self.epoch.hash);
        out.extend_from_slice(&self.incarnation);
        out.extend_from_slice(&self.audit_seq.to_be_bytes());
        out.extend_from_slice(&self.audit_head);
        out
    }

    /// Parses the canonical bytes, strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<EpochRecord, RecordError> {
        if bytes.len() != RECORD_LEN {
            return Err(RecordError("wrong length"));
        }
        let mut r = Reader::new(bytes);
        let bad = |_| RecordError("truncated");
        if r.u8().map_err(bad)? != RECORD_VERSION {
            return Err(RecordError("unknown version"));
        }
        let number = r.u64().map_err(bad)?;
        let hash = r.array().map_err(bad)?;
        let incarnation = r.array().map_err(bad)?;
        let audit_seq = r.u64().map_err(bad)?;
        let audit_head = r.array().map_err(bad)?;
        Ok(EpochRecord {
            epoch: Epoch { number, hash },
            incarnation,
            audit_seq,
            audit_head,
        })
    }
}

/// The epoch after `prev` for a batch that made `changes` and left the audit log at
/// `audit` (position, MAC), written by `incarnation`. Epoch numbers do not wrap: a
/// store at `u64::MAX` takes no more changes (None).
pub fn next(
    prev: &Epoch,
    incarnation: &[u8; 16],
    audit: (u64, [u8; 32]),
    changes: &[Change<'_>],
) -> Option<Epoch> {
    let number = prev.number.checked_add(1)?;
    let mut w = Writer::with_label(EPOCH_LABEL);
    w.bytes(&prev.hash)
        .u64(number)
        .bytes(incarnation)
        .u64(audit.0)
        .bytes(&audit.1)
        .u32(changes.len() as u32);
    for c in changes {
        w.u8(c.kind as u8)
            .str(c.id)
            .u64(c.version)
            .bytes(&teekms_attest::sha256(c.record));
    }
    Some(Epoch {
        number,
        hash: teekms_attest::sha256(&w.finish()),
    })
}

/// A node's signed word that it serves epoch (E, H) of a cluster's chain: on every
/// answer, in the [`STAMP_HEADER`] header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The cluster (SHA-256 of its TLS CA's public key, as the node's statement binds it).
    pub cluster: [u8; 32],
    /// The node that signed.
    pub node_id: [u8; 16],
    /// What it serves.
    pub epoch: Epoch,
    /// Ed25519 by the node's attested signing key.
    pub signature: [u8; 64],
}

/// A stamp that is malformed or not signed by the node that sent it.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The header does not parse.
    #[error("the node's epoch stamp ({STAMP_HEADER} header) is malformed: {0}")]
    Malformed(&'static str),
    /// The signature or the names do not match the verified node.
    #[error("the node's epoch stamp ({STAMP_HEADER} header) {0}")]
    Invalid(&'static str),
}

impl Stamp {
    /// The canonical bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        Stamp::message(&self.cluster, &self.node_id, &self.epoch)
    }

    fn message(cluster: &[u8; 32], node_id: &[u8; 16], epoch: &Epoch) -> Vec<u8> {
        let mut w = Writer::with_label(STAMP_LABEL);
        w.bytes(cluster)
            .bytes(node_id)
            .u64(epoch.number)
            .bytes(&epoch.hash);
        w.finish()
    }

    /// Signs (inside the TEE).
    pub fn sign(keys: &NodeKeys, cluster: [u8; 32], epoch: Epoch) -> Stamp {
        let node_id = keys.node_id().0;
        let signature = keys.sign(&Stamp::message(&cluster, &node_id, &epoch));
        Stamp {
            cluster,
            node_id,
            epoch,
            signature,
        }
    }

    /// The header value: `1 E H-hex node-id-hex signature-hex cluster-hex`.
    pub fn to_header(&self) -> String {
        format!(
            "1 {} {} {} {} {}",
            self.epoch.number,
            hex::encode(self.epoch.hash),
            hex::encode(self.node_id),
            hex::encode(self.signature),
            hex::encode(self.cluster)
        )
    }

    /// Parses a header value, strictly (single spaces, lowercase hex, decimal E
    /// without leading zeros).
    pub fn from_header(value: &str) -> Result<Stamp, StampError> {
        let mut parts = value.split(' ');
        let mut next = |what| parts.next().ok_or(StampError::Malformed(what));
        if next("no version")? != "1" {
            return Err(StampError::Malformed("unknown version"));
        }
        let number = next("no epoch")?;
        if number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
            || (number.len() > 1 && number.starts_with('0'))
        {
            return Err(StampError::Malformed("the epoch is not a decimal number"));
        }
        let number: u64 = number
            .parse()
            .map_err(|_| StampError::Malformed("the epoch is out of range"))?;
        let hash = lower_hex::<32>(next("no hash")?)?;
        let node_id = lower_hex::<16>(next("no node id")?)?;
        let signature = lower_hex::<64>(next("no signature")?)?;
        let cluster = lower_hex::<32>(next("no cluster")?)?;
        if parts.next().is_some() {
            return Err(StampError::Malformed("trailing fields"));
        }
        Ok(Stamp {
            cluster,
            node_id,
            epoch: Epoch { number, hash },
            signature,
        })
    }

    /// Checks that `node` signed this stamp, for the cluster its statement binds.
    pub fn verify(&self, node: &VerifiedNode) -> Result<(), StampError> {
        let statement = node.statement();
        if self.node_id != statement.node_id.0 {
            return Err(StampError::Invalid("names another node"));
        }
        if Some(self.cluster) != statement.ca_spki_sha256.as_ref().map(|c| c.0) {
            return Err(StampError::Invalid("names another cluster"));
        }
        let message = Stamp::message(&self.cluster, &self.node_id, &self.epoch);
        if !teekms_attest::ed25519_verify(node.signing_public_key(), &message, &self.signature) {
            return Err(StampError::Invalid(
                "is not signed by the node's attested key",
            ));
        }
        Ok(())
    }
}

fn lower_hex<const N: usize>(s: &str) -> Result<[u8; N], StampError> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(StampError::Malformed(
            "a field is not lowercase hex of its length",
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| StampError::Malformed("bad hex"))?;
    Ok(out)
}

/// Label of the cluster subkey that MACs members' epoch answers.
pub const PEER_EPOCH_LABEL: &str = "teekms/v1/peer-epoch";

fn peer_epoch_mac(key: &[u8; 32], nonce: &[u8; 32], e: &crate::api::PeerEpoch) -> [u8; 32] {
    let mut w = Writer::with_label(PEER_EPOCH_LABEL.as_bytes());
    w.bytes(nonce)
        .bytes(&e.node_id.0)
        .u64(e.epoch)
        .bytes(&e.hash.0)
        .u64(e.audit_seq)
        .opt_bytes(e.alarm.as_deref().map(str::as_bytes))
        .u8(u8::from(e.recovering));
    crate::hmac256(key, &[&w.finish()])
}

/// What a member holds, as it answers a peer's question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The epoch in its memory.
    pub epoch: Epoch,
    /// The newest audit position it holds.
    pub audit_seq: u64,
    /// Its `store_rolled_back` alarm, if up.
    pub alarm: Option<String>,
    /// Whether it restarted and has not yet recovered the cluster's epoch: what it
    /// holds is only what its store showed, and it counts for no majority.
    pub recovering: bool,
}

/// A member's answer to `nonce`, MAC'd under the peer-epoch subkey `key`.
pub fn peer_epoch(
    key: &[u8; 32],
    nonce: &[u8; 32],
    node_id: [u8; 16],
    held: Held,
) -> crate::api::PeerEpoch {
    let mut e = crate::api::PeerEpoch {
        node_id: HexBytes(node_id),
        epoch: held.epoch.number,
        hash: HexBytes(held.epoch.hash),
        audit_seq: held.audit_seq,
        alarm: held.alarm,
        recovering: held.recovering,
        mac: HexBytes([0; 32]),
    };
    e.mac = HexBytes(peer_epoch_mac(key, nonce, &e));
    e
}

/// Whether a member's answer was made for `nonce` under `key` (constant time).
pub fn peer_epoch_verifies(key: &[u8; 32], nonce: &[u8; 32], e: &crate::api::PeerEpoch) -> bool {
    let want = peer_epoch_mac(key, nonce, e);
    aws_lc_rs::constant_time::verify_slices_are_equal(&want, &e.mac.0).is_ok()
}

/// The highest epoch a node showed an owner, as the owner's CLI keeps it per cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledged {
    /// E.
    pub epoch: u64,
    /// H.
    pub hash: HexBytes<32>,
    /// The node that showed it.
    pub node_id: HexBytes<16>,
    /// When (Unix seconds, the owner's clock).
    pub at: u64,
    /// The signature, so that the owner can show others what the node said.
    pub signature: HexBytes<64>,
}

impl Acknowledged {
    /// What an owner keeps of a verified stamp shown at `at`.
    pub fn of(stamp: &Stamp, at: u64) -> Acknowledged {
        Acknowledged {
            epoch: stamp.epoch.number,
            hash: HexBytes(stamp.epoch.hash),
            node_id: HexBytes(stamp.node_id),
            at,
            signature: HexBytes(stamp.signature),
        }
    }
}

/// What a stamp says against what the owner was shown before.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing newer than the stamp was shown: keep the stamp if it is newer.
    Fresh {
        /// Whether the stamp moves the owner's record forward.
        newer: bool,
    },
    /// The node shows an older epoch than one acknowledged before.
    RolledBack,
    /// The node shows another hash for an epoch acknowledged before.
    Forked,
}

/// Compares a verified stamp with the owner's record for its cluster.
pub fn compare(known: Option<&Acknowledged>, shown: &Epoch) -> Verdict {
    match known {
        None => Verdict::Fresh { newer: true },
        Some(k) if shown.number < k.epoch => Verdict::RolledBack,
        Some(k) if shown.number == k.epoch && shown.hash != k.hash.0 => Verdict::Forked,
        Some(k) => Verdict::Fresh {
            newer: shown.number > k.epoch,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, id: &str, version: u64) -> Change<'_> {
        Change {
            kind,
            id,
            version,
            record: b"sealed",
        }
    }

    #[test]
    fn the_hash_covers_every_field() {
        let g = Epoch::default();
        let inc = [7u8; 16];
        let base = next(
            &g,
            &inc,
            (3, [1; 32]),
            &[change(ChangeKind::KeyState, "o/k", 2)],
        );
        let base = base.unwrap();
        assert_eq!(base.number, 1);
        let variants = [
            next(
                &g,
                &[8; 16],
                (3, [1; 32]),
                &[change(ChangeKind::KeyState, "o/k", 2)],
            ),
            next(
                &g,
                &inc,
                (4, [1; 32]),
                &[change(ChangeKind::KeyState, "o/k", 2)],
            ),
            next(
                &g,
                &inc,
                (3, [2; 32]),
                &[change(ChangeKind::KeyState, "o/k", 2)],
            ),
            next(
                &g,
                &inc,
                (3, [1; 32]),
                &[change(ChangeKind::AccessKey, "o/k", 2)],
            ),
            next(
                &g,
                &inc,
                (3, [1; 32]),
                &[change(ChangeKind::KeyState, "o/j", 2)],
            ),
            next(
                &g,
                &inc,
                (3, [1; 32]),
                &[change(ChangeKind::KeyState, "o/k", 3)],
            ),
            next(&g, &inc, (3, [1; 32]), &[]),
            next(
                &Epoch {
                    number: 0,
                    hash: [9; 32],
                },
                &inc,
                (3, [1; 32]),
                &[change(ChangeKind::KeyState, "o/k", 2)],
            ),
        ];
        for v in variants {
            assert_ne!(v.unwrap().hash, base.hash);
        }
        let mut other = change(ChangeKind::KeyState, "o/k", 2);
        other.record = b"sealed2";
        assert_ne!(
            next(&g, &inc, (3, [1; 32]), &[other]).unwrap().hash,
            base.hash
        );
        let top = Epoch {
            number: u64::MAX,
            hash: [0; 32],
        };
        assert_eq!(next(&top, &inc, (0, [0; 32]), &[]), None);
    }

    #[test]
    fn records_round_trip_strictly() {
        let r = EpochRecord {
            epoch: Epoch {
                number: u64::MAX,
                hash: [5; 32],
            },
            incarnation: [6; 16],
            audit_seq: 42,
            audit_head: [7; 32],
        };
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(EpochRecord::from_bytes(&bytes).unwrap(), r);
        assert!(EpochRecord::from_bytes(&bytes[1..]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(EpochRecord::from_bytes(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert!(EpochRecord::from_bytes(&v2).is_err());
    }

    #[test]
    fn stamps_parse_strictly_and_round_trip() {
        let keys = NodeKeys::generate();
        let s = Stamp::sign(
            &keys,
            [3; 32],
            Epoch {
                number: 17,
                hash: [4; 32],
            },
        );
        let h = s.to_header();
        assert_eq!(Stamp::from_header(&h).unwrap(), s);
        for bad in [
            h.replacen("1 ", "2 ", 1),
            h.replacen(" 17 ", " 017 ", 1),
            h.replacen(" 17 ", " +17 ", 1),
            h.replacen(" 17 ", "  17 ", 1),
            h.to_uppercase(),
            format!("{h} "),
            format!("{h} x"),
            h[..h.len() - 2].to_string(),
            "1 99999999999999999999 00".into(),
            String::new(),
        ] {
            assert!(Stamp::from_header(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn peer_answers_verify_only_for_their_nonce_and_key() {
        let key = [1u8; 32];
        let e = peer_epoch(
            &key,
            &[2; 32],
            [3; 16],
            Held {
                epoch: Epoch {
                    number: 4,
                    hash: [5; 32],
                },
                audit_seq: 6,
                alarm: None,
                recovering: false,
            },
        );
        assert!(peer_epoch_verifies(&key, &[2; 32], &e));
        assert!(!peer_epoch_verifies(&key, &[9; 32], &e));
        assert!(!peer_epoch_verifies(&[7; 32], &[2; 32], &e));
        let mut later = e.clone();
        later.epoch = 5;
        assert!(!peer_epoch_verifies(&key, &[2; 32], &later));
        let mut alarmed = e.clone();
        alarmed.alarm = Some(String::new());
        assert!(!peer_epoch_verifies(&key, &[2; 32], &alarmed));
        let mut recovering = e;
        recovering.recovering = true;
        assert!(!peer_epoch_verifies(&key, &[2; 32], &recovering));
    }

    #[test]
    fn owners_catch_older_and_forked_epochs() {
        let k = Acknowledged {
            epoch: 5,
            hash: HexBytes([1; 32]),
            node_id: HexBytes([0; 16]),
            at: 0,
            signature: HexBytes([0; 64]),
        };
        let e = |number, h| Epoch {
            number,
            hash: [h; 32],
        };
        assert_eq!(compare(None, &e(0, 0)), Verdict::Fresh { newer: true });
        assert_eq!(compare(Some(&k), &e(5, 1)), Verdict::Fresh { newer: false });
        assert_eq!(compare(Some(&k), &e(6, 9)), Verdict::Fresh { newer: true });
        assert_eq!(compare(Some(&k), &e(4, 1)), Verdict::RolledBack);
        assert_eq!(compare(Some(&k), &e(5, 2)), Verdict::Forked);
    }
}
