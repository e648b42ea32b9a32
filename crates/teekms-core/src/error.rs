use teekms_attest::codec::DecodeError;

/// Errors of the key hierarchy, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    // --- bad input from outside (owner files, bundles, receipts) ---
    /// A key id outside the allowed syntax.
    #[error(
        "invalid key id {0:?}: use 1 to 128 characters from A-Z a-z 0-9 . _ - and start with a letter or digit"
    )]
    InvalidKeyId(String),
    /// A data-key file that is not 64 lowercase hex characters and a newline.
    #[error("data key file is not 64 lowercase hex characters followed by a newline")]
    InvalidDataKeyFile,
    /// A key policy that is not valid: its reason says what is wrong and where.
    #[error("key policy is not valid: {reason}")]
    InvalidKeyPolicy {
        /// Size limit in bytes (named by the reason when it is exceeded).
        max: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bundle that does not parse.
    #[error("bundle is malformed: {0}")]
    BundleMalformed(String),
    /// A bundle wrapped to a different node.
    #[error(
        "bundle was wrapped to node {bundle_node}, but this is node {this_node}; wrap the key again to this node's evidence"
    )]
    BundleWrongNode {
        /// Node id named in the bundle.
        bundle_node: String,
        /// This node's id.
        this_node: String,
    },
    /// The owner's signature over a bundle does not verify.
    #[error(
        "bundle signature is invalid: the bundle was altered or not signed by the owner it names"
    )]
    BundleSignature,
    /// HPKE decryption failed.
    #[error("bundle did not decrypt: it was altered or wrapped to another key")]
    BundleDecrypt,
    /// A receipt that does not parse or does not verify.
    #[error("receipt is invalid: {0}")]
    ReceiptInvalid(String),
    /// An owner key file that cannot be used.
    #[error("owner key is invalid: {0}")]
    InvalidOwnerKey(String),

    // --- tampered or damaged storage ---
    /// A sealed record failed authentication.
    #[error(
        "stored record {kind} {id:?} failed authentication: it was altered, swapped or truncated"
    )]
    RecordAuthentication {
        /// Record kind.
        kind: &'static str,
        /// Record id.
        id: String,
    },
    /// A sealed record of an unknown format.
    #[error("stored record {kind} {id:?} is malformed: {reason}")]
    RecordMalformed {
        /// Record kind.
        kind: &'static str,
        /// Record id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// An encryption context that cannot be bound (spec/envelope-v1.md).
    #[error("invalid encryption context: {0}")]
    InvalidContext(String),
    /// An envelope ciphertext that does not parse.
    #[error("envelope ciphertext is malformed: {0}")]
    EnvelopeMalformed(String),
    /// An envelope ciphertext that does not authenticate.
    #[error(
        "envelope ciphertext did not decrypt: it was altered, the associated data differs, or it was made with another key"
    )]
    EnvelopeDecrypt,
    /// Recovery shares that do not give the cluster key back.
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// An access key token of the wrong shape.
    #[error("access key is malformed: expected ak-<16 hex>.<64 hex>")]
    AccessKeyMalformed,
}

impl CoreError {
    pub(crate) fn bundle(e: impl std::fmt::Display) -> CoreError {
        CoreError::BundleMalformed(e.to_string())
    }
}

impl From<DecodeError> for CoreError {
    fn from(e: DecodeError) -> Self {
        CoreError::BundleMalformed(e.to_string())
    }
}
