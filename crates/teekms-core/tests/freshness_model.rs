//! A model of freshness held in a majority of nodes' memory (spec/freshness-v1.md,
//! "Cluster"), checked exhaustively with stateright before the protocol is built.
//!
//! Nodes share one store that the host can set to any state it ever held (a rollback,
//! or bringing it forward again). Writes chain on the store's state; the writer sends
//! `advance` and the change is acknowledged to its owner once a majority of the
//! membership holds it. The host restarts nodes (their memory is lost) and drops
//! messages; a restarted node recovers its memory from peers; a node serves the store
//! only if it is not behind its memory and a confirmation from peers says nobody is
//! newer; a node joins through a joint membership (majorities of both the old and the
//! new membership).
//!
//! The invariant: **an acknowledged change is never undone** — whenever a node serves,
//! every acknowledged write is in the history of the store it serves. It holds with the
//! rules as built; the test also shows that the checker finds the counterexample when
//! a restarted node recovers from peers that form a majority only *with itself*.

use std::collections::BTreeSet;

use stateright::{Checker, Model, Property};

/// A node's memory: the epoch (number, write id) it holds, or none (restarted, lost).
type Memory = Option<(u8, u8)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    /// Each write: (parent write, epoch number). Write 0 is the empty store.
    writes: Vec<(u8, u8)>,
    /// The write the store shows now.
    store: u8,
    /// Each node's memory.
    mem: Vec<Memory>,
    /// The membership (bit i: node i), and during a change the new one.
    members: u8,
    joining: Option<u8>,
    /// A write waiting for acknowledgements: (write, who holds it).
    pending: Option<(u8, u8)>,
    /// Writes acknowledged to their owners.
    acked: BTreeSet<u8>,
    restarts: u8,
    /// A node served a store that lacks an acknowledged write.
    undone: bool,
    /// A restarted node got its memory back and served (reachability).
    recovered_and_served: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Write(usize),
    Deliver(usize),
    Acknowledge,
    /// No majority within the deadline: committed, not acknowledged
    /// (`freshness_unconfirmed`).
    GiveUp,
    Restart(usize),
    /// Recover from the peers in the mask.
    Recover(usize, u8),
    /// Serve, confirmed by the peers in the mask.
    Serve(usize, u8),
    /// The host sets the store to a state it held.
    SetStore(u8),
    /// A node outside the membership joins, learning from the peers in the mask.
    Join(usize, u8),
    /// The joint membership becomes the new one.
    FinishJoin,
}

/// How a restarted node may recover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// From peers that meet every acknowledgement without it: at least
    /// `n - majority + 1` of a membership of `n` (both others of three, the other of
    /// two, two others of four; as built).
    MeetsEveryAcknowledgement,
    /// From peers that are a majority of the membership without it (stricter).
    MajorityOfPeers,
    /// From peers that form a majority only together with itself (unsafe: its own
    /// memory is gone, so it cannot stand for an acknowledgement it gave).
    MajorityWithItself,
}

struct Fresh {
    nodes: usize,
    max_writes: u8,
    max_restarts: u8,
    recovery: Recovery,
}

fn count(mask: u8) -> u32 {
    mask.count_ones()
}

fn majority_of(mask: u8) -> u32 {
    count(mask) / 2 + 1
}

impl Fresh {
    fn bit(i: usize) -> u8 {
        1 << i
    }

    /// Whether `holders` is a majority of the membership (of both, during a change).
    fn quorum(&self, s: &State, holders: u8) -> bool {
        let of = |m: u8| count(holders & m) >= majority_of(m);
        of(s.members) && s.joining.is_none_or(of)
    }

    /// Whether `peers` (not counting the restarted node) meet every majority of the
    /// membership (of both, during a change) in a node other than the restarted one.
    fn meets_every_acknowledgement(&self, s: &State, peers: u8) -> bool {
        let of = |m: u8| count(peers & m) > count(m) - majority_of(m);
        of(s.members) && s.joining.is_none_or(of)
    }

    fn voters(s: &State) -> u8 {
        s.members | s.joining.unwrap_or(0)
    }

    /// Whether write `a` is `b` or in its history.
    fn ancestor(s: &State, a: u8, mut b: u8) -> bool {
        loop {
            if a == b {
                return true;
            }
            if b == 0 {
                return false;
            }
            b = s.writes[b as usize].0;
        }
    }

