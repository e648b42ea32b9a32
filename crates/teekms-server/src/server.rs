//! The accept loop: TLS, then HTTP/1.1 with the caller's identity attached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use teekms_platform::Platform;
use teekms_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::ServerError;
use crate::api::router;
use crate::connections::{self, Connections};
use crate::ops::ConnState;
use crate::ops::{Service, Settings};
use crate::tls::{client_spki_sha256, owner_from_certificate, server_config};
use crate::writer::Writer;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stream may stall, by default: a client that neither sends nor takes bytes
/// for this long would otherwise hold the stream's threads and buffers for good.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// out, before the node ends it with an error ([`DEFAULT_STREAM_IDLE_TIMEOUT`]).
    pub stream_idle_timeout: Duration,
    /// Bytes that streams through the node may hold at once
    /// ([`crate::DEFAULT_STREAM_MEMORY`]); a stream that does not fit waits, then gets
    /// 503 `busy`.
    pub stream_memory: u64,
    /// Most open client connections ([`default_max_connections`] from the file limit
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
}

/// A node that is serving.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The node's id (hex).
    pub node_id: String,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// `https://ADDR`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops accepting, drops open connections, lets queued writes commit, and closes
    /// the database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }

    /// Waits until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Connections the kernel may hold for the node before it accepts them (capped by
/// `net.core.somaxconn`). Clients that connect and send nothing wait there (see
/// `TCP_DEFER_ACCEPT` below) instead of holding a descriptor; a queue too short for them
/// would make the kernel fall back to SYN cookies, which hand such clients to `accept`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Reader connections of a node on PostgreSQL (its writer has one more).
const PG_READERS: usize = 4;

/// Opens the node and starts serving. Returns once the listener is bound.
pub async fn serve(config: ServeConfig) -> Result<RunningServer, ServerError> {
    let started = std::time::Instant::now();
    // A service manager's soft limit (systemd: 1024) would let a few idle clients take
    // every descriptor: the node uses what the hard limit allows.
    let files = match teekms_platform::sys::raise_open_file_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "the open-file limit could not be raised");
            teekms_platform::sys::open_file_limit().map_or(1024, |(soft, _)| soft)
        }
    };
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| crate::connections::default_max_connections(files));
    // Listen first: a node that cannot listen must not have created anything.
    let listener = listen(config.listen).map_err(|source| ServerError::Io {
        what: format!("listening on {}", config.listen),
        source,
    })?;
    let platform = config.platform.clone();
    let data_dir = config.data_dir.clone();
    let recovery = config.recovery.clone();
    let store_url = config.store.clone();
    let shared = store_url.is_some();
    // Everything that touches the store happens here, off the runtime: a database client
    // that blocks must not run on an async thread.
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
    let given_policy = config.cluster_policy.clone();
    let cluster_admin = config.cluster_admin.clone();
    let (node, readers, writer) = tokio::task::spawn_blocking(move || {
        let node = crate::node::open_node_with(platform, &data_dir, joined)?;
        let audit_key = node
            .keyring
            .cluster()
            .derive(teekms_core::audit::AUDIT_KEY_LABEL);
        // The reader's store, and the writer's own connection to it.
        let (mut reader, writer, more_readers): (Box<dyn teekms_store::Store>, _, _) =
            match &store_url {
                None => (
                    Box::new(SqliteStore::open(&data_dir)?),
                    Writer::start(Box::new(node.store), audit_key)?,
                    Vec::new(),
                ),
                Some(url) => {
                    // Checked once (schema, cluster); the writer and the other readers
                    // (each read is a network round trip) connect to the same database.
                    let checked = crate::node::cluster_store(&node.keyring, url)?;
                    let writer = Writer::start(Box::new(checked.another()?), audit_key)?;
                    let mut more: Vec<Box<dyn teekms_store::Store>> = Vec::new();
                    for _ in 1..PG_READERS {
                        more.push(Box::new(checked.another()?));
                    }
                    (Box::new(checked), writer, more)
                }
            };
        if let Some(setup) = &recovery
            && crate::ensure_recovery(&node.keyring, reader.as_mut(), &data_dir, setup)?
        {
            tracing::info!(
                threshold = setup.threshold,
                officers = setup.officers.len(),
                "recovery shares written to DATA_DIR/recovery/"
            );
        }
        if store_url.is_some() {
            let given = || match given_policy {
                Some(text) => Ok(text),
                None => {
                    crate::node::default_cluster_policy(node.platform.as_ref(), node.keyring.keys())
                }
            };
            crate::node::init_cluster(
                &node.keyring,
                reader.as_mut(),
                given,
                cluster_admin.as_deref(),
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
            crate::node::mark_store_current(
                node.platform.as_ref(),
                &data_dir,
                node.keyring.keys(),
            )?;
        }
        let node = (node.keyring, node.platform, node.lock);
        let readers =
            crate::readers::Readers::new(std::iter::once(reader).chain(more_readers).collect());
        Ok::<_, ServerError>((node, readers, writer))
    })
    .await
    .expect("node start task")?;
    let (service, platform, lock) = node;
    tracing::debug!(elapsed = ?started.elapsed(), "node state opened");
    let ratls = platform.ratls_extension(service.keys())?;
    let tls = server_config(service.keys(), &ratls)?;
    tracing::debug!(elapsed = ?started.elapsed(), "TLS configured");
    let node_id = service.keys().node_id().to_hex();
    let state = Arc::new(Service::new(
        service,
        platform,
        readers,
        writer,
        Settings {
            min_deletion_wait: config.min_deletion_wait,
            shared_store: shared,
            stream_memory: config.stream_memory,
            stream_idle_timeout: config.stream_idle_timeout,
        },
    ));
    // Made now: a node whose TEE cannot produce evidence does not start.
    state.attestation(None)?;
    tracing::debug!(elapsed = ?started.elapsed(), "evidence made");
    tokio::spawn(sweep_deletions(Arc::downgrade(&state)));
    // Clients that connect and say nothing stay in the kernel, not in the accept loop.
    {
        use std::os::fd::AsFd;
        let secs = HANDSHAKE_TIMEOUT.as_secs() as u32;
        if let Err(e) = teekms_platform::sys::defer_accept(listener.as_fd(), secs) {
            tracing::warn!(error = %e, "accepts cannot be deferred until data arrives");
        }
    }
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let (shutdown, shutdown_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        state,
        shutdown_rx,
        lock,
        max_connections,
    ));
    Ok(RunningServer {
        addr,
        node_id,
        shutdown,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Service>,
    mut shutdown: oneshot::Receiver<()>,
    lock: crate::DataDirLock,
    max_connections: usize,
) {
    let app = router(state.clone());
    let mut connections = JoinSet::new();
    let mut open = Connections::new(max_connections);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors (or another transient failure): free
                        // one if a connection sits unused, and never retry at once, so
                        // the loop cannot spin on an error that persists.
                        let exhausted = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                        if exhausted {
                            open.close_oldest_unused();
                        }
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let look = first_look(&tcp);
                if look == FirstLook::Closed {
                    continue;
                }
                let hello = look == FirstLook::Hello;
                tracing::trace!(%peer, hello, "accepted");
                if !open.make_room(hello) {
                    tracing::debug!(%peer, "connection cap reached; no connection to close for this one");
                    drop(tcp);
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                let stage = if hello { connections::HELLO } else { connections::SILENT };
                let progress = Arc::new(AtomicU8::new(stage));
                let task = connections.spawn(serve_connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    progress.clone(),
                ));
                open.opened(task, progress);
            }
            Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                open.closed(match &ended {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                });
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
    drop(app);
    // The state (its store connections among it) is dropped off the runtime: a blocking
    // database client must not be closed from an async thread.
    tokio::task::spawn_blocking(move || {
        state.shutdown();
        drop(state);
        // Released only once the store is closed.
        drop(lock);
    })
    .await
    .expect("writer close task");
}

