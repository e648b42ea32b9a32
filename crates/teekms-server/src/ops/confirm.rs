//! Data-plane confirmation (spec/freshness-v1.md, "Cluster rules", 3): on a shared
//! store, a data-plane answer (encrypt, decrypt, …) is given only once members that,
//! with this node, form a majority say that none of them holds a newer epoch or another
//! chain. A node that the host cut off from its peers, with a stale copy of the
//! database in front of it, thus cannot keep serving a key its owner has since
//! disabled, or a token since revoked, through the other members.
//!
//! One round of questions serves every request that was waiting when it began, as the
//! audit's group commit serves every entry: requests register, a round starts when
//! the previous one ends, and its answer goes to all who registered before it started
//! (so a round always begins after the state it confirms was read). Rounds run on one
//! task, over the connections the node keeps to each member; members answer from
//! memory, without reading the store. The round runs while the request's audit entry commits.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use teekms_core::api::PeerEpoch;
use teekms_core::freshness::{Epoch, PEER_EPOCH_LABEL};
use tokio::sync::{mpsc, oneshot};

use super::members::Member;
use super::peers::{ASK_TIMEOUT as ROUND_TIMEOUT, Peers};
use super::{OpError, Service};

/// How long the member list read from the store is used before it is read again.
const MEMBERS_FOR: Duration = Duration::from_secs(5);
/// A failed round is tried again with the members read anew if its list is older.
const FRESH_ENOUGH: Duration = Duration::from_millis(100);

type Waiter = oneshot::Sender<Result<(), String>>;

/// The confirmation rounds of a node on a shared store.
pub struct Confirmer {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl Confirmer {
    /// Starts the rounds' task for `service` (ends when the service is dropped).
    pub fn start(service: Weak<Service>, peers: Arc<Peers>) -> Confirmer {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(rounds(service, peers, rx));
        Confirmer { requests }
    }

    /// Waits for a round that began after this call: Ok if enough members confirmed.
    pub async fn confirm(&self) -> Result<(), OpError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| OpError::Unavailable)?;
        rx.await
            .map_err(|_| OpError::Unavailable)?
            .map_err(OpError::FreshnessUnconfirmed)
    }
}

/// A member's asker: a task that asks it the questions of the rounds in turn, over the
/// node's kept connections (a slow member is asked only the newest round's question).
struct Asker {
    url: String,
    questions: mpsc::UnboundedSender<Question>,
}

/// A round's question to one member: where its answer goes.
struct Question {
    answers: mpsc::UnboundedSender<(Member, Result<PeerEpoch, String>)>,
}

async fn rounds(
    service: Weak<Service>,
    peers: Arc<Peers>,
    mut requests: mpsc::UnboundedReceiver<Waiter>,
) {
    let mut askers: HashMap<String, Asker> = HashMap::new();
    let mut members: Option<(Instant, Vec<Member>)> = None;
    while let Some(first) = requests.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiting.push(more);
        }
        let Some(app) = service.upgrade() else { return };
        let mut outcome = round(&app, &peers, &mut askers, &mut members).await;
        if outcome.is_err()
            && members
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() > FRESH_ENOUGH)
        {
            // The membership may have changed since it was read (a member removed or
            // moved): once more with the store's.
            members = None;
            outcome = round(&app, &peers, &mut askers, &mut members).await;
        }
        drop(app);
        for w in waiting {
            let _ = w.send(outcome.clone());
        }
    }
}

