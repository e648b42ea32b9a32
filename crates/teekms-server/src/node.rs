//! Opening a node's state: its key set and cluster key, created on first start.

use std::path::Path;
use std::sync::Arc;

use teekms_core::{NodeKeys, SealingKey};
use teekms_platform::Platform;
use teekms_store::SqliteStore;

use crate::ServerError;
use crate::keyservice::KeyService;

const NODE_KEYS: &str = "node-keys";
const CLUSTER_KEY: &str = "cluster-key";
const RECORD_ID: &str = "node";

/// A node's opened state, before it serves.
pub struct NodeHandle {
    /// Key operations, shared with the API.
    pub service: Arc<KeyService>,
    /// The TEE.
    pub platform: Arc<dyn Platform>,
    /// The store connection used to open it (reused for writes).
    pub store: SqliteStore,
}

/// Opens (or on first start creates) the node in `data_dir`: its key set and its copy of
/// the cluster key, each sealed under the hardware sealing key and written in one durable
/// transaction, so a crash during the first start leaves nothing half-made.
pub fn open_node(platform: Arc<dyn Platform>, data_dir: &Path) -> Result<NodeHandle, ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        what: format!("creating data dir {}", data_dir.display()),
        source,
    })?;
    let hw = platform.sealing_key()?;
    let mut store = SqliteStore::open(data_dir)?;
    loop {
        match (store.get_meta(NODE_KEYS)?, store.get_meta(CLUSTER_KEY)?) {
            (Some(keys), Some(cluster)) => {
                let keys_plain = hw
                    .open(NODE_KEYS, RECORD_ID, 1, &keys)
                    .map_err(ServerError::Damaged)?;
                let keys = NodeKeys::from_bytes(&keys_plain).map_err(ServerError::Damaged)?;
                let cluster_plain = hw
                    .open(CLUSTER_KEY, RECORD_ID, 1, &cluster)
                    .map_err(ServerError::Damaged)?;
                let cluster: [u8; 32] = cluster_plain.as_slice().try_into().map_err(|_| {
                    ServerError::Inconsistent("cluster key record has the wrong length".into())
                })?;
                let service =
                    KeyService::new(platform.tee(), keys, SealingKey::from_bytes(cluster));
                return Ok(NodeHandle {
                    service: Arc::new(service),
                    platform,
                    store,
                });
            }
            (None, None) => {
                let keys = NodeKeys::generate();
                let cluster = SealingKey::generate();
                let sealed_keys = hw.seal(NODE_KEYS, RECORD_ID, 1, &keys.to_bytes());
                let sealed_cluster = hw.seal(CLUSTER_KEY, RECORD_ID, 1, cluster.expose());
                // If another process initialised first, loop and open theirs.
                store.init_meta(&[(NODE_KEYS, &sealed_keys), (CLUSTER_KEY, &sealed_cluster)])?;
            }
            _ => {
                return Err(ServerError::Inconsistent(
                    "one of the node key and cluster key records is missing; restore the data dir from a backup".into(),
                ));
            }
        }
    }
}

/// Imports a bundle into a stopped node (run inside its TEE): the same checks, the same
/// durable job (row, owner, audit entry) as an online deployment.
pub fn import_offline(
    node: NodeHandle,
    data_dir: &Path,
    bundle: &teekms_core::Bundle,
    now: u64,
) -> Result<crate::Deployed, crate::DeployError> {
    let reader = std::sync::Mutex::new(SqliteStore::open(data_dir)?);
    let audit_key = node
        .service
        .cluster()
        .derive(teekms_core::audit::AUDIT_KEY_LABEL);
    let writer = crate::writer::Writer::start(node.store, audit_key)?;
    let result = crate::ops::deploy(&node.service, &reader, &writer, bundle, None, now);
    writer.close();
    result
}

/// Checks a stopped node's whole audit log (run inside its TEE: the MAC key is derived
/// from the cluster key).
pub fn audit_verify_offline(
    node: &NodeHandle,
) -> Result<teekms_core::api::AuditVerification, ServerError> {
    let key = node
        .service
        .cluster()
        .derive(teekms_core::audit::AUDIT_KEY_LABEL);
    let all = node.store.audit_entries(1, u64::MAX)?;
    Ok(crate::ops::verification(&key, &all))
}

/// The last `n` stored audit entries of a stopped node, as stored (raw JSON lines).
pub fn audit_tail_offline(node: &NodeHandle, n: u64) -> Result<Vec<Vec<u8>>, ServerError> {
    let last = node.store.audit_last()?.map(|(seq, _)| seq).unwrap_or(0);
    let from = last.saturating_sub(n.saturating_sub(1)).max(1);
    Ok(node
        .store
        .audit_entries(from, n)?
        .into_iter()
        .map(|(_, e)| e)
        .collect())
}
