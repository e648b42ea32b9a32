//! A cluster's members (spec/freshness-v1.md, "Members"): each node of a shared store
//! records, sealed, where it answers; members ask each other for the epoch they hold,
//! and answer with a MAC under a subkey of the cluster key, which only members have.

use serde::{Deserialize, Serialize};
use teekms_core::api::{ClusterStatus, MemberStatus, PeerEpoch, PeerEpochRequest};
use teekms_core::audit::AuditDraft;
use teekms_core::freshness::{Epoch, PEER_EPOCH_LABEL, peer_epoch};
use teekms_store::Write;

use super::peers::ASK_TIMEOUT;
use super::{OpError, Service};
use crate::writer::Job;

/// Names of member records in the store's meta table: `member/<node id>`.
pub const MEMBER_PREFIX: &str = "member/";

/// A member record (sealed as `("member", name, 1)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its node id (hex).
    pub node_id: String,
    /// Where it answers (`https://HOST:PORT`).
    pub url: String,
}

impl Service {
    fn this_node(&self) -> String {
        self.keyring.keys().node_id().to_hex()
    }

    /// The members recorded in the shared store, this node's record included.
    pub fn members(&self) -> Result<Vec<Member>, OpError> {
        let rows = self.reader().meta_prefixed(MEMBER_PREFIX)?;
        rows.into_iter()
            .map(|(name, record)| {
                let plain = self
                    .keyring
                    .cluster()
                    .open("member", &name, 1, &record)
                    .map_err(|e| OpError::Damaged(e.to_string()))?;
                let m: Member = serde_json::from_slice(&plain)
                    .map_err(|e| OpError::Damaged(format!("member record {name}: {e}")))?;
                if name[MEMBER_PREFIX.len()..] != m.node_id {
                    return Err(OpError::Damaged(format!(
                        "member record {name} names node {}",
                        m.node_id
                    )));
                }
                Ok(m)
            })
            .collect()
    }

    /// Records this node as a member answering at `url` (a state change, audited),
    /// unless its record already says so. Blocks.
    pub fn register_member(&self, url: &str, now: u64) -> Result<(), OpError> {
        let node_id = self.this_node();
        let me = Member {
            node_id: node_id.clone(),
            url: url.to_owned(),
        };
        let members = self.members()?;
        if members.contains(&me) {
            return Ok(());
        }
        // A node restarted where another answered before it replaces that record: a
        // node without a sealing key (TDX) comes back with a new node id at every start,
        // and its old records would count forever towards majorities.
        let mut writes: Vec<Write> = members
            .iter()
            .filter(|m| m.url == url && m.node_id != node_id)
            .map(|m| Write::DeleteMeta {
                name: format!("{MEMBER_PREFIX}{}", m.node_id),
            })
            .collect();
        let name = format!("{MEMBER_PREFIX}{node_id}");
        let plain = serde_json::to_vec(&me).expect("member records serialize");
        let record = self.keyring.cluster().seal("member", &name, 1, &plain);
        writes.push(Write::PutMeta { name, record });
        let after: Vec<Member> = members
            .iter()
            .filter(|m| m.url != url && m.node_id != node_id)
            .cloned()
            .chain(std::iter::once(me.clone()))
            .collect();
        self.writer.submit(Job {
            writes,
            audit: AuditDraft {
                time: now,
                operation: "cluster-member".into(),
                owner: None,
                key_id: None,
                key_version: None,
                outcome: format!("ok: {url}"),
                caller: format!("node:{node_id}"),
            },
            on_conflict: "conflict",
        })?;
        // A membership change: majorities of the membership before and after hold it
        // (spec/freshness-v1.md, "Cluster rules", 4).
        self.confirm_by_majorities(&[members, after])
    }

    /// Commits a state change. On a shared store, answers only once a majority of the
    /// members (this node included) hold its epoch (spec/freshness-v1.md, "Cluster
    /// rules", 1); otherwise the change stays committed and enforced here, and the
    /// answer is 503 `freshness_unconfirmed`. Blocks (at most about 2 s more).
    pub(super) fn commit_change(&self, job: Job) -> Result<teekms_store::Applied, OpError> {
        let applied = self.writer.submit(job)?;
        if applied == teekms_store::Applied::Done {
            #[cfg(debug_assertions)]
            crate::fault::exit_after_commit();
            self.confirm_by_majority()?;
        }
        Ok(applied)
    }

