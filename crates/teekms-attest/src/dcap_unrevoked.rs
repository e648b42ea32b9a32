//! DCAP appraisal without revocation data, for `--dangerous-skip-revocation` only.
//!
//! dcap-qvl refuses to verify without CRLs (its certificate checks deny an unknown
//! revocation status), which is the right default. An operator who has no CRLs at hand
//! (an air-gapped site with stale media) may still want the rest of the appraisal, and
//! says so with a flag whose name warns them. This module is that rest, written here on
//! dcap-qvl's parsers and collateral types: the same steps in the same order as Intel's
//! QVL, minus revocation. Where both paths run (a vector with its CRLs), the tests check
//! that they agree on the outcome, the TCB status and the advisories.

use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use dcap_qvl::quote::{Quote, Report, TDAttributes, TDReport10};
use dcap_qvl::tcb_info::{TcbInfo, TcbLevel, TcbStatus, TcbStatusWithAdvisory, TdxModuleTcbLevel};
use dcap_qvl::{QeIdentity, QeTcbLevel};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::EndEntityCert;

use crate::dcap_collateral::{
    DcapCollateral, INTEL_SGX_ROOT_CA_DER, SignedQeIdentity, SignedTcbInfo, TEE_TYPE_SGX,
};

/// Intel's attestation key type 2: ECDSA-256 with P-256.
const ECDSA_P256_KEY: u16 = 2;
/// Intel's chains are short (leaf, one CA, root); anything longer is not Intel's.
const MAX_CHAIN: usize = 4;

/// Why a quote fails the appraisal without revocation data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UnrevokedError {
    /// A check with a fixed reason (the quote, the QE, the TD or the TCB level).
    #[error("{0}")]
    Check(&'static str),
    /// A collateral file does not parse or says something inconsistent.
    #[error("{file} is malformed: {reason}")]
    Malformed {
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A collateral file is not within its validity at the verification time.
    #[error("{file} {when}")]
    OutOfDate {
        /// The file.
        file: &'static str,
        /// Not valid yet, or expired, and why.
        when: &'static str,
    },
    /// A collateral file's signature is not hex, or does not verify.
    #[error("{file}: {what}")]
    Signature {
        /// The file.
        file: &'static str,
        /// What is wrong with the signature.
        what: &'static str,
    },
    /// A certificate chain does not lead to the pinned Intel root.
    #[error("the {what}'s {reason}")]
    Chain {
        /// Whose chain.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The QE identity is for another quoting enclave.
    #[error("qe_identity.json is for {id} version {version}, this quote needs {want}")]
    OtherQe {
        /// Its id.
        id: String,
        /// Its version.
        version: u8,
        /// The id this quote needs.
        want: &'static str,
    },
    /// The TCB info is for another TEE or of an old version.
    #[error("tcb_info.json is {id} TCB info version {version}, not for this quote")]
    OtherTcbInfo {
        /// Its id.
        id: String,
        /// Its version.
        version: u8,
    },
    /// A security version number is below every level Intel publishes.
    #[error("the {what} ISVSVN {svn} is below every level of {of}")]
    BelowEveryLevel {
        /// Whose number.
        what: &'static str,
        /// Its value.
        svn: u16,
        /// The structure whose levels were searched.
        of: &'static str,
    },
    /// A level holds a TCB status Intel does not define for its structure.
    #[error("{structure} holds an unexpected TCB status {status}")]
    UnknownStatus {
        /// The structure.
        structure: &'static str,
        /// The status.
        status: String,
    },
    /// The pinned root does not parse (a build defect).
    #[error("the pinned Intel root does not parse: {0}")]
    PinnedRoot(String),
}

/// The TCB verdict of a quote that verified.
pub(crate) struct Appraisal {
    pub status: String,
    pub advisory_ids: Vec<String>,
}

/// The 384-byte SGX report of the quoting enclave, the fields the appraisal reads.
struct QeReport {
    misc_select: u32,
    attributes: [u8; 16],
    mr_signer: [u8; 32],
    isv_prod_id: u16,
    isv_svn: u16,
    report_data: [u8; 64],
}

impl QeReport {
    fn parse(raw: &[u8; 384]) -> QeReport {
        let arr = |range: std::ops::Range<usize>| raw[range].to_vec();
        let u16_at = |o: usize| u16::from_le_bytes([raw[o], raw[o + 1]]);
        QeReport {
            misc_select: u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]),
            attributes: arr(48..64).try_into().expect("16 bytes"),
            mr_signer: arr(128..160).try_into().expect("32 bytes"),
            isv_prod_id: u16_at(256),
            isv_svn: u16_at(258),
            report_data: arr(320..384).try_into().expect("64 bytes"),
        }
    }
}

