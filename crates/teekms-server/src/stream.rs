//! Streaming encryption through the node (spec/stream-v1.md, spec/api-v1.md): the same
//! format as the owner's `teekms encrypt`, with the key held by the node; the plaintext
//! key never leaves the TEE. The request body is read and the response written as the
//! chunks go; a chunk that does not authenticate ends the response abnormally (the
//! status was already sent), so a client never mistakes a cut stream for a whole one.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use teekms_core::access::Operation;
use teekms_core::stream::{DEFAULT_CHUNK_LOG2, Header, StreamError};
use teekms_stream_io as stream;
use tokio::sync::mpsc;

use crate::http::ApiError;
use crate::now_unix;
use crate::ops::{ConnState, OpError, Service};

/// Request body frames in flight.
const DEPTH: usize = 8;
/// Response chunks in flight (each a whole sealed or opened chunk: up to 16 MiB).
const OUT_DEPTH: usize = 4;
/// The most bytes a request body frame holds, for the reservation.
const FRAME_BYTES: u64 = 64 << 10;

/// The most memory a stream with chunks of `2^chunk_log2` bytes holds: its workers'
/// buffers, the response chunks in flight (and the one being copied), the body frames.
fn stream_bytes(chunk_log2: u8) -> u64 {
    let chunk = (1u64 << chunk_log2) + 16;
    stream::working_set_bytes(chunk_log2)
        + (OUT_DEPTH as u64 + 1) * chunk
        + DEPTH as u64 * FRAME_BYTES
}

pub(crate) type Chunk = Result<Bytes, std::io::Error>;

/// The routes, without a body limit (they stream).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/stream/encrypt", post(encrypt))
        .route("/v1/stream/decrypt", post(decrypt))
        .layer(DefaultBodyLimit::disable())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptQuery {
    key_id: String,
    owner: Option<String>,
    chunk_log2: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptQuery {
    owner: Option<String>,
}

/// The request body as a blocking reader, fed by a task.
struct BodyReader {
    rx: mpsc::Receiver<Chunk>,
    buf: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        crate::metrics::METRICS.stream_bytes("in", n);
        Ok(n)
    }
}

/// The request body, read by a task; a client that sends nothing for `idle` while the
/// body is not done has its stream ended with an error.
fn body_reader(body: Body, idle: Duration) -> BodyReader {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        let mut body = body;
        loop {
            let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
                let stalled = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the request body sent nothing for {} s", idle.as_secs()),
                );
                let _ = tx.send(Err(stalled)).await;
                return;
            };
            let Some(frame) = frame else {
                return;
            };
            let chunk = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    BodyReader {
        rx,
        buf: Bytes::new(),
    }
}

/// A blocking writer whose bytes become the response body; a client that takes none of
/// them for `idle` has its stream ended with an error.
#[derive(Clone)]
struct BodyWriter {
    tx: mpsc::Sender<Chunk>,
    idle: Duration,
    runtime: tokio::runtime::Handle,
}

impl BodyWriter {
    /// Sends `chunk` (called on the stream's own thread, never on the runtime's).
    fn send(&self, chunk: Chunk) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        // The timer is made inside the runtime's context, which `block_on` enters.
        let sent = async { tokio::time::timeout(self.idle, self.tx.send(chunk)).await };
        match self.runtime.block_on(sent) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::new(ErrorKind::BrokenPipe, "client went away")),
            Err(_) => Err(Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the client took no response bytes for {} s",
                    self.idle.as_secs()
                ),
            )),
        }
    }
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(Ok(Bytes::copy_from_slice(buf)))?;
        crate::metrics::METRICS.stream_bytes("out", buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body fed through a channel (by a thread that makes it as it goes); an
/// error ends the response early, so the client never takes it for complete.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Chunk>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::from(OpError::BadRequest(e.body_text()))
}

async fn encrypt(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    headers: axum::http::HeaderMap,
    q: Result<Query<EncryptQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let chunk_log2 = q.chunk_log2.unwrap_or(DEFAULT_CHUNK_LOG2);
    if !(12..=24).contains(&chunk_log2) {
        return Err(OpError::BadRequest("chunk_log2 must be 12 to 24".into()).into());
    }
    let token = crate::http::token(&headers)?;
    run(
        app,
        conn,
        token,
        body,
        "stream-encrypt",
        move |app, caller, now, input, output| {
            let (owner, key_id, rec) = app.stream_key(
                caller,
                q.owner.as_deref(),
                &q.key_id,
                None,
                Operation::Encrypt,
                now,
            )?;
            let header = Header::new(key_id.clone(), rec.key_version, chunk_log2);
            let started = Started {
                owner,
                key_id,
                version: rec.key_version,
                chunk_log2,
            };
            Ok((
                started,
                Box::new(move || stream::encrypt(&rec.dek, &header, input, output)),
            ))
        },
    )
    .await
}

