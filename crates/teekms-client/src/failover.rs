//! Several interchangeable nodes of one cluster: a call that finds its node gone (or its
//! node's store unreachable) is made again on the next node.
//!
//! Only failures that mean "this attempt did not get an answer" are retried
//! ([`ClientError::is_retryable`]); a refusal is returned at once. A request whose
//! connection breaks after it was sent may have been carried out: wrap in a failover
//! only calls that are safe to repeat (encrypt, decrypt, generate-data-key, re-encrypt,
//! describe, fetch), as with any KMS client behind a load balancer.

use std::time::{Duration, Instant};

use crate::{ClientError, NodeUrl};

/// First pause after every node failed once; doubled after each further round.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between rounds.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Connections to a cluster's nodes, used one at a time, moved on when one fails.
pub struct Failover<C> {
    urls: Vec<NodeUrl>,
    next: usize,
    current: Option<C>,
    give_up_after: Duration,
    retries: u64,
}

impl<C> Failover<C> {
    /// Nodes to use, in order (at least one). Calls give up after 30 s of failures.
    pub fn new(urls: Vec<NodeUrl>) -> Failover<C> {
        assert!(!urls.is_empty(), "a failover needs at least one node");
        Failover {
            urls,
            next: 0,
            current: None,
            give_up_after: Duration::from_secs(30),
            retries: 0,
        }
    }

    /// How long one call keeps trying before it returns the last failure.
    pub fn give_up_after(mut self, limit: Duration) -> Failover<C> {
        self.give_up_after = limit;
        self
    }

    /// Attempts made again so far, over all calls.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Runs `op` on the current node's connection (made with `connect` when there is
    /// none); on a retryable failure drops it and tries the next node, pausing between
    /// rounds, until `op` succeeds, fails otherwise, or the time limit passes.
    pub async fn call<T>(
        &mut self,
        connect: impl AsyncFn(&NodeUrl) -> Result<C, ClientError>,
        mut op: impl AsyncFnMut(&mut C) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut failed_in_round = 0;
        let mut pause = FIRST_PAUSE;
        loop {
            let attempt = match self.current.as_mut() {
                Some(conn) => op(conn).await,
                None => {
                    let url = &self.urls[self.next];
                    self.next = (self.next + 1) % self.urls.len();
                    match connect(url).await {
                        Ok(conn) => op(self.current.insert(conn)).await,
                        Err(e) => Err(e),
                    }
                }
            };
            let err = match attempt {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            self.current = None;
            if started.elapsed() >= self.give_up_after {
                return Err(err);
            }
            self.retries += 1;
            failed_in_round += 1;
            if failed_in_round >= self.urls.len() {
                // Every node failed once: the cluster (or its store) is down for now.
                failed_in_round = 0;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}
