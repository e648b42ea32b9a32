//! Open client connections, and the cap on them.
//!
//! Every connection costs a file descriptor, and an unauthenticated client can open as
//! many as it likes and send nothing. So the node keeps at most `max` connections; when
//! a new one would exceed that, it closes the connection that has made the least
//! progress, the oldest first: one that has sent nothing at all, else one still in its
//! TLS handshake or that has sent no request yet, else one kept alive between requests.
//! A client that sends its TLS hello at once (as every real client does) is thus never
//! closed for an idle socket's sake, and a request in progress (its response body
//! included) is never cut for room; if every connection is busy, the new one is turned
//! away instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::task::{AbortHandle, Id};

/// Files the node keeps for itself below the limit: the store (SQLite file, WAL and
/// shared memory, or PostgreSQL connections), logs, data-dir files, streams' pipes.
const RESERVED_FILES: u64 = 64;

/// The cap that fits a process allowed `files` open files, keeping a reserve.
pub fn default_max_connections(files: u64) -> usize {
    files.saturating_sub(RESERVED_FILES).clamp(16, 1 << 20) as usize
}

/// How far a connection has got ([`Progress`] values, raised by its task).
pub type Progress = Arc<AtomicU8>;
/// Accepted; nothing received yet.
pub const SILENT: u8 = 0;
/// Its first bytes (the TLS hello) arrived.
pub const HELLO: u8 = 1;
/// It has made a request and has none in progress (a kept-alive connection).
pub const IDLE: u8 = 2;
/// A request is in progress, its response body included: never closed for room.
pub const BUSY: u8 = 3;

/// Marks a connection busy while it lives, then idle (held by a request's response).
pub struct Busy(Progress);

impl Busy {
    /// The connection's request begins.
    pub fn begin(progress: &Progress) -> Busy {
        progress.store(BUSY, Ordering::Relaxed);
        Busy(progress.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(IDLE, Ordering::Relaxed);
    }
}

/// How long a connection in its TLS handshake is kept against silent newcomers: a real
/// client's handshake takes a few round trips.
const GRACE: Duration = Duration::from_secs(1);

/// One connection as the accept loop sees it.
struct Open {
    task: AbortHandle,
    progress: Progress,
    opened: Instant,
}

/// The open connections, oldest first.
pub struct Connections {
    max: usize,
    next: u64,
    by_age: BTreeMap<u64, Open>,
    by_task: HashMap<Id, u64>,
}

impl Connections {
    /// No connections yet, at most `max` at once.
    pub fn new(max: usize) -> Connections {
        Connections {
            max: max.max(1),
            next: 0,
            by_age: BTreeMap::new(),
            by_task: HashMap::new(),
        }
    }

    /// How many are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Makes room for a new connection, which has (`hello`) or has not sent its first
    /// bytes yet: closes the least advanced old connection if the cap is reached. False
    /// if there is no room: every connection is busy with a request, or only those and
    /// connections in their handshake within their grace period are left and the
    /// newcomer is silent.
    pub fn make_room(&mut self, hello: bool) -> bool {
        if self.by_age.len() < self.max {
            return true;
        }
        // The oldest silent connection, else the oldest in its handshake; but one that
        // spoke only for a newcomer that spoke too, or once it had its grace period.
        let now = Instant::now();
        let victim = self
            .oldest(SILENT, |_| true)
            .or_else(|| self.oldest(HELLO, |c| hello || now.duration_since(c.opened) >= GRACE))
            .or_else(|| self.oldest(IDLE, |_| true));
        victim.is_some_and(|age| self.close(age))
    }

    /// Closes the oldest connection that has sent nothing, else the oldest that has sent
    /// no request, else the oldest kept alive between requests (the file limit is hit);
    /// false if every connection is busy.
    pub fn close_oldest_unused(&mut self) -> bool {
        let victim = self
            .oldest(SILENT, |_| true)
            .or_else(|| self.oldest(HELLO, |_| true))
            .or_else(|| self.oldest(IDLE, |_| true));
        victim.is_some_and(|age| self.close(age))
    }

    fn oldest(&self, stage: u8, also: impl Fn(&Open) -> bool) -> Option<u64> {
        self.by_age
            .iter()
            .find(|(_, c)| c.progress.load(Ordering::Relaxed) == stage && also(c))
            .map(|(age, _)| *age)
    }

    fn close(&mut self, age: u64) -> bool {
        match self.by_age.remove(&age) {
            Some(c) => {
                tracing::trace!(
                    stage = c.progress.load(Ordering::Relaxed),
                    age_ms = c.opened.elapsed().as_millis() as u64,
                    "closing a connection for room"
                );
                self.by_task.remove(&c.task.id());
                c.task.abort();
                true
            }
            None => false,
        }
    }

    /// Records a connection's task and its progress.
    pub fn opened(&mut self, task: AbortHandle, progress: Progress) {
        let age = self.next;
        self.next += 1;
        self.by_task.insert(task.id(), age);
        self.by_age.insert(
            age,
            Open {
                task,
                progress,
                opened: Instant::now(),
            },
        );
    }

    /// Forgets a connection whose task ended.
    pub fn closed(&mut self, task: Id) {
        if let Some(age) = self.by_task.remove(&task) {
            self.by_age.remove(&age);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_least_advanced_oldest_connection_makes_room_and_used_ones_stay() {
        let mut c = Connections::new(3);
        let mut tasks = tokio::task::JoinSet::new();
        fn open(c: &mut Connections, tasks: &mut tokio::task::JoinSet<()>, stage: u8) -> Progress {
            let p: Progress = Arc::new(AtomicU8::new(stage));
            c.opened(tasks.spawn(std::future::pending::<()>()), p.clone());
            p
        }
        let first = open(&mut c, &mut tasks, HELLO);
        let second = open(&mut c, &mut tasks, SILENT);
        let _third = open(&mut c, &mut tasks, SILENT);
        // Full: the oldest silent one (the second) goes, before the older one in its
        // handshake.
        assert!(c.make_room(false));
        assert_eq!(c.len(), 2);
        assert_eq!(second.load(Ordering::Relaxed), SILENT);
        let ended = tasks.join_next_with_id().await.unwrap().unwrap_err();
        assert!(ended.is_cancelled());
        c.closed(ended.id());
        assert_eq!(c.len(), 2);
        // Then the one in its handshake; never one whose request is in progress.
        first.store(BUSY, Ordering::Relaxed);
        assert!(c.close_oldest_unused());
        assert_eq!(c.len(), 1);
        assert!(!c.close_oldest_unused());
        assert_eq!(c.len(), 1);
        // Its request over, a kept-alive connection makes room for a newcomer at the cap.
        let mut small = Connections::new(1);
        let kept = open(&mut small, &mut tasks, BUSY);
        assert!(!small.make_room(false));
        drop(Busy(kept.clone()));
        assert_eq!(kept.load(Ordering::Relaxed), IDLE);
        assert!(small.make_room(false));
        assert_eq!(default_max_connections(1024), 960);
        assert_eq!(default_max_connections(10), 16);
    }
}
