//! The pure key hierarchy of teekms.
//!
//! Data keys and their file format, owner identities, the node's own key set, HPKE
//! deployment bundles, signed receipts and sealed storage records. No I/O, no clock:
//! callers pass time in as Unix seconds.
//!
//! Wrapping a data key demands a [`teekms_attest::VerifiedNode`], so nothing here can
//! wrap to a key whose evidence was not verified.

#![deny(missing_docs)]

pub mod api;
pub mod bundle;
mod error;
pub mod hpke;
pub mod keyid;
pub mod node_keys;
pub mod owner;
pub mod receipt;
pub mod record;
pub mod secret;
pub mod stream;

pub use bundle::Bundle;
pub use error::CoreError;
pub use keyid::KeyId;
pub use node_keys::NodeKeys;
pub use owner::{OwnerKey, OwnerPublicKey};
pub use receipt::Receipt;
pub use record::SealingKey;
pub use secret::{DataKey, Kcv};

/// Seeds the CSPRNG on a background thread. AWS-LC gathers CPU-jitter entropy on first
/// use in a process (tens of milliseconds); a node starts faster when that overlaps with
/// its other start-up work instead of delaying the first TLS handshake.
pub fn warm_up_rng() {
    std::thread::spawn(|| random_bytes(&mut [0u8; 1]));
}

/// Fills `out` with random bytes from the operating system's CSPRNG.
pub fn random_bytes(out: &mut [u8]) {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(out)
        .expect("the system RNG does not fail");
}
