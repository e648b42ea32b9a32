//! The teekms node as a library: `serve(config)` starts it and returns the bound address,
//! so tests and the demo run real nodes on port 0.
//!
//! It owns the node's key set (born and sealed inside the TEE), the HTTPS API over
//! RA-TLS, caller authentication (owner certificates, access keys, attested workloads and
//! peers over mutual RA-TLS), durable group-committed storage with its audit log, and a
//! cluster's join. It does not produce evidence (`teekms-platform`) or judge it
//! (`teekms-attest`).

#![deny(missing_docs)]

mod api;
mod aws;
mod budget;
mod ca;
mod connections;
mod datadir;
mod error;
#[cfg(debug_assertions)]
mod fault;
mod freshness;
mod http;
mod keyring;
mod metrics;
mod migrate;
mod node;
mod ops;
mod readers;
mod server;
mod start;
mod stream;
mod tls;
mod transit;
mod writer;

pub use budget::DEFAULT_STREAM_MEMORY;
pub use connections::default_max_connections;
pub use datadir::{DataDirLock, LOCK_FILE, lock_data_dir};
pub use error::ServerError;
pub use keyring::Keyring;
pub use node::{
    NodeHandle, RecoverySetup, audit_tail_offline, audit_verify_offline, ensure_recovery, has_node,
    import_offline, open_node, restore_node,
};
pub use ops::{Deployed, ErrorCode, OpError};
pub use server::{DEFAULT_STREAM_IDLE_TIMEOUT, RunningServer, serve};
pub use start::{DEFAULT_AWS_REGION, DEFAULT_TLS_CERT_LIFETIME, ServeConfig, TlsSettings};
pub use transit::DEFAULT_MOUNT as DEFAULT_TRANSIT_MOUNT;

/// Days of validity the TEE's collateral must have left for `GET /v1/ready` to answer
/// ready, by default (`teekms serve --collateral-warn`).
pub const DEFAULT_COLLATERAL_WARN_DAYS: u64 = 7;
pub use tls::owner_from_certificate;

/// Seconds since the Unix epoch on this machine's clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seeds AWS-LC's generator on a background thread. AWS-LC gathers CPU-jitter entropy on
/// first use in a process (tens of milliseconds); a node starts faster when that overlaps
/// with its other start-up work instead of delaying its key generation and first TLS
/// handshake (which use AWS-LC's generator, unlike `teekms_core::random_bytes`).
pub fn warm_up_rng() {
    std::thread::spawn(|| {
        use aws_lc_rs::rand::SecureRandom;
        let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut [0u8; 1]);
    });
}
