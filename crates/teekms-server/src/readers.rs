//! The store connections that serve reads. SQLite answers from memory-mapped pages, so
//! one connection suffices; a PostgreSQL round trip takes a connection for its whole
//! duration, so concurrent requests get one each, up to a few.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use teekms_store::Store;

/// Connections to the store for reads, handed out one per caller.
pub struct Readers {
    conns: Vec<Mutex<Box<dyn Store>>>,
    next: AtomicUsize,
}

impl Readers {
    /// Readers over `conns` (at least one).
    pub fn new(conns: Vec<Box<dyn Store>>) -> Readers {
        assert!(!conns.is_empty(), "at least one reader connection");
        Readers {
            conns: conns.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free connection if there is one, else the next in turn (waiting for it).
    pub fn get(&self) -> MutexGuard<'_, Box<dyn Store>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(conn) = self.conns[(start + i) % n].try_lock() {
                return conn;
            }
        }
        self.conns[start].lock().expect("reader lock")
    }
}
