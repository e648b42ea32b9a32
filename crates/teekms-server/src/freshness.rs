//! What the node remembers of its store, so that an older copy is refused rather than
//! served (spec/freshness-v1.md).
//!
//! The writer chains an epoch record into every state-changing batch; this module keeps
//! the latest (E, H) and the audit head in memory, a floor for every mutable record the
//! node has written or read, and the alarm. Memory always moves forward: a store that
//! shows less than it, or another hash for the same epoch, was rolled back (or forked)
//! by the host, and nothing is served from it until it is brought forward again.

use std::collections::HashMap;

use axum::http::HeaderValue;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use teekms_core::SealingKey;
use teekms_core::freshness::{ChangeKind, Epoch, EpochRecord, Held, Stamp};
use teekms_store::{Store, Write};

use crate::keyring::Keyring;
use crate::ops::OpError;

/// Name of the epoch record in the store's meta table.
pub const EPOCH_RECORD: &str = "epoch";
/// The record's (kind, id, version) when sealed: its version is its format's.
const SEALED_AS: (&str, &str, u64) = ("epoch", "epoch", 1);
/// A floor that says the record must be missing (a deleted key).
const TOMBSTONE: u64 = u64::MAX;

/// Seals an epoch record under the cluster key.
pub fn seal(cluster: &SealingKey, record: &EpochRecord) -> Vec<u8> {
    let (kind, id, version) = SEALED_AS;
    cluster.seal(kind, id, version, &record.to_bytes())
}

/// Opens a stored epoch record (None: the store has none, so it is at epoch 0).
pub fn open(cluster: &SealingKey, stored: Option<&[u8]>) -> Result<Option<EpochRecord>, String> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let (kind, id, version) = SEALED_AS;
    let plain = cluster
        .open(kind, id, version, stored)
        .map_err(|e| format!("the store's epoch record: {e}"))?;
    EpochRecord::from_bytes(&plain)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Why the node refuses its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// The store's epoch is older than the node's (or its record is gone).
    RolledBack {
        /// What the store shows (None: no epoch record).
        found: Option<Epoch>,
    },
    /// The store shows another hash for an epoch the node knows.
    Forked {
        /// What the store shows.
        found: Epoch,
    },
    /// Another process wrote the store of this single node.
    SecondWriter {
        /// What the store shows.
        found: Epoch,
    },
    /// The audit log ends before an entry the node committed.
    AuditCut {
        /// The store's newest entry.
        found: u64,
    },
    /// A record is older than one the node wrote or served, or missing.
    RecordBehind {
        /// Which record, as a person reads it.
        what: String,
    },
}

/// Which mutable records have floors.
#[derive(Clone, Copy, Debug)]
pub enum Floor {
    /// A key's state (`owner/key_id`).
    KeyState,
    /// An access key (its id).
    AccessKey,
    /// An owner's record (its fingerprint).
    OwnerState,
}

struct Memory {
    epoch: Epoch,
    /// The newest audit position committed or seen.
    audit_seq: u64,
    floors: [HashMap<String, u64>; 3],
    alarm: Option<Alarm>,
    /// While the node has not yet learned the cluster's epoch from its peers (rule 2):
    /// how the last attempt went.
    recovering: Option<String>,
    /// The stamp for `epoch`, as the header carries it (signed once per epoch).
    stamp: HeaderValue,
}

/// The node's memory of its store.
pub struct Freshness {
    keyring: std::sync::Arc<Keyring>,
    /// This process's writer incarnation (random per start).
    incarnation: [u8; 16],
    /// Whether this node is its store's only writer (SQLite): then a record by another
    /// incarnation is a second process, not a peer.
    single_writer: bool,
    alarmed: AtomicBool,
    /// Whether `memory.recovering` is set (read on every request without the lock).
    recovering: AtomicBool,
    memory: Mutex<Memory>,
}

