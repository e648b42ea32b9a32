//! The single writer thread: group commit.
//!
//! Deployments queue their rows here; the thread takes everything queued, writes it in
//! one transaction, fsyncs once, and only then answers each caller. Many concurrent
//! deployments thus share one fsync, and none is acknowledged before it is durable.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use teekms_store::{Inserted, KeyRow, SqliteStore};

use crate::DeployError;

/// Most rows committed in one transaction.
const MAX_BATCH: usize = 512;

type Reply = SyncSender<Result<Inserted, String>>;

/// Handle to the writer thread.
pub struct Writer {
    tx: Mutex<Option<Sender<(KeyRow, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on `store`.
    pub fn start(store: SqliteStore) -> Writer {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("teekms-writer".into())
            .spawn(move || run(store, rx))
            .expect("spawning the writer thread");
        Writer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Inserts a row durably; blocks until committed.
    pub fn insert(&self, row: KeyRow) -> Result<Inserted, DeployError> {
        let (reply_tx, reply_rx) = sync_channel(1);
        let sent = match self.tx.lock().expect("writer lock").as_ref() {
            Some(tx) => tx.send((row, reply_tx)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(DeployError::Unavailable);
        }
        match reply_rx.recv() {
            Ok(Ok(inserted)) => Ok(inserted),
            Ok(Err(msg)) => {
                tracing::error!(error = %msg, "commit failed");
                Err(DeployError::Unavailable)
            }
            Err(_) => Err(DeployError::Unavailable),
        }
    }

    /// Stops taking rows, lets queued ones commit, and waits for the thread.
    pub fn close(&self) {
        self.tx.lock().expect("writer lock").take();
        if let Some(t) = self.thread.lock().expect("writer lock").take() {
            let _ = t.join();
        }
    }
}

fn run(mut store: SqliteStore, rx: Receiver<(KeyRow, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (rows, replies): (Vec<KeyRow>, Vec<Reply>) = batch.into_iter().unzip();
        match store.insert_keys(&rows) {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