    /// On a shared store: a majority of the members hold this node's epoch (or a later
    /// one); a no-op elsewhere. Asking makes each member read the store's epoch first.
    pub(super) fn confirm_by_majority(&self) -> Result<(), OpError> {
        if !self.settings.shared_store {
            return Ok(());
        }
        let mut members = self.members()?;
        let me = self.this_node();
        if !members.iter().any(|m| m.node_id == me) {
            // Not recorded yet (it records itself once it has recovered): it is one.
            members.push(Member {
                node_id: me,
                url: String::new(),
            });
        }
        self.confirm_by_majorities(&[members])
    }

    /// On a shared store: a majority of *each* of `memberships` holds this node's epoch
    /// (or a later one). A membership change (rule 4) passes the membership before and
    /// after it, so that neither can lose the change. Every member of any of them is
    /// asked at once, 2 s each. Blocks.
    pub(super) fn confirm_by_majorities(&self, memberships: &[Vec<Member>]) -> Result<(), OpError> {
        if !self.settings.shared_store {
            return Ok(());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let (epoch, _) = self.freshness().status();
        let me = self.this_node();
        let mut others: Vec<Member> = Vec::new();
        for m in memberships.iter().flatten() {
            if m.node_id != me && !others.iter().any(|o| o.node_id == m.node_id) {
                others.push(m.clone());
            }
        }
        let ids: Vec<Vec<String>> = memberships
            .iter()
            .map(|ms| ms.iter().map(|m| m.node_id.clone()).collect())
            .collect();
        if lacking(&ids, std::slice::from_ref(&me)).is_none() {
            return Ok(());
        }
        let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
        let peers = self.peers.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let ask_ids = ids.clone();
        runtime.spawn(async move {
            let mut asks = tokio::task::JoinSet::new();
            for m in others {
                let (key, peers) = (key.clone(), peers.clone());
                asks.spawn(async move { peers.ask(&m, &key, false).await });
            }
            let mut held = vec![me];
            while lacking(&ask_ids, &held).is_some()
                && let Some(answer) = asks.join_next().await
            {
                if let Ok(Ok(a)) = answer
                    && a.alarm.is_none()
                    && !a.recovering
                    && (a.epoch > epoch.number
                        || (a.epoch == epoch.number && a.hash.0 == epoch.hash))
                {
                    held.push(a.node_id.to_hex());
                }
            }
            let _ = tx.send(held);
            // The members not heard from yet are still asked, not cut off: asking makes
            // each read the store's epoch, so none lags behind an acknowledged change
            // (a lagging member fails its next data-plane confirmation).
            asks.detach_all();
        });
        let held = rx
            .recv()
            .map_err(|_| OpError::Internal("the confirmation task ended".into()))?;
        let Some((i, h, n)) = lacking(&ids, &held) else {
            return Ok(());
        };
        let which = match (memberships.len(), i) {
            (1, _) => String::new(),
            (_, 0) => " (the membership before this change)".into(),
            _ => " (the membership after this change)".into(),
        };
        Err(OpError::FreshnessUnconfirmed(format!(
            "freshness_unconfirmed: the change is committed and enforced on this node, but only {h} of the cluster's {n} members{which} hold its epoch {} within {} s (a majority is {}); retrying is safe, and answers the same until a majority is up",
            epoch.number,
            ASK_TIMEOUT.as_secs(),
            n / 2 + 1
        )))
    }

    /// This node's answer to a member's `POST /v1/cluster/epoch`: its memory, MAC'd. It
    /// answers with its alarm up too (what it holds is what members need to know).
    pub fn peer_epoch(&self, req: &PeerEpochRequest) -> PeerEpoch {
        let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
        peer_epoch(
            &key,
            &req.nonce.0,
            self.keyring.keys().node_id().0,
            self.freshness().held(),
        )
    }

    /// One attempt to recover the cluster's epoch after a start (spec/freshness-v1.md,
    /// "Cluster rules", 2): every other member is asked at once, and the newest epoch
    /// is taken once members that have not restarted themselves answer, enough of them
    /// that every acknowledged change is held by one (a node not yet a member — a
    /// joiner — needs a majority of the members it joins). Answers that disagree on an
    /// epoch's hash (a fork) recover nothing. Then the store is checked against what
    /// was learned. Returns whether the node is done recovering.
    pub async fn try_recover(self: &std::sync::Arc<Self>) -> Result<bool, OpError> {
        if self.freshness().recovering().is_none() {
            return Ok(true);
        }
        let service = self.clone();
        let members = tokio::task::spawn_blocking(move || service.members())
            .await
            .map_err(|e| OpError::Internal(format!("members task: {e}")))??;
        let me = self.this_node();
        let member = members.iter().any(|m| m.node_id == me);
        let others: Vec<Member> = members.into_iter().filter(|m| m.node_id != me).collect();
        let learned = if others.is_empty() {
            // A cluster of one: nobody holds more than its store (as a single node).
            None
        } else {
            let needed = if member {
                // Every acknowledgement was held by a majority, which may have counted
                // this node: the peers asked must meet every majority in another node
                // (n - majority + 1 of a membership of n: the other of two, both
                // others of three, two others of four, three others of five).
                let n = others.len() + 1;
                n - (n / 2 + 1) + 1
            } else {
                others.len() / 2 + 1
            };
            let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
            let mut asks = tokio::task::JoinSet::new();
            for m in &others {
                let (m, key, peers) = (m.clone(), key.clone(), self.peers.clone());
                asks.spawn(async move { peers.ask(&m, &key, false).await });
            }
            let answers: Vec<PeerEpoch> = asks
                .join_all()
                .await
                .into_iter()
                .filter_map(Result::ok)
                .filter(|a| !a.recovering)
                .collect();
            let progress = |what: &str| {
                format!(
                    "{} of the {} other members answered without restarting themselves, {needed} needed{what}",
                    answers.len(),
                    others.len()
                )
            };
            if answers.len() < needed {
                self.freshness().recovery_progress(progress(""));
                return Ok(false);
            }
            let forked = answers.iter().any(|a| {
                answers
                    .iter()
                    .any(|b| a.epoch == b.epoch && a.hash.0 != b.hash.0)
            });
            if forked {
                let text = progress(", but they hold different hashes for one epoch (a fork)");
                tracing::error!(progress = %text, "freshness: the members forked");
                self.freshness().recovery_progress(text);
                return Ok(false);
            }
            let newest = answers
                .iter()
                .max_by_key(|a| a.epoch)
                .expect("a majority is not empty");
            let audit_seq = answers.iter().map(|a| a.audit_seq).max().unwrap_or(0);
            Some((
                Epoch {
                    number: newest.epoch,
                    hash: newest.hash.0,
                },
                audit_seq,
            ))
        };
        self.resume_from(learned).await;
        Ok(true)
    }

    /// Rule 5: the cluster admin accepts epoch `accepted` for this node, which waits to
    /// recover (a majority of the members restarted at once). The node then holds it,
    /// and refuses a store behind it. Audited once the node may write (a store behind
    /// the accepted epoch gets nothing written: the alarm is logged instead).
    pub async fn cluster_resume(
        self: &std::sync::Arc<Self>,
        owner: &teekms_core::OwnerPublicKey,
        accepted: Epoch,
        now: u64,
    ) -> Result<MemberStatus, OpError> {
        if !self.settings.shared_store {
            return Err(OpError::NotFound(
                "this node keeps no shared store: a cluster of one never waits to recover".into(),
            ));
        }
        let fingerprint = owner.fingerprint();
        let service = self.clone();
        let admin = tokio::task::spawn_blocking(move || {
            crate::node::read_cluster_admin(&service.keyring, service.reader().as_mut())
        })
        .await
        .map_err(|e| OpError::Internal(format!("cluster admin task: {e}")))?
        .map_err(|e| OpError::Internal(format!("the cluster admin record: {e}")))?;
        if admin.as_deref() != Some(fingerprint.as_str()) {
            // Not audited: a node that waits to recover writes nothing to its store.
            tracing::warn!(caller = %fingerprint, "cluster-resume denied: not the cluster admin");
            return Err(OpError::Forbidden(
                "only the cluster admin may resume a node".into(),
            ));
        }
        if !self.resume_from(Some((accepted, 0))).await {
            let (epoch, _) = self.freshness().status();
            return Err(OpError::Exists(format!(
                "this node is not waiting for `cluster resume`: it holds epoch {}",
                epoch.short()
            )));
        }
        tracing::warn!(caller = %fingerprint, epoch = %accepted.short(), "cluster-resume: the cluster admin accepted an epoch");
        let (epoch, alarm) = self.freshness().status();
        if alarm.is_none() {
            let service = self.clone();
            let outcome = format!(
                "ok: epoch {} {}",
                accepted.number,
                hex::encode(accepted.hash)
            );
            let caller = format!("owner:{fingerprint}");
            tokio::task::spawn_blocking(move || {
                service.audit(AuditDraft {
                    time: now,
                    operation: "cluster-resume".into(),
                    owner: None,
                    key_id: None,
                    key_version: None,
                    outcome,
                    caller,
                })
            })
            .await
            .map_err(|e| OpError::Internal(format!("audit task: {e}")))??;
        }
        Ok(MemberStatus {
            node_id: self.this_node(),
            url: String::new(),
            epoch: Some(epoch.number),
            hash: Some(hex::encode(epoch.hash)),
            audit_seq: Some(self.freshness().audit_seq()),
            alarm,
            recovering: false,
            error: None,
        })
    }

    /// A cluster made without a cluster admin has nobody to run `cluster resume`: a node
    /// that could not recover from its peers (rule 2) serves its store as it is, with a
    /// warning, the guarantee of a single node (spec/freshness-v1.md, "Cluster rules",
    /// 5). Only if the cluster's sealed record says it has no admin: a deleted record
    /// does not make a cluster admin-less. Returns whether it did so.
    pub async fn resume_without_admin(self: &std::sync::Arc<Self>) -> bool {
        let service = self.clone();
        let without = tokio::task::spawn_blocking(move || {
            crate::node::made_without_admin(&service.keyring, service.reader().as_mut())
        })
        .await;
        if !matches!(without, Ok(Ok(true))) {
            return false;
        }
        tracing::warn!(
            "freshness: too few members answered, and this cluster has no cluster admin to resume it: serving the store as it is (a restart on a rolled-back store is caught by owners' stamps only)"
        );
        self.resume_from(None).await
    }

    /// Ends recovery with `learned` and checks the store against it at once (a store
    /// behind it raises the alarm before anything is served).
    async fn resume_from(self: &std::sync::Arc<Self>, learned: Option<(Epoch, u64)>) -> bool {
        if !self.freshness().recover(learned) {
            return false;
        }
        let service = self.clone();
        // An alarm is logged where it is raised, and answered to every request.
        let _ = tokio::task::spawn_blocking(move || service.watch_store()).await;
        true
    }

    /// Every member's epoch, as it answers now (others are asked at once, for at most
    /// 2 s each; an answer that does not verify is reported, not used).
    pub async fn cluster_status(self: &std::sync::Arc<Self>) -> Result<ClusterStatus, OpError> {
        if !self.settings.shared_store {
            return Err(OpError::NotFound(
                "this node keeps no shared store: it is a cluster of one (see /v1/ready)".into(),
            ));
        }
        let service = self.clone();
        let members = tokio::task::spawn_blocking(move || service.members())
            .await
            .map_err(|e| OpError::Internal(format!("members task: {e}")))??;
        let me = self.this_node();
        let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
        // This node's own line comes from its memory: nothing to ask, nothing to MAC.
        let (epoch, alarm) = self.freshness().status();
        let mut out = vec![MemberStatus {
            url: members
                .iter()
                .find(|m| m.node_id == me)
                .map_or_else(String::new, |m| m.url.clone()),
            node_id: me.clone(),
            epoch: Some(epoch.number),
            hash: Some(hex::encode(epoch.hash)),
            audit_seq: Some(self.freshness().audit_seq()),
            alarm,
            recovering: self.freshness().recovering().is_some(),
            error: None,
        }];
        // Asked at once, each with its own deadline: the slowest bounds the whole.
        let mut asks = tokio::task::JoinSet::new();
        for (i, m) in members.into_iter().filter(|m| m.node_id != me).enumerate() {
            let (key, peers) = (key.clone(), self.peers.clone());
            asks.spawn(async move {
                let answer = peers.ask(&m, &key, false).await;
                (i, status_of(m, answer))
            });
        }
        let mut others = asks.join_all().await;
        others.sort_by_key(|(i, _)| *i);
        out.extend(others.into_iter().map(|(_, s)| s));
        Ok(ClusterStatus { members: out })
    }
}

/// The first of `memberships` (node ids) of which `held` is no majority: its index, how
/// many of it hold, and its size. An empty membership (before a cluster's first member)
/// has nothing to lose.
fn lacking(memberships: &[Vec<String>], held: &[String]) -> Option<(usize, usize, usize)> {
    memberships.iter().enumerate().find_map(|(i, ms)| {
        let h = ms.iter().filter(|id| held.contains(id)).count();
        (!ms.is_empty() && h <= ms.len() / 2).then_some((i, h, ms.len()))
    })
}

fn status_of(m: Member, answer: Result<PeerEpoch, String>) -> MemberStatus {
    match answer {
        Ok(a) => MemberStatus {
            node_id: m.node_id,
            url: m.url,
            epoch: Some(a.epoch),
            hash: Some(a.hash.to_hex()),
            audit_seq: Some(a.audit_seq),
            alarm: a.alarm,
            recovering: a.recovering,
            error: None,
        },
        Err(e) => MemberStatus {
            node_id: m.node_id,
            url: m.url,
            epoch: None,
            hash: None,
            audit_seq: None,
            alarm: None,
            recovering: false,
            error: Some(e),
        },
    }
}