/// What a just-accepted connection has sent so far: a look at the socket itself (not a
/// read, and not the runtime's readiness, which knows nothing of a socket it has not
/// polled yet).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FirstLook {
    /// Nothing yet.
    Silent,
    /// Its first bytes (a TLS hello, with any real client).
    Hello,
    /// It has already closed its side: nothing to serve.
    Closed,
}

fn first_look(tcp: &tokio::net::TcpStream) -> FirstLook {
    match peek(tcp) {
        Ok(0) => FirstLook::Closed,
        Ok(_) => FirstLook::Hello,
        Err(_) => FirstLook::Silent,
    }
}

/// How many bytes (0 or 1) a look at the socket finds, without reading them. The socket
/// is non-blocking: nothing there yet is `WouldBlock`.
fn peek(tcp: &tokio::net::TcpStream) -> std::io::Result<usize> {
    let mut one = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(tcp).peek(&mut one)
}

/// errno values of a process or system out of file descriptors (Linux).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    progress: connections::Progress,
) {
    // The handshake deadline runs from the accept, silence included.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    // Readiness is not data: an error, the peer's close or a spurious wake-up is not a
    // hello (and must not protect the connection as one). A look that finds nothing
    // clears the readiness, so the next wait is for new data.
    loop {
        match tokio::time::timeout_at(deadline, tcp.readable()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let look = tcp.try_io(tokio::io::Interest::READABLE, || peek(&tcp));
        match look {
            Ok(0) => return,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
    let _ = progress.compare_exchange(
        connections::SILENT,
        connections::HELLO,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first());
    // An RA-TLS client certificate makes the connection an attested workload at once.
    let workload = match cert.map(|c| teekms_attest::ratls::extract(c)) {
        Some(Ok(ev))
            if ev.statement.as_ref().map(|s| s.tls_spki_sha256.0)
                == cert.and_then(|c| client_spki_sha256(c)) =>
        {
            match Service::ratls_workload(&ev, crate::now_unix()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "RA-TLS client evidence refused");
                    return;
                }
            }
        }
        Some(Ok(_)) => {
            tracing::debug!(%peer, "RA-TLS client statement names another key");
            return;
        }
        _ => None,
    };
    let conn_state = Arc::new(ConnState {
        peer: Some(peer.ip()),
        owner: cert.and_then(|c| owner_from_certificate(c).ok()),
        client_spki: cert.and_then(|c| client_spki_sha256(c)),
        workload: Mutex::new(workload),
    });
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // Busy (never closed for room) until the response's last byte is out, or the
            // request is dropped; kept alive but idle after it.
            let busy = connections::Busy::begin(&progress);
            req.extensions_mut().insert(conn_state.clone());
            let response = app.clone().oneshot(req);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| axum::body::Body::new(TrackedBody { body, _busy: busy })),
                )
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A response body that keeps its connection marked busy until it is done.
struct TrackedBody {
    body: axum::body::Body,
    /// Held, not read: dropped with the body.
    _busy: connections::Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How often due deletions are carried out.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Deletes keys whose waiting period is over, until the node stops.
async fn sweep_deletions(state: std::sync::Weak<Service>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(app) = state.upgrade() else { return };
        let result =
            tokio::task::spawn_blocking(move || app.sweep_deletions(crate::now_unix())).await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, "scheduled deletions carried out"),
            Ok(Err(e)) => tracing::warn!(error = ?e, "deletion sweep failed"),
            Err(_) => return,
        }
    }
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
    let extension = platform.ratls_extension(&keys)?;
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