/// Checks `quote` (already cut to its extent and parsed) with `coll`, without CRLs.
pub(crate) fn appraise(
    raw: &[u8],
    quote: &Quote,
    coll: &DcapCollateral,
    now_unix: u64,
) -> Result<Appraisal, UnrevokedError> {
    let root = CertificateDer::from(INTEL_SGX_ROOT_CA_DER);
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| UnrevokedError::PinnedRoot(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now_unix));
    let chain_check = |pem: &[u8], what: &str| signer_key(pem, what, &anchor, time);

    let is_sgx = quote.header.tee_type == TEE_TYPE_SGX;
    if quote.header.qe_vendor_id != dcap_qvl::INTEL_QE_VENDOR_ID {
        return Err(UnrevokedError::Check("the quote's QE vendor is not Intel"));
    }
    if quote.header.attestation_key_type != ECDSA_P256_KEY {
        return Err(UnrevokedError::Check(
            "unsupported attestation key type (ECDSA P-256 required)",
        ));
    }
    let auth = quote.auth_data.clone().into_v3();

    // 1. TCB info: issued by Intel's TCB signing key, directly under the root, in date.
    let signed: SignedTcbInfo<'_> =
        serde_json::from_slice(&coll.tcb_info).map_err(|e| malformed("tcb_info.json", e))?;
    let mut tcb_info: TcbInfo =
        serde_json::from_str(signed.body.get()).map_err(|e| malformed("tcb_info.json", e))?;
    in_date(
        &tcb_info.issue_date,
        &tcb_info.next_update,
        now_unix,
        "tcb_info.json",
    )?;
    let tcb_signer = chain_check(coll.tcb_info_issuer_chain.as_bytes(), "TCB info signer")?;
    verify_p256(
        &tcb_signer.key,
        signed.body.get().as_bytes(),
        &hex_sig(&signed.signature, "tcb_info.json")?,
    )
    .map_err(|()| UnrevokedError::Signature {
        file: "tcb_info.json",
        what: "signature is invalid",
    })?;
    if tcb_signer.intermediates != 0 {
        return Err(UnrevokedError::Check(
            "the TCB info signer must be issued directly by the Intel root",
        ));
    }

    // 2. QE identity, the same way.
    let signed: SignedQeIdentity<'_> =
        serde_json::from_slice(&coll.qe_identity).map_err(|e| malformed("qe_identity.json", e))?;
    let qe_identity: QeIdentity =
        serde_json::from_str(signed.body.get()).map_err(|e| malformed("qe_identity.json", e))?;
    in_date(
        &qe_identity.issue_date,
        &qe_identity.next_update,
        now_unix,
        "qe_identity.json",
    )?;
    let qe_signer = chain_check(
        coll.qe_identity_issuer_chain.as_bytes(),
        "QE identity signer",
    )?;
    verify_p256(
        &qe_signer.key,
        signed.body.get().as_bytes(),
        &hex_sig(&signed.signature, "qe_identity.json")?,
    )
    .map_err(|()| UnrevokedError::Signature {
        file: "qe_identity.json",
        what: "signature is invalid",
    })?;
    if qe_signer.intermediates != 0 {
        return Err(UnrevokedError::Check(
            "the QE identity signer must be issued directly by the Intel root",
        ));
    }
    let (want_id, versions): (&str, &[u8]) = if is_sgx {
        ("QE", &[2])
    } else {
        ("TD_QE", &[2, 3])
    };
    if qe_identity.id != want_id || !versions.contains(&qe_identity.version) {
        return Err(UnrevokedError::OtherQe {
            id: qe_identity.id.clone(),
            version: qe_identity.version,
            want: want_id,
        });
    }

    // 3. The PCK certificate chain inside the quote, and the platform's SVNs in it.
    let pck_pem = quote
        .raw_cert_chain()
        .map_err(|_| UnrevokedError::Check("the quote carries no PCK certificate chain"))?;
    let pck = chain_check(pck_pem, "PCK certificate")?;
    let pck_ext =
        dcap_qvl::intel::parse_pck_extension(&pck.leaf).map_err(|e| UnrevokedError::Chain {
            what: "PCK certificate".into(),
            reason: format!("SGX extension: {e:#}"),
        })?;

    // 4–5. The QE report is signed by the PCK key and binds the attestation key.
    verify_p256(&pck.key, &auth.qe_report, &auth.qe_report_signature).map_err(|()| {
        UnrevokedError::Check("the QE report signature (by the PCK key) is invalid")
    })?;
    let qe_report = QeReport::parse(&auth.qe_report);
    let mut bound = digest::Context::new(&digest::SHA256);
    bound.update(&auth.ecdsa_attestation_key);
    bound.update(&auth.qe_auth_data.data);
    if qe_report.report_data[..32] != *bound.finish().as_ref() {
        return Err(UnrevokedError::Check(
            "the QE report does not bind the quote's attestation key",
        ));
    }

    // 6. The QE is Intel's, and its TCB level.
    let qe_level = qe_tcb_level(&qe_report, &qe_identity)?;

    // 7. The TEE report is signed by the attestation key.
    let mut attestation_key = [0x04u8; 65];
    attestation_key[1..].copy_from_slice(&auth.ecdsa_attestation_key);
    let signed_part = raw
        .get(..quote.signed_length())
        .ok_or(UnrevokedError::Check(
            "the quote is shorter than its signed part",
        ))?;
    verify_p256(&attestation_key, signed_part, &auth.ecdsa_signature).map_err(|()| {
        UnrevokedError::Check("the quote signature (by the attestation key) is invalid")
    })?;

    // 8. The platform's TCB level (and for TDX, the module's).
    if hex::decode(&tcb_info.fmspc).ok().as_deref() != Some(&pck_ext.fmspc[..]) {
        return Err(UnrevokedError::Check(
            "tcb_info.json is for another platform (FMSPC differs from the PCK certificate's)",
        ));
    }
    if hex::decode(&tcb_info.pce_id).ok().as_deref() != Some(&pck_ext.pce_id[..]) {
        return Err(UnrevokedError::Check(
            "tcb_info.json is for another PCE (PCEID differs from the PCK certificate's)",
        ));
    }
    match (is_sgx, tcb_info.id.as_str()) {
        (true, "SGX") if tcb_info.version >= 2 => {}
        (false, "TDX") if tcb_info.version >= 3 => {}
        _ => {
            return Err(UnrevokedError::OtherTcbInfo {
                id: tcb_info.id.clone(),
                version: tcb_info.version,
            });
        }
    }
    // Highest level first, as Intel publishes them; the first one met applies.
    tcb_info.tcb_levels.sort_by(|a, b| {
        (&b.tcb.sgx_components, b.tcb.pce_svn, &b.tcb.tdx_components).cmp(&(
            &a.tcb.sgx_components,
            a.tcb.pce_svn,
            &a.tcb.tdx_components,
        ))
    });
    let (platform, current) = match &quote.report {
        Report::SgxEnclave(_) => (
            platform_level(&tcb_info, &pck_ext.cpu_svn, pck_ext.pce_svn, None)?.clone(),
            None,
        ),
        report => {
            let td = td10(report);
            check_tdx_module(&tcb_info, td)?;
            let launch = tdx_level(&tcb_info, &pck_ext, &td.tee_tcb_svn)?;
            let current = match report {
                Report::TD15(r) => Some(tdx_level(&tcb_info, &pck_ext, &r.tee_tcb_svn2)?),
                Report::TD15Ex(r) => Some(tdx_level(&tcb_info, &pck_ext, &r.base.tee_tcb_svn2)?),
                _ => None,
            };
            check_td_attributes(report, td)?;
            (launch, current)
        }
    };

    // 9–10. Platform merged with the QE; a TD 1.5's current TCB may advise a relaunch.
    let mut verdict = TcbStatusWithAdvisory::new(platform.tcb_status, platform.advisory_ids).merge(
        &TcbStatusWithAdvisory::new(qe_level.tcb_status, qe_level.advisory_ids),
    );
    let current = current.map(|c| merge_component(c.tcb_status, qe_level.tcb_status));
    if verdict.status == TcbStatus::Revoked || current == Some(TcbStatus::Revoked) {
        return Err(UnrevokedError::Check("the platform's TCB level is Revoked"));
    }
    if let Some(current) = current {
        verdict.status = relaunch_advice(verdict.status, current);
    }
    Ok(Appraisal {
        status: verdict.status.to_string(),
        advisory_ids: verdict.advisory_ids,
    })
}

