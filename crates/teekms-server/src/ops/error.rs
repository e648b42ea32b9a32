//! One error type for every operation, and the stable error codes of spec/api-v1.md.
//!
//! An operation says *what* went wrong (`OpError`); each protocol layer turns that into
//! its own wire names in one place (the native API: `api::ApiError`, from
//! [`OpError::code`]).

use teekms_core::CoreError;
use teekms_store::StoreError;

/// The stable codes of the native API's errors (spec/api-v1.md, "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed.
    BadRequest,
    /// 413: the body is over its limit.
    TooLarge,
    /// 408: the request took longer than its deadline.
    Timeout,
    /// 400: the bundle is malformed or altered.
    BadBundle,
    /// 422: the bundle is for another node.
    WrongNode,
    /// 403: the bundle's signature does not verify.
    BadSignature,
    /// 401: no credentials, or credentials that do not verify.
    Unauthenticated,
    /// 403: not allowed (default deny).
    Forbidden,
    /// 404: no such key, owner, version or endpoint.
    NotFound,
    /// 409: the key is disabled or pending deletion.
    KeyState,
    /// 409: the key id holds other material already.
    Conflict,
    /// 409: a concurrent change won; retrying settles it.
    Retry,
    /// 409: a stored record is missing or fails authentication.
    RecordDamaged,
    /// 410: the owner deleted a key under this id.
    Deleted,
    /// 400: the ciphertext does not decrypt.
    DecryptFailed,
    /// 503: no room for a stream now.
    Busy,
    /// 503: not carried out (shutting down, store unreachable); may be sent again.
    Unavailable,
    /// 503: the store is older than what this node acknowledged (spec/freshness-v1.md):
    /// nothing is served from it until it is brought forward.
    StoreRolledBack,
    /// 503: a change is committed and enforced on this node, but a majority of the
    /// cluster's members did not confirm holding it in time; retrying is safe.
    FreshnessUnconfirmed,
    /// 500: a failure that must not happen; details in the node's log.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of spec/api-v1.md's table.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::BadRequest,
        ErrorCode::BadBundle,
        ErrorCode::DecryptFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::BadSignature,
        ErrorCode::NotFound,
        ErrorCode::Timeout,
        ErrorCode::KeyState,
        ErrorCode::Conflict,
        ErrorCode::Retry,
        ErrorCode::RecordDamaged,
        ErrorCode::Deleted,
        ErrorCode::TooLarge,
        ErrorCode::WrongNode,
        ErrorCode::Internal,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::StoreRolledBack,
        ErrorCode::FreshnessUnconfirmed,
    ];

    /// The code as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::BadBundle => "bad_bundle",
            ErrorCode::WrongNode => "wrong_node",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::KeyState => "key_state",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Retry => "retry",
            ErrorCode::RecordDamaged => "record_damaged",
            ErrorCode::Deleted => "deleted",
            ErrorCode::DecryptFailed => "decrypt_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StoreRolledBack => "store_rolled_back",
            ErrorCode::FreshnessUnconfirmed => "freshness_unconfirmed",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why an operation was refused or failed. Messages are safe to return to the caller,
