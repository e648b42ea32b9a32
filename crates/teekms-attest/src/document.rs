//! The attestation document a node hands out (spec/api-v1.md, `GET /v1/attestation`).

use serde::{Deserialize, Serialize};

use crate::hexbytes::base64_bytes;
use crate::{EvidenceError, NodeStatement, TeeKind};

/// Largest attestation document this crate parses, in bytes.
pub const MAX_DOCUMENT_LEN: usize = 1024 * 1024;
/// The only document format version this build knows.
pub const DOCUMENT_VERSION: u32 = 1;

/// Evidence, the statement it binds, and the collateral needed to check it offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationDocument {
    /// Format version; must be [`DOCUMENT_VERSION`].
    pub version: u32,
    /// Which TEE produced `evidence`.
    pub tee: TeeKind,
    /// The raw evidence bytes (standard base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub evidence: Vec<u8>,
    /// The statement whose hash the evidence's report data must equal.
    pub statement: NodeStatement,
    /// Collateral for offline verification (`null` for sim).
    pub collateral: Option<serde_json::Value>,
}

impl AttestationDocument {
    /// Parses a document strictly (size limit, unknown fields rejected, known version).
    pub fn from_json(bytes: &[u8]) -> Result<AttestationDocument, EvidenceError> {
        if bytes.len() > MAX_DOCUMENT_LEN {
            return Err(EvidenceError::Document(format!(
                "larger than {MAX_DOCUMENT_LEN} bytes"
            )));
        }
        let doc: AttestationDocument =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Document(e.to_string()))?;
        if doc.version != DOCUMENT_VERSION {
            return Err(EvidenceError::Document(format!(
                "unknown version {} (this build knows {DOCUMENT_VERSION})",
                doc.version
            )));
        }
        if doc.tee != doc.statement.tee {
            return Err(EvidenceError::Document(
                "the document's tee and the statement's tee differ".into(),
            ));
        }
        Ok(doc)
    }

    /// Pretty JSON, as saved by `teekms attest fetch`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("documents always serialize")
    }
}
