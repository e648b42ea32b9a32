//! The AWS KMS API (JSON 1.1; spec/aws-kms-v1.md): `POST /` with
//! `X-Amz-Target: TrentService.<Operation>`, signed with AWS Signature Version 4 by an
//! access key. A thin translator: requests become the native operations of
//! [`Service`], their answers AWS's shapes, and [`OpError`] AWS's error types, here and
//! nowhere else.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use teekms_core::access::Caller;
use teekms_core::api::{
    B64, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, ReEncryptRequest, SealedSecret,
    SecretB64, SecretResponse,
};
use teekms_core::arn;
use teekms_core::context::EncryptionContext;
use teekms_core::envelope::Envelope;
use teekms_core::sigv4::Authorization;
use teekms_core::{OwnerPublicKey, recipient};

use crate::ops::{ConnState, Credentials, OpError, Service, SignedRequest};

/// The one algorithm of symmetric keys.
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// AWS's limit on `Encrypt`'s plaintext.
const MAX_ENCRYPT_PLAINTEXT: usize = 4096;
/// Operations of the AWS KMS API that change keys: the owner's, on its own channel.
const OWNER_ONLY: [&str; 8] = [
    "EnableKey",
    "DisableKey",
    "EnableKeyRotation",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "GetKeyPolicy",
    "PutKeyPolicy",
];

/// An AWS error: its type, status and message (`{"__type", "message"}`).
pub struct AwsError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl AwsError {
    fn new(kind: &'static str, message: impl Into<String>) -> AwsError {
        AwsError {
            status: StatusCode::BAD_REQUEST,
            kind,
            message: message.into(),
        }
    }
}

impl From<OpError> for AwsError {
    fn from(e: OpError) -> AwsError {
        let (status, kind) = match &e {
            OpError::BadRequest(_) | OpError::Bundle(_) => (400, "ValidationException"),
            OpError::Unauthenticated(_) => (400, "UnrecognizedClientException"),
            OpError::BadRequestSignature(_) => (400, "InvalidSignatureException"),
            OpError::Forbidden(_) => (400, "AccessDeniedException"),
            OpError::NotFound(_) | OpError::Deleted(_) => (400, "NotFoundException"),
            OpError::Disabled(_) => (400, "DisabledException"),
            OpError::KeyState(_) | OpError::PendingDeletion(_) => (400, "KMSInvalidStateException"),
            OpError::Exists(_) => (400, "AlreadyExistsException"),
            OpError::Decrypt(_) => (400, "InvalidCiphertextException"),
            OpError::IncorrectKey(_) => (400, "IncorrectKeyException"),
            OpError::Unsupported(_) => (400, "UnsupportedOperationException"),
            OpError::Retry(_) | OpError::Busy(_) => (400, "ThrottlingException"),
            OpError::Unavailable | OpError::Store(_) => (503, "DependencyTimeoutException"),
            OpError::Damaged(_) | OpError::Internal(_) => (500, "KMSInternalException"),
        };
        let message = match &e {
            OpError::Store(_) | OpError::Internal(_) => {
                tracing::error!(error = %e, "AWS KMS API request failed");
                "the node could not complete the request; see its log".to_string()
            }
            _ => e.to_string(),
        };
        AwsError {
            status: StatusCode::from_u16(status).expect("valid status"),
            kind,
            message,
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.kind, "message": self.message });
        (self.status, aws_json(body.to_string())).into_response()
    }
}

/// The body of an answer, with AWS's content type and a request id.
fn aws_json(body: String) -> impl IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            ),
            (
                axum::http::HeaderName::from_static("x-amzn-requestid"),
                request_id(),
            ),
        ],
        body,
    )
}

