//! Asking a member for the epoch it holds (spec/freshness-v1.md, "Members"), over
//! connections kept per member: a TLS handshake for every question would cost more
//! than the question. The answer is authenticated by its MAC under the cluster's
//! peer-epoch subkey and the asker's nonce, not by the connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use teekms_core::api::{PeerEpoch, PeerEpochRequest};
use teekms_core::freshness::peer_epoch_verifies;

use super::members::Member;

/// How long a member's answer is waited for.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per member (as many as questions asked at once, at most).
const IDLE_PER_MEMBER: usize = 32;

/// The node's idle connections to the members, by URL.
#[derive(Default)]
pub struct Peers {
    idle: Mutex<HashMap<String, Vec<teekms_client::Connection>>>,
}

impl Peers {
    /// Asks member `m` for its epoch with a fresh nonce (`from_memory`: without reading
    /// the store first) and checks the answer's MAC and node, within [`ASK_TIMEOUT`].
    pub async fn ask(
        &self,
        m: &Member,
        key: &[u8; 32],
        from_memory: bool,
    ) -> Result<PeerEpoch, String> {
        let mut nonce = [0u8; 32];
        teekms_core::random_bytes(&mut nonce);
        let body = serde_json::to_vec(&PeerEpochRequest {
            nonce: teekms_attest::hexbytes::HexBytes(nonce),
            from_memory,
        })
        .expect("requests serialize");
        let answer = tokio::time::timeout(ASK_TIMEOUT, self.exchange(m, body))
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

    async fn exchange(&self, m: &Member, body: Vec<u8>) -> Result<PeerEpoch, String> {
        let kept = self.take(&m.url);
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(c) => c,
            None => open(m).await?,
        };
        let path = "/v1/cluster/epoch";
        let post = teekms_client::Method::POST;
        let (mut status, mut bytes) = conn
            .raw_request_with_headers(post.clone(), path, &[], body.clone())
            .await;
        if status == 0 && reused {
            // A kept connection the member closed meanwhile (idle): once more, anew.
            conn = open(m).await?;
            (status, bytes) = conn.raw_request_with_headers(post, path, &[], body).await;
        }
        if status != 200 {
            return Err(format!("answered {status}"));
        }
        self.put(&m.url, conn);
        serde_json::from_slice::<PeerEpoch>(&bytes).map_err(|e| format!("its answer: {e}"))
    }

    fn take(&self, url: &str) -> Option<teekms_client::Connection> {
        self.idle.lock().expect("peers lock").get_mut(url)?.pop()
    }

    fn put(&self, url: &str, conn: teekms_client::Connection) {
        let mut idle = self.idle.lock().expect("peers lock");
        let kept = idle.entry(url.to_owned()).or_default();
        if kept.len() < IDLE_PER_MEMBER {
            kept.push(conn);
        }
    }
}

/// A new connection to member `m`.
async fn open(m: &Member) -> Result<teekms_client::Connection, String> {
    let url = teekms_client::NodeUrl::parse(&m.url).map_err(|e| format!("its URL: {e}"))?;
    teekms_client::connect(&url, None)
        .await
        .map_err(|e| e.to_string())
}