/// A signer certified by a chain that ends in the pinned Intel root.
struct Signer {
    leaf: Vec<u8>,
    /// The leaf's SEC1 public key.
    key: Vec<u8>,
    /// Certificates between the leaf and the root on the verified path.
    intermediates: usize,
}

fn signer_key(
    pem: &[u8],
    what: &str,
    anchor: &rustls_pki_types::TrustAnchor<'_>,
    time: UnixTime,
) -> Result<Signer, UnrevokedError> {
    let certs = crate::pem::certificates(pem);
    let Some((leaf, rest)) = certs.split_first() else {
        return Err(chain(what, "certificate chain is empty"));
    };
    if certs.len() > MAX_CHAIN {
        return Err(chain(what, "certificate chain is too long"));
    }
    let intermediates: Vec<CertificateDer<'_>> =
        rest.iter().map(|c| CertificateDer::from(&c[..])).collect();
    let leaf_der = CertificateDer::from(&leaf[..]);
    let ee = EndEntityCert::try_from(&leaf_der)
        .map_err(|e| chain(what, format!("certificate does not parse: {e}")))?;
    let path = ee
        .verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            std::slice::from_ref(anchor),
            &intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            chain(
                what,
                format!("certificate chain does not verify to the Intel SGX Root CA: {e}"),
            )
        })?;
    let intermediates = path.intermediate_certificates().count();
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| chain(what, format!("certificate does not parse: {e}")))?;
    let key = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec();
    Ok(Signer {
        leaf: leaf.clone(),
        key,
        intermediates,
    })
}