async fn decrypt(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    headers: axum::http::HeaderMap,
    q: Result<Query<DecryptQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let token = crate::http::token(&headers)?;
    run(
        app,
        conn,
        token,
        body,
        "stream-decrypt",
        move |app, caller, now, mut input, output| {
            // The header names the key and version; it is authenticated with the first chunk.
            let (header, header_bytes) =
                Header::read_from(&mut input).map_err(|e| OpError::BadRequest(e.to_string()))?;
            let (owner, key_id, rec) = app.stream_key(
                caller,
                q.owner.as_deref(),
                header.key_id.as_str(),
                Some(header.key_version),
                Operation::Decrypt,
                now,
            )?;
            let started = Started {
                owner,
                key_id,
                version: rec.key_version,
                chunk_log2: header.chunk_log2,
            };
            let replayed = std::io::Cursor::new(header_bytes).chain(input);
            Ok((
                started,
                Box::new(move || stream::decrypt(&rec.dek, replayed, output).map(|_| ())),
            ))
        },
    )
    .await
}

/// What a stream is about, for its closing audit entry.
struct Started {
    owner: teekms_core::OwnerPublicKey,
    key_id: teekms_core::KeyId,
    version: u64,
    /// Its chunk size, which decides the memory it holds.
    chunk_log2: u8,
}

type Work = Box<dyn FnOnce() -> Result<(), StreamError> + Send>;

/// Authorizes (and audits) on the blocking pool, then answers 200 and streams: the work
/// runs on its own thread between the request body and the response body.
async fn run(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    token: Option<String>,
    body: Body,
    op: &'static str,
    prepare: impl FnOnce(
        &Service,
        &teekms_core::access::Caller,
        u64,
        BodyReader,
        BodyWriter,
    ) -> Result<(Started, Work), OpError>
    + Send
    + 'static,
) -> Result<Response, ApiError> {
    let idle = app.stream_idle_timeout();
    let input = body_reader(body, idle);
    let (tx, rx) = mpsc::channel(OUT_DEPTH);
    let output = BodyWriter {
        tx,
        idle,
        runtime: tokio::runtime::Handle::current(),
    };
    // What ends the response early, sent after the work has given up its writer.
    let ending = output.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("teekms-stream".into())
        .spawn(move || {
            let now = now_unix();
            // On a shared store a majority of the members confirm, once the key's state
            // is read, that nobody holds a newer epoch, before any byte is answered.
            let prepared = app
                .caller(&conn, token.as_deref(), now)
                .and_then(|caller| prepare(&app, &caller, now, input, output).map(|p| (caller, p)))
                .and_then(|p| runtime.block_on(app.confirm_data_plane()).map(|()| p));
            let (caller, (started, work)) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Room in the node's stream memory first, or no stream (and no 200) at all.
            let key = (&started.owner, &started.key_id, started.version);
            let needs = stream_bytes(started.chunk_log2);
            let _room = match app.stream_room(&caller, op, key, needs, started.chunk_log2) {
                Ok(room) => room,
                Err(refused) => {
                    let _ = ready_tx.send(Err(refused));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            crate::metrics::METRICS.streams(1);
            // A panic must not end the response as if it were complete: a client would
            // take a cut-short plaintext for the whole of it.
            let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => {
                    let _ = ending.send(Err(std::io::Error::other(e.to_string())));
                    format!("error: {e}")
                }
                Err(_) => {
                    let _ = ending.send(Err(std::io::Error::other("internal failure")));
                    "error: internal failure".to_owned()
                }
            };
            // The response ends (and so the stream is acknowledged) only once its audit
            // entry is durable; if it cannot be written, the response is cut instead.
            if let Err(e) = app.stream_done(&caller, op, key, outcome) {
                tracing::warn!(error = ?e, "the end of a stream could not be audited");
                let _ = ending.send(Err(std::io::Error::other("audit failed")));
            }
            crate::metrics::METRICS.streams(-1);
            drop(ending);
        })
        .map_err(|e| ApiError::from(OpError::Internal(e.to_string())))?;
    match ready_rx.await {
        Ok(Ok(())) => Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            Body::new(ChannelBody(rx)),
        )
            .into_response()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(OpError::Internal("stream thread ended early".into()).into()),
    }
}
