//! The pure key hierarchy of teekms.
//!
//! Data keys and their file format, owner identities, the node's own key set, HPKE
//! deployment bundles, signed receipts and sealed storage records. No I/O, no clock:
//! callers pass time in as Unix seconds.
//!
//! Wrapping a data key demands a [`teekms_attest::VerifiedNode`], so nothing here can
//! wrap to a key whose evidence was not verified.

#![deny(missing_docs)]

pub mod access;
pub mod age;
pub mod api;
pub mod arn;
pub mod audit;
pub mod bundle;
pub mod context;
pub mod envelope;
mod error;
pub mod freshness;
pub mod hpke;
pub mod keyid;
pub mod node_keys;
pub mod owner;
pub mod receipt;
pub mod recipient;
pub mod record;
pub mod recovery;
pub mod secret;
pub mod sigv4;
pub mod state;
pub mod stream;
pub mod strict_json;

pub use bundle::Bundle;
pub use error::CoreError;
pub use keyid::KeyId;
pub use node_keys::NodeKeys;
pub use owner::{OwnerKey, OwnerPublicKey};
pub use receipt::Receipt;
pub use record::SealingKey;
pub use secret::{DataKey, Kcv};

/// Fills `out` with random bytes from the operating system's CSPRNG (`getrandom(2)`):
/// no user-space generator to seed first, so a short-lived command such as `teekms
/// encrypt` does not spend tens of milliseconds gathering entropy for one salt.
pub fn random_bytes(out: &mut [u8]) {
    getrandom::getrandom(out).expect("the system RNG does not fail");
}

/// HKDF-SHA256 to 32 bytes: extract with `salt`, expand with the concatenated `info`.
pub(crate) fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> zeroize::Zeroizing<[u8; 32]> {
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    struct Len32;
    impl aws_lc_rs::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    Salt::new(HKDF_SHA256, salt)
        .extract(ikm)
        .expand(info, Len32)
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("HKDF output of 32 bytes");
    out
}

/// HMAC-SHA256 of `parts` concatenated.
pub(crate) fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use aws_lc_rs::hmac;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().try_into().expect("32 bytes")
}
