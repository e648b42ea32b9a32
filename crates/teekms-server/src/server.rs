//! The accept loop: TLS, then HTTP/1.1 with the caller's identity attached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::ServerError;
use crate::api::router;
use crate::ca::LeafCerts;
use crate::connections::{self, Connections};
use crate::ops::ConnState;
use crate::ops::Service;
use crate::start::{Resolved, ServeConfig};
use crate::tls::{client_spki_sha256, owner_from_certificate, server_config};

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stream may stall, by default: a client that neither sends nor takes bytes
/// for this long would otherwise hold the stream's threads and buffers for good.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A node that is serving.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The node's id (hex).
    pub node_id: String,
    /// Where metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
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

/// Opens the node and starts serving. Returns once the listener is bound.
pub async fn serve(config: ServeConfig) -> Result<RunningServer, ServerError> {
    let started = std::time::Instant::now();
    let resolved = crate::start::resolve(config).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "node state opened");
    start(resolved, started)
}

/// Renews the node's leaf certificate while the node runs (see [`LeafCerts`]).
async fn renew_leaves(leaves: std::sync::Weak<LeafCerts>) {
    loop {
        let Some(interval) = leaves.upgrade().map(|l| l.check_interval()) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(l) = leaves.upgrade() else { return };
        match l.renew_if_due(crate::now_unix()) {
            Ok(true) => tracing::info!("TLS certificate renewed"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the TLS certificate could not be renewed; retrying")
            }
        }
    }
}

