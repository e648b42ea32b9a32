//! Intel DCAP quotes: SGX quote v3 and TDX quote v4/v5, verified offline.
//!
//! The signature chain, QE report, TCB info, QE identity, CRLs and TCB-level matching are
//! done by `dcap-qvl` (anchored on the pinned Intel SGX Root CA). This module adds what
//! it lacks: strict structure checks (the quote ends where its signature data says; the
//! rest is counted as `trailing_bytes`, never used), the check that the root copy inside
//! the quote is the pinned root, revocation data required unless dangerously skipped
//! (then `dcap_unrevoked` appraises without it), and the claims in teekms' JSON shape.

use dcap_qvl::quote::{Quote, Report};
use serde_json::json;

use crate::collateral::CollateralError;
use crate::dcap_collateral::TEE_TYPE_SGX;
pub use crate::dcap_collateral::{DcapCollateral, INTEL_SGX_ROOT_CA_DER, PreparedCollateral};
use crate::{EvidenceError, TeeKind};

const HEADER_LEN: usize = 48;
const SGX_BODY_LEN: usize = 384;
const TD10_BODY_LEN: usize = 584;
const TD15_BODY_LEN: usize = 648;
const TEE_TYPE_TDX: u32 = 0x81;

/// The result of checking a DCAP quote (before any policy).
#[derive(Clone, Debug)]
pub struct DcapResult {
    /// Claims read from the quote (present whenever it parses).
    pub claims: Option<serde_json::Value>,
    /// Authentic, collateral valid at that time, TCB level found.
    pub verified: bool,
    /// Intel TCB status (merged platform, QE and TDX module levels).
    pub tcb_status: Option<String>,
    /// Intel advisories that apply.
    pub advisory_ids: Vec<String>,
    /// Why it did not verify.
    pub reasons: Vec<String>,
    /// Bytes after the end of the signature data (padding; never used).
    pub trailing_bytes: usize,
    /// The quote's 64-byte report data.
    pub report_data: Option<[u8; 64]>,
    /// Debug enclave / TD.
    pub debug: bool,
    /// A TDX 1.5 TD bound to a service TD (non-zero MR_SERVICETD).
    pub service_td: bool,
    /// The older issue date of TCB info and QE identity (Unix seconds).
    pub collateral_issued: Option<u64>,
}

/// Whether a quote may verify without revocation data (only [`crate::danger`] lets it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// CRLs are required; without them the quote is rejected (the default).
    #[default]
    Required,
    /// `--dangerous-skip-revocation`: when CRL files are missing the quote is appraised
    /// without them (a revoked PCK or CA would go unnoticed). CRLs that are all present
    /// are still checked.
    DangerouslySkipped,
}

