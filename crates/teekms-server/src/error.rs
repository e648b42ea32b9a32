use teekms_core::CoreError;
use teekms_platform::PlatformError;
use teekms_store::StoreError;

/// Why a node could not start or an offline operation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The TEE or its files are unavailable.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The database could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir holds records that fail authentication.
    #[error("data directory is damaged or was sealed by another TEE: {0}")]
    Damaged(#[source] CoreError),
    /// The data dir holds only part of a node's state.
    #[error("data directory is inconsistent: {0}")]
    Inconsistent(String),
    /// The node cannot start or join as configured: the cluster refused it, its database
    /// belongs to another cluster, or its TEE cannot hold state the way it was asked to.
    #[error("{0}")]
    Refused(String),
    /// Listening or TLS setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Another process holds the data dir.
    #[error(
        "data dir {} is in use by process {pid}; stop that node first, or give this one another --data-dir",
        dir.display()
    )]
    InUse {
        /// The data dir.
        dir: std::path::PathBuf,
        /// The holder's process id, as it wrote it.
        pid: String,
    },
    /// Recovery could not be set up or carried out.
    #[error(transparent)]
    Recovery(CoreError),
}
