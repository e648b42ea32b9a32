//! HTTP API v1 (spec/api-v1.md): routes, auth extractors, error mapping.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Router, body::Bytes};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use teekms_attest::AttestationDocument;
use teekms_attest::statement::MAX_NONCE_LEN;
use teekms_core::access::Caller;
use teekms_core::api::{self, KeyList};
use teekms_core::audit::AuditDraft;
use teekms_core::bundle::MAX_BUNDLE_LEN;
use teekms_core::{Bundle, OwnerPublicKey, Receipt};

use crate::http::{ApiError, JsonOut, token};
use crate::ops::{ConnState, Deployer, ErrorCode, Health, OpError, Service};

/// An authenticated owner (route guard).
pub struct Owner(pub OwnerPublicKey);

impl<S: Send + Sync> FromRequestParts<S> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts
            .extensions
            .get::<Arc<ConnState>>()
            .and_then(|c| c.owner)
        {
            Some(owner) => Ok(Owner(owner)),
            None => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this request needs an owner's TLS client certificate",
            )),
        }
    }
}

/// Largest JSON request body (a 64 KiB envelope payload in base64, with room).
const MAX_REQUEST: usize = 128 * 1024;

/// The router of API v1.
pub fn router(state: Arc<Service>) -> Router {
    Router::new()
        // The AWS KMS API (JSON 1.1, SigV4): spec/aws-kms-v1.md.
        .route("/", post(crate::aws::handle))
        .route("/v1/attestation", get(attestation))
        .route("/v1/ca", get(ca_certificate))
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/v1/keys",
            get(list_keys)
                .post(deploy)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_LEN)),
        )
        .route("/v1/keys/{id}", get(describe))
        .route("/v1/keys/{id}/rotate", post(rotate))
        .route("/v1/keys/{id}/enable", post(enable))
        .route("/v1/keys/{id}/disable", post(disable))
        .route("/v1/keys/{id}/schedule-deletion", post(schedule_deletion))
        .route("/v1/keys/{id}/cancel-deletion", post(cancel_deletion))
        .route(
            "/v1/keys/{id}/min-decryption-version",
            put(min_decryption_version),
        )
        .route("/v1/keys/{id}/policy", get(get_policy).put(set_policy))
        .route("/v1/keys/{id}/export", post(export))
        .route("/v1/keys/{id}/fetch", post(fetch))
        .route("/v1/keys/{id}/age-recipient", get(age_recipient))
        .route("/v1/age/unwrap", post(age_unwrap))
        .route("/v1/envelope/encrypt", post(encrypt))
        .route("/v1/envelope/decrypt", post(decrypt))
        .route("/v1/envelope/generate-data-key", post(generate_data_key))
        .route("/v1/envelope/re-encrypt", post(re_encrypt))
        .route(
            "/v1/access-keys",
            get(list_access_keys).post(create_access_key),
        )
        .route("/v1/access-keys/{id}", delete(revoke_access_key))
        .route("/v1/workload/attest", post(attest_workload))
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/epoch", post(cluster_epoch))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/resume", post(cluster_resume))
        .route(
            "/v1/cluster/members/{node_id}",
            delete(cluster_member_remove),
        )
        .route(
            "/v1/cluster/policy",
            get(cluster_policy_get).put(cluster_policy_set),
        )
        .route("/v1/audit", get(audit_tail))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/prune", post(audit_prune))
        .route("/v1/ping", get(ping))
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route_layer(axum::middleware::from_fn(request_deadline))
        .route_layer(axum::middleware::from_fn_with_state(
            transit_prefix(&state),
            crate::metrics::track,
        ))
        .merge(
            crate::stream::routes().route_layer(axum::middleware::from_fn_with_state(
                transit_prefix(&state),
                crate::metrics::track,
            )),
        )
        .merge(crate::transit::routes(state.transit_mount()).route_layer(
            axum::middleware::from_fn_with_state(transit_prefix(&state), crate::metrics::track),
        ))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .layer(axum::middleware::from_fn_with_state(state.clone(), stamp))
        .with_state(state)
}

/// Puts the node's signed (E, H) on every answer (spec/freshness-v1.md, "Stamps"), as
/// it stands once the request is done: owners keep the highest they were shown.
async fn stamp(
    State(state): State<Arc<Service>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        teekms_core::freshness::STAMP_HEADER,
        state.freshness().stamp(),
    );
    response
}

