//! HTTP API v1 (spec/api-v1.md): routes, auth extractors, error mapping.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
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
use teekms_core::api::KeyList;
use teekms_core::audit::AuditDraft;
use teekms_core::bundle::MAX_BUNDLE_LEN;
use teekms_core::{Bundle, OwnerPublicKey, Receipt};

use crate::http::{ApiError, JsonOut, token};
use crate::ops::{ConnState, Deployer, ErrorCode, OpError, Service};

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
        .route("/v1/attestation", get(attestation))
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
        .route(
            "/v1/cluster/policy",
            get(cluster_policy_get).put(cluster_policy_set),
        )
        .route("/v1/audit", get(audit_tail))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/ping", get(ping))
        .route_layer(axum::middleware::from_fn(request_deadline))
        .merge(crate::stream::routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(state)
}

/// How long a request that is not a stream may take, its body included. A connection
/// with a request in progress is never closed to make room for others, so a client that
/// sends its headers and then stalls its body must not keep it so for good. (Streams
/// have their own idle timeout.)
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

async fn request_deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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
    query: Result<Query<AttestationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<JsonOut<AttestationDocument>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
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

async fn deploy(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    body: Body,
) -> Result<Response, ApiError> {
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
    let deployed = app
        .call(conn, None, move |service, caller, now| {
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

async fn list_keys(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    Owner(owner): Owner,
) -> Result<JsonOut<KeyList>, ApiError> {
    let list = app
        .call(conn, None, move |service, _, _| service.list_keys(&owner))
        .await?;
    Ok(JsonOut(list))
}

// ---- using the keys (ops.rs) ---------------------------------------------------------

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body rejected ({})", e.body_text()),
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Runs an operation with the request's caller (see [`Service::call`]).
async fn op<T: Serialize + Send + 'static>(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    headers: &axum::http::HeaderMap,
    f: impl FnOnce(&Service, &Caller, u64) -> Result<T, OpError> + Send + 'static,
) -> Result<JsonOut<T>, ApiError> {
    let token = token(headers)?;
    Ok(JsonOut(app.call(conn, token, f).await?))
}

/// Runs a data operation with the request's caller (see [`Service::call_data`]): the
/// response goes out only once its audit entry is durable.
async fn data_op<T: Serialize + Send + 'static>(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    headers: &axum::http::HeaderMap,
    f: impl FnOnce(&Service, &Caller, u64) -> Result<(T, AuditDraft), OpError> + Send + 'static,
) -> Result<JsonOut<T>, ApiError> {
    let token = token(headers)?;
    Ok(JsonOut(app.call_data(conn, token, f).await?))
}

type Conn = axum::Extension<Arc<ConnState>>;
type Headers = axum::http::HeaderMap;
type Id = axum::extract::Path<String>;
type Body = Result<Bytes, BytesRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    owner: Option<String>,
}

async fn describe(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    q: Result<Query<OwnerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<JsonOut<teekms_core::api::KeyDescription>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    op(app, conn, &headers, move |a, c, now| {
        a.describe(c, &id, q.owner.as_deref(), now)
    })
    .await
}

macro_rules! owner_op {
    ($name:ident, |$a:ident, $c:ident, $id:ident, $now:ident| $body:expr) => {
        async fn $name(
            State(app): State<Arc<Service>>,
            axum::Extension(conn): Conn,
            headers: Headers,
            axum::extract::Path($id): Id,
        ) -> Result<JsonOut<teekms_core::api::KeyDescription>, ApiError> {
            op(app, conn, &headers, move |$a, $c, $now| $body).await
        }
    };
}

owner_op!(rotate, |a, c, id, now| a.rotate(c, &id, now));
owner_op!(enable, |a, c, id, now| a.set_enabled(c, &id, true, now));
owner_op!(disable, |a, c, id, now| a.set_enabled(c, &id, false, now));
owner_op!(cancel_deletion, |a, c, id, now| a
    .cancel_deletion(c, &id, now));

async fn schedule_deletion(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    body: Body,
) -> Result<JsonOut<teekms_core::api::KeyDescription>, ApiError> {
    let req: teekms_core::api::ScheduleDeletionRequest = match &body {
        Ok(b) if b.is_empty() => Default::default(),
        _ => parse(body)?,
    };
    op(app, conn, &headers, move |a, c, now| {
        a.schedule_deletion(c, &id, req.wait.as_deref(), now)
    })
    .await
}

async fn min_decryption_version(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    body: Body,
) -> Result<JsonOut<teekms_core::api::KeyDescription>, ApiError> {
    let req: teekms_core::api::MinDecryptionVersionRequest = parse(body)?;
    op(app, conn, &headers, move |a, c, now| {
        a.set_min_decryption_version(c, &id, req.version, now)
    })
    .await
}

async fn get_policy(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
) -> Result<JsonOut<serde_json::Value>, ApiError> {
    op(app, conn, &headers, move |a, c, now| {
        let text = a.get_policy(c, &id, now)?;
        serde_json::from_str(&text).map_err(|e| OpError::Internal(e.to_string()))
    })
    .await
}