/// except those of `Store` and `Internal`, which go to the node's log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The bundle is malformed, altered, or for another node.
    #[error(transparent)]
    Bundle(CoreError),
    /// No credentials where some are needed, or credentials that do not verify.
    #[error("{0}")]
    Unauthenticated(String),
    /// Not allowed (default deny).
    #[error("{0}")]
    Forbidden(String),
    /// No such key (or it was deleted), owner or version.
    #[error("{0}")]
    NotFound(String),
    /// The key is not in the state the operation needs (for a cancellation: not
    /// pending deletion).
    #[error("{0}")]
    KeyState(String),
    /// The key is disabled.
    #[error("{0}")]
    Disabled(String),
    /// The key is pending deletion.
    #[error("{0}")]
    PendingDeletion(String),
    /// A signed request (AWS SigV4) whose signature does not verify: a wrong secret,
    /// an altered request, another region, a clock too far off.
    #[error("{0}")]
    BadRequestSignature(String),
    /// The key id already holds other material: a key is never overwritten.
    #[error("{0}")]
    Exists(String),
    /// A concurrent change won; retrying settles it.
    #[error("{0}")]
    Retry(String),
    /// A stored record is missing or failed authentication.
    #[error("{0}")]
    Damaged(String),
    /// The owner deleted a key under this id: deletion is final.
    #[error("{0}")]
    Deleted(String),
    /// The ciphertext does not decrypt.
    #[error("{0}")]
    Decrypt(String),
    /// The request names another key than the one its ciphertext was made with.
    #[error("{0}")]
    IncorrectKey(String),
    /// The request asks for something this API does not offer.
    #[error("{0}")]
    Unsupported(String),
    /// The node has no room for this now (stream memory); a retry shortly may succeed.
    #[error("{0}")]
    Busy(String),
    /// The node is shutting down; a retry (here later, or on another node) may succeed.
    #[error("the node is shutting down or cannot reach its store; retry")]
    Unavailable,
    /// The store was rolled back, forked or written by a second process
    /// (spec/freshness-v1.md); the message says which, and what brings it forward.
    #[error("{0}")]
    StoreRolledBack(String),
    /// Committed and enforced here, not confirmed by a majority of the members in time.
    #[error("{0}")]
    FreshnessUnconfirmed(String),
    /// The store could not be read or written (mostly: it cannot be reached, as during
    /// a PostgreSQL restart, and the next attempt reconnects).
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// Something that must not happen.
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::BadRequest(_) | OpError::IncorrectKey(_) | OpError::Unsupported(_) => {
                ErrorCode::BadRequest
            }
            OpError::Bundle(CoreError::BundleWrongNode { .. }) => ErrorCode::WrongNode,
            OpError::Bundle(CoreError::BundleSignature) => ErrorCode::BadSignature,
            OpError::Bundle(_) => ErrorCode::BadBundle,
            OpError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            OpError::Forbidden(_) => ErrorCode::Forbidden,
            OpError::NotFound(_) => ErrorCode::NotFound,
            OpError::KeyState(_) | OpError::Disabled(_) | OpError::PendingDeletion(_) => {
                ErrorCode::KeyState
            }
            OpError::BadRequestSignature(_) => ErrorCode::Unauthenticated,
            OpError::Exists(_) => ErrorCode::Conflict,
            OpError::Retry(_) => ErrorCode::Retry,
            OpError::Damaged(_) => ErrorCode::RecordDamaged,
            OpError::Deleted(_) => ErrorCode::Deleted,
            OpError::Decrypt(_) => ErrorCode::DecryptFailed,
            OpError::Busy(_) => ErrorCode::Busy,
            OpError::Unavailable | OpError::Store(_) => ErrorCode::Unavailable,
            OpError::StoreRolledBack(_) => ErrorCode::StoreRolledBack,
            OpError::FreshnessUnconfirmed(_) => ErrorCode::FreshnessUnconfirmed,
            OpError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The reason of a refusal, as its audit entry records it (`denied: <reason>`).
    pub(crate) fn reason(&self) -> &str {
        match self {
            OpError::BadRequest(m)
            | OpError::IncorrectKey(m)
            | OpError::Unsupported(m)
            | OpError::Forbidden(m)
            | OpError::KeyState(m)
            | OpError::Disabled(m)
            | OpError::PendingDeletion(m)
            | OpError::NotFound(m)
            | OpError::Busy(m) => m,
            _ => "failed",
        }
    }
}

impl From<crate::writer::Unavailable> for OpError {
    fn from(e: crate::writer::Unavailable) -> Self {
        match e.0 {
            Some(why) => OpError::StoreRolledBack(why),
            None => OpError::Unavailable,
        }
    }
}

impl From<teekms_attest::policy::DurationError> for OpError {
    fn from(e: teekms_attest::policy::DurationError) -> Self {
        OpError::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` holds every code once. The match is exhaustive: a new code does not compile
    /// until it is given its place here, and so in `ALL` and in spec/api-v1.md's table.
    #[test]
    fn all_holds_every_code_once() {
        let place = |c: ErrorCode| match c {
            ErrorCode::BadRequest => 0,
            ErrorCode::BadBundle => 1,
            ErrorCode::DecryptFailed => 2,
            ErrorCode::Unauthenticated => 3,
            ErrorCode::Forbidden => 4,
            ErrorCode::BadSignature => 5,
            ErrorCode::NotFound => 6,
            ErrorCode::Timeout => 7,
            ErrorCode::KeyState => 8,
            ErrorCode::Conflict => 9,
            ErrorCode::Retry => 10,
            ErrorCode::RecordDamaged => 11,
            ErrorCode::Deleted => 12,
            ErrorCode::TooLarge => 13,
            ErrorCode::WrongNode => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Busy => 16,
            ErrorCode::Unavailable => 17,
            ErrorCode::StoreRolledBack => 18,
            ErrorCode::FreshnessUnconfirmed => 19,
        };
        for (i, &c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(place(c), i, "{}", c.as_str());
        }
    }
}
