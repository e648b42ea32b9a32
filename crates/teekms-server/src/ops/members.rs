//! A cluster's members (spec/freshness-v1.md, "Members"): each node of a shared store
//! records, sealed, where it answers; members ask each other for the epoch they hold,
//! and answer with a MAC under a subkey of the cluster key, which only members have.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use teekms_core::api::{ClusterStatus, MemberStatus, PeerEpoch, PeerEpochRequest};
use teekms_core::audit::AuditDraft;
use teekms_core::freshness::{PEER_EPOCH_LABEL, peer_epoch, peer_epoch_verifies};
use teekms_store::Write;

use super::{OpError, Service};
use crate::writer::Job;

/// Names of member records in the store's meta table: `member/<node id>`.
pub const MEMBER_PREFIX: &str = "member/";
/// How long a member's answer is waited for.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

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
        if self.members()?.contains(&me) {
            return Ok(());
        }
        let name = format!("{MEMBER_PREFIX}{node_id}");
        let plain = serde_json::to_vec(&me).expect("member records serialize");
        let record = self.keyring.cluster().seal("member", &name, 1, &plain);
        self.writer.submit(Job {
            writes: vec![Write::PutMeta { name, record }],
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
        Ok(())
    }

    /// Commits a state change. On a shared store, answers only once a majority of the
    /// members (this node included) hold its epoch (spec/freshness-v1.md, "Cluster
    /// rules", 1); otherwise the change stays committed and enforced here, and the
    /// answer is 503 `freshness_unconfirmed`. Blocks (at most about 2 s more).
    pub(super) fn commit_change(&self, job: Job) -> Result<teekms_store::Applied, OpError> {
        let applied = self.writer.submit(job)?;
        if applied == teekms_store::Applied::Done {
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
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let (epoch, _) = self.freshness().status();
        let me = self.this_node();
        let others: Vec<Member> = self
            .members()?
            .into_iter()
            .filter(|m| m.node_id != me)
            .collect();
        let members = others.len() + 1;
        let majority = members / 2 + 1;
        if majority <= 1 {
            return Ok(());
        }
        let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let mut asks = tokio::task::JoinSet::new();
            for m in others {
                let key = key.clone();
                asks.spawn(async move { ask(&m, &key).await });
            }
            let mut held = 1;
            while held < majority
                && let Some(answer) = asks.join_next().await
            {
                if let Ok(Ok(a)) = answer
                    && a.alarm.is_none()
                    && (a.epoch > epoch.number
                        || (a.epoch == epoch.number && a.hash.0 == epoch.hash))
                {
                    held += 1;
                }
            }
            let _ = tx.send(held);
        });
        let held = rx
            .recv()
            .map_err(|_| OpError::Internal("the confirmation task ended".into()))?;
        if held >= majority {
            return Ok(());
        }
        Err(OpError::FreshnessUnconfirmed(format!(
            "freshness_unconfirmed: the change is committed and enforced on this node, but only {held} of the cluster's {members} members hold its epoch {} within {} s (a majority is {majority}); retrying is safe, and answers the same until a majority is up",
            epoch.number,
            ASK_TIMEOUT.as_secs()
        )))
    }

    /// This node's answer to a member's `POST /v1/cluster/epoch`: its memory, MAC'd. It
    /// answers with its alarm up too (what it holds is what members need to know).
    pub fn peer_epoch(&self, req: &PeerEpochRequest) -> PeerEpoch {
        let (epoch, alarm) = self.freshness().status();
        let audit_seq = self.freshness().audit_seq();
        let key = self.keyring.cluster().derive(PEER_EPOCH_LABEL);
        peer_epoch(
            &key,
            &req.nonce.0,
            self.keyring.keys().node_id().0,
            epoch,
            audit_seq,
            alarm,
        )
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
            error: None,
        }];
        // Asked at once, each with its own deadline: the slowest bounds the whole.
        let mut asks = tokio::task::JoinSet::new();
        for (i, m) in members.into_iter().filter(|m| m.node_id != me).enumerate() {
            let key = key.clone();
            asks.spawn(async move {
                let answer = ask(&m, &key).await;
                (i, status_of(m, answer))
            });
        }
        let mut others = asks.join_all().await;
        others.sort_by_key(|(i, _)| *i);
        out.extend(others.into_iter().map(|(_, s)| s));
        Ok(ClusterStatus { members: out })
    }
}

/// Asks member `m` for its epoch with a fresh nonce and checks the answer's MAC and node.
async fn ask(m: &Member, key: &[u8; 32]) -> Result<PeerEpoch, String> {
    let mut nonce = [0u8; 32];
    teekms_core::random_bytes(&mut nonce);
    let url = teekms_client::NodeUrl::parse(&m.url).map_err(|e| format!("its URL: {e}"))?;
    let body = serde_json::to_vec(&PeerEpochRequest {
        nonce: teekms_attest::hexbytes::HexBytes(nonce),
    })
    .expect("requests serialize");
    let exchange = async {
        // The answer is authenticated by its MAC, not by the connection.
        let mut conn = teekms_client::connect(&url, None)
            .await
            .map_err(|e| e.to_string())?;
        let (status, bytes) = conn
            .raw_request_with_headers(teekms_client::Method::POST, "/v1/cluster/epoch", &[], body)
            .await;
        if status != 200 {
            return Err(format!("answered {status}"));
        }
        serde_json::from_slice::<PeerEpoch>(&bytes).map_err(|e| format!("its answer: {e}"))
    };
    let answer = tokio::time::timeout(ASK_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", ASK_TIMEOUT.as_secs()))??;
    if !peer_epoch_verifies(key, &nonce, &answer) {
        return Err("its answer's MAC does not verify: not a member of this cluster".into());
    }
    if answer.node_id.to_hex() != m.node_id {
        return Err(format!("node {} answered in its place", answer.node_id));
    }
    Ok(answer)
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
            error: None,
        },
        Err(e) => MemberStatus {
            node_id: m.node_id,
            url: m.url,
            epoch: None,
            hash: None,
            audit_seq: None,
            alarm: None,
            error: Some(e),
        },
    }
}