fn verify_p256(key: &[u8], message: &[u8], raw_signature: &[u8]) -> Result<(), ()> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(message, raw_signature)
        .map_err(|_| ())
}

fn hex_sig(text: &str, file: &'static str) -> Result<Vec<u8>, UnrevokedError> {
    hex::decode(text).map_err(|_| UnrevokedError::Signature {
        file,
        what: "the signature is not hex",
    })
}

fn in_date(
    issued: &str,
    next_update: &str,
    now: u64,
    file: &'static str,
) -> Result<(), UnrevokedError> {
    let (Some(issued), Some(next)) = (
        crate::parse_rfc3339(issued),
        crate::parse_rfc3339(next_update),
    ) else {
        return Err(malformed(file, "issueDate or nextUpdate is not a date"));
    };
    if now < issued {
        return Err(UnrevokedError::OutOfDate {
            file,
            when: "is not valid yet (issued after the verification time)",
        });
    }
    if now > next {
        return Err(UnrevokedError::OutOfDate {
            file,
            when: "has expired (nextUpdate is before the verification time)",
        });
    }
    Ok(())
}

/// Statuses Intel defines for each structure; anything else is not a level we know.
fn known_status(
    status: TcbStatus,
    in_structure: &'static str,
    known: &[TcbStatus],
) -> Result<(), UnrevokedError> {
    if known.contains(&status) {
        Ok(())
    } else {
        Err(UnrevokedError::UnknownStatus {
            structure: in_structure,
            status: status.to_string(),
        })
    }
}

