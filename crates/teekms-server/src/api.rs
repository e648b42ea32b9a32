//! HTTP API v1 (spec/api-v1.md): routes, auth extractors, error mapping.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, body::Bytes};
use serde::Deserialize;
use teekms_attest::AttestationDocument;
use teekms_attest::statement::MAX_NONCE_LEN;
use teekms_core::api::{ErrorBody, KeyList};
use teekms_core::bundle::MAX_BUNDLE_LEN;
use teekms_core::{Bundle, OwnerPublicKey, Receipt};
use teekms_platform::Platform;
use teekms_store::SqliteStore;

use crate::writer::Writer;
use crate::{DeployError, KeyService, now_unix};

/// Shared state of a running node.
pub struct AppState {
    pub service: Arc<KeyService>,
    pub platform: Arc<dyn Platform>,
    pub cached_attestation: AttestationDocument,
    pub reader: Mutex<SqliteStore>,
    pub writer: Writer,
}

/// Who is calling, from the TLS client certificate of the connection.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<OwnerPublicKey>);

/// An authenticated owner (route guard).
pub struct Owner(pub OwnerPublicKey);

impl<S: Send + Sync> FromRequestParts<S> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller(Some(owner))) => Ok(Owner(*owner)),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this request needs an owner's TLS client certificate",
            )),
        }
    }
}

/// The one error type of the API: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// An internal failure: details go to the log under an id, the caller gets the id.
    fn internal(what: &str, detail: &dyn std::fmt::Display) -> ApiError {
        let mut id = [0u8; 8];
        teekms_core::random_bytes(&mut id);
        let id = hex::encode(id);
        tracing::error!(error_id = %id, what, error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error {id}; the node's log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.into(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        use teekms_core::CoreError;
        let msg = e.to_string();
        match e {
            DeployError::Bundle(CoreError::BundleWrongNode { .. }) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_node", msg)
            }
            DeployError::Bundle(CoreError::BundleSignature) => {
                ApiError::new(StatusCode::FORBIDDEN, "bad_signature", msg)
            }
            DeployError::Bundle(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_bundle", msg),
            DeployError::Forbidden { .. } => ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg),
            DeployError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            DeployError::Damaged(_) => ApiError::new(StatusCode::CONFLICT, "record_damaged", msg),
            DeployError::Concurrent => ApiError::new(StatusCode::CONFLICT, "retry", msg),
            DeployError::Store(e) => ApiError::internal("store", &e),
            DeployError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
        }
    }
}

/// The router of API v1.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/v1/keys", get(list_keys).post(deploy))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BUNDLE_LEN))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationQuery {
    nonce: Option<String>,
}

async fn attestation(
    State(app): State<Arc<AppState>>,
    query: Result<Query<AttestationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AttestationDocument>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let Some(nonce_hex) = q.nonce else {
        return Ok(Json(app.cached_attestation.clone()));
    };
    let nonce = hex::decode(&nonce_hex)
        .ok()
        .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE_LEN)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("nonce must be 1 to {MAX_NONCE_LEN} bytes of hex"),
            )
        })?;
    let doc = app
        .service
        .attestation(app.platform.as_ref(), Some(&nonce))
        .map_err(|e| ApiError::internal("evidence", &e))?;
    Ok(Json(doc))
}

async fn deploy(
    State(app): State<Arc<AppState>>,
    axum::Extension(Caller(caller)): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "request body rejected ({}); bundles are at most {MAX_BUNDLE_LEN} bytes",
                e.body_text()
            ),
        )
    })?;
    let bundle = Bundle::from_json(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_bundle", e.to_string()))?;
    let deployed = tokio::task::spawn_blocking(move || {
        let app2 = app.clone();
        app.service.deploy(
            &bundle,
            caller.as_ref(),
            now_unix(),
            |owner, key_id| {
                app2.reader
                    .lock()
                    .expect("reader lock")
                    .get_key(owner, key_id)
            },
            |row| app2.writer.insert(row),
        )
    })
    .await
    .map_err(|e| ApiError::internal("deploy task", &e))??;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json::<Receipt>(deployed.receipt)).into_response())
}

async fn list_keys(
    State(app): State<Arc<AppState>>,
    Owner(owner): Owner,
) -> Result<Json<KeyList>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let rows = app
            .reader
            .lock()
            .expect("reader lock")
            .list_keys(&owner.fingerprint());
        rows.map(|rows| Json(app.service.list(&owner, rows)))
    })
    .await
    .map_err(|e| ApiError::internal("list task", &e))?
    .map_err(|e| ApiError::internal("store", &e))
}
