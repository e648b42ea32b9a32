//! A real node on port 0 in a temp dir, with real TLS, for the API tests.
#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use teekms_attest::Policy;
use teekms_client::{NodeUrl, VerifiedConnection};
use teekms_core::OwnerKey;
use teekms_platform::{Platform, SimPlatform, SimRoot};
use teekms_server::{RunningServer, ServeConfig, now_unix, serve};

pub struct Node {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub server: Option<RunningServer>,
    pub policy: Policy,
    /// A PostgreSQL store for the cluster's records (None: the data dir's SQLite).
    pub store: Option<String>,
    /// On first start, join this node's cluster.
    pub join: Option<String>,
    /// How long a stream may stall (taken at the next start).
    pub stream_idle_timeout: std::time::Duration,
}

impl Node {
    pub async fn start() -> Node {
        Node::start_with(None).await
    }

    /// Another node on the same sim root, with its own copy of `data_dir`'s files (in
    /// sim, the same "hardware" and so the same keys), and `store`.
    pub async fn sibling(&self, store: Option<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node");
        std::fs::create_dir_all(&data_dir).unwrap();
        for e in std::fs::read_dir(&self.data_dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), data_dir.join(e.file_name())).unwrap();
            }
        }
        let mut node = Node {
            dir,
            root: self.root.clone(),
            data_dir,
            server: None,
            policy: self.policy.clone(),
            store,
            join: None,
            stream_idle_timeout: teekms_server::DEFAULT_STREAM_IDLE_TIMEOUT,
        };
        node.restart().await;
        node
    }

    /// A new node (its own data dir, the same sim root) that joins `peer`'s cluster and
    /// shares its `store`.
    pub async fn joining(peer: &Node, store: String) -> Result<Node, String> {
        Node::joining_with_root(peer, store, &peer.root, None).await
    }

    /// [`Node::joining`] on another sim root's "hardware".
    pub async fn joining_with_root(
        peer: &Node,
        store: String,
        root: &std::path::Path,
        cluster_policy: Option<String>,
    ) -> Result<Node, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node {
            data_dir: dir.path().join("node"),
            dir,
            root: root.to_owned(),
            server: None,
            policy: peer.policy.clone(),
            store: Some(store),
            join: Some(peer.url().to_string()),
            stream_idle_timeout: teekms_server::DEFAULT_STREAM_IDLE_TIMEOUT,
        };
        let platform: Arc<dyn Platform> =
            Arc::new(SimPlatform::open(&node.root, &node.data_dir).unwrap());
        let server = serve(ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: node.data_dir.clone(),
            platform,
            min_deletion_wait: 0,
            stream_idle_timeout: node.stream_idle_timeout,
            stream_memory: teekms_server::DEFAULT_STREAM_MEMORY,
            max_connections: None,
            collateral_warn_days: teekms_server::DEFAULT_COLLATERAL_WARN_DAYS,
            recovery: None,
            store: node.store.clone(),
            join: node.join.clone(),
            cluster_policy,
            cluster_admin: None,
            tls: Default::default(),
            aws_region: teekms_server::DEFAULT_AWS_REGION.into(),
            transit_mount: teekms_server::DEFAULT_TRANSIT_MOUNT.into(),
            metrics_listen: None,
            advertise: None,
            confirm_data_plane: true,
        })
        .await
        .map_err(|e| e.to_string())?;
        node.server = Some(server);
        Ok(node)
    }

    /// A node whose cluster records live in `store` (PostgreSQL).
    pub async fn start_with(store: Option<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sim-root.key");
        let data_dir = dir.path().join("node");
        let sim_root = SimRoot::load_or_create(&root).unwrap().public_key();
        let mut node = Node {
            dir,
            root,
            data_dir,
            server: None,
            policy: Policy::sim(sim_root, None),
            store,
            join: None,
            stream_idle_timeout: teekms_server::DEFAULT_STREAM_IDLE_TIMEOUT,
        };
        node.restart().await;
        node
    }

    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let platform: Arc<dyn Platform> =
            Arc::new(SimPlatform::open(&self.root, &self.data_dir).unwrap());
        self.server = Some(
            serve(ServeConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: self.data_dir.clone(),
                platform,
                // Tests schedule deletions seconds ahead.
                min_deletion_wait: 0,
                stream_idle_timeout: self.stream_idle_timeout,
                stream_memory: teekms_server::DEFAULT_STREAM_MEMORY,
                max_connections: None,
                collateral_warn_days: teekms_server::DEFAULT_COLLATERAL_WARN_DAYS,
                recovery: None,
                store: self.store.clone(),
                join: self.join.clone(),
                cluster_policy: None,
                cluster_admin: None,
                tls: Default::default(),
                aws_region: teekms_server::DEFAULT_AWS_REGION.into(),
                transit_mount: teekms_server::DEFAULT_TRANSIT_MOUNT.into(),
                metrics_listen: None,
                advertise: None,
                confirm_data_plane: true,
            })
            .await
            .unwrap(),
        );
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub fn url(&self) -> NodeUrl {
        NodeUrl::parse(&self.server.as_ref().unwrap().url()).unwrap()
    }

    pub async fn verified(&self, owner: Option<&OwnerKey>) -> VerifiedConnection {
        teekms_client::connect_verified(&self.url(), &self.policy, owner, now_unix())
            .await
            .unwrap()
    }

    /// `GET /v1/ready`: status and body.
    pub async fn ready(&self) -> (u16, String) {
        let mut c = self.verified(None).await;
        let (status, body) = c
            .connection()
            .raw_request_with_headers(teekms_client::Method::GET, "/v1/ready", &[], Vec::new())
            .await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits (at most 5 s) until the node is ready again: after a store brought
    /// forward, its watch clears the `store_rolled_back` alarm within a second.
    pub async fn until_ready(&self) {
        for _ in 0..50 {
            if self.ready().await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("not ready after 5 s: {:?}", self.ready().await);
    }
}