impl Freshness {
    /// The memory of a node starting on `store`: what the store shows now (a restart
    /// on an old copy cannot be seen here; owners' stamps catch it). On a shared store
    /// the node then recovers the cluster's epoch from its peers
    /// ([`Freshness::begin_recovery`]) before it serves anything.
    pub fn start(
        keyring: std::sync::Arc<Keyring>,
        store: &mut dyn Store,
        single_writer: bool,
    ) -> Result<Freshness, crate::ServerError> {
        let record = open(keyring.cluster(), store.get_meta(EPOCH_RECORD)?.as_deref())
            .map_err(crate::ServerError::Inconsistent)?;
        let audit_seq = store.audit_last()?.map_or(0, |row| row.seq);
        let mut incarnation = [0u8; 16];
        teekms_core::random_bytes(&mut incarnation);
        let epoch = record.map(|r| r.epoch).unwrap_or_default();
        let stamp = sign(&keyring, epoch);
        Ok(Freshness {
            incarnation,
            single_writer,
            alarmed: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            memory: Mutex::new(Memory {
                epoch,
                audit_seq,
                floors: Default::default(),
                alarm: None,
                recovering: None,
                stamp,
            }),
            keyring,
        })
    }

    /// This writer's incarnation.
    pub fn incarnation(&self) -> &[u8; 16] {
        &self.incarnation
    }

    /// The cluster key that seals epoch records.
    pub fn cluster_key(&self) -> &SealingKey {
        self.keyring.cluster()
    }

    /// Refuses every request while the alarm is up, or while the node has not yet
    /// recovered the cluster's epoch.
    pub fn serving(&self) -> Result<(), OpError> {
        if !self.alarmed.load(Ordering::Acquire) && !self.recovering.load(Ordering::Acquire) {
            return Ok(());
        }
        let m = self.memory.lock().expect("freshness lock");
        if let Some(a) = &m.alarm {
            return Err(OpError::StoreRolledBack(describe(a, &m.epoch, m.audit_seq)));
        }
        match &m.recovering {
            Some(progress) => Err(OpError::FreshnessUnconfirmed(recovering_text(progress))),
            None => Ok(()),
        }
    }

    /// The alarm, if up, as `/v1/ready` and the log say it, with the node's (E, H).
    pub fn status(&self) -> (Epoch, Option<String>) {
        let m = self.memory.lock().expect("freshness lock");
        (
            m.epoch,
            m.alarm.as_ref().map(|a| describe(a, &m.epoch, m.audit_seq)),
        )
    }

    /// What this node holds, as it answers its peers.
    pub fn held(&self) -> Held {
        let m = self.memory.lock().expect("freshness lock");
        Held {
            epoch: m.epoch,
            audit_seq: m.audit_seq,
            alarm: m.alarm.as_ref().map(|a| describe(a, &m.epoch, m.audit_seq)),
            recovering: m.recovering.is_some(),
        }
    }

    /// While the node waits to recover the cluster's epoch: why, as `/v1/ready` says it.
    pub fn recovering(&self) -> Option<String> {
        if !self.recovering.load(Ordering::Acquire) {
            return None;
        }
        let m = self.memory.lock().expect("freshness lock");
        m.recovering.as_deref().map(recovering_text)
    }

    /// A member of a shared store, once its own start-up writes are done (a migration,
    /// a new cluster's records), serves nothing until it has recovered the cluster's
    /// epoch ([`Freshness::recover`]).
    pub fn begin_recovery(&self) {
        let mut m = self.memory.lock().expect("freshness lock");
        m.recovering = Some("its peers have not been asked yet".to_string());
        self.recovering.store(true, Ordering::Release);
    }

    /// Notes how the last attempt to recover went (while recovering).
    pub fn recovery_progress(&self, progress: String) {
        let mut m = self.memory.lock().expect("freshness lock");
        if m.recovering.is_some() {
            m.recovering = Some(progress);
        }
    }

    /// Ends recovery with what was learned (rule 2: the newest epoch and audit position
    /// a majority of the other members hold; rule 5: the epoch the cluster admin
    /// accepted; None: a cluster of one, with nobody to ask). The memory takes it if it
    /// is newer than what the store showed, or another hash for the same epoch; the
    /// caller then checks the store against it, so that a store behind what the
    /// cluster acknowledged raises the alarm before anything is served. Returns false
    /// if the node was not recovering.
    pub fn recover(&self, learned: Option<(Epoch, u64)>) -> bool {
        let mut m = self.memory.lock().expect("freshness lock");
        if m.recovering.is_none() {
            return false;
        }
        if let Some((epoch, audit_seq)) = learned {
            if epoch.number >= m.epoch.number && epoch != m.epoch {
                self.advance(&mut m, epoch);
            }
            m.audit_seq = m.audit_seq.max(audit_seq);
        }
        m.recovering = None;
        self.recovering.store(false, Ordering::Release);
        tracing::info!(epoch = %m.epoch.short(), "freshness recovered: the node serves");
        true
    }