/// Serves a resolved configuration: the RA-TLS certificate, the service, the deletion
/// sweep and the accept loop.
fn start(r: Resolved, started: std::time::Instant) -> Result<RunningServer, ServerError> {
    let ratls = r
        .platform
        .ratls_extension(&r.keyring.statement(None), r.keyring.keys().tls_spki_der())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let leaves = Arc::new(LeafCerts::new(
        r.keyring.clone(),
        r.tls.certificate_names(),
        ratls,
        r.tls.cert_lifetime,
        &provider,
        crate::now_unix(),
    )?);
    let tls = server_config(provider, leaves.clone())?;
    tokio::spawn(renew_leaves(Arc::downgrade(&leaves)));
    tracing::debug!(elapsed = ?started.elapsed(), "TLS configured");
    let node_id = r.keyring.keys().node_id().to_hex();
    let state = Arc::new(Service::new(
        r.keyring, r.platform, r.readers, r.writer, r.settings,
    ));
    // Made now: a node whose TEE cannot produce evidence does not start.
    state.attestation(None)?;
    state.start_confirmation();
    let metrics_addr = match r.metrics {
        Some(listener) => {
            crate::metrics::METRICS.node(state.tee(), state.collateral_expires_at());
            let addr = listener.local_addr().ok();
            tokio::spawn(crate::metrics::serve(listener));
            addr
        }
        None => None,
    };
    tracing::debug!(elapsed = ?started.elapsed(), "evidence made");
    tokio::spawn(sweep_deletions(Arc::downgrade(&state)));
    watch_store(Arc::downgrade(&state));
    let mut first_attempt = None;
    if state.shared_store() {
        // Members find each other through the shared store (spec/freshness-v1.md).
        let url = match &r.advertise {
            Some(url) => url.clone(),
            None => match r.listener.local_addr() {
                Ok(addr) => format!("https://{addr}"),
                Err(source) => {
                    return Err(ServerError::Io {
                        what: "reading the bound address".into(),
                        source,
                    });
                }
            },
        };
        // Its first attempt to recover the epoch comes before the first connection is
        // taken (a cluster of one, or peers that answer at once: no refused request);
        // the next ones, and the member record, in the background.
        state.freshness().begin_recovery();
        let (tx, rx) = oneshot::channel();
        first_attempt = Some(rx);
        tokio::spawn(recover_then_register(Arc::downgrade(&state), url, tx));
    }
    // Clients that connect and say nothing stay in the kernel, not in the accept loop.
    {
        use std::os::fd::AsFd;
        let secs = HANDSHAKE_TIMEOUT.as_secs() as u32;
        if let Err(e) = teekms_platform::sys::defer_accept(r.listener.as_fd(), secs) {
            tracing::warn!(error = %e, "accepts cannot be deferred until data arrives");
        }
    }
    let addr = r.listener.local_addr().map_err(|source| ServerError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let (shutdown, shutdown_rx) = oneshot::channel();
    let accepting = accept_loop(
        r.listener,
        TlsAcceptor::from(Arc::new(tls)),
        state,
        shutdown_rx,
        r.lock,
        r.max_connections,
    );
    let task = tokio::spawn(async move {
        if let Some(first) = first_attempt {
            let _ = first.await;
        }
        accepting.await
    });
    Ok(RunningServer {
        addr,
        node_id,
        metrics_addr,
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
                crate::metrics::METRICS.connections(1);
            }
            Some(ended) = connections.join_next_with_id(), if !connections.is_empty() => {
                crate::metrics::METRICS.connections(-1);
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
/// How often the store's epoch record is compared with the node's memory.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Compares the store's epoch and audit head with the node's memory every second
/// (spec/freshness-v1.md): a store replaced under a node whose answers come from its
/// caches, with no write to read the store, is caught here; and once the alarm is up,
/// this is what sees the store brought forward. Its own thread: a task on the blocking
/// pool every second would keep that pool's threads from ever going idle and exiting,
/// and with them what they hold (a stream's buffers, say).
fn watch_store(state: std::sync::Weak<Service>) {
    #[cfg(debug_assertions)]
    if crate::fault::no_watch() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("teekms-watch".into())
        .spawn(move || {
            for tick in 0u64.. {
                std::thread::sleep(WATCH_EVERY);
                let Some(app) = state.upgrade() else { return };
                // Alarms are logged where they are raised; a store that cannot be read
                // is readiness's and the next request's concern.
                let _ = app.watch_store();
                drop(app);
                // Every 10 s, the heap's free memory goes back to the system, so that
                // the node's RSS shows what it holds rather than its last burst.
                if tick % 10 == 9 {
                    teekms_platform::sys::release_free_memory();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the store watch could not start");
    }
}

/// How often a restarted member asks its peers again while it waits to recover.
const RECOVER_EVERY: Duration = Duration::from_secs(1);
/// How long a member of a cluster made without a cluster admin — nobody can run
/// `cluster resume` — waits for its peers before it serves its store as it is.
const NO_ADMIN_GRACE: Duration = Duration::from_secs(5);

/// On a shared store: learns the cluster's epoch from the other members before the node
/// serves anything (spec/freshness-v1.md, "Cluster rules", 2), asking again every
/// second until enough answer or the cluster admin resumes the node; then records the
/// node as a member (a state change, which only a recovered node may make).
async fn recover_then_register(
    state: std::sync::Weak<Service>,
    url: String,
    first_done: oneshot::Sender<()>,
) {
    let mut first_done = Some(first_done);
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let Some(app) = state.upgrade() else { return };
        let attempt = app.try_recover().await;
        if let Some(tx) = first_done.take() {
            let _ = tx.send(());
        }
        match attempt {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "freshness recovery: the members could not be read")
            }
        }
        if !said && let Some(why) = app.freshness().recovering() {
            tracing::warn!(reason = %why, "waiting to recover the cluster's epoch");
            said = true;
        }
        if started.elapsed() >= NO_ADMIN_GRACE && app.resume_without_admin().await {
            break;
        }
        drop(app);
        tokio::time::sleep(RECOVER_EVERY).await;
    }
    let Some(app) = state.upgrade() else { return };
    let registered =
        tokio::task::spawn_blocking(move || app.register_member(&url, crate::now_unix())).await;
    if let Ok(Err(e)) = registered {
        tracing::error!(error = %e, "recording this node as a cluster member");
    }
}

/// Deletes keys whose waiting period is over (and counts keys by state for the
/// metrics), at start and then every [`SWEEP_EVERY`], until the node stops.
async fn sweep_deletions(state: std::sync::Weak<Service>) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
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
