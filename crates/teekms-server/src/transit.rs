//! The Vault (and OpenBao) Transit API (spec/vault-transit-v1.md) under
//! `/v1/<mount>/` (`serve --transit-mount`, default `transit`), with Vault's health and
//! token lookup: a thin translator over [`Service`], as `aws/` is. The caller is an
//! access key (its token as `X-Vault-Token` or `Authorization: Bearer`); answers are in
//! Vault's envelope, errors `{"errors": [...]}` with Vault's statuses.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, body::Bytes};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64STD;
use serde::Deserialize;
use serde_json::{Value, json};
use teekms_core::access::Caller;
use teekms_core::api::{B64, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, SecretB64};
use teekms_core::audit::AuditDraft;
use teekms_core::context::EncryptionContext;
use teekms_core::envelope::Envelope;

use crate::ops::{ConnState, OpError, Service};

/// The mount unless `serve --transit-mount` names another.
pub const DEFAULT_MOUNT: &str = "transit";

/// The routes of the Transit API under `mount`, and Vault's `sys/health` and
/// `auth/token/lookup-self`.
pub fn routes(mount: &str) -> Router<Arc<Service>> {
    let m = format!("/v1/{mount}");
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route(&format!("{m}/datakey/{{kind}}/{{key}}"), post(datakey))
        .route(&format!("{m}/random"), post(random))
        .route(&format!("{m}/random/{{bytes}}"), post(random_n))
        // `LIST` is not a method axum routes by name: every method reaches the handler.
        .route(&format!("{m}/keys"), axum::routing::any(list_keys))
        .route(
            &format!("{m}/keys/{{key}}"),
            get(read_key)
                .post(unsupported_operation)
                .delete(unsupported_operation),
        )
        .route(&format!("{m}/keys/{{key}}/rotate"), post(rotate))
        .route(&format!("{m}/{{verb}}/{{key}}"), post(item_operation))
        .route(
            &format!("{m}/{{op}}/{{key}}/{{more}}"),
            post(unsupported_path),
        )
        .route_layer(axum::middleware::from_fn(crate::api::request_deadline))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// Largest request body: a batch of about 2,000 items of 1 KiB (Vault allows 32 MiB;
/// the node holds a body in memory while it works on it).
pub const MAX_BODY: usize = 4 << 20;

// ---- Vault's envelope and errors ------------------------------------------------------

/// A Vault error: status and messages.
pub struct VaultError(StatusCode, String);

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "errors": [self.1] }))).into_response()
    }
}

fn denied() -> VaultError {
    VaultError(StatusCode::FORBIDDEN, "permission denied".into())
}

impl From<OpError> for VaultError {
    fn from(e: OpError) -> VaultError {
        let status = match &e {
            OpError::Unauthenticated(_) | OpError::BadRequestSignature(_) => return denied(),
            OpError::Forbidden(_) => StatusCode::FORBIDDEN,
            OpError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            OpError::Unavailable
            | OpError::Store(_)
            | OpError::Busy(_)
            | OpError::StoreRolledBack(_)
            | OpError::FreshnessUnconfirmed(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Damaged(_) | OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Vault answers 400 for a missing key on these paths, and for a disabled
            // one, a bad ciphertext, a wrong context.
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match &e {
            OpError::Store(_) | OpError::Internal(_) => {
                tracing::error!(error = %e, "Transit API request failed");
                "internal error; see the node's log".to_string()
            }
            _ => e.to_string(),
        };
        VaultError(status, message)
    }
}

/// Vault's response envelope.
#[derive(serde::Serialize)]
struct VaultResponse<'a, T> {
    request_id: &'a str,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: T,
    wrap_info: Option<()>,
    warnings: Option<()>,
    auth: Option<()>,
    mount_type: &'static str,
}

/// Vault's response envelope around `data`.
fn answer<T: serde::Serialize>(data: T) -> Response {
    let id = crate::aws::request_id();
    crate::http::JsonOut(VaultResponse {
        request_id: id.to_str().expect("ASCII"),
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data,
        wrap_info: None,
        warnings: None,
        auth: None,
        mount_type: "transit",
    })
    .into_response()
}

/// One item's answer (or, in a batch, its error).
#[derive(serde::Serialize, Default)]
struct ItemOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The request's token: `X-Vault-Token`, or `Authorization: Bearer`. None: permission
/// denied, as Vault answers.
fn token(headers: &HeaderMap) -> Result<String, VaultError> {
    if let Some(t) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        return Ok(t.trim().to_owned());
    }
    crate::http::token(headers)
        .ok()
        .flatten()
        .ok_or_else(denied)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, VaultError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        VaultError(
            StatusCode::BAD_REQUEST,
            format!("the request does not parse: {e}"),
        )
    })
}