fn qe_tcb_level(qe: &QeReport, id: &QeIdentity) -> Result<QeTcbLevel, UnrevokedError> {
    use TcbStatus::*;
    if qe.mr_signer != id.mrsigner {
        return Err(UnrevokedError::Check(
            "the quoting enclave is not Intel's (MRSIGNER differs from the QE identity)",
        ));
    }
    if qe.attributes[0] & 0x02 != 0 {
        return Err(UnrevokedError::Check(
            "the quoting enclave runs in debug mode",
        ));
    }
    if qe.isv_prod_id != id.isvprodid {
        return Err(UnrevokedError::Check(
            "the quoting enclave's ISVPRODID differs from the QE identity",
        ));
    }
    let mask = u32::from_le_bytes(id.miscselect_mask);
    if qe.misc_select & mask != u32::from_le_bytes(id.miscselect) & mask {
        return Err(UnrevokedError::Check(
            "the quoting enclave's MISCSELECT differs from the QE identity",
        ));
    }
    let attributes_match = qe
        .attributes
        .iter()
        .zip(&id.attributes)
        .zip(&id.attributes_mask)
        .all(|((have, want), mask)| have & mask == want & mask);
    if !attributes_match {
        return Err(UnrevokedError::Check(
            "the quoting enclave's ATTRIBUTES differ from the QE identity",
        ));
    }
    let level = id
        .tcb_levels
        .iter()
        .find(|l| qe.isv_svn >= l.tcb.isvsvn)
        .ok_or(UnrevokedError::BelowEveryLevel {
            what: "quoting enclave's",
            svn: qe.isv_svn,
            of: "the QE identity",
        })?;
    let known = [
        UpToDate,
        OutOfDate,
        ConfigurationNeeded,
        Revoked,
        OutOfDateConfigurationNeeded,
    ];
    known_status(level.tcb_status, "qe_identity.json", &known)?;
    Ok(level.clone())
}

fn platform_level<'a>(
    info: &'a TcbInfo,
    cpu_svn: &[u8; 16],
    pce_svn: u16,
    tee_tcb_svn: Option<&[u8; 16]>,
) -> Result<&'a TcbLevel, UnrevokedError> {
    use TcbStatus::*;
    for level in &info.tcb_levels {
        let short = level
            .shortfalls(cpu_svn, pce_svn, tee_tcb_svn)
            .map_err(|e| malformed("tcb_info.json", format!("{e:#}")))?;
        if short.is_empty() {
            let known = [
                UpToDate,
                OutOfDate,
                ConfigurationNeeded,
                Revoked,
                OutOfDateConfigurationNeeded,
                SWHardeningNeeded,
                ConfigurationAndSWHardeningNeeded,
            ];
            known_status(level.tcb_status, "tcb_info.json", &known)?;
            return Ok(level);
        }
    }
    Err(UnrevokedError::Check(
        "no matching TCB level: the platform's TCB is not in tcb_info.json",
    ))
}

fn td10(report: &Report) -> &TDReport10 {
    match report {
        Report::TD10(r) => r,
        Report::TD15(r) => &r.base,
        Report::TD15Ex(r) => &r.base.base,
        Report::SgxEnclave(_) => unreachable!("only called for TD reports"),
    }
}

/// A TD's level: the platform level for its TEE_TCB_SVN merged with the TDX module's.
fn tdx_level(
    info: &TcbInfo,
    pck: &dcap_qvl::intel::PckExtension,
    tee_tcb_svn: &[u8; 16],
) -> Result<TcbLevel, UnrevokedError> {
    let mut level = platform_level(info, &pck.cpu_svn, pck.pce_svn, Some(tee_tcb_svn))?.clone();
    let Some(identity) = info
        .tdx_module_identity(tee_tcb_svn)
        .map_err(|e| malformed("tcb_info.json", format!("{e:#}")))?
    else {
        return Ok(level);
    };
    let module: &TdxModuleTcbLevel = identity
        .tcb_levels
        .iter()
        .find(|l| l.shortfall(tee_tcb_svn).is_none())
        .ok_or(UnrevokedError::BelowEveryLevel {
            what: "TDX module's",
            svn: u16::from(tee_tcb_svn[0]),
            of: "its identity",
        })?;
    use TcbStatus::*;
    known_status(
        module.tcb_status,
        "tcb_info.json (TDX module)",
        &[UpToDate, OutOfDate, Revoked],
    )?;
    level.tcb_status = merge_component(level.tcb_status, module.tcb_status);
    for id in &module.advisory_ids {
        if !level.advisory_ids.contains(id) {
            level.advisory_ids.push(id.clone());
        }
    }
    Ok(level)
}