/// A request id in UUID form, unique on this node: random bits chosen at start, then a
/// counter (no random draw per answer).
pub(crate) fn request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::LazyLock<[u8; 8]> = std::sync::LazyLock::new(|| {
        let mut p = [0u8; 8];
        teekms_core::random_bytes(&mut p);
        p
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let (p, c) = (hex::encode(*PREFIX), hex::encode(n));
    let id = format!(
        "{}-{}-{}-{}-{}",
        &p[..8],
        &p[8..12],
        &p[12..16],
        &c[..4],
        &c[4..]
    );
    HeaderValue::from_str(&id).expect("hex and dashes")
}

fn ok<T: Serialize>(value: T) -> Response {
    aws_json(serde_json::to_string(&value).expect("responses serialize")).into_response()
}

/// Largest request body (AWS's largest request, an `Encrypt` of 4 KiB or a recipient's
/// document, fits with room).
const MAX_BODY: usize = 128 * 1024;

/// `POST /`: one AWS KMS API request. Taken whole: its headers and body are checked as
/// received, not copied.
pub async fn handle(
    State(app): State<Arc<Service>>,
    Extension(conn): Extension<Arc<ConnState>>,
    request: axum::extract::Request,
) -> Response {
    match dispatch(app, conn, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    app: Arc<Service>,
    conn: Arc<ConnState>,
    request: axum::extract::Request,
) -> Result<Response, AwsError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let target = header_str(headers, "x-amz-target")
        .and_then(|t| t.strip_prefix("TrentService."))
        .ok_or_else(|| {
            AwsError::new(
                "UnknownOperationException",
                "this endpoint speaks the AWS KMS API: send X-Amz-Target: TrentService.<Operation>",
            )
        })?
        .to_owned();
    if header_str(headers, "content-type")
        .is_none_or(|t| !t.starts_with("application/x-amz-json-1.1"))
    {
        return Err(AwsError::new(
            "SerializationException",
            "Content-Type must be application/x-amz-json-1.1",
        ));
    }
    let auth = header_str(headers, "authorization").ok_or_else(|| {
        AwsError::new(
            "MissingAuthenticationTokenException",
            "the request is not signed (AWS Signature Version 4 with an access key's credentials)",
        )
    })?;
    let authorization = Authorization::parse(auth)
        .map_err(|e| AwsError::new("IncompleteSignatureException", e.to_string()))?;
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        AwsError::new(
            "ValidationException",
            format!("the request body is over {MAX_BODY} bytes, or was not received"),
        )
    })?;
    let signed = SignedRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: body.clone(),
        authorization,
    };
    let creds = Credentials::Signed(Box::new(signed));
    let region = app.aws_region().to_owned();
    let r = region.clone();
    Ok(match target.as_str() {
        "Encrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| encrypt(s, c, &body, &r, now))
            .await?),
        "Decrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| decrypt(s, c, &body, &r, now))
            .await?),
        "ReEncrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                re_encrypt(s, c, &body, &r, now)
            })
            .await?),
        "GenerateDataKey" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_data_key(s, c, &body, &r, true, now)
            })
            .await?),
        "GenerateDataKeyWithoutPlaintext" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_data_key(s, c, &body, &r, false, now)
            })
            .await?),
        "GenerateRandom" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_random(s, c, &body, now)
            })
            .await?),
        "DescribeKey" => ok(app
            .call(conn, creds, move |s, c, now| {
                describe_key(s, c, &body, &r, now)
            })
            .await?),
        "ListKeys" => ok(app
            .call(conn, creds, move |s, c, now| {
                list_keys(s, c, &body, &r, now)
            })
            .await?),
        "ListAliases" => ok(app
            .call(conn, creds, move |s, c, now| {
                list_aliases(s, c, &body, &r, now)
            })
            .await?),
        other => {
            let op = other.to_owned();
            let refused = app
                .call(conn, creds, move |s, c, now| {
                    Err::<(), _>(refuse_other(s, c, &op, now))
                })
                .await;
            return Err(refused.expect_err("always refused").into());
        }
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Refuses, and records, an operation this API does not carry out: the owner's
/// administration (`AccessDeniedException`), anything else (marked unsupported).
fn refuse_other(s: &Service, c: &Caller, op: &str, now: u64) -> OpError {
    let name = format!("aws:{}", op.chars().take(64).collect::<String>());
    let err = if OWNER_ONLY.contains(&op) {
        OpError::Forbidden(format!(
            "{op} is for the key's owner, on its own channel (teekms key ...); access keys cannot change keys"
        ))
    } else {
        OpError::Unsupported(format!(
            "{op} is not offered by teekms's AWS KMS API (spec/aws-kms-v1.md)"
        ))
    };
    s.refuse_request(c, &name, err, now)
}

// ---- requests and answers, in AWS's shapes --------------------------------------------