    /// The newest audit position the node holds.
    pub fn audit_seq(&self) -> u64 {
        self.memory.lock().expect("freshness lock").audit_seq
    }

    /// The stamp every answer carries.
    pub fn stamp(&self) -> HeaderValue {
        self.memory.lock().expect("freshness lock").stamp.clone()
    }

    fn raise(&self, m: &mut Memory, alarm: Alarm) -> OpError {
        let text = describe(&alarm, &m.epoch, m.audit_seq);
        if m.alarm.is_none() {
            tracing::error!(alarm = %text, "store_rolled_back: refusing every request");
            crate::metrics::METRICS.rolled_back(true);
        }
        m.alarm.get_or_insert(alarm);
        self.alarmed.store(true, Ordering::Release);
        OpError::StoreRolledBack(text)
    }

    /// Checks what the store shows (its epoch record, opened, and its newest audit
    /// position) against `before`, a snapshot of this memory ([`Freshness::before`])
    /// taken before the store was read, or, by the writer, after it read the store
    /// under the write lock (nothing commits meanwhile, and the memory only ever holds
    /// what was committed): the store only moves forward, so showing less than `before`
    /// is a rollback. Returns the epoch to chain from (the store's). A newer epoch by a peer (shared store) is
    /// taken; by another process on a single node's store it is an alarm.
    pub fn check_store(
        &self,
        before: Before,
        record: Option<&EpochRecord>,
        audit_seq: u64,
    ) -> Result<Epoch, OpError> {
        let mut m = self.memory.lock().expect("freshness lock");
        if let Some(a) = &m.alarm {
            return Err(OpError::StoreRolledBack(describe(a, &m.epoch, m.audit_seq)));
        }
        let found = record.map(|r| r.epoch);
        let shown = found.unwrap_or_default();
        if shown.number < before.epoch.number {
            return Err(self.raise(&mut m, Alarm::RolledBack { found }));
        }
        if shown.number == before.epoch.number && shown.hash != before.epoch.hash {
            return Err(self.raise(&mut m, Alarm::Forked { found: shown }));
        }
        if audit_seq < before.audit_seq {
            return Err(self.raise(&mut m, Alarm::AuditCut { found: audit_seq }));
        }
        if shown.number > m.epoch.number {
            let writer = record.map_or([0; 16], |r| r.incarnation);
            // On a single node's store, every epoch after the one it started from is
            // its own.
            if self.single_writer && writer != self.incarnation {
                return Err(self.raise(&mut m, Alarm::SecondWriter { found: shown }));
            }
            self.advance(&mut m, shown);
        } else if shown.number == m.epoch.number && shown.hash != m.epoch.hash {
            return Err(self.raise(&mut m, Alarm::Forked { found: shown }));
        }
        m.audit_seq = m.audit_seq.max(audit_seq);
        Ok(shown)
    }

    fn advance(&self, m: &mut Memory, epoch: Epoch) {
        m.epoch = epoch;
        m.stamp = sign(&self.keyring, epoch);
        crate::metrics::METRICS.epoch(epoch.number);
    }

    /// A snapshot of the memory, taken before the store is read.
    pub fn before(&self) -> Before {
        let m = self.memory.lock().expect("freshness lock");
        Before {
            epoch: m.epoch,
            audit_seq: m.audit_seq,
        }
    }

    /// Records a committed batch: its epoch (if it changed state), its audit head, and
    /// the floors its writes set.
    pub fn committed(&self, epoch: Option<Epoch>, audit_seq: u64, writes: &[&[Write]]) {
        let mut m = self.memory.lock().expect("freshness lock");
        if let Some(e) = epoch
            && e.number > m.epoch.number
        {
            self.advance(&mut m, e);
        }
        m.audit_seq = m.audit_seq.max(audit_seq);
        for job in writes {
            for w in *job {
                if let Some((floor, id, revision)) = floor_of(w) {
                    let slot = m.floors[floor as usize].entry(id).or_insert(0);
                    *slot = if revision == TOMBSTONE {
                        TOMBSTONE
                    } else {
                        (*slot).max(revision)
                    };
                }
            }
        }
    }

