use std::path::Path;

use teekms_attest::collateral::{CollateralFiles, KNOWN_FILES, MAX_FILE_LEN};
use teekms_attest::danger::verify_evidence_skipping_missing_revocation;
use teekms_attest::evidence::verify_evidence;
use teekms_attest::{Policy, TeeKind};

use crate::cli::{EvidenceCmd, RealTee};
use crate::failure::{CmdResult, Failure};
use crate::paths;

/// Largest evidence file read.
const MAX_EVIDENCE: u64 = 1024 * 1024;

pub fn run(cmd: EvidenceCmd) -> CmdResult {
    let EvidenceCmd::Verify {
        tee,
        evidence,
        collateral,
        at,
        policy,
        dangerous_skip_revocation,
        json,
    } = cmd;
    let tee = tee_kind(tee);
    let at = super::time_arg(&at)?;
    let policy = match policy {
        Some(p) => paths::load_policy(&p)?,
        None => Policy::default_for(tee).expect("every real TEE has a default policy"),
    };
    let bytes = paths::read(&evidence, "evidence", MAX_EVIDENCE)?;
    let files = read_collateral_dir(&collateral)?;
    if dangerous_skip_revocation && matches!(tee, TeeKind::Sgx | TeeKind::Tdx) {
        let missing: Vec<&str> = ["pck_crl.der", "pck_crl_issuer_chain.pem", "root_ca_crl.der"]
            .into_iter()
            .filter(|name| files.get(name).is_none())
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "teekms: warning: --dangerous-skip-revocation: {} missing, so revocation is NOT checked; a revoked platform or Intel CA would be accepted",
                missing.join(", ")
            );
        }
    }
    let verdict = if dangerous_skip_revocation {
        verify_evidence_skipping_missing_revocation(tee, &bytes, &files, &policy, at)
    } else {
        verify_evidence(tee, &bytes, &files, &policy, at)
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&verdict).expect("verdicts serialize")
        );
    } else {
        let word = if verdict.accepted {
            "ACCEPTED"
        } else {
            "REJECTED"
        };
        println!("{word}: {tee} evidence (verified: {})", verdict.verified);
        if let Some(s) = &verdict.tcb_status {
            println!("  tcb_status: {s} {:?}", verdict.advisory_ids);
        }
        super::print_claims(verdict.claims.as_ref());
        for r in &verdict.reasons {
            println!("  - {r}");
        }
    }
    if verdict.accepted {
        Ok(())
    } else {
        Err(Failure::rejected(format!(
            "{tee} evidence rejected: {}",
            verdict.reasons.join("; ")
        )))
    }
}

/// Reads the known files of a collateral directory; other files are ignored (with a note).
pub fn read_collateral_dir(dir: &Path) -> Result<CollateralFiles, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Failure::usage(format!(
            "cannot read collateral directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files = CollateralFiles::default();
    for entry in entries {
        let entry =
            entry.map_err(|e| Failure::usage(format!("cannot read {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if KNOWN_FILES.contains(&name.as_str()) {
            let bytes = paths::read(&entry.path(), "collateral file", MAX_FILE_LEN as u64)?;
            files.insert(&name, bytes);
        }
    }
    Ok(files)
}

pub fn tee_kind(tee: RealTee) -> TeeKind {
    match tee {
        RealTee::Sgx => TeeKind::Sgx,
        RealTee::Tdx => TeeKind::Tdx,
        RealTee::Snp => TeeKind::Snp,
    }
}
