use teekms_attest::{EvidenceError, Verdict};
use teekms_core::CoreError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node URL is not usable.
    #[error("invalid node URL {0}")]
    Url(String),
    /// Could not reach the node.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The node.
        url: String,
        /// What failed.
        reason: String,
    },
    /// HTTP or TLS failed after connecting.
    #[error("talking to the node failed: {0}")]
    Transport(String),
    /// The node answered with an error.
    #[error("the node refused the request ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The node's answer is not what API v1 says.
    #[error("the node's response is malformed: {0}")]
    Response(String),
    /// The node's evidence is malformed.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The node's evidence did not verify or was not admitted by the policy.
    #[error("the node's evidence was rejected: {}", .0.reasons.join("; "))]
    Rejected(Box<Verdict>),
    /// The TLS connection is not terminated by the attested key.
    #[error(
        "the TLS key of this connection is not the key named in the node's attested statement (possible interception)"
    )]
    ChannelMismatch,
    /// A receipt or bundle did not check out.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl ClientError {
    /// True if the attempt got no answer: the node could not be reached, the connection
    /// broke, or the node is shutting down or cannot reach its store (503). Another
    /// node of the cluster, or the same one later, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => *status == 503,
            _ => false,
        }
    }

    /// True if the failure is a refusal (verification, policy, the node saying no)
    /// rather than a usage or transport problem.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ClientError::Api { .. }
                | ClientError::Evidence(_)
                | ClientError::Rejected(_)
                | ClientError::ChannelMismatch
                | ClientError::Core(_)
        )
    }
}