fn bad(msg: impl Into<String>) -> OpError {
    OpError::BadRequest(msg.into())
}

// ---- contexts and ciphertexts ---------------------------------------------------------

/// The envelope context of Vault's `context` and `associated_data` (base64 as sent):
/// bound, unlike Vault's for keys that are not derived (spec/vault-transit-v1.md).
fn context_of(
    context: &Option<String>,
    associated_data: &Option<String>,
) -> Option<EncryptionContext> {
    let mut map = EncryptionContext::new();
    if let Some(c) = context.as_ref().filter(|c| !c.is_empty()) {
        map.insert("context".into(), c.clone());
    }
    if let Some(a) = associated_data.as_ref().filter(|a| !a.is_empty()) {
        map.insert("associated_data".into(), a.clone());
    }
    (!map.is_empty()).then_some(map)
}

/// `vault:v<N>:<base64 of the envelope>`.
fn vault_ciphertext(version: u64, envelope: &[u8]) -> String {
    teekms_core::envelope::to_vault_form(version, envelope)
}

/// The envelope inside `vault:v<N>:…`, whose header must name `key` and version N.
fn envelope_of(text: &str, key: &str) -> Result<Vec<u8>, OpError> {
    let (version, bytes) = teekms_core::envelope::from_vault_form(text)
        .ok_or_else(|| bad("invalid ciphertext: not vault:v<N>:<base64> of a teekms envelope"))?;
    let env = Envelope::parse(&bytes).map_err(|e| bad(format!("invalid ciphertext: {e}")))?;
    if env.header.key_version != version {
        return Err(bad(format!(
            "invalid ciphertext: its prefix says version {version}, the envelope {}",
            env.header.key_version
        )));
    }
    if env.header.key_id.as_str() != key {
        return Err(bad(format!(
            "invalid ciphertext: it was made with key {:?}, not {key:?}",
            env.header.key_id.as_str()
        )));
    }
    Ok(bytes)
}

fn no_convergence(convergent: Option<bool>, nonce: &Option<String>) -> Result<(), OpError> {
    // Vault's answer for convergent encryption on a key that is not derived: 400.
    if convergent == Some(true) || nonce.is_some() {
        return Err(bad(
            "convergent encryption requires derivation to be enabled; teekms keys are not derived (nonces are not taken)",
        ));
    }
    Ok(())
}

// ---- encrypt, decrypt, rewrap ---------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    key_version: Option<u64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

/// A request of one item (its fields at the top level) or a batch (`batch_input`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batchable {
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    key_version: Option<u64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    batch_input: Option<Vec<Item>>,
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    convergent_encryption: Option<bool>,
    #[serde(default)]
    partial_failure_response_code: Option<u16>,
}

impl Batchable {
    /// The items, and whether the request was a batch.
    fn items(self) -> (Vec<Item>, bool) {
        match self.batch_input {
            Some(items) => (items, true),
            None => (
                vec![Item {
                    plaintext: self.plaintext,
                    ciphertext: self.ciphertext,
                    context: self.context,
                    associated_data: self.associated_data,
                    key_version: self.key_version,
                    nonce: self.nonce,
                    reference: None,
                }],
                false,
            ),
        }
    }
}

type Op = fn(&Service, &Caller, &str, Item, u64) -> Result<(ItemOut, AuditDraft), OpError>;

