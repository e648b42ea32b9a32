//! Opening a node's state: its key set and cluster key, created on first start.

use std::path::Path;
use std::sync::Arc;

use teekms_core::{NodeKeys, SealingKey};
use teekms_platform::Platform;
use teekms_store::{SqliteStore, Store};

use crate::ServerError;
use crate::keyring::Keyring;

const NODE_KEYS: &str = "node-keys";
const CLUSTER_KEY: &str = "cluster-key";
const RECORD_ID: &str = "node";
/// Revision of the node's key-set record since its store holds a bound state record for
/// every key and a record for every owner (store format 2). A record at revision 1 was
/// written before: its store is migrated once at the next start (see `migrate`), then
/// the record is sealed again at this revision. Putting the mark in this record, which
/// the node cannot start without, means that removing rows can never make a migrated
/// store look unmigrated; only an older copy of the record would.
pub(crate) const NODE_KEYS_CURRENT: u64 = 2;
/// The sealed recovery shares (public: each is sealed to its officer).
const RECOVERY: &str = "recovery-shares";

/// A node's opened state, before it serves.
pub struct NodeHandle {
    /// Key operations, shared with the API.
    pub keyring: Arc<Keyring>,
    /// The TEE.
    pub platform: Arc<dyn Platform>,
    /// The store connection used to open it (reused for writes).
    pub store: SqliteStore,
    /// This process's hold on the data dir, for as long as the node is open.
    pub lock: crate::DataDirLock,
    /// Whether the store may need the one-time migration to store format 2: the node's
    /// record predates it, or the node was made just now (or keeps no records, as TDX)
    /// and so cannot know (see `migrate`).
    pub store_format: StoreFormat,
}

/// What the node's own record says of its store's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFormat {
    /// Written before bound state records: migrate, then mark.
    Legacy,
    /// The node is new (or keeps no record): migrate if the store has no format mark.
    Unknown,
    /// Migrated (or made so): a missing record is damage.
    Current,
}

/// Opens (or on first start creates) the node in `data_dir`: its key set and its copy of
/// the cluster key, each sealed under the hardware sealing key and written in one durable
/// transaction, so a crash during the first start leaves nothing half-made.
pub fn open_node(platform: Arc<dyn Platform>, data_dir: &Path) -> Result<NodeHandle, ServerError> {
    open_node_with(platform, data_dir, None)
}

/// Whether `data_dir` already holds a node (its sealed key records).
pub fn has_node(data_dir: &Path) -> Result<bool, ServerError> {
    if !data_dir.join(teekms_store::DB_FILE).exists() {
        return Ok(false);
    }
    Ok(SqliteStore::open(data_dir)?.get_meta(NODE_KEYS)?.is_some())
}