    /// The newest memory among the peers in `mask`, if all of them lie on one chain
    /// (peers exchange the epochs they hold since the oldest of them, so that two
    /// chains that split — a write on a rolled-back store — are told apart: nobody
    /// recovers or serves from a fork).
    fn newest(s: &State, mask: u8) -> Option<(u8, u8)> {
        let held: Vec<(u8, u8)> = s
            .mem
            .iter()
            .enumerate()
            .filter(|(j, _)| mask & Fresh::bit(*j) != 0)
            .map(|(_, m)| *m)
            .collect::<Option<_>>()?;
        let best = held.iter().copied().max_by_key(|m| m.0).unwrap_or((0, 0));
        held.iter()
            .all(|m| Fresh::ancestor(s, m.1, best.1))
            .then_some(best)
    }

    /// Whether a node with memory `m` may use the store's state: not behind it, and
    /// on its chain.
    fn store_ok(s: &State, m: (u8, u8)) -> bool {
        let (_, num) = s.writes[s.store as usize];
        num >= m.0 && Fresh::ancestor(s, m.1, s.store)
    }

    fn peers_with_memory(s: &State, i: usize, within: u8) -> Vec<u8> {
        // Every subset of the other nodes in `within` that all hold a memory.
        let others: Vec<usize> = (0..s.mem.len())
            .filter(|&j| j != i && within & Fresh::bit(j) != 0 && s.mem[j].is_some())
            .collect();
        (0u32..(1 << others.len()))
            .map(|sel| {
                others
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| sel & (1 << k) != 0)
                    .fold(0u8, |acc, (_, &j)| acc | Fresh::bit(j))
            })
            .collect()
    }
}

