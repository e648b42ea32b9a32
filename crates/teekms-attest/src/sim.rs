//! The `sim` TEE's evidence format (spec/binding-v1.md, "sim evidence").
//!
//! Insecure by construction: the "platform" is a key pair in the user's data directory.
//! It exists so that the whole system runs on machines without TEE hardware. A verifier
//! accepts it only under a policy entry that names `tee = "sim"` and pins the root key.

use crate::EvidenceError;

/// First bytes of every sim evidence blob.
pub const MAGIC: &[u8; 8] = b"TKSIMEV1";
/// Label prefixed to the signed part.
pub const SIGNATURE_LABEL: &[u8] = b"teekms/v1/sim-evidence";
/// Length of the signed part: magic, measurement, report data, root public key.
pub const BODY_LEN: usize = 8 + 48 + 64 + 32;
/// Total length of sim evidence.
pub const EVIDENCE_LEN: usize = BODY_LEN + 64;

/// Parsed sim evidence. The signature has been checked against `root_public_key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvidence {
    /// SHA-384 of the node's executable.
    pub measurement: [u8; 48],
    /// The 64 bytes the node asked to bind.
    pub report_data: [u8; 64],
    /// The simulated platform root that signed it (trusted only if a policy pins it).
    pub root_public_key: [u8; 32],
}

/// The bytes a sim root signs for the given contents.
pub fn signed_body(measurement: &[u8; 48], report_data: &[u8; 64], root: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(SIGNATURE_LABEL.len() + BODY_LEN);
    body.extend_from_slice(SIGNATURE_LABEL);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(measurement);
    body.extend_from_slice(report_data);
    body.extend_from_slice(root);
    body
}

/// Assembles evidence from its body and the root's signature over [`signed_body`].
pub fn assemble(
    measurement: &[u8; 48],
    report_data: &[u8; 64],
    root: &[u8; 32],
    signature: &[u8; 64],
) -> Vec<u8> {
    let mut out = signed_body(measurement, report_data, root).split_off(SIGNATURE_LABEL.len());
    out.extend_from_slice(signature);
    out
}

/// Parses sim evidence and checks its signature. Strict: exact length, known magic.
pub fn parse_and_verify(evidence: &[u8]) -> Result<SimEvidence, EvidenceError> {
    let malformed = |reason: String| EvidenceError::Malformed { tee: "sim", reason };
    if evidence.len() != EVIDENCE_LEN {
        return Err(malformed(format!(
            "expected {EVIDENCE_LEN} bytes, found {}",
            evidence.len()
        )));
    }
    if &evidence[..8] != MAGIC {
        return Err(malformed(
            "wrong magic (not sim evidence, or an unknown version)".into(),
        ));
    }
    let measurement: [u8; 48] = evidence[8..56].try_into().expect("48 bytes");
    let report_data: [u8; 64] = evidence[56..120].try_into().expect("64 bytes");
    let root_public_key: [u8; 32] = evidence[120..152].try_into().expect("32 bytes");
    let signature = &evidence[BODY_LEN..];
    let body = signed_body(&measurement, &report_data, &root_public_key);
    if !crate::ed25519_verify(&root_public_key, &body, signature) {
        return Err(EvidenceError::BadSignature(
            "the sim root's signature over the evidence does not verify",
        ));
    }
    Ok(SimEvidence {
        measurement,
        report_data,
        root_public_key,
    })
}