/// Where the Transit API's routes begin (how metrics tell them from the native API's).
fn transit_prefix(state: &Service) -> Arc<str> {
    Arc::from(format!("/v1/{}/", state.transit_mount()))
}

/// How long a request that is not a stream may take, its body included. A connection
/// with a request in progress is never closed to make room for others, so a client that
/// sends its headers and then stalls its body must not keep it so for good. (Streams
/// have their own idle timeout.)
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) async fn request_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            "the request (its body included) took longer than 30 s; send it again",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationQuery {
    nonce: Option<String>,
}

async fn attestation(
    State(app): State<Arc<Service>>,
    q: Result<Query<AttestationQuery>, QueryRejection>,
) -> Result<JsonOut<AttestationDocument>, ApiError> {
    let q = query(q)?;
    let nonce = match q.nonce {
        None => None,
        Some(nonce_hex) => Some(
            hex::decode(&nonce_hex)
                .ok()
                .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE_LEN)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        format!("nonce must be 1 to {MAX_NONCE_LEN} bytes of hex"),
                    )
                })?,
        ),
    };
    let doc = app
        .attestation(nonce.as_deref())
        .map_err(|e| ApiError::internal("evidence", &e))?;
    Ok(JsonOut(doc))
}

/// This API as OpenAPI 3.1 (spec/openapi.json, built in).
pub const OPENAPI: &str = include_str!("../../../spec/openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The cluster's TLS CA certificate (PEM). Anyone may fetch it: it is public, and a
/// client trusts it only once a node's verified statement binds its key (`teekms ca
/// export`).
async fn ca_certificate(State(app): State<Arc<Service>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        app.ca_pem().to_owned(),
    )
        .into_response()
}

async fn deploy(ctx: Ctx, body: Body) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "request body rejected ({}); bundles are at most {MAX_BUNDLE_LEN} bytes",
                e.body_text()
            ),
        )
    })?;
    let bundle =
        Bundle::from_json(&body).map_err(|e| ApiError::new(ErrorCode::BadBundle, e.to_string()))?;
    // The owner is the connection's certificate's, or the bundle's signer: no token.
    let deployed = ctx
        .app
        .call(ctx.conn, None, move |service, caller, now| {
            let deployer = caller
                .owner
                .as_ref()
                .map_or(Deployer::BundleSigner, Deployer::Owner);
            service.deploy(deployer, &bundle, now)
        })
        .await?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json::<Receipt>(deployed.receipt)).into_response())
}

async fn list_keys(ctx: Ctx, Owner(owner): Owner) -> Result<JsonOut<KeyList>, ApiError> {
    let list = ctx
        .app
        .call(ctx.conn, None, move |service, _, _| {
            service.list_keys(&owner)
        })
        .await?;
    Ok(JsonOut(list))
}

// ---- operations on keys --------------------------------------------------------------

/// What every operation's handler takes from its request: the service, the
/// connection's identities, and the `Authorization` header (read when the operation
/// runs, after the body, so a request wrong in both is told about its body first).
struct Ctx {
    app: Arc<Service>,
    conn: Arc<ConnState>,
    token: Result<Option<String>, ApiError>,
}

impl FromRequestParts<Arc<Service>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        let conn = parts
            .extensions
            .get::<Arc<ConnState>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request", &"no connection state"))?;
        Ok(Ctx {
            app: app.clone(),
            conn,
            token: token(&parts.headers),
        })
    }
}

impl Ctx {
    /// Runs an operation with the request's caller (see [`Service::call`]).
    async fn op<T: Serialize + Send + 'static>(
        self,
        f: impl FnOnce(&Service, &Caller, u64) -> Result<T, OpError> + Send + 'static,
    ) -> Result<JsonOut<T>, ApiError> {
        let token = self.token?;
        Ok(JsonOut(self.app.call(self.conn, token, f).await?))
    }

    /// Runs a data operation with the request's caller (see [`Service::call_data`]):
    /// the response goes out only once its audit entry is durable.
    async fn data_op<T: Serialize + Send + 'static>(
        self,
        f: impl FnOnce(&Service, &Caller, u64) -> Result<(T, AuditDraft), OpError> + Send + 'static,
    ) -> Result<JsonOut<T>, ApiError> {
        let token = self.token?;
        Ok(JsonOut(self.app.call_data(self.conn, token, f).await?))
    }
}