/// [`open_node`]; on first start with `joined` (a key set and the cluster key obtained by
/// joining a cluster), those are sealed instead of a new cluster being created.
pub fn open_node_with(
    platform: Arc<dyn Platform>,
    data_dir: &Path,
    mut joined: Option<(NodeKeys, SealingKey)>,
) -> Result<NodeHandle, ServerError> {
    let lock = crate::datadir::lock_data_dir(data_dir)?;
    if !platform.has_sealing_key() {
        // Nothing can be sealed here (TDX): the key set and the cluster key received by
        // joining live in memory only, and the node joins again at its next start.
        let Some((keys, cluster)) = joined else {
            return Err(ServerError::Refused(format!(
                "{} has no sealing key, so its node keeps no state of its own: start it with --store URL --join https://NODE (it receives the cluster key by attestation at every start)",
                platform.tee().as_str().to_uppercase()
            )));
        };
        return Ok(NodeHandle {
            keyring: Arc::new(Keyring::new(platform.tee(), keys, cluster)?),
            platform,
            store: SqliteStore::open(data_dir)?,
            lock,
            store_format: StoreFormat::Unknown,
        });
    }
    let hw = platform.sealing_key()?;
    let mut store = SqliteStore::open(data_dir)?;
    let mut made_now = false;
    loop {
        match (store.get_meta(NODE_KEYS)?, store.get_meta(CLUSTER_KEY)?) {
            (Some(keys), Some(cluster)) => {
                let (keys_plain, format) =
                    match hw.open(NODE_KEYS, RECORD_ID, NODE_KEYS_CURRENT, &keys) {
                        Ok(plain) if made_now => (plain, StoreFormat::Unknown),
                        Ok(plain) => (plain, StoreFormat::Current),
                        Err(_) => (
                            hw.open(NODE_KEYS, RECORD_ID, 1, &keys)
                                .map_err(ServerError::Damaged)?,
                            StoreFormat::Legacy,
                        ),
                    };
                let keys = NodeKeys::from_bytes(&keys_plain).map_err(ServerError::Damaged)?;
                let cluster_plain = hw
                    .open(CLUSTER_KEY, RECORD_ID, 1, &cluster)
                    .map_err(ServerError::Damaged)?;
                let cluster: [u8; 32] = cluster_plain.as_slice().try_into().map_err(|_| {
                    ServerError::Inconsistent("cluster key record has the wrong length".into())
                })?;
                let keyring = Keyring::new(platform.tee(), keys, SealingKey::from_bytes(cluster))?;
                return Ok(NodeHandle {
                    keyring: Arc::new(keyring),
                    platform,
                    store,
                    lock,
                    store_format: format,
                });
            }
            (None, None) => {
                let (keys, cluster) = joined
                    .take()
                    .unwrap_or_else(|| (NodeKeys::generate(), SealingKey::generate()));
                let sealed_keys =
                    hw.seal(NODE_KEYS, RECORD_ID, NODE_KEYS_CURRENT, &keys.to_bytes());
                let sealed_cluster = hw.seal(CLUSTER_KEY, RECORD_ID, 1, cluster.expose());
                // If another process initialised first, loop and open theirs.
                store.init_meta(&[(NODE_KEYS, &sealed_keys), (CLUSTER_KEY, &sealed_cluster)])?;
                made_now = true;
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
    mut node: NodeHandle,
    data_dir: &Path,
    bundle: &teekms_core::Bundle,
    now: u64,
) -> Result<crate::Deployed, crate::OpError> {
    let damaged = |e: ServerError| crate::OpError::Damaged(e.to_string());
    let audit_key = node
        .keyring
        .cluster()
        .derive(teekms_core::audit::AUDIT_KEY_LABEL);
    let format = node.store_format;
    let fresh = crate::freshness::Freshness::start(node.keyring.clone(), &mut node.store, true)
        .map_err(damaged)?;
    let writer =
        crate::writer::Writer::start(Box::new(node.store), audit_key, std::sync::Arc::new(fresh))?;
    // A store written before format 2 is migrated first (its owners have no record yet,
    // which a deployment would take for damage).
    let mut reader = SqliteStore::open(data_dir)?;
    let migrated =
        crate::migrate::migrate_if_needed(&node.keyring, &mut reader, &writer, format, now)
            .map_err(damaged)?;
    if migrated && format != StoreFormat::Current {
        mark_store_current(node.platform.as_ref(), data_dir, node.keyring.keys())
            .map_err(damaged)?;
    }
    let service = crate::ops::Service::new(
        node.keyring,
        node.platform,
        crate::readers::Readers::new(vec![Box::new(reader)]),
        writer,
        crate::ops::Settings::offline(),
    );
    let result = service.deploy(crate::ops::Deployer::BundleSigner, bundle, now);
    service.shutdown();
    result
}

/// Checks a stopped node's whole audit log (run inside its TEE: the MAC key is derived
/// from the cluster key).
pub fn audit_verify_offline(
    node: &mut NodeHandle,
) -> Result<teekms_core::api::AuditVerification, ServerError> {
    let key = node
        .keyring
        .cluster()
        .derive(teekms_core::audit::AUDIT_KEY_LABEL);
    let base = crate::ops::audit_base(&node.keyring, &mut node.store)
        .map_err(|e| ServerError::Inconsistent(e.to_string()))?;
    Ok(crate::ops::verification(&key, base, |from| {
        node.store.audit_entries(from, 4096)
    })?)
}

/// The last `n` stored audit entries of a stopped node, as JSON lines (an entry that
/// does not decode is shown as it is stored).
pub fn audit_tail_offline(node: &mut NodeHandle, n: u64) -> Result<Vec<Vec<u8>>, ServerError> {
    let last = node.store.audit_last()?.map_or(0, |row| row.seq);
    let from = last.saturating_sub(n.saturating_sub(1)).max(1);
    Ok(node
        .store
        .audit_entries(from, n)?
        .into_iter()
        .map(|row| match teekms_core::audit::stored::decode(&row.entry) {
            Ok(e) => serde_json::to_vec(&e).expect("entries serialize"),
            Err(_) => row.entry,
        })
        .collect())
}

/// Recovery of the cluster: the officers' public keys and how many shares restore it.
#[derive(Clone, Debug)]
pub struct RecoverySetup {
    /// Shares needed (k).
    pub threshold: u8,
    /// One X25519 public key per officer (n).
    pub officers: Vec<[u8; 32]>,
}

/// Splits the cluster key for recovery, once: the sealed shares are stored with the
/// cluster's state in `store` (the node's SQLite file, or the cluster's PostgreSQL
/// database, so that they outlive every node) and written to
/// `DATA_DIR/recovery/share-<i>.json` for the officers. Returns false if recovery was
/// already set up (it is never replaced silently).
pub fn ensure_recovery(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
    data_dir: &Path,
    setup: &RecoverySetup,
) -> Result<bool, ServerError> {
    if store.get_meta(RECOVERY)?.is_some() {
        return Ok(false);
    }
    let shares =
        teekms_core::recovery::seal_shares(keyring.cluster(), setup.threshold, &setup.officers)
            .map_err(ServerError::Recovery)?;
    let json = serde_json::to_vec(&shares).expect("shares serialize");
    if !store.init_meta(&[(RECOVERY, &json)])? {
        return Ok(false);
    }
    let dir = data_dir.join("recovery");
    std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    for s in &shares {
        let path = dir.join(format!("share-{}.json", s.index));
        let text = serde_json::to_string_pretty(s).expect("shares serialize") + "\n";
        std::fs::write(&path, text).map_err(|source| ServerError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    }
    Ok(true)
}

/// Restores a node whose hardware sealing key is gone (every original node lost) from
/// the cluster's stored state and k opened recovery shares: the cluster key is recovered
/// and, with a new node key set, sealed under *this* TEE's sealing key into `data_dir`.
/// The state is the SQLite store in `data_dir` (copied from a lost node or a backup) or,
/// with `store_url`, the cluster's PostgreSQL database (then `data_dir` may be new).
/// Every record sealed under the cluster key (keys, states, access keys, the audit log)
/// is usable again. Returns the new node id.
pub fn restore_node(
    platform: Arc<dyn Platform>,
    data_dir: &Path,
    store_url: Option<&str>,
    shares: &[teekms_core::recovery::OpenShare],
) -> Result<String, ServerError> {
    let _lock = crate::datadir::lock_data_dir(data_dir)?;
    let mut local = SqliteStore::open(data_dir)?;
    let mut shared = match store_url {
        Some(url) => Some(teekms_store::pg::PgStore::connect(url)?),
        None => None,
    };
    let cluster_state: &mut dyn teekms_store::Store = match shared.as_mut() {
        Some(pg) => pg,
        None => &mut local,
    };
    let stored = cluster_state.get_meta(RECOVERY)?.ok_or_else(|| {
        ServerError::Refused(match store_url {
            Some(_) => "the database at --store has no recovery set up".into(),
            None => "this data dir has no recovery set up".into(),
        })
    })?;
    let stored: Vec<teekms_core::recovery::SealedShare> = serde_json::from_slice(&stored)
        .map_err(|e| ServerError::Inconsistent(format!("the stored recovery shares: {e}")))?;
    let cluster = teekms_core::recovery::recover(shares).map_err(ServerError::Recovery)?;
    let check = teekms_core::recovery::cluster_check(&cluster);
    let database_check = match store_url {
        Some(_) => cluster_state.get_meta(CLUSTER_CHECK)?,
        None => None,
    };
    if stored.first().map(|s| &s.cluster_check) != Some(&check)
        || database_check.is_some_and(|c| c != check.0)
    {
        return Err(ServerError::Recovery(teekms_core::CoreError::Recovery(
            "these shares restore another cluster than the one in this store".into(),
        )));
    }
    let hw = platform.sealing_key()?;
    let keys = NodeKeys::generate();
    // Revision 1: the restored node migrates its store (if it needs it) at its first start.
    let sealed_keys = hw.seal(NODE_KEYS, RECORD_ID, 1, &keys.to_bytes());
    let sealed_cluster = hw.seal(CLUSTER_KEY, RECORD_ID, 1, cluster.expose());
    local.replace_meta(&[(NODE_KEYS, &sealed_keys), (CLUSTER_KEY, &sealed_cluster)])?;
    if let Some(pg) = shared.as_mut() {
        // Every member is lost (that is what a restore is for), and the officers who
        // opened their shares accept the database as it is: the restored node starts
        // as a cluster of one, rather than wait for members that will never answer
        // (spec/freshness-v1.md, "Cluster rules", 5).
        let gone: Vec<teekms_store::Write> = pg
            .meta_prefixed(crate::ops::MEMBER_PREFIX)?
            .into_iter()
            .map(|(name, _)| teekms_store::Write::DeleteMeta { name })
            .collect();
        if !gone.is_empty() {
            let mut batch = pg.write_batch()?;
            batch.apply(&gone)?;
            batch.commit()?;
        }
    }
    Ok(keys.node_id().to_hex())
}

/// Meta record of a cluster's shared store: the check value of its cluster key.
const CLUSTER_CHECK: &str = "cluster-check";

/// Connects to the cluster's PostgreSQL store and makes sure it belongs to this node's
/// cluster: the first node records its cluster key's check value; a node with another
/// cluster key is refused (its records would not open, and it would write records no
/// other node could open).
pub fn cluster_store(
    keyring: &Keyring,
    url: &str,
) -> Result<teekms_store::pg::PgStore, ServerError> {
    let mut store = teekms_store::pg::PgStore::connect(url)?;
    let check = teekms_core::recovery::cluster_check(keyring.cluster());
    use teekms_store::Store;
    if !store.init_meta(&[(CLUSTER_CHECK, &check.0)])? {
        let stored = store.get_meta(CLUSTER_CHECK)?.unwrap_or_default();
        if stored != check.0 {
            return Err(ServerError::Refused(
                "the database at --store belongs to another cluster (its cluster key differs from this node's); a node shares a cluster's database only with that cluster's key".into(),
            ));
        }
    }
    Ok(store)
}

/// Meta record of a cluster's shared store: the cluster policy (TOML), sealed under the
/// cluster key so that the database cannot change who may join.
const CLUSTER_POLICY: &str = "cluster-policy";

/// The default cluster policy: the same TEE and measurement as this node (read from its
/// own evidence; see `Policy::same_measurement_toml` for which registers), and on sim
/// the same sim root.
pub fn default_cluster_policy(
    platform: &dyn Platform,
    keys: &NodeKeys,
) -> Result<String, ServerError> {
    let statement = keys.statement(platform.tee(), None);
    let evidence = platform.evidence(&statement.hash())?;
    if platform.tee() != teekms_attest::TeeKind::Sim {
        let doc = teekms_attest::AttestationDocument {
            version: teekms_attest::document::DOCUMENT_VERSION,
            tee: platform.tee(),
            evidence,
            statement,
            collateral: platform.collateral(),
        };
        let tee = platform.tee();
        // Only the claims are used: this is the node's own evidence, made just now.
        let verdict = teekms_attest::verify_document(
            &doc,
            &teekms_attest::Policy::default_for(tee).expect("a real TEE has defaults"),
            teekms_attest::Freshness::Offline,
            crate::now_unix(),
        );
        return verdict
            .claims
            .as_ref()
            .and_then(|claims| teekms_attest::policy::same_measurement_toml(tee, claims))
            .ok_or_else(|| {
                ServerError::Refused(format!(
                    "cannot read this node's measurement from its own evidence ({}); give --cluster-policy",
                    verdict.reasons.join("; ")
                ))
            });
    }
    let ev = teekms_attest::sim::parse_and_verify(&evidence)
        .map_err(|e| ServerError::Refused(format!("this node's own evidence: {e}")))?;
    Ok(teekms_attest::Policy::sim(ev.root_public_key, Some(ev.measurement)).to_toml())
}

/// Meta record of a cluster's shared store: the fingerprint of the owner who may change
/// the cluster policy, sealed under the cluster key; empty for a cluster made without
/// one (a fact sealed rather than a missing row, which the host could make). Set only
/// when the cluster is made.
const CLUSTER_ADMIN: &str = "cluster-admin";

/// Seals a cluster policy (TOML) for the store: only a cluster member can make or read it.
pub fn seal_cluster_policy(keyring: &Keyring, text: &str) -> teekms_store::Write {
    teekms_store::Write::PutMeta {
        name: CLUSTER_POLICY.into(),
        record: keyring
            .cluster()
            .seal(CLUSTER_POLICY, "cluster", 1, text.as_bytes()),
    }
}

/// Makes the cluster's records on first start: the cluster policy (`given`) and, if
/// named, the cluster admin. A store that has them keeps them: they change only through
/// the admin (`PUT /v1/cluster/policy`), never by a node's command line.
pub fn init_cluster(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
    given: impl FnOnce() -> Result<String, ServerError>,
    admin: Option<&str>,
) -> Result<(), ServerError> {
    if store.get_meta(CLUSTER_POLICY)?.is_some() {
        if admin.is_some() && read_cluster_admin(keyring, store)?.as_deref() != admin {
            tracing::warn!(
                "--cluster-admin is only taken when the cluster is made; the stored admin stays"
            );
        }
        return Ok(());
    }
    // Only now, for a cluster being made: the default policy reads (and, on real TEEs,
    // verifies) this node's own evidence.
    let given = given()?;
    let cluster = keyring.cluster();
    let policy = cluster.seal(CLUSTER_POLICY, "cluster", 1, given.as_bytes());
    let admin_record = cluster.seal(CLUSTER_ADMIN, "cluster", 1, admin.unwrap_or("").as_bytes());
    let records: Vec<(&str, &[u8])> =
        vec![(CLUSTER_POLICY, &policy), (CLUSTER_ADMIN, &admin_record)];
    if store.init_meta(&records)? {
        tracing::info!(policy = %given, admin = ?admin, "cluster created; its policy says who may join");
    }
    Ok(())
}

/// The cluster policy in a shared store: its TOML text and the parsed policy.
pub fn read_cluster_policy(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
) -> Result<(String, teekms_attest::Policy), ServerError> {
    let stored = store.get_meta(CLUSTER_POLICY)?.ok_or_else(|| {
        ServerError::Refused("the cluster's database holds no cluster policy".into())
    })?;
    let text = keyring
        .cluster()
        .open(CLUSTER_POLICY, "cluster", 1, &stored)
        .map_err(ServerError::Damaged)?;
    let text = String::from_utf8(text.to_vec()).map_err(|_| {
        ServerError::Refused("the cluster's database: the cluster policy is not UTF-8".into())
    })?;
    let policy = teekms_attest::Policy::from_toml(&text).map_err(|e| {
        ServerError::Refused(format!(
            "the cluster's database: the stored cluster policy: {e}"
        ))
    })?;
    Ok((text, policy))
}

/// The cluster admin's owner fingerprint, if the cluster was made with one (and its
/// record is there: without it nobody is the admin).
pub fn read_cluster_admin(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
) -> Result<Option<String>, ServerError> {
    Ok(cluster_admin_record(keyring, store)?.filter(|fp| !fp.is_empty()))
}

/// Whether the cluster was made without a cluster admin, as its sealed record says. A
/// missing record is not taken for that: the host can delete a row, not seal one (and a
/// cluster made before the record said so is not taken for one either).
pub fn made_without_admin(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
) -> Result<bool, ServerError> {
    Ok(cluster_admin_record(keyring, store)?.is_some_and(|fp| fp.is_empty()))
}

/// The sealed cluster-admin record, opened: a fingerprint, or empty for none.
fn cluster_admin_record(
    keyring: &Keyring,
    store: &mut dyn teekms_store::Store,
) -> Result<Option<String>, ServerError> {
    let Some(stored) = store.get_meta(CLUSTER_ADMIN)? else {
        return Ok(None);
    };
    let fp = keyring
        .cluster()
        .open(CLUSTER_ADMIN, "cluster", 1, &stored)
        .map_err(ServerError::Damaged)?;
    String::from_utf8(fp.to_vec()).map(Some).map_err(|_| {
        ServerError::Refused("the cluster's database: the cluster admin record is not UTF-8".into())
    })
}

/// Seals the node's key-set record again at [`NODE_KEYS_CURRENT`]: its store is in the
/// current format (migrated, or checked). Nothing to do for a node that keeps no record.
pub(crate) fn mark_store_current(
    platform: &dyn Platform,
    data_dir: &Path,
    keys: &NodeKeys,
) -> Result<(), ServerError> {
    if !platform.has_sealing_key() {
        return Ok(());
    }
    let hw = platform.sealing_key()?;
    let sealed = hw.seal(NODE_KEYS, RECORD_ID, NODE_KEYS_CURRENT, &keys.to_bytes());
    SqliteStore::open(data_dir)?.replace_meta(&[(NODE_KEYS, &sealed)])?;
    Ok(())
}