/// Parses a request body; a malformed one is refused and recorded.
fn parse<T: DeserializeOwned>(
    s: &Service,
    c: &Caller,
    op: &str,
    body: &[u8],
    now: u64,
) -> Result<T, OpError> {
    serde_json::from_slice(body).map_err(|e| {
        s.refuse_request(
            c,
            op,
            OpError::BadRequest(format!("the request does not parse: {e}")),
            now,
        )
    })
}

fn invalid(s: &Service, c: &Caller, op: &str, why: impl Into<String>, now: u64) -> OpError {
    s.refuse_request(c, op, OpError::BadRequest(why.into()), now)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Recipient {
    key_encryption_algorithm: String,
    attestation_document: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EncryptIn {
    key_id: String,
    plaintext: SecretB64,
    #[serde(default)]
    encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
    #[serde(default)]
    grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptOut {
    ciphertext_blob: B64,
    key_id: String,
    encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DecryptIn {
    ciphertext_blob: B64,
    #[serde(default)]
    encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
    #[serde(default)]
    recipient: Option<Recipient>,
    #[serde(default)]
    grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptOut {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<B64>,
    encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReEncryptIn {
    ciphertext_blob: B64,
    destination_key_id: String,
    #[serde(default)]
    source_encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    source_key_id: Option<String>,
    #[serde(default)]
    destination_encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    source_encryption_algorithm: Option<String>,
    #[serde(default)]
    destination_encryption_algorithm: Option<String>,
    #[serde(default)]
    grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptOut {
    ciphertext_blob: B64,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GenerateDataKeyIn {
    key_id: String,
    #[serde(default)]
    encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    number_of_bytes: Option<u32>,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    recipient: Option<Recipient>,
    #[serde(default)]
    grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyOut {
    ciphertext_blob: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<B64>,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GenerateRandomIn {
    #[serde(default)]
    number_of_bytes: Option<u32>,
    #[serde(default)]
    custom_key_store_id: Option<String>,
    #[serde(default)]
    recipient: Option<Recipient>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<B64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeKeyIn {
    key_id: String,
    #[serde(default)]
    grant_tokens: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyOut {
    key_metadata: KeyMetadata,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    aws_account_id: String,
    key_id: String,
    arn: String,
    creation_date: f64,
    enabled: bool,
    description: &'static str,
    key_usage: &'static str,
    key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_date: Option<f64>,
    origin: &'static str,
    key_manager: &'static str,
    customer_master_key_spec: &'static str,
    key_spec: &'static str,
    encryption_algorithms: [&'static str; 1],
    multi_region: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListIn {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    marker: Option<String>,
    /// ListAliases only.
    #[serde(default)]
    key_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyListEntry {
    key_id: String,
    key_arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysOut {
    keys: Vec<KeyListEntry>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AliasListEntry {
    alias_name: String,
    alias_arn: String,
    target_key_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesOut {
    aliases: Vec<AliasListEntry>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

// ---- the operations -------------------------------------------------------------------

/// Options AWS has and teekms does not: dry runs, and algorithms other than the
/// symmetric default. (Grant tokens only add permissions, which teekms's key policies
/// give instead: they are accepted and ignored.)
fn check_options(
    s: &Service,
    c: &Caller,
    op: &str,
    algorithms: &[&Option<String>],
    dry_run: Option<bool>,
    now: u64,
) -> Result<(), OpError> {
    if dry_run == Some(true) {
        return Err(invalid(s, c, op, "DryRun is not supported", now));
    }
    for a in algorithms.iter().filter_map(|a| a.as_deref()) {
        if a != SYMMETRIC_DEFAULT {
            return Err(invalid(
                s,
                c,
                op,
                format!("encryption algorithm {a:?} is not supported (only SYMMETRIC_DEFAULT)"),
                now,
            ));
        }
    }
    Ok(())
}

/// The caller's own namespace: its access key's creator (or the owner on the
/// connection).
fn namespace(c: &Caller) -> Option<OwnerPublicKey> {
    c.access_key.as_ref().map(|a| a.owner).or(c.owner)
}

/// A `KeyId` resolved: the key's owner (`None`: the caller's namespace) and id. An ARN
/// of another region or account is not found (ARNs resolve in the caller's namespace).
fn resolve(
    s: &Service,
    c: &Caller,
    op: &str,
    key: &str,
    region: &str,
    now: u64,
) -> Result<String, OpError> {
    let Some(r) = arn::parse_key_ref(key) else {
        return Err(invalid(
            s,
            c,
            op,
            format!("{key:?} is not a key id, alias/<key id> or key ARN"),
            now,
        ));
    };
    let elsewhere = r.region.is_some_and(|reg| reg != region)
        || r.account
            .is_some_and(|acct| namespace(c).is_none_or(|o| arn::account_id(&o) != acct));
    if elsewhere {
        return Err(s.refuse_request(
            c,
            op,
            OpError::NotFound(format!(
                "key {key:?} is not in this node's region ({region}) and the access key's account"
            )),
            now,
        ));
    }
    Ok(r.key_id.to_owned())
}

/// The caller with the request's recipient, if any (see [`Service::with_recipient`]).
fn recipient_caller(
    s: &Service,
    c: &Caller,
    op: &str,
    recipient: Option<&Recipient>,
    now: u64,
) -> Result<Option<Caller>, OpError> {
    let Some(r) = recipient else { return Ok(None) };
    if r.key_encryption_algorithm != recipient::ALGORITHM {
        return Err(invalid(
            s,
            c,
            op,
            format!(
                "KeyEncryptionAlgorithm {:?} is not supported: teekms seals to teekms workloads with {}",
                r.key_encryption_algorithm,
                recipient::ALGORITHM
            ),
            now,
        ));
    }
    s.with_recipient(c, &r.attestation_document.0, now)
        .map(Some)
}

/// A secret answer: the plaintext, or (to a recipient) its sealed form.
fn secret_out(
    op: &str,
    plaintext: Option<SecretB64>,
    sealed: Option<SealedSecret>,
) -> (Option<SecretB64>, Option<B64>) {
    match sealed {
        Some(sealed) => (None, Some(B64(recipient::encode(op, &sealed)))),
        None => (plaintext, None),
    }
}

fn key_arn(region: &str, resp_key: &str, owner: &OwnerPublicKey) -> String {
    arn::key_arn(region, owner, resp_key)
}

/// The owner a ciphertext names (the envelope header), or `InvalidCiphertextException`.
fn ciphertext_key(
    s: &Service,
    c: &Caller,
    op: &str,
    blob: &[u8],
    now: u64,
) -> Result<(OwnerPublicKey, String), OpError> {
    Envelope::parse(blob)
        .map(|e| (e.header.owner, e.header.key_id.to_string()))
        .map_err(|e| s.refuse_request(c, op, OpError::Decrypt(e.to_string()), now))
}

fn encrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(EncryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "encrypt";
    let req: EncryptIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[&req.encryption_algorithm], req.dry_run, now)?;
    let _ = req.grant_tokens;
    if req.plaintext.0.is_empty() || req.plaintext.0.len() > MAX_ENCRYPT_PLAINTEXT {
        return Err(invalid(
            s,
            c,
            op,
            format!("Plaintext must be 1 to {MAX_ENCRYPT_PLAINTEXT} bytes"),
            now,
        ));
    }
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let (resp, audit) = s.encrypt(
        c,
        EncryptRequest {
            key_id,
            owner: None,
            plaintext: req.plaintext,
            aad: None,
            context: req.encryption_context,
        },
        now,
    )?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    Ok((
        EncryptOut {
            key_id: key_arn(region, &resp.key_id, &owner),
            ciphertext_blob: resp.ciphertext,
            encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

fn decrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(DecryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "decrypt";
    let req: DecryptIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[&req.encryption_algorithm], req.dry_run, now)?;
    let _ = req.grant_tokens;
    let (owner, key_id) = ciphertext_key(s, c, op, &req.ciphertext_blob.0, now)?;
    if let Some(given) = &req.key_id {
        let wanted = resolve(s, c, op, given, region, now)?;
        if wanted != key_id || namespace(c) != Some(owner) {
            return Err(s.refuse_request(
                c,
                op,
                OpError::IncorrectKey(format!(
                    "the ciphertext was made with key {key_id:?}, not {given:?}"
                )),
                now,
            ));
        }
    }
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let (resp, audit): (SecretResponse, _) = s.decrypt(
        caller,
        DecryptRequest {
            ciphertext: req.ciphertext_blob,
            aad: None,
            context: req.encryption_context,
        },
        now,
    )?;
    let (plaintext, for_recipient) = secret_out(op, resp.plaintext, resp.sealed);
    Ok((
        DecryptOut {
            key_id: key_arn(region, &resp.key_id, &owner),
            plaintext,
            ciphertext_for_recipient: for_recipient,
            encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

fn re_encrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(ReEncryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "re-encrypt";
    let req: ReEncryptIn = parse(s, c, op, body, now)?;
    check_options(
        s,
        c,
        op,
        &[
            &req.source_encryption_algorithm,
            &req.destination_encryption_algorithm,
        ],
        req.dry_run,
        now,
    )?;
    let _ = req.grant_tokens;
    let (src_owner, src_id) = ciphertext_key(s, c, op, &req.ciphertext_blob.0, now)?;
    if let Some(given) = &req.source_key_id {
        let wanted = resolve(s, c, op, given, region, now)?;
        if wanted != src_id || namespace(c) != Some(src_owner) {
            return Err(s.refuse_request(
                c,
                op,
                OpError::IncorrectKey(format!(
                    "the ciphertext was made with key {src_id:?}, not {given:?}"
                )),
                now,
            ));
        }
    }
    let dst_id = resolve(s, c, op, &req.destination_key_id, region, now)?;
    let (resp, audit) = s.re_encrypt(
        c,
        ReEncryptRequest {
            ciphertext: req.ciphertext_blob,
            aad: None,
            context: req.source_encryption_context,
            destination_key_id: Some(dst_id),
            destination_owner: namespace(c).map(|o| o.fingerprint()),
            destination_aad: None,
            // AWS: no destination context is no context, not the source's.
            destination_context: Some(req.destination_encryption_context.unwrap_or_default()),
        },
        now,
    )?;
    let dst_owner = namespace(c).expect("an authorized caller has a namespace");
    Ok((
        ReEncryptOut {
            ciphertext_blob: resp.ciphertext,
            source_key_id: key_arn(region, &src_id, &src_owner),
            key_id: key_arn(region, &resp.key_id, &dst_owner),
            source_encryption_algorithm: SYMMETRIC_DEFAULT,
            destination_encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

fn generate_data_key(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    with_plaintext: bool,
    now: u64,
) -> Result<(GenerateDataKeyOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "generate-data-key";
    let req: GenerateDataKeyIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[], req.dry_run, now)?;
    let _ = req.grant_tokens;
    let bytes = match (req.number_of_bytes, req.key_spec.as_deref()) {
        (Some(n), None) => n,
        (None, Some("AES_256")) => 32,
        (None, Some("AES_128")) => 16,
        (None, Some(other)) => {
            return Err(invalid(
                s,
                c,
                op,
                format!("KeySpec {other:?} is not AES_256 or AES_128"),
                now,
            ));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                s,
                c,
                op,
                "give KeySpec or NumberOfBytes, not both",
                now,
            ));
        }
        (None, None) => {
            return Err(invalid(s, c, op, "give KeySpec or NumberOfBytes", now));
        }
    };
    if !with_plaintext && req.recipient.is_some() {
        return Err(invalid(
            s,
            c,
            op,
            "GenerateDataKeyWithoutPlaintext takes no Recipient",
            now,
        ));
    }
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let (resp, audit) = s.generate_data_key(
        caller,
        GenerateDataKeyRequest {
            key_id,
            owner: None,
            aad: None,
            context: req.encryption_context,
            number_of_bytes: Some(bytes),
        },
        now,
    )?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    let (plaintext, for_recipient) = secret_out(op, resp.plaintext, resp.sealed);
    Ok((
        GenerateDataKeyOut {
            ciphertext_blob: resp.ciphertext.expect("generate-data-key wraps the key"),
            plaintext: plaintext.filter(|_| with_plaintext),
            ciphertext_for_recipient: for_recipient,
            key_id: key_arn(region, &resp.key_id, &owner),
        },
        audit,
    ))
}

fn generate_random(
    s: &Service,
    c: &Caller,
    body: &[u8],
    now: u64,
) -> Result<(GenerateRandomOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "generate-random";
    let req: GenerateRandomIn = parse(s, c, op, body, now)?;
    if req.custom_key_store_id.is_some() {
        return Err(s.refuse_request(
            c,
            op,
            OpError::NotFound("teekms has no custom key stores".into()),
            now,
        ));
    }
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let n = req
        .number_of_bytes
        .ok_or_else(|| invalid(s, c, op, "NumberOfBytes is required", now))?;
    let ((plaintext, sealed), audit) = s.generate_random(caller, n, now)?;
    let (plaintext, for_recipient) = secret_out(op, plaintext, sealed);
    Ok((
        GenerateRandomOut {
            plaintext,
            ciphertext_for_recipient: for_recipient,
        },
        audit,
    ))
}

fn describe_key(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<DescribeKeyOut, OpError> {
    let op = "describe";
    let req: DescribeKeyIn = parse(s, c, op, body, now)?;
    let _ = req.grant_tokens;
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let d = s.describe(c, &key_id, None, now)?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    let created = d.versions.iter().map(|v| v.created_at).min().unwrap_or(0);
    let state = match (d.deletion_at, d.enabled) {
        (Some(_), _) => "PendingDeletion",
        (None, true) => "Enabled",
        (None, false) => "Disabled",
    };
    Ok(DescribeKeyOut {
        key_metadata: KeyMetadata {
            aws_account_id: arn::account_id(&owner),
            arn: key_arn(region, &d.key_id, &owner),
            key_id: d.key_id,
            creation_date: created as f64,
            enabled: d.enabled && d.deletion_at.is_none(),
            description: "",
            key_usage: "ENCRYPT_DECRYPT",
            key_state: state,
            deletion_date: d.deletion_at.map(|t| t as f64),
            // The owner made the material and deployed it: imported, in AWS's words.
            origin: "EXTERNAL",
            key_manager: "CUSTOMER",
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: [SYMMETRIC_DEFAULT],
            multi_region: false,
        },
    })
}

/// One page of `ids` (sorted): at most `limit` (1 to 1000, default 100) after `marker`.
fn page(
    s: &Service,
    c: &Caller,
    op: &str,
    ids: Vec<String>,
    req: &ListIn,
    now: u64,
) -> Result<(Vec<String>, Option<String>), OpError> {
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid(s, c, op, "Limit must be 1 to 1000", now));
    }
    let start = match &req.marker {
        Some(m) => ids.partition_point(|id| id.as_str() <= m.as_str()),
        None => 0,
    };
    let rest = &ids[start..];
    let taken: Vec<String> = rest.iter().take(limit as usize).cloned().collect();
    let next = (rest.len() > taken.len())
        .then(|| taken.last().cloned())
        .flatten();
    Ok((taken, next))
}

fn list_keys(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<ListKeysOut, OpError> {
    let op = "list-keys";
    let req: ListIn = parse(s, c, op, body, now)?;
    if req.key_id.is_some() {
        return Err(invalid(s, c, op, "ListKeys takes no KeyId", now));
    }
    let owner = namespace(c).ok_or_else(|| OpError::Forbidden("no namespace".into()))?;
    let (ids, next) = page(s, c, op, s.keys_in_scope(c, now)?, &req, now)?;
    Ok(ListKeysOut {
        truncated: next.is_some(),
        next_marker: next,
        keys: ids
            .into_iter()
            .map(|id| KeyListEntry {
                key_arn: key_arn(region, &id, &owner),
                key_id: id,
            })
            .collect(),
    })
}

fn list_aliases(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<ListAliasesOut, OpError> {
    let op = "list-aliases";
    let req: ListIn = parse(s, c, op, body, now)?;
    let owner = namespace(c).ok_or_else(|| OpError::Forbidden("no namespace".into()))?;
    let mut ids = s.keys_in_scope(c, now)?;
    if let Some(k) = &req.key_id {
        let wanted = resolve(s, c, op, k, region, now)?;
        ids.retain(|id| *id == wanted);
    }
    let (ids, next) = page(s, c, op, ids, &req, now)?;
    Ok(ListAliasesOut {
        truncated: next.is_some(),
        next_marker: next,
        aliases: ids
            .into_iter()
            .map(|id| AliasListEntry {
                alias_name: format!("alias/{id}"),
                alias_arn: arn::alias_arn(region, &owner, &id),
                target_key_id: id,
            })
            .collect(),
    })
}
