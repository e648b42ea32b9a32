//! Starting a node, in two steps: the raw configuration ([`ServeConfig`], as the CLI or a
//! test gives it) is resolved into a [`Resolved`] one (descriptors raised, the listener
//! bound, a cluster joined, the node's state opened, its store checked and migrated),
//! which `server::start` then serves. Nothing is served before all of it succeeded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use teekms_core::{NodeKeys, SealingKey};
use teekms_platform::Platform;
use teekms_store::{SqliteStore, Store};
use tokio::net::TcpListener;

use crate::freshness::Freshness;
use crate::keyring::Keyring;
use crate::ops::Settings;
use crate::readers::Readers;
use crate::writer::Writer;
use crate::{DataDirLock, ServerError};

/// What a node needs to start.
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The TEE it runs in.
    pub platform: Arc<dyn Platform>,
    /// Shortest waiting period of a scheduled deletion, seconds (7 days by default).
    pub min_deletion_wait: u64,
    /// How long a stream may go without request bytes coming in, or response bytes taken
    /// out, before the node ends it with an error ([`crate::DEFAULT_STREAM_IDLE_TIMEOUT`]).
    pub stream_idle_timeout: Duration,
    /// Bytes that streams through the node may hold at once
    /// ([`crate::DEFAULT_STREAM_MEMORY`]); a stream that does not fit waits, then gets
    /// 503 `busy`.
    pub stream_memory: u64,
    /// Days of validity the TEE's collateral must have left for the node to report
    /// ready ([`crate::DEFAULT_COLLATERAL_WARN_DAYS`]).
    pub collateral_warn_days: u64,
    /// Most open client connections ([`crate::default_max_connections`] from the file limit
    /// when none is given); at the cap, the oldest connections that have not completed
    /// a request are closed to let new ones in.
    pub max_connections: Option<usize>,
    /// Split the cluster key for recovery officers (done once, when first given).
    pub recovery: Option<crate::RecoverySetup>,
    /// Keep the cluster's records in this PostgreSQL database instead of the data dir's
    /// SQLite file (the node's own sealed records stay in the data dir).
    pub store: Option<String>,
    /// On first start, join the cluster of this node (https://HOST:PORT) instead of
    /// creating one.
    pub join: Option<String>,
    /// The cluster policy (TOML): who may join; for a joiner, what the node it joins
    /// must be. Default: the same TEE and measurement as this node (and sim root).
    pub cluster_policy: Option<String>,
    /// The owner (fingerprint) who may change the cluster policy; taken only when the
    /// cluster is made (first node on a new shared store).
    pub cluster_admin: Option<String>,
    /// The node's TLS certificate: its names and lifetime.
    pub tls: TlsSettings,
    /// The AWS region the node answers the AWS KMS API for (`--aws-region`).
    pub aws_region: String,
    /// Where the Vault Transit API is mounted (`/v1/<mount>/`, `--transit-mount`).
    pub transit_mount: String,
    /// Serve Prometheus metrics on this address (plain HTTP, `/metrics`), if given.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the other members of a cluster reach this node (`https://HOST:PORT`);
    /// by default the address it listens on.
    pub advertise: Option<String>,
    /// On a shared store, whether data-plane answers wait for a majority of the members
    /// to confirm that nobody holds a newer epoch (spec/freshness-v1.md, "Cluster
    /// rules", 3; `--data-plane-confirmation`).
    pub confirm_data_plane: bool,
}

/// The AWS region a node answers for unless told otherwise.
pub const DEFAULT_AWS_REGION: &str = "us-east-1";

/// The node's TLS certificate, issued by the cluster's CA (see `ca`).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// DNS names and IP addresses the certificate names (`--tls-san`), besides
    /// `teekms-node`; none given: `localhost`, `127.0.0.1` and `::1`.
    pub names: Vec<String>,
    /// Seconds a leaf certificate is valid; the node renews it after two thirds.
    pub cert_lifetime: u64,
}

/// A leaf certificate's lifetime unless told otherwise: seven days.
pub const DEFAULT_TLS_CERT_LIFETIME: u64 = 7 * 24 * 3600;

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            names: Vec::new(),
            cert_lifetime: DEFAULT_TLS_CERT_LIFETIME,
        }
    }
}