/// Runs `op` on each item; a single item answers its result or error, a batch answers
/// `batch_results` (an item that failed holds its `error`), 400 if any failed unless
/// `partial_failure_response_code` says otherwise.
async fn batch(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    headers: &HeaderMap,
    key: String,
    body: &[u8],
    op: Op,
) -> Result<Response, VaultError> {
    let token = token(headers)?;
    let req: Batchable = parse(body)?;
    if let Some(t) = req.key_type.as_deref().filter(|t| *t != "aes256-gcm96") {
        return Err(VaultError(
            StatusCode::BAD_REQUEST,
            format!("key type {t:?} is not supported: teekms keys are aes256-gcm96"),
        ));
    }
    no_convergence(req.convergent_encryption, &None).map_err(VaultError::from)?;
    let partial = req.partial_failure_response_code;
    let (items, is_batch) = req.items();
    if items.is_empty() {
        return Err(VaultError(
            StatusCode::BAD_REQUEST,
            "missing batch input to process".into(),
        ));
    }
    if items.len() > 10_000 {
        return Err(VaultError(
            StatusCode::BAD_REQUEST,
            "at most 10000 batch items".into(),
        ));
    }
    let mut results = app
        .call_batch(conn, Some(token), items, move |s, c, item, now| {
            op(s, c, &key, item, now)
        })
        .await?;
    if !is_batch {
        return Ok(answer(results.pop().expect("one item")?));
    }
    let failed = results.iter().any(Result::is_err);
    let out: Vec<ItemOut> = results
        .into_iter()
        .map(|r| match r {
            Ok(v) => v,
            Err(e) => ItemOut {
                error: Some(VaultError::from(e).1),
                ..ItemOut::default()
            },
        })
        .collect();
    let mut response = answer(json!({ "batch_results": out }));
    if failed {
        *response.status_mut() = partial
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    }
    Ok(response)
}

/// The envelope an item's `ciphertext` carries for `key` (`verb`: the operation, for
/// the message when it is missing).
fn item_envelope(item: &Item, key: &str, verb: &str) -> Result<Vec<u8>, OpError> {
    no_convergence(None, &item.nonce)?;
    let text = item
        .ciphertext
        .as_deref()
        .ok_or_else(|| bad(format!("missing ciphertext to {verb}")))?;
    envelope_of(text, key)
}

/// The answer to an item that made an envelope (encrypt, rewrap).
fn ciphertext_out(
    resp: &teekms_core::api::CiphertextResponse,
    reference: Option<String>,
) -> ItemOut {
    ItemOut {
        ciphertext: Some(vault_ciphertext(resp.key_version, &resp.ciphertext.0)),
        key_version: Some(resp.key_version),
        reference,
        ..ItemOut::default()
    }
}

fn encrypt_item(
    s: &Service,
    c: &Caller,
    key: &str,
    item: Item,
    now: u64,
) -> Result<(ItemOut, AuditDraft), OpError> {
    no_convergence(None, &item.nonce)?;
    let plaintext = item
        .plaintext
        .ok_or_else(|| bad("missing plaintext to encrypt"))?;
    let plaintext = B64STD
        .decode(plaintext.as_bytes())
        .map_err(|_| bad("plaintext is not base64"))?;
    let (resp, audit) = s.encrypt(
        c,
        EncryptRequest {
            key_id: key.to_owned(),
            owner: None,
            plaintext: SecretB64(zeroize::Zeroizing::new(plaintext)),
            aad: None,
            context: context_of(&item.context, &item.associated_data),
        },
        now,
    )?;
    if let Some(v) = item
        .key_version
        .filter(|v| *v != 0 && *v != resp.key_version)
    {
        return Err(bad(format!(
            "key_version {v}: this node encrypts with the latest version ({})",
            resp.key_version
        )));
    }
    Ok((ciphertext_out(&resp, item.reference), audit))
}

fn decrypt_item(
    s: &Service,
    c: &Caller,
    key: &str,
    item: Item,
    now: u64,
) -> Result<(ItemOut, AuditDraft), OpError> {
    let envelope = item_envelope(&item, key, "decrypt")?;
    let (resp, audit) = s.decrypt(
        c,
        DecryptRequest {
            ciphertext: B64(envelope),
            aad: None,
            context: context_of(&item.context, &item.associated_data),
        },
        now,
    )?;
    let plaintext = resp
        .plaintext
        .ok_or_else(|| bad("this caller's answers are sealed; use the native API"))?;
    let out = ItemOut {
        plaintext: Some(B64STD.encode(&plaintext.0[..])),
        reference: item.reference,
        ..ItemOut::default()
    };
    Ok((out, audit))
}

