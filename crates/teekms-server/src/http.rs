//! What the native API's layers (`api.rs`, `stream.rs`) share: the error type and the
//! one mapping from an operation's error to a status and a code, the access-key bearer
//! token, and JSON answers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use teekms_core::api::ErrorBody;

use crate::ops::{ErrorCode, OpError};

/// The one error type of the native API: a stable code (its status follows from it) and
/// a message.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

/// The HTTP status of each code (spec/api-v1.md): the one mapping.
fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    use StatusCode as S;
    match code {
        C::BadRequest | C::BadBundle | C::DecryptFailed => S::BAD_REQUEST,
        C::TooLarge => S::PAYLOAD_TOO_LARGE,
        C::Timeout => S::REQUEST_TIMEOUT,
        C::WrongNode => S::UNPROCESSABLE_ENTITY,
        C::BadSignature | C::Forbidden => S::FORBIDDEN,
        C::Unauthenticated => S::UNAUTHORIZED,
        C::NotFound => S::NOT_FOUND,
        C::KeyState | C::Conflict | C::Retry | C::RecordDamaged => S::CONFLICT,
        C::Deleted => S::GONE,
        C::Busy | C::Unavailable | C::StoreRolledBack | C::FreshnessUnconfirmed => {
            S::SERVICE_UNAVAILABLE
        }
        C::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// An internal failure: details go to the log under an id, the caller gets the id.
    pub(crate) fn internal(what: &str, detail: &dyn std::fmt::Display) -> ApiError {
        let mut id = [0u8; 8];
        teekms_core::random_bytes(&mut id);
        let id = hex::encode(id);
        tracing::error!(error_id = %id, what, error = %detail, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            format!("internal error {id}; the node's log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.as_str().into(),
            message: self.message,
        };
        let mut response = (status(self.code), Json(body)).into_response();
        if self.code == ErrorCode::Busy {
            // Room comes back as other streams end: a second is a fair first wait.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Internal(m) => ApiError::internal("operation", &m),
            OpError::Store(e) => {
                // Mostly a store that cannot be reached (a PostgreSQL restart): the next
                // attempt reconnects. The cause goes to the log only.
                tracing::error!(error = %e, "store failed");
                ApiError::new(ErrorCode::Unavailable, OpError::Unavailable.to_string())
            }
            e => ApiError::new(e.code(), e.to_string()),
        }
    }
}

/// The access-key token of `Authorization: Bearer <token>`, if the request has one.
pub fn token(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Some(t.trim().to_owned()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                "Authorization must be `Bearer <access key token>`",
            )
        })
}

/// A JSON response written into one buffer sized for the usual answer: axum's `Json`
/// starts at 128 bytes and grows by copying, four times for a 1 KiB envelope.
pub struct JsonOut<T>(pub T);

/// Room for the usual operation's answer (a 1 KiB envelope is about 1.5 KiB of JSON).
pub(crate) const RESPONSE_CAPACITY: usize = 2048;

impl<T: Serialize> IntoResponse for JsonOut<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(RESPONSE_CAPACITY);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => ApiError::internal("response", &e).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec/api-v1.md's table of error codes is the mapping, row for row: every code
    /// with the status this layer answers it with, and no other code.
    #[test]
    fn the_spec_lists_every_code_with_its_status() {
        let spec = include_str!("../../../spec/api-v1.md");
        let rows: Vec<(String, u16)> = spec
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let status = cells.get(2)?.parse().ok()?;
                Some((code.to_owned(), status))
            })
            .collect();
        let ours: Vec<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|&c| (c.as_str().to_owned(), status(c).as_u16()))
            .collect();
        assert_eq!(rows, ours);
    }
}
