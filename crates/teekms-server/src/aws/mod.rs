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
use serde::Serialize;
use teekms_core::access::Caller;
use teekms_core::sigv4::Authorization;

use crate::ops::{ConnState, Credentials, OpError, Service, SignedRequest};

mod ops;
mod shapes;

use ops::{
    decrypt, describe_key, encrypt, generate_data_key, generate_random, list_aliases, list_keys,
    re_encrypt,
};

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
            OpError::Unavailable
            | OpError::Store(_)
            | OpError::StoreRolledBack(_)
            | OpError::FreshnessUnconfirmed(_) => (503, "DependencyTimeoutException"),
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
fn aws_json(body: impl IntoResponse) -> impl IntoResponse {
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
    // 32 hex digits (prefix, counter) cut 8-4-4-4-12 by dashes; no formatting machinery
    // on the hot path.
    let mut digits = [0u8; 32];
    hex::encode_to_slice(*PREFIX, &mut digits[..16]).expect("16 digits");
    hex::encode_to_slice(n, &mut digits[16..]).expect("16 digits");
    let mut id = [b'-'; 36];
    for (from, to, len) in [(0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)] {
        id[to..to + len].copy_from_slice(&digits[from..from + len]);
    }
    HeaderValue::from_bytes(&id).expect("hex and dashes")
}

fn ok<T: Serialize>(value: T) -> Response {
    let mut body = Vec::with_capacity(crate::http::RESPONSE_CAPACITY);
    serde_json::to_writer(&mut body, &value).expect("responses serialize");
    aws_json(body).into_response()
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
    Ok(match target.as_str() {
        "Encrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                encrypt(s, c, &body, s.aws_region(), now)
            })
            .await?),
        "Decrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                decrypt(s, c, &body, s.aws_region(), now)
            })
            .await?),
        "ReEncrypt" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                re_encrypt(s, c, &body, s.aws_region(), now)
            })
            .await?),
        "GenerateDataKey" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_data_key(s, c, &body, s.aws_region(), true, now)
            })
            .await?),
        "GenerateDataKeyWithoutPlaintext" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_data_key(s, c, &body, s.aws_region(), false, now)
            })
            .await?),
        "GenerateRandom" => ok(app
            .call_data(conn, creds, move |s, c, now| {
                generate_random(s, c, &body, now)
            })
            .await?),
        "DescribeKey" => ok(app
            .call(conn, creds, move |s, c, now| {
                describe_key(s, c, &body, s.aws_region(), now)
            })
            .await?),
        "ListKeys" => ok(app
            .call(conn, creds, move |s, c, now| {
                list_keys(s, c, &body, s.aws_region(), now)
            })
            .await?),
        "ListAliases" => ok(app
            .call(conn, creds, move |s, c, now| {
                list_aliases(s, c, &body, s.aws_region(), now)
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