impl TlsSettings {
    /// The names the certificate carries.
    pub(crate) fn certificate_names(&self) -> Vec<String> {
        let mut names = vec!["teekms-node".to_string()];
        if self.names.is_empty() {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        for n in &self.names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }
}

/// A configuration resolved: everything opened, nothing served yet.
pub(crate) struct Resolved {
    /// Bound, not yet accepting.
    pub listener: TcpListener,
    /// Most open client connections.
    pub max_connections: usize,
    /// The node's secrets.
    pub keyring: Arc<Keyring>,
    /// The TEE.
    pub platform: Arc<dyn Platform>,
    /// This process's hold on the data dir.
    pub lock: DataDirLock,
    /// The store's read connections.
    pub readers: Readers,
    /// The writer thread, on its own connection.
    pub writer: Writer,
    /// How the operations are set up.
    pub settings: Settings,
    /// The node's TLS certificate.
    pub tls: TlsSettings,
    /// The metrics listener, bound.
    pub metrics: Option<TcpListener>,
    /// Where members reach this node (`--advertise`; none: its listening address).
    pub advertise: Option<String>,
}

/// Listen backlog: room for clients that connect faster than the node accepts (capped by
/// `net.core.somaxconn`). Clients that connect and send nothing wait there (see
/// `TCP_DEFER_ACCEPT` in `server`) instead of holding a descriptor; a queue too short for
/// them would make the kernel fall back to SYN cookies, which hand such clients to
/// `accept`.
const LISTEN_BACKLOG: u32 = 4096;

/// Reader connections of a node on PostgreSQL (its writer has one more).
const PG_READERS: usize = 4;

/// Resolves `config`: raises the open-file limit, binds the listener (first: a node that
/// cannot listen must not have created anything), joins the cluster if asked to, and
/// opens the node's state and store.
pub(crate) async fn resolve(config: ServeConfig) -> Result<Resolved, ServerError> {
    // Raised whatever the cap: the connections, the store and the streams all need
    // descriptors.
    let files = open_files();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| crate::connections::default_max_connections(files));
    let listener = listen(config.listen).map_err(|source| ServerError::Io {
        what: format!("listening on {}", config.listen),
        source,
    })?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Io {
                    what: format!("listening for metrics on {addr}"),
                    source,
                })?,
        ),
        None => None,
    };
    let joined = match &config.join {
        Some(url) if !crate::node::has_node(&config.data_dir)? => Some(
            join(
                url,
                config.platform.as_ref(),
                config.cluster_policy.as_deref(),
            )
            .await?,
        ),
        _ => None,
    };
    let settings = Settings {
        min_deletion_wait: config.min_deletion_wait,
        shared_store: config.store.is_some(),
        stream_memory: config.stream_memory,
        stream_idle_timeout: config.stream_idle_timeout,
        collateral_warn_days: config.collateral_warn_days,
        aws_region: config.aws_region.clone(),
        transit_mount: config.transit_mount.clone(),
        confirm_data_plane: config.confirm_data_plane,
    };
    let tls = config.tls.clone();
    let advertise = config.advertise.clone();
    // Everything that touches the store happens off the runtime: a database client that
    // blocks must not run on an async thread.
    let opened = tokio::task::spawn_blocking(move || open_state(&config, joined))
        .await
        .expect("node start task")?;
    Ok(Resolved {
        listener,
        max_connections,
        keyring: opened.keyring,
        platform: opened.platform,
        lock: opened.lock,
        readers: opened.readers,
        writer: opened.writer,
        settings,
        tls,
        metrics,
        advertise,
    })
}

/// The open-file limit, raised to the hard limit: a service manager's soft limit
/// (systemd: 1024) would let a few idle clients take every descriptor.
fn open_files() -> u64 {
    match teekms_platform::sys::raise_open_file_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "the open-file limit could not be raised");
            teekms_platform::sys::open_file_limit().map_or(1024, |(soft, _)| soft)
        }
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The node's state, opened.
struct Opened {
    keyring: Arc<Keyring>,
    platform: Arc<dyn Platform>,
    lock: DataDirLock,
    readers: Readers,
    writer: Writer,
}