fn parse<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body rejected ({})", e.body_text()),
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// [`parse`], or the default when the body is empty.
fn parse_or_default<T: DeserializeOwned + Default>(body: Body) -> Result<T, ApiError> {
    match &body {
        Ok(b) if b.is_empty() => Ok(T::default()),
        _ => parse(body),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))
}

type Id = axum::extract::Path<String>;
type Body = Result<Bytes, BytesRejection>;
type Described = Result<JsonOut<api::KeyDescription>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    owner: Option<String>,
}

async fn describe(
    ctx: Ctx,
    Path(id): Id,
    q: Result<Query<OwnerQuery>, QueryRejection>,
) -> Described {
    let q = query(q)?;
    ctx.op(move |a, c, now| a.describe(c, &id, q.owner.as_deref(), now))
        .await
}

async fn rotate(ctx: Ctx, Path(id): Id) -> Described {
    ctx.op(move |a, c, now| a.rotate(c, &id, now)).await
}

async fn enable(ctx: Ctx, Path(id): Id) -> Described {
    ctx.op(move |a, c, now| a.set_enabled(c, &id, true, now))
        .await
}

async fn disable(ctx: Ctx, Path(id): Id) -> Described {
    ctx.op(move |a, c, now| a.set_enabled(c, &id, false, now))
        .await
}

async fn cancel_deletion(ctx: Ctx, Path(id): Id) -> Described {
    ctx.op(move |a, c, now| a.cancel_deletion(c, &id, now))
        .await
}

async fn schedule_deletion(ctx: Ctx, Path(id): Id, body: Body) -> Described {
    let req: api::ScheduleDeletionRequest = parse_or_default(body)?;
    ctx.op(move |a, c, now| a.schedule_deletion(c, &id, req.wait.as_deref(), now))
        .await
}

async fn min_decryption_version(ctx: Ctx, Path(id): Id, body: Body) -> Described {
    let req: api::MinDecryptionVersionRequest = parse(body)?;
    ctx.op(move |a, c, now| a.set_min_decryption_version(c, &id, req.version, now))
        .await
}

async fn get_policy(ctx: Ctx, Path(id): Id) -> Result<JsonOut<serde_json::Value>, ApiError> {
    ctx.op(move |a, c, now| {
        let text = a.get_policy(c, &id, now)?;
        serde_json::from_str(&text).map_err(|e| OpError::Internal(e.to_string()))
    })
    .await
}

async fn set_policy(ctx: Ctx, Path(id): Id, body: Body) -> Described {
    let body = body.map_err(|e| ApiError::new(ErrorCode::TooLarge, e.body_text()))?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "policy is not UTF-8"))?;
    ctx.op(move |a, c, now| a.set_policy(c, &id, text, now))
        .await
}

async fn export(
    ctx: Ctx,
    Path(id): Id,
    body: Body,
) -> Result<JsonOut<api::ExportResponse>, ApiError> {
    let req = parse(body)?;
    ctx.op(move |a, c, now| a.export(c, &id, req, now)).await
}

async fn fetch(
    ctx: Ctx,
    Path(id): Id,
    body: Body,
) -> Result<JsonOut<api::FetchResponse>, ApiError> {
    let req: api::FetchRequest = parse_or_default(body)?;
    ctx.data_op(move |a, c, now| a.fetch(c, &id, req, now))
        .await
}

