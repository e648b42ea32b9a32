//! Everything that weakens a check, in one place a reviewer finds by its name (as
//! rustls keeps its `dangerous` configuration apart).
//!
//! Nothing here is reachable from a node or from a policy file: the CLI calls it only for
//! `teekms evidence verify --dangerous-skip-revocation`, and tests call it to cross-check
//! our own appraisal against dcap-qvl. What each function gives up is in its name.

use crate::TeeKind;
use crate::collateral::CollateralFiles;
use crate::dcap::{DcapCollateral, DcapResult, Revocation, appraise_dcap};
use crate::evidence::{EvidenceVerdict, appraise_evidence};
use crate::policy::Policy;

/// [`crate::evidence::verify_evidence`], except that a DCAP quote whose revocation data
/// (PCK CRL and its issuer chain, root CA CRL) is missing is appraised without it: a
/// revoked platform or Intel CA then goes unnoticed. Revocation data that is all present
/// is still checked.
pub fn verify_evidence_skipping_missing_revocation(
    tee: TeeKind,
    evidence: &[u8],
    collateral: &CollateralFiles,
    policy: &Policy,
    now_unix: u64,
) -> EvidenceVerdict {
    appraise_evidence(
        tee,
        evidence,
        collateral,
        policy,
        Revocation::DangerouslySkipped,
        now_unix,
    )
}

/// [`crate::dcap::verify_dcap`], except that missing revocation data is skipped (see
/// [`verify_evidence_skipping_missing_revocation`]).
pub fn verify_dcap_skipping_missing_revocation(
    tee: TeeKind,
    quote: &[u8],
    collateral: &DcapCollateral,
    now_unix: u64,
) -> DcapResult {
    appraise_dcap(
        tee,
        quote,
        collateral,
        Revocation::DangerouslySkipped,
        now_unix,
    )
}

/// The appraisal without revocation data alone, even where CRLs are given: what
/// `--dangerous-skip-revocation` runs when they are missing. Public so that tests can
/// cross-check it against dcap-qvl on every vector.
pub fn verify_dcap_ignoring_revocation(
    tee: TeeKind,
    quote: &[u8],
    collateral: &DcapCollateral,
    now_unix: u64,
) -> DcapResult {
    let mut files = collateral.clone();
    (files.pck_crl, files.pck_crl_issuer_chain, files.root_ca_crl) = (None, None, None);
    verify_dcap_skipping_missing_revocation(tee, quote, &files, now_unix)
}
