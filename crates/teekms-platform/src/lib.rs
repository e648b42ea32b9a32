//! What runs inside the TEE: producing evidence and obtaining the hardware sealing key.
//!
//! Behind one [`Platform`] trait: the simulated `sim` TEE, Gramine's `/dev/attestation`
//! (SGX), Linux configfs-tsm (TDX, SEV-SNP) and the SNP derived key. This crate does file
//! I/O, and its `sys` module holds the only `unsafe` code (an ioctl and a few syscalls);
//! it holds no policy.

#![deny(missing_docs)]

pub mod configfs;
mod files;
pub mod gramine;
pub mod sim;
pub mod sys;

pub use files::{read_secret_file, write_new_secret_file};
pub use sim::{SimPlatform, SimRoot};
use teekms_attest::TeeKind;
use teekms_core::SealingKey;

/// Errors of the platform: the TEE or its files are unavailable or damaged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// A file the platform needs could not be read or written.
    #[error("{what} at {path}: {source}")]
    Io {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should.
    #[error("{what} at {path} is damaged: {reason}")]
    Damaged {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A TEE as seen from inside: it makes evidence and gives a sealing key.
pub trait Platform: Send + Sync {
    /// Which TEE this is.
    fn tee(&self) -> TeeKind;
    /// Evidence whose report data is exactly `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError>;
    /// Collateral to ship with the evidence (none for sim).
    fn collateral(&self) -> Option<serde_json::Value> {
        None
    }
    /// The hardware sealing key.
    fn sealing_key(&self) -> Result<SealingKey, PlatformError>;

    /// Whether this TEE has a sealing key at all (TDX has none: such a node keeps its
    /// keys in memory and receives the cluster key from a peer at every start).
    fn has_sealing_key(&self) -> bool {
        true
    }

    /// The RA-TLS certificate extension (spec/ratls-v1.md) for a node or workload whose
    /// statement is `statement` and whose TLS key is `tls_spki_der`: this TEE's evidence
    /// over claims naming both, with the collateral (if any) so that a peer can verify
    /// it offline. Only public parts go in: the private keys never leave their owner.
    fn ratls_extension(
        &self,
        statement: &teekms_attest::statement::NodeStatement,
        tls_spki_der: &[u8],
    ) -> Result<Vec<u8>, PlatformError> {
        use teekms_attest::ratls;
        let collateral: Option<teekms_attest::collateral::CollateralFiles> = self
            .collateral()
            .and_then(|c| serde_json::from_value(c).ok());
        let claims = ratls::claims_buffer(tls_spki_der, self.tee(), statement, collateral.as_ref());
        let evidence = self.evidence(&ratls::report_data_for_claims(&claims))?;
        Ok(ratls::evidence_extension(&evidence, &claims))
    }
}

/// Expands hardware key material into the 256-bit hardware sealing key:
/// HKDF-SHA256(ikm, salt = "teekms/v1/hardware-sealing-key", info = `label`).
pub fn expand_sealing_key(ikm: &[u8], label: &[u8]) -> SealingKey {
    use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
    struct Len32;
    impl KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = Salt::new(HKDF_SHA256, b"teekms/v1/hardware-sealing-key").extract(ikm);
    let info = [label];
    let okm = prk
        .expand(&info, Len32)
        .expect("32 bytes is a valid HKDF length");
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    okm.fill(key.as_mut()).expect("fill 32 bytes");
    SealingKey::from_bytes(*key)
}