fn rewrap_item(
    s: &Service,
    c: &Caller,
    key: &str,
    item: Item,
    now: u64,
) -> Result<(ItemOut, AuditDraft), OpError> {
    let envelope = item_envelope(&item, key, "rewrap")?;
    let context = context_of(&item.context, &item.associated_data);
    let (resp, audit) = s.re_encrypt(
        c,
        teekms_core::api::ReEncryptRequest {
            ciphertext: B64(envelope),
            aad: None,
            context: context.clone(),
            destination_key_id: Some(key.to_owned()),
            destination_owner: None,
            destination_aad: None,
            destination_context: Some(context.unwrap_or_default()),
        },
        now,
    )?;
    Ok((ciphertext_out(&resp, item.reference), audit))
}

/// `POST …/<verb>/<key>`: encrypt, decrypt or rewrap (one item or a batch); any other
/// verb (sign, verify, hmac, hash, export, …) is a path this API does not offer.
async fn item_operation(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path((verb, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VaultError> {
    let op: Op = match verb.as_str() {
        "encrypt" => encrypt_item,
        "decrypt" => decrypt_item,
        "rewrap" => rewrap_item,
        _ => return Err(unsupported_path().await),
    };
    batch(app, conn, &headers, key, &body, op).await
}

// ---- data keys and random bytes -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataKeyIn {
    #[serde(default)]
    bits: Option<u32>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    key_version: Option<u64>,
}

async fn datakey(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path((kind, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VaultError> {
    let token = token(&headers)?;
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        other => {
            return Err(VaultError(
                StatusCode::BAD_REQUEST,
                format!("invalid type {other:?}: plaintext or wrapped"),
            ));
        }
    };
    let req: DataKeyIn = parse(&body)?;
    let bits = req.bits.unwrap_or(256);
    if ![128, 256, 512].contains(&bits) {
        return Err(VaultError(
            StatusCode::BAD_REQUEST,
            "invalid bits: 128, 256 or 512".into(),
        ));
    }
    no_convergence(None, &req.nonce).map_err(VaultError::from)?;
    let _ = req.key_version;
    let context = context_of(&req.context, &req.associated_data);
    let resp = app
        .call_data(conn, Some(token), move |s, c, now| {
            s.generate_data_key(
                c,
                GenerateDataKeyRequest {
                    key_id: key,
                    owner: None,
                    aad: None,
                    context,
                    number_of_bytes: Some(bits / 8),
                },
                now,
            )
        })
        .await?;
    let ciphertext = resp.ciphertext.expect("data keys are wrapped");
    let mut data = json!({
        "ciphertext": vault_ciphertext(resp.key_version, &ciphertext.0),
        "key_version": resp.key_version,
    });
    if with_plaintext {
        let plaintext = resp.plaintext.ok_or_else(|| {
            VaultError(
                StatusCode::BAD_REQUEST,
                "this caller's answers are sealed".into(),
            )
        })?;
        data["plaintext"] = Value::String(B64STD.encode(&plaintext.0[..]));
    }
    Ok(answer(data))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RandomIn {
    #[serde(default)]
    bytes: Option<u32>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

async fn random_bytes(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    headers: &HeaderMap,
    n: Option<u32>,
    body: &[u8],
) -> Result<Response, VaultError> {
    let token = token(headers)?;
    let req: RandomIn = parse(body)?;
    let n = n.or(req.bytes).unwrap_or(32);
    if req
        .source
        .as_deref()
        .is_some_and(|s| s != "platform" && s != "all")
    {
        return Err(VaultError(StatusCode::BAD_REQUEST, "invalid source".into()));
    }
    let hex_format = match req.format.as_deref() {
        None | Some("base64") => false,
        Some("hex") => true,
        Some(f) => {
            return Err(VaultError(
                StatusCode::BAD_REQUEST,
                format!("unsupported encoding format {f:?}"),
            ));
        }
    };
    let (plaintext, _) = app
        .call_data(conn, Some(token), move |s, c, now| {
            // Sealed answers need a workload; a Transit caller is an access key.
            let c = Caller {
                workload: None,
                ..c.clone()
            };
            s.generate_random(&c, n, now)
        })
        .await?;
    let bytes = plaintext.expect("plaintext to an access key");
    let text = if hex_format {
        hex::encode(&bytes.0[..])
    } else {
        B64STD.encode(&bytes.0[..])
    };
    Ok(answer(json!({ "random_bytes": text })))
}

async fn random(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VaultError> {
    random_bytes(app, conn, &headers, None, &body).await
}

async fn random_n(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(bytes): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, VaultError> {
    let n = bytes.parse::<u32>().map_err(|_| {
        VaultError(
            StatusCode::BAD_REQUEST,
            format!("invalid number of bytes {bytes:?}"),
        )
    })?;
    random_bytes(app, conn, &headers, Some(n), &body).await
}

// ---- keys -----------------------------------------------------------------------------

async fn read_key(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, VaultError> {
    let token = token(&headers)?;
    let k = key.clone();
    let d = app
        .call(conn, Some(token), move |s, c, now| {
            s.describe(c, &k, None, now)
        })
        .await
        .map_err(|e| match e {
            OpError::NotFound(_) | OpError::Deleted(_) => {
                VaultError(StatusCode::NOT_FOUND, String::new())
            }
            e => e.into(),
        })?;
    let keys: serde_json::Map<String, Value> = d
        .versions
        .iter()
        .map(|v| (v.key_version.to_string(), json!(v.created_at)))
        .collect();
    Ok(answer(json!({
        "name": d.key_id,
        "type": "aes256-gcm96",
        "latest_version": d.current_version,
        "min_decryption_version": d.min_decryption_version,
        "min_encryption_version": 0,
        "min_available_version": 0,
        "keys": keys,
        "deletion_allowed": false,
        "exportable": d.exportable,
        "allow_plaintext_backup": false,
        "derived": false,
        "convergent_encryption": false,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": false,
        "supports_signing": false,
        "imported_key": true,
        "auto_rotate_period": 0,
    })))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    list: Option<String>,
}

async fn list_keys(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    method: Method,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, VaultError> {
    let listing =
        method.as_str() == "LIST" || (method == Method::GET && q.list.as_deref() == Some("true"));
    if !listing {
        return Err(VaultError(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation".into(),
        ));
    }
    let token = token(&headers)?;
    let ids = app
        .call(conn, Some(token), |s, c, now| s.keys_in_scope(c, now))
        .await?;
    if ids.is_empty() {
        // Vault answers an empty list with 404.
        return Err(VaultError(StatusCode::NOT_FOUND, String::new()));
    }
    Ok(answer(json!({ "keys": ids })))
}

async fn rotate(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, VaultError> {
    // An owner's TLS certificate rotates; a token is refused (rotation is the owner's).
    let token = token(&headers).ok();
    app.call(conn, token, move |s, c, now| {
        if c.owner.is_some() {
            return s.rotate(c, &key, now).map(|_| ());
        }
        if c.access_key.is_none() {
            return Err(OpError::Unauthenticated("no credentials".into()));
        }
        Err(s.refuse_request(
            c,
            "transit:rotate",
            OpError::Unauthenticated(format!("rotating {key:?} is for the key's owner")),
            now,
        ))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unsupported_operation() -> VaultError {
    VaultError(
        StatusCode::METHOD_NOT_ALLOWED,
        "unsupported operation: teekms keys are deployed by their owner (teekms key deploy), not created or deleted here".into(),
    )
}

async fn unsupported_path() -> VaultError {
    VaultError(
        StatusCode::NOT_FOUND,
        "unsupported path: teekms's Transit API does not offer it (spec/vault-transit-v1.md)"
            .into(),
    )
}

// ---- Vault's own endpoints -------------------------------------------------------------

async fn health() -> Response {
    axum::Json(json!({
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": crate::now_unix(),
        "version": concat!("teekms-", env!("CARGO_PKG_VERSION")),
        "cluster_name": "teekms",
    }))
    .into_response()
}

async fn lookup_self(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    headers: HeaderMap,
) -> Result<Response, VaultError> {
    let token = token(&headers)?;
    let grant = app
        .call(conn, Some(token), |_, c, _| {
            c.access_key
                .clone()
                .ok_or_else(|| OpError::Unauthenticated("no access key".into()))
        })
        .await?;
    let mut policies: Vec<String> = grant
        .operations
        .iter()
        .map(|o| o.as_str().to_owned())
        .collect();
    policies.sort();
    Ok(answer(json!({
        "id": grant.id,
        "accessor": grant.id,
        "policies": policies,
        "keys": grant.keys,
        "expire_time": grant.expires_at.map(teekms_attest::format_rfc3339),
        "renewable": false,
        "ttl": grant.expires_at.map_or(0, |t| t.saturating_sub(crate::now_unix())),
        "type": "service",
        "display_name": format!("teekms-{}", grant.id),
        "meta": { "owner": grant.owner.fingerprint() },
    })))
}