async fn age_recipient(
    ctx: Ctx,
    Path(id): Id,
    q: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<JsonOut<api::AgeRecipient>, ApiError> {
    let q = query(q)?;
    ctx.op(move |a, c, now| a.age_recipient(c, &id, q.owner.as_deref(), now))
        .await
}

async fn age_unwrap(ctx: Ctx, body: Body) -> Result<JsonOut<api::AgeUnwrapResponse>, ApiError> {
    let req = parse(body)?;
    ctx.data_op(move |a, c, now| a.age_unwrap(c, req, now))
        .await
}

async fn encrypt(ctx: Ctx, body: Body) -> Result<JsonOut<api::CiphertextResponse>, ApiError> {
    let req = parse(body)?;
    ctx.data_op(move |a, c, now| a.encrypt(c, req, now)).await
}

async fn decrypt(ctx: Ctx, body: Body) -> Result<JsonOut<api::SecretResponse>, ApiError> {
    let req = parse(body)?;
    ctx.data_op(move |a, c, now| a.decrypt(c, req, now)).await
}

async fn generate_data_key(ctx: Ctx, body: Body) -> Result<JsonOut<api::SecretResponse>, ApiError> {
    let req = parse(body)?;
    ctx.data_op(move |a, c, now| a.generate_data_key(c, req, now))
        .await
}

async fn re_encrypt(ctx: Ctx, body: Body) -> Result<JsonOut<api::CiphertextResponse>, ApiError> {
    let req = parse(body)?;
    ctx.data_op(move |a, c, now| a.re_encrypt(c, req, now))
        .await
}

async fn create_access_key(ctx: Ctx, body: Body) -> Result<Response, ApiError> {
    let req = parse(body)?;
    let created = ctx
        .op(move |a, c, now| a.create_access_key(c, req, now))
        .await?;
    Ok((StatusCode::CREATED, created).into_response())
}

async fn list_access_keys(ctx: Ctx) -> Result<JsonOut<api::AccessKeyList>, ApiError> {
    ctx.op(move |a, c, _| a.list_access_keys(c)).await
}

async fn revoke_access_key(
    ctx: Ctx,
    Path(id): Id,
) -> Result<JsonOut<api::AccessKeyInfo>, ApiError> {
    ctx.op(move |a, c, now| a.revoke_access_key(c, &id, now))
        .await
}

async fn attest_workload(ctx: Ctx, body: Body) -> Result<JsonOut<serde_json::Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(ErrorCode::TooLarge, e.body_text()))?;
    let doc = AttestationDocument::from_json(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let on = ctx.conn.clone();
    // The token plays no part: a workload attests with its connection's certificate.
    let digest = ctx
        .app
        .call(ctx.conn, None, move |service, _, now| {
            service.attest_workload(&on, doc, now)
        })
        .await?;
    Ok(JsonOut(serde_json::json!({ "claims_digest": digest })))
}

async fn cluster_join(ctx: Ctx) -> Result<JsonOut<api::JoinResponse>, ApiError> {
    ctx.op(move |a, c, now| a.cluster_join(c, now)).await
}

/// A member's question (spec/freshness-v1.md, "Members"): answered from memory, with
/// the alarm up too, and never audited (members ask often; the answer is MAC'd).
async fn cluster_epoch(
    State(app): State<Arc<Service>>,
    body: Body,
) -> Result<JsonOut<api::PeerEpoch>, ApiError> {
    let req: api::PeerEpochRequest = parse(body)?;
    if req.from_memory {
        return Ok(JsonOut(app.peer_epoch(&req)));
    }
    // The store's epoch is read first: a member that asks after a commit makes this
    // node take it (on a shared store it is there to read), so the answer says whether
    // this node holds it.
    let answer = tokio::task::spawn_blocking(move || {
        if app.shared_store() {
            let _ = app.watch_store();
        }
        app.peer_epoch(&req)
    })
    .await
    .map_err(|e| ApiError::from(OpError::Internal(format!("epoch task: {e}"))))?;
    Ok(JsonOut(answer))
}

/// Every member's epoch, for an owner (also while this node refuses its store: that is
/// when an operator needs it).
async fn cluster_status(
    State(app): State<Arc<Service>>,
    Owner(_): Owner,
) -> Result<JsonOut<api::ClusterStatus>, ApiError> {
    Ok(JsonOut(app.cluster_status().await?))
}

/// The cluster admin accepts an epoch for a node that waits to recover (it serves
/// nothing else meanwhile, so this bypasses the usual gate).
async fn cluster_resume(
    State(app): State<Arc<Service>>,
    Owner(owner): Owner,
    body: Body,
) -> Result<JsonOut<api::MemberStatus>, ApiError> {
    let req: api::ClusterResume = parse(body)?;
    let accepted = teekms_core::freshness::Epoch {
        number: req.epoch,
        hash: req.hash.0,
    };
    Ok(JsonOut(
        app.cluster_resume(&owner, accepted, crate::now_unix())
            .await?,
    ))
}

