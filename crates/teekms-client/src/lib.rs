//! Client for owners, access-key holders, workloads and joining nodes: talks to a teekms
//! node and verifies it before any secret crosses.
//!
//! Each [`Connection`] is one TLS connection; [`connect_verified`] fetches fresh evidence
//! over it (with a random nonce), verifies it against the owner's policy, and checks that
//! the TLS key of that very connection is the attested one. Only then does a
//! [`VerifiedConnection`] exist, and only it can deploy keys.

#![deny(missing_docs)]

mod connection;
mod error;
mod failover;
pub mod fetch;
mod ops;
mod url;

pub use connection::{
    Connection, Identity, StampWatch, VerifiedConnection, connect, connect_as, connect_attested_as,
    connect_verified, connect_verified_as, connect_verified_with_collateral, owner_tls_certificate,
};
pub use error::ClientError;
pub use failover::Failover;
/// HTTP methods, for [`Connection::raw_request`].
pub use hyper::Method;
/// Response bodies, from [`Connection::raw_request`].
pub use hyper::body::Bytes;
pub use ops::secret_of;
pub use url::NodeUrl;
