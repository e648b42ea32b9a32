//! Verifying real TEE evidence with its collateral, then appraising it against a policy.

use serde::Serialize;
use serde_json::Value;

use crate::collateral::CollateralFiles;
use crate::dcap::{Revocation, appraise_dcap_prepared};
use crate::policy::{AcceptEntry, IntelCommon, SgxEntry, SnpEntry, TdxEntry};
use crate::snp::verify_snp_with;
use crate::{Policy, TeeKind};

/// The verdict on a piece of real TEE evidence; serializes as `teekms evidence verify
/// --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceVerdict {
    /// Which TEE.
    pub tee: TeeKind,
    /// Authentic, collateral valid at that time, TCB level found.
    pub verified: bool,
    /// Verified and admitted by the policy.
    pub accepted: bool,
    /// Intel TCB status (null for SNP).
    pub tcb_status: Option<String>,
    /// Intel advisory ids that apply.
    pub advisory_ids: Vec<String>,
    /// Why not verified or not accepted.
    pub reasons: Vec<String>,
    /// Claims, whenever the evidence parses.
    pub claims: Option<Value>,
    /// DCAP only: bytes after the end of the quote's signature data (never used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trailing_bytes: Option<usize>,
    /// The evidence's report data (for the statement binding).
    #[serde(skip)]
    pub report_data: Option<[u8; 64]>,
}

struct Facts {
    debug: bool,
    service_td: bool,
    collateral_issued: Option<u64>,
    vlek: bool,
    migration_agent: bool,
}

/// Verifies `evidence` of `tee` with `collateral` at `now_unix` and appraises it against
/// `policy`. Never panics on hostile input; every defect is a reason. Revocation data is
/// required.
pub fn verify_evidence(
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
        Revocation::Required,
        now_unix,
    )
}