async fn set_policy(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    body: Body,
) -> Result<JsonOut<teekms_core::api::KeyDescription>, ApiError> {
    let body = body.map_err(|e| ApiError::new(ErrorCode::TooLarge, e.body_text()))?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "policy is not UTF-8"))?;
    op(app, conn, &headers, move |a, c, now| {
        a.set_policy(c, &id, text, now)
    })
    .await
}

async fn export(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    body: Body,
) -> Result<JsonOut<teekms_core::api::ExportResponse>, ApiError> {
    let req = parse(body)?;
    op(app, conn, &headers, move |a, c, now| {
        a.export(c, &id, req, now)
    })
    .await
}

async fn fetch(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
    body: Body,
) -> Result<JsonOut<teekms_core::api::FetchResponse>, ApiError> {
    let req: teekms_core::api::FetchRequest = match &body {
        Ok(b) if b.is_empty() => Default::default(),
        _ => parse(body)?,
    };
    data_op(app, conn, &headers, move |a, c, now| {
        a.fetch(c, &id, req, now)
    })
    .await
}

/// A handler taking a JSON body and answering with an operation's result.
macro_rules! body_op {
    ($name:ident, $resp:ty, $run:ident, |$a:ident, $c:ident, $req:ident, $now:ident| $body:expr) => {
        async fn $name(
            State(app): State<Arc<Service>>,
            axum::Extension(conn): Conn,
            headers: Headers,
            body: Body,
        ) -> Result<JsonOut<$resp>, ApiError> {
            let $req = parse(body)?;
            $run(app, conn, &headers, move |$a, $c, $now| $body).await
        }
    };
}

body_op!(
    encrypt,
    teekms_core::api::CiphertextResponse,
    data_op,
    |a, c, req, now| a.encrypt(c, req, now)
);
body_op!(
    decrypt,
    teekms_core::api::SecretResponse,
    data_op,
    |a, c, req, now| a.decrypt(c, req, now)
);
body_op!(
    generate_data_key,
    teekms_core::api::SecretResponse,
    data_op,
    |a, c, req, now| { a.generate_data_key(c, req, now) }
);
body_op!(
    re_encrypt,
    teekms_core::api::CiphertextResponse,
    data_op,
    |a, c, req, now| { a.re_encrypt(c, req, now) }
);

async fn create_access_key(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    body: Body,
) -> Result<Response, ApiError> {
    let req = parse(body)?;
    let created = op(app, conn, &headers, move |a, c, now| {
        a.create_access_key(c, req, now)
    })
    .await?;
    Ok((StatusCode::CREATED, created).into_response())
}

async fn list_access_keys(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
) -> Result<JsonOut<teekms_core::api::AccessKeyList>, ApiError> {
    op(app, conn, &headers, move |a, c, _| a.list_access_keys(c)).await
}

async fn revoke_access_key(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    axum::extract::Path(id): Id,
) -> Result<JsonOut<teekms_core::api::AccessKeyInfo>, ApiError> {
    op(app, conn, &headers, move |a, c, now| {
        a.revoke_access_key(c, &id, now)
    })
    .await
}

async fn attest_workload(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    body: Body,
) -> Result<JsonOut<serde_json::Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(ErrorCode::TooLarge, e.body_text()))?;
    let doc = AttestationDocument::from_json(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let on = conn.clone();
    let digest = app
        .call(conn, None, move |service, _, now| {
            service.attest_workload(&on, doc, now)
        })
        .await?;
    Ok(JsonOut(serde_json::json!({ "claims_digest": digest })))
}

async fn cluster_join(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
) -> Result<JsonOut<teekms_core::api::JoinResponse>, ApiError> {
    op(app, conn, &headers, move |a, c, now| a.cluster_join(c, now)).await
}

async fn cluster_policy_get(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
) -> Result<JsonOut<teekms_core::api::ClusterPolicy>, ApiError> {
    op(app, conn, &headers, move |a, c, now| {
        a.cluster_policy_get(c, now)
    })
    .await
}

async fn cluster_policy_set(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    body: Result<Bytes, BytesRejection>,
) -> Result<JsonOut<teekms_core::api::ClusterPolicy>, ApiError> {
    let req: teekms_core::api::ClusterPolicy = parse(body)?;
    op(app, conn, &headers, move |a, c, now| {
        a.cluster_policy_set(c, req.policy, now)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    n: Option<usize>,
}

async fn audit_tail(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
    q: Result<Query<TailQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<JsonOut<teekms_core::api::AuditTail>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let n = q.n.unwrap_or(20).min(10_000);
    op(app, conn, &headers, move |a, c, _| a.audit_tail(c, n)).await
}

async fn audit_verify(
    State(app): State<Arc<Service>>,
    axum::Extension(conn): Conn,
    headers: Headers,
) -> Result<JsonOut<teekms_core::api::AuditVerification>, ApiError> {
    op(app, conn, &headers, move |a, c, _| a.audit_verify(c)).await
}

/// An authenticated request that does nothing: the baseline of the envelope benchmark.
async fn ping(Owner(_): Owner) -> Json<serde_json::Value> {
    Json(serde_json::json!({}))
}