/// Opens (or creates) the node in the data dir and connects to its store: the writer's
/// connection and the readers'; sets up recovery and the cluster's records when asked
/// to, and migrates the store once to the current format. Blocks.
fn open_state(
    config: &ServeConfig,
    joined: Option<(NodeKeys, SealingKey)>,
) -> Result<Opened, ServerError> {
    let data_dir = &config.data_dir;
    let mut node = crate::node::open_node_with(config.platform.clone(), data_dir, joined)?;
    let audit_key = node
        .keyring
        .cluster()
        .derive(teekms_core::audit::AUDIT_KEY_LABEL);
    // The reader's store, and the writer's own connection to it.
    let (mut reader, writer, more_readers): (Box<dyn Store>, _, _) = match &config.store {
        None => {
            let fresh = Freshness::start(node.keyring.clone(), &mut node.store, true)?;
            (
                Box::new(SqliteStore::open(data_dir)?),
                Writer::start(Box::new(node.store), audit_key, Arc::new(fresh))?,
                Vec::new(),
            )
        }
        Some(url) => {
            // Checked once (schema, cluster); the writer and the other readers (each
            // read is a network round trip) connect to the same database.
            let mut checked = crate::node::cluster_store(&node.keyring, url)?;
            let fresh = Freshness::start(node.keyring.clone(), &mut checked, false)?;
            let writer = Writer::start(Box::new(checked.another()?), audit_key, Arc::new(fresh))?;
            let mut more: Vec<Box<dyn Store>> = Vec::new();
            for _ in 1..PG_READERS {
                more.push(Box::new(checked.another()?));
            }
            (Box::new(checked), writer, more)
        }
    };
    if let Some(setup) = &config.recovery
        && crate::ensure_recovery(&node.keyring, reader.as_mut(), data_dir, setup)?
    {
        tracing::info!(
            threshold = setup.threshold,
            officers = setup.officers.len(),
            "recovery shares written to DATA_DIR/recovery/"
        );
    }
    if config.store.is_some() {
        let given = || match &config.cluster_policy {
            Some(text) => Ok(text.clone()),
            None => {
                crate::node::default_cluster_policy(node.platform.as_ref(), node.keyring.keys())
            }
        };
        crate::node::init_cluster(
            &node.keyring,
            reader.as_mut(),
            given,
            config.cluster_admin.as_deref(),
        )?;
        // Refuse to start on a cluster policy that does not open or parse.
        crate::node::read_cluster_policy(&node.keyring, reader.as_mut())?;
    }
    // Store format 2 (every key with its bound state, every owner with its record):
    // migrated once, then the node's own record says so.
    if crate::migrate::migrate_if_needed(
        &node.keyring,
        reader.as_mut(),
        &writer,
        node.store_format,
        crate::now_unix(),
    )? && node.store_format != crate::node::StoreFormat::Current
    {
        crate::node::mark_store_current(node.platform.as_ref(), data_dir, node.keyring.keys())?;
    }
    Ok(Opened {
        keyring: node.keyring,
        platform: node.platform,
        lock: node.lock,
        readers: Readers::new(std::iter::once(reader).chain(more_readers).collect()),
        writer,
    })
}

/// Joins the cluster of the node at `url`: a fresh key set, an RA-TLS certificate carrying
/// this TEE's evidence for it, the node verified against the cluster policy (given, or
/// the default: the same TEE and measurement as this one), and the cluster key received
/// sealed to this key set. Nothing is stored before it all succeeded.
async fn join(
    url: &str,
    platform: &dyn teekms_platform::Platform,
    given_policy: Option<&str>,
) -> Result<(teekms_core::NodeKeys, teekms_core::SealingKey), ServerError> {
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        ServerError::Refused(format!("joining the cluster at {url}: {what}: {e}"))
    };
    let keys = teekms_core::NodeKeys::generate();
    let policy_text = match given_policy {
        Some(t) => t.to_owned(),
        None => crate::node::default_cluster_policy(platform, &keys)?,
    };
    let policy = teekms_attest::Policy::from_toml(&policy_text)
        .map_err(|e| refused("the cluster policy", &e))?;
    let extension =
        platform.ratls_extension(&keys.statement(platform.tee(), None), keys.tls_spki_der())?;
    let node_url = teekms_client::NodeUrl::parse(url).map_err(|e| refused("the URL", &e))?;
    // Mutual RA-TLS: each side verifies the other's certificate in the handshake.
    let mut conn = teekms_client::connect_attested_as(
        &node_url,
        &policy,
        teekms_client::Identity::RaTlsWorkload(&keys, &extension),
        crate::now_unix(),
        None,
    )
    .await
    .map_err(|e| refused("the node did not verify", &e))?;
    let cluster = conn
        .cluster_join(&keys)
        .await
        .map_err(|e| refused("the node refused", &e))?;
    Ok((keys, cluster))
}
