//! The single writer thread: group commit, with the audit log.
//!
//! Operations queue jobs here (their writes and the audit entry that records them); the
//! thread takes everything queued, applies each job atomically, chains and appends its
//! audit entry, commits the whole batch with one fsync, and only then answers each
//! caller. Many concurrent operations share one fsync, and none is acknowledged before
//! both its writes and its audit entry are durable.

use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use teekms_core::audit::{AuditChain, AuditDraft, AuditEntry};
use teekms_core::freshness::{Change, EpochRecord};
use teekms_store::{Applied, AuditRow, Store, StoreError, Write};
use zeroize::Zeroizing;

use crate::freshness::{self, Freshness};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;

/// One unit of work: writes applied all-or-nothing, and the entry that records them.
pub struct Job {
    /// The writes (may be empty: an audit entry alone, e.g. a denial).
    pub writes: Vec<Write>,
    /// What the audit log records.
    pub audit: AuditDraft,
    /// The outcome recorded instead if the writes conflict (none were applied).
    pub on_conflict: &'static str,
}

/// Where the outcome goes: a blocked thread, or an awaiting task.
enum Reply {
    Blocking(SyncSender<Outcome>),
    Async(tokio::sync::oneshot::Sender<Outcome>),
}

impl Reply {
    fn send(self, r: Outcome) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(r);
            }
            Reply::Async(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// The outcome received, or none (the writer is gone). A failed batch is answered with
/// `Unavailable` (the writer logged why, once for the batch), a store behind the node's
/// memory with its `store_rolled_back` message.
fn outcome(r: Option<Outcome>) -> Result<Applied, Unavailable> {
    r.unwrap_or(Err(Unavailable(None)))
}

/// What a job's caller is told: done (or in conflict), or not committed.
type Outcome = Result<Applied, Unavailable>;

/// The writer is gone or the commit failed: the operation was not done.
#[derive(Debug)]
pub struct Unavailable(
    /// Why, when the store is behind the node's memory (spec/freshness-v1.md): the
    /// `store_rolled_back` message.
    pub Option<String>,
);

/// Handle to the writer thread.
pub struct Writer {
    fresh: Arc<Freshness>,
    tx: Mutex<Option<Sender<(Job, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `store`, continuing the audit chain under `audit_key`
    /// and the epoch chain that `fresh` remembers.
    pub fn start(
        mut store: Box<dyn Store>,
        audit_key: Zeroizing<[u8; 32]>,
        fresh: Arc<Freshness>,
    ) -> Result<Writer, StoreError> {
        let last = store.audit_last()?;
        if let (_, Some(broken)) = chain_after(&audit_key, last.as_ref()) {
            tracing::error!(%broken, "the audit log does not verify; run `teekms audit verify`");
        }
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("teekms-writer".into())
            .spawn({
                let fresh = fresh.clone();
                move || run(store, audit_key, fresh, rx)
            })
            .expect("spawning the writer thread");
        Ok(Writer {
            fresh,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The node's memory of its store, which this writer keeps moving forward.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.fresh
    }

    fn enqueue(&self, job: Job, reply: Reply) -> bool {
        match self.tx.lock().expect("writer lock").as_ref() {
            Some(tx) => tx.send((job, reply)).is_ok(),
            None => false,
        }
    }

    /// Applies a job durably; blocks until committed.
    pub fn submit(&self, job: Job) -> Result<Applied, Unavailable> {
        let (reply_tx, reply_rx) = sync_channel(1);
        if !self.enqueue(job, Reply::Blocking(reply_tx)) {
            return Err(Unavailable(None));
        }
        outcome(reply_rx.recv().ok())
    }

    /// Applies a job durably; resolves once committed (no thread waits meanwhile).
    pub async fn submit_async(&self, job: Job) -> Result<Applied, Unavailable> {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        if !self.enqueue(job, Reply::Async(reply_tx)) {
            return Err(Unavailable(None));
        }
        outcome(reply_rx.await.ok())
    }

    /// Applies jobs durably, all queued before any is awaited, so that they commit
    /// together (a batch's entries share a commit); resolves once all are committed.
    pub async fn submit_all_async(&self, jobs: Vec<Job>) -> Result<(), Unavailable> {
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            if !self.enqueue(job, Reply::Async(reply_tx)) {
                return Err(Unavailable(None));
            }
            replies.push(reply_rx);
        }
        for r in replies {
            outcome(r.await.ok())?;
        }
        Ok(())
    }

    /// Queues a job without waiting for it: for records that answer no one (counts of
    /// refusals), which must not hold a runtime thread for a commit. It commits with the
    /// next batch; a failure is logged by the writer.
    pub fn submit_detached(&self, job: Job) -> Result<(), Unavailable> {
        let (reply_tx, _) = tokio::sync::oneshot::channel();
        if self.enqueue(job, Reply::Async(reply_tx)) {
            Ok(())
        } else {
            Err(Unavailable(None))
        }
    }

    /// Stops taking jobs, lets queued ones commit, and waits for the thread.
    pub fn close(&self) {
        self.tx.lock().expect("writer lock").take();
        if let Some(t) = self.thread.lock().expect("writer lock").take() {
            let _ = t.join();
        }
    }
}

/// The chain continuing after the newest stored entry (`last`), and whether that entry
/// fails to verify (the chain continues from it anyway; `audit verify` reports it).
fn chain_after(key: &Zeroizing<[u8; 32]>, last: Option<&AuditRow>) -> (AuditChain, Option<String>) {
    let entry: Option<AuditEntry> =
        last.and_then(|row| teekms_core::audit::stored::decode(&row.entry).ok());
    let (mut chain, broken) = AuditChain::resume(key.clone(), entry.as_ref());
    let mut broken = broken.map(|b| b.to_string());
    if let (Some(row), None) = (last, &entry) {
        broken = Some(format!(
            "the newest audit entry ({}) does not parse",
            row.seq
        ));
        chain.reset_to((row.seq, [0u8; 32]));
    }
    (chain, broken)
}

/// The chain as this writer left it, and the entry it appended last: if the store's
/// newest entry is still that one, the chain goes on without re-reading and checking it.
struct LastAppend {
    chain: AuditChain,
    entry: AuditRow,
}

/// Runs the writer. The store's log must never end before an entry committed earlier,
/// nor its epoch go back: `fresh` remembers both.
fn run(
    mut store: Box<dyn Store>,
    key: Zeroizing<[u8; 32]>,
    fresh: Arc<Freshness>,
    rx: Receiver<(Job, Reply)>,
) {
    let mut last = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let mut result = commit(store.as_mut(), &key, &fresh, &mut batch, &mut last);
        if let Err(CommitError::NotStarted(e)) = &result {
            // Starting a transaction changes nothing, so a failed start is tried once
            // more: a PostgreSQL connection that the server ended meanwhile (a restart)
            // is found lost there, and the second start makes a new one.
            tracing::warn!(error = %e, "starting a write transaction failed; trying once more");
            result = commit(store.as_mut(), &key, &fresh, &mut batch, &mut last);
        }
        crate::metrics::METRICS.commit(batch.len(), started.elapsed(), result.is_ok());
        match result {
            Ok(results) => {
                for ((_, reply), r) in batch.into_iter().zip(results) {
                    reply.send(Ok(r));
                }
            }
            Err(CommitError::Refused(e)) => {
                // The alarm was logged when raised; each refused request is logged by
                // its protocol layer. Nothing goes to a store that is behind.
                let why = e.to_string();
                for (_, reply) in batch {
                    reply.send(Err(Unavailable(Some(why.clone()))));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "commit failed");
                for (_, reply) in batch {
                    reply.send(Err(Unavailable(None)));
                }
            }
        }
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    /// No transaction could be started: the batch is untouched and may be tried again.
    #[error(transparent)]
    NotStarted(StoreError),
    /// The transaction failed after it started (the batch's drafts are spent).
    #[error(transparent)]
    Failed(StoreError),
    /// The store is behind what the node acknowledged (spec/freshness-v1.md): the
    /// alarm is up, and nothing is written until the store is brought forward.
    #[error("{0}")]
    Refused(crate::ops::OpError),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> CommitError {
        CommitError::Failed(e)
    }
}

fn commit(
    store: &mut dyn Store,
    key: &Zeroizing<[u8; 32]>,
    fresh: &Freshness,
    batch: &mut [(Job, Reply)],
    last: &mut Option<LastAppend>,
) -> Result<Vec<Applied>, CommitError> {
    // Refused before a transaction is started: a store that is behind gets no writes.
    fresh.serving().map_err(CommitError::Refused)?;
    let mut tx = store.write_batch().map_err(CommitError::NotStarted)?;
    // The chain continues from the newest stored entry, read inside this transaction:
    // with a store shared by several nodes, another node may have appended meanwhile.
    let head = tx.audit_head()?;
    // The chain cannot see the loss of its own tail; the node's memory can (below).
    let found = head.as_ref().map_or(0, |row| row.seq);
    // The epoch record, read under the same lock: every batch, data-plane ones
    // included, is checked against the node's memory before anything is appended.
    let stored = tx.meta(freshness::EPOCH_RECORD)?;
    let record = freshness::open(fresh.cluster_key(), stored.as_deref())
        .map_err(|e| CommitError::Refused(crate::ops::OpError::Damaged(e)))?;
    let epoch = fresh
        .check_store(fresh.before(), record.as_ref(), found)
        .map_err(CommitError::Refused)?;
    let mut chain = match last.take() {
        Some(l) if head.as_ref() == Some(&l.entry) => l.chain,
        _ => chain_after(key, head.as_ref()).0,
    };
    let mut appended = None;
    let mut results = Vec::with_capacity(batch.len());
    for (job, _) in batch.iter_mut() {
        let applied = tx.apply(&job.writes)?;
        // Taken, not cloned: a failed batch is answered with an error, never retried.
        let mut draft = std::mem::take(&mut job.audit);
        if applied == Applied::Conflict {
            draft.outcome = job.on_conflict.to_owned();
        }
        let entry = chain.append(draft);
        let bytes = teekms_core::audit::stored::encode(&entry);
        tx.append_audit(entry.seq, &bytes)?;
        appended = Some(AuditRow {
            seq: entry.seq,
            entry: bytes,
        });
        results.push(applied);
    }
    // What changed state: the writes of the jobs that were applied.
    let changed: Vec<&[Write]> = batch
        .iter()
        .zip(&results)
        .filter(|((job, _), applied)| **applied == Applied::Done && !job.writes.is_empty())
        .map(|((job, _), _)| job.writes.as_slice())
        .collect();
    let mut next_epoch = None;
    if !changed.is_empty() {
        let owned: Vec<_> = changed
            .iter()
            .flat_map(|writes| writes.iter().filter_map(freshness::change_of))
            .collect();
        let changes: Vec<Change<'_>> = owned
            .iter()
            .map(|(kind, id, version, record)| Change {
                kind: *kind,
                id,
                version: *version,
                record,
            })
            .collect();
        let head = chain.head();
        let next = teekms_core::freshness::next(&epoch, fresh.incarnation(), head, &changes)
            .ok_or_else(|| {
                CommitError::Refused(crate::ops::OpError::Internal(
                    "the epoch chain is at its end (2^64 - 1 changes)".into(),
                ))
            })?;
        let record = EpochRecord {
            epoch: next,
            incarnation: *fresh.incarnation(),
            audit_seq: head.0,
            audit_head: head.1,
        };
        tx.apply(&[Write::PutMeta {
            name: freshness::EPOCH_RECORD.into(),
            record: freshness::seal(fresh.cluster_key(), &record),
        }])?;
        next_epoch = Some(next);
    }
    tx.commit()?;
    let audit_seq = appended.as_ref().map_or(found, |e| e.seq);
    fresh.committed(next_epoch, audit_seq, &changed);
    if let Some(entry) = appended {
        *last = Some(LastAppend { chain, entry });
    }
    Ok(results)
}
