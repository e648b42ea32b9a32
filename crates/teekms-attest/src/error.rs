use crate::codec::DecodeError;

/// Evidence or statement that is malformed, forged or not bound to the statement.
///
/// These are faults of whoever produced the bytes (or of the storage and network in
/// between), never of the verifier's caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The attestation document is not valid JSON of the expected shape.
    #[error("attestation document is malformed: {0}")]
    Document(String),
    /// The evidence bytes do not parse as evidence of the named TEE.
    #[error("{tee} evidence is malformed: {reason}")]
    Malformed {
        /// Which TEE's format was expected.
        tee: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A signature in the evidence does not verify.
    #[error("evidence signature is invalid: {0}")]
    BadSignature(&'static str),
    /// The report data is not the hash of the statement that came with it.
    #[error(
        "report data does not match the node statement (the statement was altered or belongs to other evidence)"
    )]
    BindingMismatch,
    /// The statement's nonce is not the one the verifier sent.
    #[error("statement nonce does not match the nonce sent (stale or replayed evidence)")]
    NonceMismatch,
    /// The statement is internally inconsistent or of an unknown version.
    #[error("node statement is invalid: {0}")]
    Statement(String),
    /// Verification for this TEE is not available in this build.
    #[error("verification of {0} evidence is not supported by this version of teekms")]
    Unsupported(&'static str),
}

impl From<DecodeError> for EvidenceError {
    fn from(e: DecodeError) -> Self {
        EvidenceError::Statement(e.to_string())
    }
}

/// A verification policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML, or of the wrong shape (unknown keys included).
    #[error("policy is not valid: {0}")]
    Syntax(String),
    /// An `[[accept]]` entry is inconsistent.
    #[error("policy entry accept[{index}] is not valid: {reason}")]
    Entry {
        /// Zero-based position of the entry.
        index: usize,
        /// What is wrong.
        #[source]
        reason: crate::policy::EntryError,
    },
    /// The policy has no `[[accept]]` entry, so it would reject everything.
    #[error("policy has no [[accept]] entry; it would reject all evidence")]
    Empty,
}