async fn cluster_member_remove(
    ctx: Ctx,
    Path(node_id): Path<String>,
) -> Result<JsonOut<serde_json::Value>, ApiError> {
    ctx.op(move |a, c, now| {
        a.cluster_member_remove(c, &node_id, now)
            .map(|()| serde_json::json!({}))
    })
    .await
}

async fn cluster_policy_get(ctx: Ctx) -> Result<JsonOut<api::ClusterPolicy>, ApiError> {
    ctx.op(move |a, c, now| a.cluster_policy_get(c, now)).await
}

async fn cluster_policy_set(ctx: Ctx, body: Body) -> Result<JsonOut<api::ClusterPolicy>, ApiError> {
    let req: api::ClusterPolicy = parse(body)?;
    ctx.op(move |a, c, now| a.cluster_policy_set(c, req.policy, now))
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    n: Option<usize>,
}

async fn audit_tail(
    ctx: Ctx,
    q: Result<Query<TailQuery>, QueryRejection>,
) -> Result<JsonOut<api::AuditTail>, ApiError> {
    let n = query(q)?.n.unwrap_or(20).min(10_000);
    ctx.op(move |a, c, _| a.audit_tail(c, n)).await
}

async fn audit_verify(ctx: Ctx) -> Result<JsonOut<api::AuditVerification>, ApiError> {
    ctx.op(move |a, c, _| a.audit_verify(c)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// Audit exports that may run at once on a node.
const MAX_EXPORTS: usize = 4;
static EXPORTS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_EXPORTS)));

/// `GET /v1/audit/export`: JSON lines (spec/audit-export-v1.md), made by a thread as the
/// log is read and sent as they come; a failure after the first bytes ends the response
/// early (no checkpoint: the client knows it is incomplete).
async fn audit_export(
    ctx: Ctx,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let token = ctx.token?;
    // Each export has a thread and a reader of its own while it runs: a few at once.
    let permit = EXPORTS.clone().try_acquire_owned().map_err(|_| {
        ApiError::from(OpError::Busy(format!(
            "{MAX_EXPORTS} exports are running on this node; retry when one ends"
        )))
    })?;
    let (app, conn) = (ctx.app, ctx.conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<crate::stream::Chunk>(4);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<(), OpError>>();
    std::thread::Builder::new()
        .name("teekms-export".into())
        .spawn(move || {
            let _permit = permit;
            let now = crate::now_unix();
            let mut started = Some(started_tx);
            let result = app.caller(&conn, token.as_deref(), now).and_then(|caller| {
                app.audit_export(&caller, q.from, q.to, now, |chunk| {
                    if let Some(s) = started.take() {
                        let _ = s.send(Ok(()));
                    }
                    tx.blocking_send(Ok(Bytes::from(chunk))).is_ok()
                })
            });
            if let Err(e) = result {
                match started.take() {
                    Some(s) => {
                        let _ = s.send(Err(e));
                    }
                    None => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    }
                }
            }
        })
        .map_err(|e| ApiError::internal("export thread", &e))?;
    match started_rx.await {
        Ok(Ok(())) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
            axum::body::Body::new(crate::stream::ChannelBody(rx)),
        )
            .into_response()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(OpError::Internal("the export ended early".into()).into()),
    }
}

async fn audit_prune(ctx: Ctx, body: Body) -> Result<JsonOut<api::AuditPruned>, ApiError> {
    let req: api::AuditPruneRequest = parse(body)?;
    ctx.op(move |a, c, now| a.audit_prune(c, req.before, req.force, now))
        .await
}

/// Alive: answered by any node that runs (no credentials, no audit).
async fn health() -> JsonOut<Health> {
    JsonOut(Health::alive())
}

/// Ready to serve: 200, or 503 naming the check that failed (no credentials, no audit).
async fn ready(State(app): State<Arc<Service>>) -> Result<Response, ApiError> {
    let health = tokio::task::spawn_blocking(move || app.readiness(crate::now_unix()))
        .await
        .map_err(|e| ApiError::internal("readiness task", &e))?;
    let status = if health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, JsonOut(health)).into_response())
}

/// An authenticated request that does nothing: the baseline of the envelope benchmark.
async fn ping(Owner(_): Owner) -> Json<serde_json::Value> {
    Json(serde_json::json!({}))
}