    /// Checks a record read from the store against its floor: older than a revision
    /// this node wrote or served, missing where one existed, or present after its
    /// deletion is a rollback. A newer one raises the floor.
    pub fn check_floor(&self, floor: Floor, id: &str, found: Option<u64>) -> Result<(), OpError> {
        let mut m = self.memory.lock().expect("freshness lock");
        let have = m.floors[floor as usize].get(id).copied();
        let behind = match (have, found) {
            (None, None) => false,
            (None, Some(r)) => {
                m.floors[floor as usize].insert(id.to_owned(), r);
                false
            }
            (Some(TOMBSTONE), found) => found.is_some(),
            (Some(_), None) => true,
            (Some(f), Some(r)) if r < f => true,
            (Some(f), Some(r)) => {
                if r > f {
                    m.floors[floor as usize].insert(id.to_owned(), r);
                }
                false
            }
        };
        if behind {
            let what = match (have, found) {
                (Some(TOMBSTONE), _) => format!("{} {id} is back after its deletion", floor.name()),
                (Some(f), None) => {
                    format!("{} {id} is missing (revision {f} was stored)", floor.name())
                }
                (Some(f), Some(r)) => format!(
                    "{} {id} is at revision {r}, but revision {f} was stored",
                    floor.name()
                ),
                (None, _) => unreachable!("no floor, nothing behind"),
            };
            return Err(self.raise(&mut m, Alarm::RecordBehind { what }));
        }
        Ok(())
    }

    /// While the alarm is up: clears it if the store now shows what the node last
    /// acknowledged (or, on a shared store, a newer epoch) and an audit log at least
    /// as long. Records behind their floors are caught again when read.
    pub fn recheck(&self, record: Option<&EpochRecord>, audit_seq: u64) -> bool {
        let mut m = self.memory.lock().expect("freshness lock");
        if m.alarm.is_none() {
            return true;
        }
        let shown = record.map(|r| r.epoch).unwrap_or_default();
        let forward = if shown.number == m.epoch.number {
            shown.hash == m.epoch.hash
        } else {
            shown.number > m.epoch.number && !self.single_writer
        };
        if !forward || audit_seq < m.audit_seq {
            return false;
        }
        if shown.number > m.epoch.number {
            self.advance(&mut m, shown);
        }
        tracing::warn!(epoch = %shown.short(), "store_rolled_back cleared: the store is brought forward");
        m.alarm = None;
        self.alarmed.store(false, Ordering::Release);
        crate::metrics::METRICS.rolled_back(false);
        true
    }

    /// Reads the store's epoch record and audit head and checks them (a watch, every
    /// second, and at readiness): a store replaced under a node that answers only
    /// from its caches is caught here.
    pub fn watch(&self, store: &mut dyn Store) -> Result<(), OpError> {
        let before = self.before();
        let stored = store.get_meta(EPOCH_RECORD)?;
        let record = open(self.cluster_key(), stored.as_deref()).map_err(OpError::Damaged)?;
        let audit_seq = store.audit_last()?.map_or(0, |row| row.seq);
        if self.alarmed.load(Ordering::Acquire) {
            self.recheck(record.as_ref(), audit_seq);
            return self.serving();
        }
        self.check_store(before, record.as_ref(), audit_seq)
            .map(|_| ())
    }
}

/// What the memory held before the store was read.
#[derive(Clone, Copy, Debug)]
pub struct Before {
    epoch: Epoch,
    audit_seq: u64,
}

impl Floor {
    fn name(self) -> &'static str {
        match self {
            Floor::KeyState => "the state of key",
            Floor::AccessKey => "access key",
            Floor::OwnerState => "the record of owner",
        }
    }
}

