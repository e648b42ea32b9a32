//! The node-wide memory budget of streams (`serve --stream-memory`).
//!
//! An enclave has a fixed memory size, and clients choose a stream's chunk size: without
//! a budget, a few clients that start large-chunk streams and stall would make the node
//! use it all up (24 such streams took a node to 3.2 GB). Every stream reserves the most
//! memory it can hold before it starts, and gives it back when it ends; a stream that
//! does not fit waits a little for room, then is refused (503 `busy`, Retry-After).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The default budget: 256 MiB.
pub const DEFAULT_STREAM_MEMORY: u64 = 256 << 20;

/// How long a stream waits for room before it is refused.
pub const STREAM_WAIT: Duration = Duration::from_secs(5);

/// Bytes that streams may hold at once, and how many they hold now.
pub struct StreamBudget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Room held by one stream; given back when dropped.
pub struct Reservation {
    budget: Arc<StreamBudget>,
    bytes: u64,
}

/// Why a stream got no room.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// It needs more than the whole budget: it can never run.
    TooLarge {
        /// Bytes it needs.
        needs: u64,
        /// The whole budget.
        total: u64,
    },
    /// Other streams hold the room it needs; a retry may get it.
    Busy,
}

impl StreamBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> Arc<StreamBudget> {
        Arc::new(StreamBudget {
            total,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Takes `bytes`, waiting up to `wait` for other streams to give room back. Blocks:
    /// called on a stream's own thread.
    pub fn reserve(self: &Arc<Self>, bytes: u64, wait: Duration) -> Result<Reservation, NoRoom> {
        if bytes > self.total {
            return Err(NoRoom::TooLarge {
                needs: bytes,
                total: self.total,
            });
        }
        let deadline = Instant::now() + wait;
        let mut used = self.used.lock().expect("budget lock");
        while *used + bytes > self.total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NoRoom::Busy);
            }
            used = self.freed.wait_timeout(used, left).expect("budget lock").0;
        }
        *used += bytes;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        *self.used.lock().expect("budget lock")
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = {
            let mut used = self.budget.used.lock().expect("budget lock");
            *used -= self.bytes;
            *used
        };
        self.budget.freed.notify_all();
        if left == 0 {
            // The last stream is over and its buffers are freed: the allocator gives
            // them back to the system now, rather than at its next periodic trim, so
            // the node's memory returns to idle after a burst of streams.
            teekms_platform::sys::release_free_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_wait_for_room_and_give_it_back() {
        let b = StreamBudget::new(100);
        assert_eq!(
            b.reserve(101, Duration::ZERO).err(),
            Some(NoRoom::TooLarge {
                needs: 101,
                total: 100
            })
        );
        let first = b.reserve(60, Duration::ZERO).unwrap();
        assert_eq!(
            b.reserve(60, Duration::from_millis(20)).err(),
            Some(NoRoom::Busy)
        );
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.reserve(60, Duration::from_secs(10)).map(|r| r.bytes))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        assert_eq!(waiter.join().unwrap(), Ok(60));
        assert_eq!(b.used(), 0);
    }
}