/// The TDX module that made the report is Intel's: MRSIGNER_SEAM and SEAM attributes as
/// the TCB info says (its module identity for this module version, or the base module).
fn check_tdx_module(info: &TcbInfo, td: &TDReport10) -> Result<(), UnrevokedError> {
    let base = info
        .tdx_module
        .as_ref()
        .ok_or(UnrevokedError::Check("tcb_info.json has no tdxModule"))?;
    let identity = info
        .tdx_module_identity(&td.tee_tcb_svn)
        .map_err(|e| malformed("tcb_info.json", format!("{e:#}")))?;
    let (signer, attributes, mask) = match identity {
        Some(i) => (&i.mrsigner, &i.attributes, &i.attributes_mask),
        None => (&base.mrsigner, &base.attributes, &base.attributes_mask),
    };
    let decode = |h: &str, len: usize| {
        hex::decode(h)
            .ok()
            .filter(|b| b.len() == len)
            .ok_or_else(|| malformed("tcb_info.json", "a TDX module field is not hex of its size"))
    };
    let (signer, attributes, mask) = (
        decode(signer, 48)?,
        decode(attributes, 8)?,
        decode(mask, 8)?,
    );
    if td.mr_signer_seam[..] != signer[..] {
        return Err(UnrevokedError::Check(
            "the TDX module is not Intel's (MRSIGNER_SEAM differs from tcb_info.json)",
        ));
    }
    for ((have, want), mask) in td.seam_attributes.iter().zip(&attributes).zip(&mask) {
        if have & mask != want & mask || have & !mask != 0 {
            return Err(UnrevokedError::Check(
                "the TDX module's SEAM attributes differ from tcb_info.json",
            ));
        }
    }
    Ok(())
}

/// TD attributes that make the report untrustworthy whatever the policy says (debug and
/// a service-TD binding are the policy's to decide).
fn check_td_attributes(report: &Report, td: &TDReport10) -> Result<(), UnrevokedError> {
    let attrs = TDAttributes::parse(td.td_attributes)
        .map_err(|_| UnrevokedError::Check("TD attributes do not parse"))?;
    if attrs.reserved != 0 {
        return Err(UnrevokedError::Check("reserved TD attribute bits are set"));
    }
    if attrs.sec.migratable {
        return Err(UnrevokedError::Check("the TD is migratable"));
    }
    if !attrs.sec.sept_ve_disable {
        return Err(UnrevokedError::Check(
            "the TD does not have SEPT_VE_DISABLE set",
        ));
    }
    if attrs.sec.servtd_ext && matches!(report, Report::TD10(_)) {
        return Err(UnrevokedError::Check("a TD 1.0 report with SERVTD_EXT set"));
    }
    Ok(())
}

/// A platform status combined with a component's (QE, TDX module), as Intel's QVL does:
/// a revoked component revokes; an out-of-date one makes the platform out of date.
fn merge_component(platform: TcbStatus, component: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    match (platform, component) {
        (_, Revoked) => Revoked,
        (UpToDate | SWHardeningNeeded, OutOfDate) => OutOfDate,
        (ConfigurationNeeded | ConfigurationAndSWHardeningNeeded, OutOfDate) => {
            OutOfDateConfigurationNeeded
        }
        (status, _) => status,
    }
}

/// A TD launched on an out-of-date TCB whose current TCB is no longer out of date should
/// be relaunched rather than replaced.
fn relaunch_advice(launch: TcbStatus, current: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    let needs_config = |s| {
        matches!(
            s,
            ConfigurationNeeded
                | OutOfDateConfigurationNeeded
                | ConfigurationAndSWHardeningNeeded
                | TDRelaunchAdvisedConfigurationNeeded
        )
    };
    match (launch, current) {
        (
            OutOfDate | OutOfDateConfigurationNeeded,
            UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded,
        ) => {
            if needs_config(launch) || needs_config(current) {
                TDRelaunchAdvisedConfigurationNeeded
            } else {
                TDRelaunchAdvised
            }
        }
        (status, _) => status,
    }
}

fn malformed(file: &'static str, reason: impl std::fmt::Display) -> UnrevokedError {
    UnrevokedError::Malformed {
        file,
        reason: reason.to_string(),
    }
}

fn chain(what: &str, reason: impl Into<String>) -> UnrevokedError {
    UnrevokedError::Chain {
        what: what.into(),
        reason: reason.into(),
    }
}