/// One round: every other member is asked at once; the round ends as soon as enough
/// confirm, when every member answered, or after 2 s.
async fn round(
    app: &Arc<Service>,
    peers: &Arc<Peers>,
    askers: &mut HashMap<String, Asker>,
    members: &mut Option<(Instant, Vec<Member>)>,
) -> Result<(), String> {
    if members
        .as_ref()
        .is_none_or(|(at, _)| at.elapsed() >= MEMBERS_FOR)
    {
        let service = app.clone();
        match tokio::task::spawn_blocking(move || service.members()).await {
            Ok(Ok(list)) => *members = Some((Instant::now(), list)),
            Ok(Err(e)) if members.is_none() => return Err(format!("the members: {e}")),
            _ => {}
        }
    }
    let me = app.keyring.keys().node_id().to_hex();
    let others: Vec<Member> = members
        .as_ref()
        .map(|(_, list)| list.iter().filter(|m| m.node_id != me).cloned().collect())
        .unwrap_or_default();
    // Members gone, or moved, lose their asker (and its connection).
    askers.retain(|id, a| others.iter().any(|m| &m.node_id == id && m.url == a.url));
    let n = others.len() + 1;
    let needed = n / 2; // with this node, a majority
    if needed == 0 {
        return Ok(());
    }
    let (epoch, _) = app.freshness().status();
    let (answers, mut replies) = mpsc::unbounded_channel();
    for m in &others {
        let asker = askers.entry(m.node_id.clone()).or_insert_with(|| {
            let (questions, rx) = mpsc::unbounded_channel();
            let key = app.keyring.cluster().derive(PEER_EPOCH_LABEL);
            tokio::spawn(asker(m.clone(), key, peers.clone(), rx));
            Asker {
                url: m.url.clone(),
                questions,
            }
        });
        let _ = asker.questions.send(Question {
            answers: answers.clone(),
        });
    }
    drop(answers);
    let deadline = tokio::time::Instant::now() + ROUND_TIMEOUT;
    let mut confirmed = 0;
    let mut newer = false;
    let mut why = Vec::new();
    while confirmed < needed {
        let Ok(Some((m, answer))) = tokio::time::timeout_at(deadline, replies.recv()).await else {
            break;
        };
        match answer {
            Ok(a) if a.recovering => why.push(format!("{} is recovering", short(&m))),
            Ok(a) if a.epoch > epoch.number => {
                newer = true;
                why.push(format!("{} holds epoch {}", short(&m), a.epoch));
            }
            Ok(a) if a.epoch == epoch.number && a.hash.0 != epoch.hash => {
                why.push(format!(
                    "{} holds another chain at epoch {}",
                    short(&m),
                    a.epoch
                ));
            }
            Ok(_) => confirmed += 1,
            Err(e) => why.push(format!("{}: {e}", short(&m))),
        }
    }
    if newer {
        // A member took a change this node has not seen yet: its memory catches up
        // from the store, and the next round confirms.
        let service = app.clone();
        tokio::task::spawn_blocking(move || service.watch_store());
    }
    if confirmed >= needed {
        return Ok(());
    }
    Err(unconfirmed(epoch, confirmed, needed, n, &why))
}

/// Asks member `m` the rounds' questions, one at a time, each within the round's time.
async fn asker(
    m: Member,
    key: zeroize::Zeroizing<[u8; 32]>,
    peers: Arc<Peers>,
    mut questions: mpsc::UnboundedReceiver<Question>,
) {
    while let Some(mut q) = questions.recv().await {
        while let Ok(newer) = questions.try_recv() {
            q = newer;
        }
        let answer = peers.ask(&m, &key, true).await;
        let _ = q.answers.send((m.clone(), answer));
    }
}

fn unconfirmed(epoch: Epoch, confirmed: usize, needed: usize, n: usize, why: &[String]) -> String {
    format!(
        "freshness_unconfirmed: this node could not confirm with a majority of the cluster's {n} members that nobody holds an epoch newer than its {} ({confirmed} of the {needed} other members needed confirmed within {} s{}); nothing is answered that a majority has not confirmed — retry, or ask another node",
        epoch.number,
        ROUND_TIMEOUT.as_secs(),
        if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        }
    )
}

fn short(m: &Member) -> String {
    format!("member {}", &m.node_id[..m.node_id.len().min(8)])
}
