//! Request and response bodies of API v1 (spec/api-v1.md), shared by node and client.

use serde::{Deserialize, Serialize};

use crate::Kcv;

/// `GET /v1/keys`: the caller's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// Keys whose records opened and authenticated.
    pub keys: Vec<KeyInfo>,
    /// Keys whose stored records failed authentication (tampered storage).
    pub damaged: Vec<DamagedKey>,
}

/// Metadata of one key version. Never material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// The key's id.
    pub key_id: String,
    /// The version.
    pub key_version: u64,
    /// When first stored (Unix seconds).
    pub created_at: u64,
    /// Key check value, recomputed from the unsealed material.
    pub kcv: Kcv,
}

/// A key whose stored record could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamagedKey {
    /// The key id as stored (untrusted).
    pub key_id: String,
    /// The version as stored (untrusted).
    pub key_version: u64,
    /// What failed.
    pub error: String,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}