/// [`verify_evidence`], saying whether DCAP revocation data may be missing (SNP: the AMD
/// CRL is optional either way, as AMD's own tools treat it); the weaker rule only through
/// [`crate::danger`].
pub(crate) fn appraise_evidence(
    tee: TeeKind,
    evidence: &[u8],
    collateral: &CollateralFiles,
    policy: &Policy,
    revocation: Revocation,
    now_unix: u64,
) -> EvidenceVerdict {
    let mut v = EvidenceVerdict {
        tee,
        verified: false,
        accepted: false,
        tcb_status: None,
        advisory_ids: Vec::new(),
        reasons: Vec::new(),
        claims: None,
        trailing_bytes: None,
        report_data: None,
    };
    let facts = match tee {
        TeeKind::Sgx | TeeKind::Tdx => {
            let prepared = collateral.dcap().and_then(|c| c.prepare());
            let r = appraise_dcap_prepared(tee, evidence, prepared.as_ref(), revocation, now_unix);
            v.claims = r.claims;
            v.report_data = r.report_data;
            v.trailing_bytes = Some(r.trailing_bytes);
            v.verified = r.verified;
            v.tcb_status = r.tcb_status;
            v.advisory_ids = r.advisory_ids;
            v.reasons = r.reasons;
            Facts {
                debug: r.debug,
                service_td: r.service_td,
                collateral_issued: r.collateral_issued,
                vlek: false,
                migration_agent: false,
            }
        }
        TeeKind::Snp => {
            let coll = collateral.snp();
            let r = verify_snp_with(evidence, coll.as_ref(), now_unix);
            v.claims = r.claims;
            v.report_data = r.report.as_ref().map(|r| r.report_data);
            v.verified = r.verified;
            v.reasons = r.reasons;
            let report = r.report.as_ref();
            Facts {
                debug: report.is_some_and(|r| r.debug()),
                service_td: false,
                collateral_issued: r.vek_not_before,
                vlek: r.vlek,
                migration_agent: report.is_some_and(|r| r.migrate_ma()),
            }
        }
        TeeKind::Sim => {
            v.reasons.push("sim evidence is verified as part of an attestation document (teekms attest verify)".into());
            return v;
        }
    };
    if !v.verified {
        return v;
    }
    let claims = v.claims.clone().unwrap_or(Value::Null);
    let mut reasons = Vec::new();
    for (i, entry) in policy.entries().iter().enumerate() {
        let result = match entry {
            AcceptEntry::Sgx(e) if tee == TeeKind::Sgx => {
                appraise_sgx(e, &claims, &v, &facts, now_unix)
            }
            AcceptEntry::Tdx(e) if tee == TeeKind::Tdx => {
                appraise_tdx(e, &claims, &v, &facts, now_unix)
            }
            AcceptEntry::Snp(e) if tee == TeeKind::Snp => {
                appraise_snp(e, &claims, &facts, now_unix)
            }
            _ => continue,
        };
        match result {
            Ok(()) => {
                v.accepted = true;
                v.reasons.clear();
                return v;
            }
            Err(why) => reasons.push(format!("policy entry accept[{i}]: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push(format!("the policy has no entry for tee = \"{tee}\""));
    }
    v.reasons = reasons;
    v
}

/// Why evidence that verified does not meet one `[[accept]]` entry of a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// A measured value is not the one the entry pins.
    #[error("{field} {got} is not the pinned {want}")]
    NotPinned {
        /// The claim.
        field: &'static str,
        /// Its value.
        got: String,
        /// The pinned value.
        want: String,
    },
    /// A measured value is none of the values the entry pins.
    #[error("{field} {got} is not one of the pinned values")]
    NoneOfPinned {
        /// The claim.
        field: &'static str,
        /// Its value.
        got: String,
    },
    /// A claim has another value than the entry requires.
    #[error("{field} {got} is not {want}")]
    NotRequired {
        /// The claim.
        field: &'static str,
        /// Its value.
        got: String,
        /// The required value.
        want: u64,
    },
    /// A version or security number is below the entry's floor.
    #[error("{field} {got} is below {floor_name} {floor}")]
    BelowFloor {
        /// The claim.
        field: String,
        /// Its value.
        got: String,
        /// The policy field that sets the floor.
        floor_name: &'static str,
        /// The floor.
        floor: u64,
    },
    /// The TCB status is not one the entry accepts.
    #[error("TCB status {status} is not one of {allowed:?}")]
    TcbStatus {
        /// The status found.
        status: String,
        /// The statuses accepted.
        allowed: Vec<String>,
    },
    /// An advisory applies that the entry does not list.
    #[error("advisory {0} applies and is not listed in advisory_ids")]
    Advisory(String),
    /// The collateral is older than `max_collateral_age`.
    #[error(
        "collateral issued {age} s before the verification time is older than max_collateral_age ({max} s)"
    )]
    CollateralTooOld {
        /// Its age at the verification time (seconds).
        age: u64,
        /// The limit (seconds).
        max: u64,
    },
    /// `max_collateral_age` is set but the collateral has no issue date.
    #[error("max_collateral_age is set but the collateral's issue date is unknown")]
    CollateralAgeUnknown,
    /// A property of the TEE the entry does not allow (debug, a service TD, a
    /// migration agent, a VLEK).
    #[error("{0}")]
    NotAllowed(&'static str),
}

fn pin(claims: &Value, field: &'static str, expected: &[u8]) -> Result<(), Mismatch> {
    let got = claims[field].as_str().unwrap_or_default();
    if got == hex::encode(expected) {
        Ok(())
    } else {
        Err(Mismatch::NotPinned {
            field,
            got: got.to_owned(),
            want: hex::encode(expected),
        })
    }
}

fn collateral_age(max: Option<u64>, issued: Option<u64>, now: u64) -> Result<(), Mismatch> {
    match (max, issued) {
        (Some(max), Some(issued)) if now.saturating_sub(issued) > max => {
            Err(Mismatch::CollateralTooOld {
                age: now.saturating_sub(issued),
                max,
            })
        }
        (Some(_), None) => Err(Mismatch::CollateralAgeUnknown),
        _ => Ok(()),
    }
}

fn intel(c: &IntelCommon, v: &EvidenceVerdict, f: &Facts, now: u64) -> Result<(), Mismatch> {
    if f.debug && !c.allow_debug {
        return Err(Mismatch::NotAllowed(
            "debug is enabled and the policy does not allow_debug",
        ));
    }
    let status = v.tcb_status.as_deref().unwrap_or("unknown");
    if !c.tcb_status.iter().any(|s| s == status) {
        return Err(Mismatch::TcbStatus {
            status: status.to_owned(),
            allowed: c.tcb_status.clone(),
        });
    }
    if let Some(a) = v.advisory_ids.iter().find(|a| !c.advisory_ids.contains(a)) {
        return Err(Mismatch::Advisory(a.clone()));
    }
    collateral_age(c.max_collateral_age, f.collateral_issued, now)
}