/// The floor a write sets: which record, and the revision it may never go below.
fn floor_of(w: &Write) -> Option<(Floor, String, u64)> {
    match w {
        Write::PutState {
            owner,
            key_id,
            revision,
            ..
        } => Some((Floor::KeyState, format!("{owner}/{key_id}"), *revision)),
        Write::DeleteKey { owner, key_id, .. } => {
            Some((Floor::KeyState, format!("{owner}/{key_id}"), TOMBSTONE))
        }
        Write::PutAccessKey { id, revision, .. } => Some((Floor::AccessKey, id.clone(), *revision)),
        Write::InsertOwnerState { owner, .. } => Some((Floor::OwnerState, owner.clone(), 1)),
        Write::PutOwnerState {
            owner, revision, ..
        } => Some((Floor::OwnerState, owner.clone(), *revision)),
        _ => None,
    }
}

/// What the epoch hash covers of a write (spec/freshness-v1.md, "Changes").
pub fn change_of(w: &Write) -> Option<(ChangeKind, String, u64, &[u8])> {
    Some(match w {
        Write::InsertKey(row) => (
            ChangeKind::KeyVersion,
            format!("{}/{}/{}", row.owner, row.key_id, row.key_version),
            row.key_version,
            &row.record,
        ),
        Write::RegisterOwner {
            fingerprint,
            public_key,
        } => (ChangeKind::Owner, fingerprint.clone(), 1, public_key),
        Write::PutState {
            owner,
            key_id,
            revision,
            record,
            ..
        } => (
            ChangeKind::KeyState,
            format!("{owner}/{key_id}"),
            *revision,
            record,
        ),
        Write::PutAccessKey {
            id,
            revision,
            record,
            ..
        } => (ChangeKind::AccessKey, id.clone(), *revision, record),
        Write::DeleteKey {
            owner,
            key_id,
            revision,
        } => (
            ChangeKind::KeyDeleted,
            format!("{owner}/{key_id}"),
            *revision,
            &[],
        ),
        Write::InsertOwnerState { owner, record } => {
            (ChangeKind::OwnerState, owner.clone(), 1, record)
        }
        Write::PutOwnerState {
            owner,
            revision,
            record,
            ..
        } => (ChangeKind::OwnerState, owner.clone(), *revision, record),
        Write::PutMeta { name, record } => (ChangeKind::Meta, name.clone(), 0, record),
        Write::DeleteMeta { name } => (ChangeKind::Meta, name.clone(), 0, &[]),
        Write::PruneAudit { before } => (ChangeKind::AuditPrune, String::new(), *before, &[]),
        _ => return None,
    })
}

fn sign(keyring: &Keyring, epoch: Epoch) -> HeaderValue {
    let cluster = keyring.ca().spki_sha256();
    HeaderValue::try_from(Stamp::sign(keyring.keys(), cluster, epoch).to_header())
        .expect("a stamp is ASCII")
}

fn recovering_text(progress: &str) -> String {
    format!(
        "freshness_unconfirmed: this node (re)started and has not yet learned the cluster's \
         epoch ({progress}); it serves nothing until enough of the other members answer, or \
         the cluster admin runs `teekms cluster resume` — see spec/freshness-v1.md, \"Cluster \
         rules\""
    )
}

/// The alarm as people read it: what the store shows, what the node acknowledged, and
/// what brings the store forward.
fn describe(alarm: &Alarm, epoch: &Epoch, audit_seq: u64) -> String {
    let shown = |e: &Option<Epoch>| match e {
        Some(e) => format!("epoch {}", e.short()),
        None => "no epoch record".to_string(),
    };
    let what = match alarm {
        Alarm::RolledBack { found } => format!("the store shows {}", shown(found)),
        Alarm::Forked { found } => format!(
            "the store shows epoch {} with another history (a fork)",
            found.short()
        ),
        Alarm::SecondWriter { found } => format!(
            "another process wrote this node's store (epoch {}); stop it",
            found.short()
        ),
        Alarm::AuditCut { found } => {
            format!("the store's audit log ends at entry {found}, before entry {audit_seq}")
        }
        Alarm::RecordBehind { what } => what.clone(),
    };
    format!(
        "store_rolled_back: {what}, but this node acknowledged epoch {} and audit entry {audit_seq}: \
         the store was rolled back or altered by its host; nothing is served until it is brought \
         forward (restore the newest copy of the store) — see spec/freshness-v1.md",
        epoch.short()
    )
}
