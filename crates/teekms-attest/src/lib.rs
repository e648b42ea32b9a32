//! Pure verification of TEE evidence for teekms.
//!
//! This crate parses and verifies evidence (today: the `sim` TEE), checks that the
//! evidence's report data binds a node statement, and appraises the result against an
//! owner's verification policy. It does no I/O and reads no clock: bytes, policy and
//! `now` come in, typed verdicts and the [`VerifiedNode`] proof type come out.
//!
//! It does not produce evidence (that is `teekms-platform`, inside the TEE) and it does
//! not hold secrets.

#![deny(missing_docs)]

pub mod codec;
pub mod dcap;
pub mod document;
mod error;
pub mod hexbytes;
pub mod policy;
pub mod sim;
pub mod snp;
pub mod statement;
mod verify;

pub use document::AttestationDocument;
pub use error::{EvidenceError, PolicyError};
pub use policy::Policy;
pub use statement::NodeStatement;
pub use verify::{Freshness, Verdict, VerifiedNode, verify_document};

/// The TEE kinds teekms knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// teekms' own simulated TEE: development only, never trusted silently.
    Sim,
    /// Intel SGX (DCAP quote v3).
    Sgx,
    /// Intel TDX (DCAP quote v4/v5).
    Tdx,
    /// AMD SEV-SNP attestation report.
    Snp,
}

impl TeeKind {
    /// The lowercase name used in policies, statements and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::Sim => "sim",
            TeeKind::Sgx => "sgx",
            TeeKind::Tdx => "tdx",
            TeeKind::Snp => "snp",
        }
    }

    /// Parses a TEE name as written in policies and statements.
    pub fn parse(name: &str) -> Option<TeeKind> {
        match name {
            "sim" => Some(TeeKind::Sim),
            "sgx" => Some(TeeKind::Sgx),
            "tdx" => Some(TeeKind::Tdx),
            "snp" => Some(TeeKind::Snp),
            _ => None,
        }
    }
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, data);
    d.as_ref().try_into().expect("SHA-512 is 64 bytes")
}

/// Verifies an Ed25519 signature; `true` only for a valid signature by `public_key`.
pub fn ed25519_verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}