fn appraise_sgx(
    e: &SgxEntry,
    claims: &Value,
    v: &EvidenceVerdict,
    f: &Facts,
    now: u64,
) -> Result<(), Mismatch> {
    intel(&e.common, v, f, now)?;
    if !e.mrenclave.is_empty()
        && !e
            .mrenclave
            .iter()
            .any(|m| pin(claims, "mrenclave", m).is_ok())
    {
        return Err(Mismatch::NoneOfPinned {
            field: "mrenclave",
            got: claims["mrenclave"].to_string(),
        });
    }
    if let Some(m) = &e.mrsigner {
        pin(claims, "mrsigner", m)?;
    }
    if let Some(p) = e.isv_prod_id
        && claims["isv_prod_id"].as_u64() != Some(u64::from(p))
    {
        return Err(Mismatch::NotRequired {
            field: "isv_prod_id",
            got: claims["isv_prod_id"].to_string(),
            want: u64::from(p),
        });
    }
    if let Some(min) = e.min_isv_svn
        && claims["isv_svn"].as_u64().unwrap_or(0) < u64::from(min)
    {
        return Err(Mismatch::BelowFloor {
            field: "isv_svn".into(),
            got: claims["isv_svn"].to_string(),
            floor_name: "min_isv_svn",
            floor: u64::from(min),
        });
    }
    Ok(())
}

fn appraise_tdx(
    e: &TdxEntry,
    claims: &Value,
    v: &EvidenceVerdict,
    f: &Facts,
    now: u64,
) -> Result<(), Mismatch> {
    intel(&e.common, v, f, now)?;
    if f.service_td && !e.allow_service_td {
        return Err(Mismatch::NotAllowed(
            "the TD is bound to a service TD (MR_SERVICETD is set) and the policy does not allow_service_td",
        ));
    }
    let pins = [
        ("mrtd", &e.mrtd),
        ("rtmr0", &e.rtmr[0]),
        ("rtmr1", &e.rtmr[1]),
        ("rtmr2", &e.rtmr[2]),
        ("rtmr3", &e.rtmr[3]),
        ("mr_config_id", &e.mr_config_id),
        ("mr_owner", &e.mr_owner),
    ];
    for (field, value) in pins {
        if let Some(m) = value {
            pin(claims, field, m)?;
        }
    }
    Ok(())
}

fn appraise_snp(e: &SnpEntry, claims: &Value, f: &Facts, now: u64) -> Result<(), Mismatch> {
    if f.debug && !e.allow_debug {
        return Err(Mismatch::NotAllowed(
            "the guest policy allows debugging and the policy does not allow_debug",
        ));
    }
    if f.migration_agent {
        return Err(Mismatch::NotAllowed(
            "the guest policy allows a migration agent, which teekms refuses",
        ));
    }
    if f.vlek && !e.allow_vlek {
        return Err(Mismatch::NotAllowed(
            "the report is signed by a VLEK and the policy sets allow_vlek = false",
        ));
    }
    if let Some(vmpl) = e.vmpl
        && claims["vmpl"].as_u64() != Some(u64::from(vmpl))
    {
        return Err(Mismatch::NotRequired {
            field: "vmpl",
            got: claims["vmpl"].to_string(),
            want: u64::from(vmpl),
        });
    }
    if let Some(m) = &e.measurement {
        pin(claims, "measurement", m)?;
    }
    if let Some(h) = &e.host_data {
        pin(claims, "host_data", h)?;
    }
    if let Some(min) = &e.min_reported_tcb {
        let t = &claims["reported_tcb_fields"];
        for (name, floor) in [
            ("fmc", min.fmc),
            ("bootloader", min.bootloader),
            ("tee", min.tee),
            ("snp", min.snp),
            ("microcode", min.microcode),
        ] {
            if let Some(floor) = floor {
                let got = t[name].as_u64();
                if got.is_none_or(|g| g < u64::from(floor)) {
                    return Err(Mismatch::BelowFloor {
                        field: format!("reported TCB {name}"),
                        got: t[name].to_string(),
                        floor_name: "min_reported_tcb",
                        floor: u64::from(floor),
                    });
                }
            }
        }
    }
    collateral_age(e.max_collateral_age, f.collateral_issued, now)
}