impl Model for Fresh {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        // Nodes 0..n-1 are members; the last node is outside, to join.
        let members = (1u8 << (self.nodes - 1)) - 1;
        let mut mem = vec![Some((0, 0)); self.nodes];
        mem[self.nodes - 1] = None;
        vec![State {
            writes: vec![(0, 0)],
            store: 0,
            mem,
            members,
            joining: None,
            pending: None,
            acked: BTreeSet::new(),
            restarts: 0,
            undone: false,
            recovered_and_served: false,
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        let voters = Fresh::voters(s);
        for i in 0..self.nodes {
            let member = voters & Fresh::bit(i) != 0;
            match s.mem[i] {
                Some(m) if member => {
                    if s.pending.is_none()
                        && (s.writes.len() as u8) <= self.max_writes
                        && Fresh::store_ok(s, m)
                    {
                        out.push(Action::Write(i));
                    }
                    if Fresh::store_ok(s, m) {
                        for c in Fresh::peers_with_memory(s, i, voters) {
                            if self.quorum(s, c | Fresh::bit(i)) {
                                out.push(Action::Serve(i, c));
                            }
                        }
                    }
                    if s.restarts < self.max_restarts {
                        out.push(Action::Restart(i));
                    }
                }
                None if member => {
                    for q in Fresh::peers_with_memory(s, i, voters) {
                        let enough = match self.recovery {
                            Recovery::MeetsEveryAcknowledgement => {
                                self.meets_every_acknowledgement(s, q)
                            }
                            Recovery::MajorityOfPeers => self.quorum(s, q),
                            Recovery::MajorityWithItself => self.quorum(s, q | Fresh::bit(i)),
                        };
                        if enough {
                            out.push(Action::Recover(i, q));
                        }
                    }
                }
                None if s.joining.is_none() && s.pending.is_none() => {
                    for q in Fresh::peers_with_memory(s, i, s.members) {
                        if self.quorum(s, q) {
                            out.push(Action::Join(i, q));
                        }
                    }
                }
                _ => {}
            }
            if let Some((_, holders)) = s.pending
                && member
                && holders & Fresh::bit(i) == 0
                && s.mem[i].is_some()
            {
                out.push(Action::Deliver(i));
            }
        }
        if let Some((_, holders)) = s.pending {
            if self.quorum(s, holders) {
                out.push(Action::Acknowledge);
            }
            out.push(Action::GiveUp);
        }
        if s.joining.is_some() && s.pending.is_none() {
            out.push(Action::FinishJoin);
        }
        for w in 0..s.writes.len() as u8 {
            if w != s.store {
                out.push(Action::SetStore(w));
            }
        }
    }

    fn next_state(&self, s: &State, a: Action) -> Option<State> {
        let mut n = s.clone();
        match a {
            Action::Write(i) => {
                let num = s.writes[s.store as usize].1 + 1;
                n.writes.push((s.store, num));
                let w = (n.writes.len() - 1) as u8;
                n.store = w;
                n.mem[i] = Some((num, w));
                n.pending = Some((w, Fresh::bit(i)));
            }
            Action::Deliver(i) => {
                let (w, holders) = s.pending?;
                let num = s.writes[w as usize].1;
                let m = s.mem[i]?;
                // A peer takes only a newer epoch that continues what it holds (a
                // different write at an epoch it knows is a fork: refused).
                if num > m.0 && Fresh::ancestor(s, m.1, w) {
                    n.mem[i] = Some((num, w));
                    n.pending = Some((w, holders | Fresh::bit(i)));
                } else if m == (num, w) {
                    n.pending = Some((w, holders | Fresh::bit(i)));
                } else {
                    return None;
                }
            }
            Action::Acknowledge => {
                let (w, _) = s.pending?;
                n.acked.insert(w);
                n.pending = None;
            }
            Action::GiveUp => n.pending = None,
            Action::Restart(i) => {
                n.mem[i] = None;
                n.restarts += 1;
                if let Some((w, holders)) = s.pending {
                    n.pending = Some((w, holders & !Fresh::bit(i)));
                }
            }
            Action::Recover(i, q) => n.mem[i] = Some(Fresh::newest(s, q)?),
            Action::Serve(i, c) => {
                let newest = Fresh::newest(s, c)?;
                let m = s.mem[i]?;
                // Confirmed: nobody asked is newer than the store, or on another chain.
                let (_, num) = s.writes[s.store as usize];
                if newest.0 > num
                    || !Fresh::ancestor(s, newest.1, s.store)
                    || !Fresh::store_ok(s, m)
                {
                    return None;
                }
                if !s.acked.iter().all(|&w| Fresh::ancestor(s, w, s.store)) {
                    n.undone = true;
                }
                if s.restarts > 0 {
                    n.recovered_and_served = true;
                }
            }
            Action::SetStore(w) => n.store = w,
            Action::Join(i, q) => {
                n.mem[i] = Some(Fresh::newest(s, q)?);
                n.joining = Some(s.members | Fresh::bit(i));
            }
            Action::FinishJoin => {
                n.members = s.joining?;
                n.joining = None;
            }
        }
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("an acknowledged change is never undone", |_, s: &State| {
                !s.undone
            }),
            Property::sometimes("a change is acknowledged", |_, s: &State| {
                !s.acked.is_empty()
            }),
            Property::sometimes("a restarted node recovers and serves", |_, s: &State| {
                s.recovered_and_served
            }),
            Property::sometimes("a node joins", |m: &Fresh, s: &State| {
                s.members & Fresh::bit(m.nodes - 1) != 0
            }),
        ]
    }
}

#[test]
fn an_acknowledged_change_is_never_undone() {
    let checker = Fresh {
        nodes: 4,
        max_writes: 3,
        max_restarts: 2,
        recovery: Recovery::MeetsEveryAcknowledgement,
    }
    .checker()
    .spawn_bfs()
    .join();
    checker.assert_properties();
    println!("states checked: {}", checker.unique_state_count());
    assert!(checker.unique_state_count() > 10_000);
}

#[test]
fn recovering_from_a_majority_of_the_peers_is_safe_too() {
    let checker = Fresh {
        nodes: 4,
        max_writes: 2,
        max_restarts: 2,
        recovery: Recovery::MajorityOfPeers,
    }
    .checker()
    .spawn_bfs()
    .join();
    checker.assert_properties();
}

#[test]
fn recovering_from_a_majority_that_counts_the_restarted_node_is_caught() {
    let checker = Fresh {
        nodes: 4,
        max_writes: 2,
        max_restarts: 1,
        recovery: Recovery::MajorityWithItself,
    }
    .checker()
    .spawn_bfs()
    .join();
    let path = checker
        .discovery("an acknowledged change is never undone")
        .expect("the checker finds the counterexample");
    println!("counterexample: {:?}", path.into_actions());
}