/// Where a quote ends: header, body, then a 4-byte length and that many bytes of
/// signature data. Errors name the inconsistency.
pub fn quote_extent(quote: &[u8]) -> Result<usize, EvidenceError> {
    let bad = |reason: String| EvidenceError::Malformed {
        tee: "DCAP",
        reason,
    };
    let u16_at = |o: usize| {
        quote
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        quote
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = u16_at(0).ok_or_else(|| bad("quote is shorter than its header".into()))?;
    let tee_type = u32_at(4).ok_or_else(|| bad("quote is shorter than its header".into()))?;
    let body_end = match (version, tee_type) {
        (3, TEE_TYPE_SGX) => HEADER_LEN + SGX_BODY_LEN,
        (4, TEE_TYPE_TDX) => HEADER_LEN + TD10_BODY_LEN,
        (5, _) => {
            let body_type = u16_at(HEADER_LEN)
                .ok_or_else(|| bad("quote v5 is shorter than its body descriptor".into()))?;
            let body_len = u32_at(HEADER_LEN + 2)
                .ok_or_else(|| bad("quote v5 is shorter than its body descriptor".into()))?
                as usize;
            let expected = match (body_type, tee_type) {
                (1, TEE_TYPE_SGX) => SGX_BODY_LEN,
                (2, TEE_TYPE_TDX) => TD10_BODY_LEN,
                (3, TEE_TYPE_TDX) => TD15_BODY_LEN,
                _ => {
                    return Err(bad(format!(
                        "unsupported quote v5 body type {body_type} for tee type {tee_type:#x}"
                    )));
                }
            };
            if body_len != expected {
                return Err(bad(format!(
                    "quote v5 body size {body_len} does not match body type {body_type} ({expected})"
                )));
            }
            HEADER_LEN + 6 + body_len
        }
        (v, t) => {
            return Err(bad(format!(
                "unsupported quote format: version {v} with tee type {t:#x}"
            )));
        }
    };
    let sig_len = u32_at(body_end)
        .ok_or_else(|| bad("quote ends before its signature data length".into()))?
        as usize;
    let end = body_end
        .checked_add(4 + sig_len)
        .ok_or_else(|| bad("signature data length overflows".into()))?;
    if end > quote.len() {
        return Err(bad(format!(
            "signature data length {sig_len} runs past the end of the quote ({} bytes)",
            quote.len()
        )));
    }
    Ok(end)
}

fn hex_claims(report: &Report) -> (serde_json::Value, [u8; 64], bool, bool) {
    match report {
        Report::SgxEnclave(r) => {
            // ATTRIBUTES.FLAGS bit 1 is DEBUG.
            let debug = r.attributes[0] & 0x02 != 0;
            let claims = json!({
                "mrenclave": hex::encode(r.mr_enclave),
                "mrsigner": hex::encode(r.mr_signer),
                "isv_prod_id": r.isv_prod_id,
                "isv_svn": r.isv_svn,
                "attributes": hex::encode(r.attributes),
                "report_data": hex::encode(r.report_data),
                "debug": debug,
            });
            (claims, r.report_data, debug, false)
        }
        other => {
            let (base, service) = match other {
                Report::TD10(r) => (r, None),
                Report::TD15(r) => (&r.base, Some(r.mr_service_td)),
                Report::TD15Ex(r) => (&r.base.base, Some(r.base.mr_service_td)),
                Report::SgxEnclave(_) => unreachable!("handled above"),
            };
            // TDATTRIBUTES bit 0 is DEBUG.
            let debug = base.td_attributes[0] & 0x01 != 0;
            let service_td = service.is_some_and(|s| s.iter().any(|&b| b != 0));
            let claims = json!({
                "mrtd": hex::encode(base.mr_td),
                "rtmr0": hex::encode(base.rt_mr0),
                "rtmr1": hex::encode(base.rt_mr1),
                "rtmr2": hex::encode(base.rt_mr2),
                "rtmr3": hex::encode(base.rt_mr3),
                "mr_config_id": hex::encode(base.mr_config_id),
                "mr_owner": hex::encode(base.mr_owner),
                "mr_owner_config": hex::encode(base.mr_owner_config),
                "mr_servicetd": service.map(hex::encode),
                "mr_seam": hex::encode(base.mr_seam),
                "tee_tcb_svn": hex::encode(base.tee_tcb_svn),
                "td_attributes": hex::encode(base.td_attributes),
                "report_data": hex::encode(base.report_data),
                "debug": debug,
            });
            (claims, base.report_data, debug, service_td)
        }
    }
}

/// Verifies a DCAP quote at `now_unix` against the pinned Intel root.
pub fn verify_dcap(
    tee: TeeKind,
    quote: &[u8],
    collateral: &DcapCollateral,
    now_unix: u64,
) -> DcapResult {
    appraise_dcap(tee, quote, collateral, Revocation::Required, now_unix)
}

/// [`verify_dcap`] with the revocation rule given (see [`crate::danger`]).
pub(crate) fn appraise_dcap(
    tee: TeeKind,
    quote: &[u8],
    collateral: &DcapCollateral,
    revocation: Revocation,
    now_unix: u64,
) -> DcapResult {
    let prepared = collateral.prepare();
    appraise_dcap_prepared(tee, quote, prepared.as_ref(), revocation, now_unix)
}

/// Verifies a DCAP quote with collateral prepared earlier (or the reason it could not
/// be; claims are still read from the quote). Revocation data is required.
pub fn verify_dcap_prepared(
    tee: TeeKind,
    quote: &[u8],
    collateral: Result<&PreparedCollateral, &CollateralError>,
    now_unix: u64,
) -> DcapResult {
    appraise_dcap_prepared(tee, quote, collateral, Revocation::Required, now_unix)
}

/// [`verify_dcap_prepared`] with the revocation rule given.
pub(crate) fn appraise_dcap_prepared(
    tee: TeeKind,
    quote: &[u8],
    collateral: Result<&PreparedCollateral, &CollateralError>,
    revocation: Revocation,
    now_unix: u64,
) -> DcapResult {
    let mut out = DcapResult {
        claims: None,
        verified: false,
        tcb_status: None,
        advisory_ids: Vec::new(),
        reasons: Vec::new(),
        trailing_bytes: 0,
        report_data: None,
        debug: false,
        service_td: false,
        collateral_issued: None,
    };
    let end = match quote_extent(quote) {
        Ok(end) => end,
        Err(EvidenceError::Malformed { reason, .. }) => {
            out.reasons.push(format!("malformed quote: {reason}"));
            return out;
        }
        Err(e) => {
            out.reasons.push(e.to_string());
            return out;
        }
    };
    out.trailing_bytes = quote.len() - end;
    let quote = &quote[..end];
    let parsed = match Quote::parse(quote) {
        Ok(q) => q,
        Err(e) => {
            out.reasons.push(format!("malformed quote: {e}"));
            return out;
        }
    };
    let is_sgx = parsed.header.tee_type == TEE_TYPE_SGX;
    if is_sgx != (tee == TeeKind::Sgx) {
        out.reasons.push(format!(
            "the quote is {} evidence, not {tee}",
            if is_sgx { "an SGX" } else { "a TDX" }
        ));
        return out;
    }
    let (claims, report_data, debug, service_td) = hex_claims(&parsed.report);
    out.claims = Some(claims);
    out.report_data = Some(report_data);
    out.debug = debug;
    out.service_td = service_td;
    match parsed
        .raw_cert_chain()
        .ok()
        .and_then(|chain| crate::pem::certificates(chain).pop())
    {
        Some(root) if root == INTEL_SGX_ROOT_CA_DER => {}
        Some(_) => {
            out.reasons.push(
                "the root CA copy inside the quote is not the pinned Intel SGX Root CA".into(),
            );
            return out;
        }
        None => {
            out.reasons.push(
                "the quote carries no PCK certificate chain (certification data type 5 required)"
                    .into(),
            );
            return out;
        }
    }
    let coll = match collateral {
        Ok(c) => c,
        Err(e) => {
            out.reasons.push(e.to_string());
            return out;
        }
    };
    out.collateral_issued = coll.issued;
    let (v3, crl_windows) = match (&coll.revocable, revocation) {
        (Ok((v3, windows)), _) => (v3, windows),
        (Err(_), Revocation::DangerouslySkipped) => {
            match crate::dcap_unrevoked::appraise(quote, &parsed, &coll.files, now_unix) {
                Ok(a) => {
                    out.verified = true;
                    out.tcb_status = Some(a.status);
                    out.advisory_ids = a.advisory_ids;
                }
                Err(e) => out.reasons.push(e.to_string()),
            }
            return out;
        }
        (Err(e), Revocation::Required) => {
            out.reasons.push(e.to_string());
            return out;
        }
    };
    for (name, this, next) in crl_windows {
        if now_unix < *this {
            out.reasons.push(format!(
                "{name} is not valid yet (thisUpdate is after the verification time)"
            ));
            return out;
        }
        if next.is_some_and(|n| now_unix > n) {
            out.reasons.push(format!(
                "{name} has expired (nextUpdate is before the verification time)"
            ));
            return out;
        }
    }
    // Debug and service-TD bindings are policy decisions, made by our appraisal.
    let verifier = dcap_qvl::verify::QuoteVerifier::new(INTEL_SGX_ROOT_CA_DER.to_vec())
        .allow_debug(true)
        .allow_service_td(true);
    match verifier.verify(quote, v3, now_unix) {
        Ok(report) => {
            out.verified = true;
            out.tcb_status = Some(report.status);
            out.advisory_ids = report.advisory_ids;
        }
        Err(e) => out.reasons.push(format!("{e:#}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_rejects_inconsistent_sizes() {
        assert!(quote_extent(&[]).is_err());
        let mut q = vec![0u8; HEADER_LEN + SGX_BODY_LEN + 4];
        q[0] = 3;
        assert_eq!(quote_extent(&q).unwrap(), q.len());
        q[HEADER_LEN + SGX_BODY_LEN] = 1;
        assert!(quote_extent(&q).is_err(), "signature data past the end");
        q[0] = 9;
        assert!(quote_extent(&q).is_err(), "unknown version");
    }
}
