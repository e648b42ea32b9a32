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
) -> Result<Appraisal, String> {
    let root = CertificateDer::from(INTEL_SGX_ROOT_CA_DER);
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| format!("the pinned Intel root does not parse: {e}"))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now_unix));
    let chain_check = |pem: &[u8], what: &str| signer_key(pem, what, &anchor, time);

    let is_sgx = quote.header.tee_type == TEE_TYPE_SGX;
    if quote.header.qe_vendor_id != dcap_qvl::INTEL_QE_VENDOR_ID {
        return Err("the quote's QE vendor is not Intel".into());
    }
    if quote.header.attestation_key_type != ECDSA_P256_KEY {
        return Err("unsupported attestation key type (ECDSA P-256 required)".into());
    }
    let auth = quote.auth_data.clone().into_v3();

    // 1. TCB info: issued by Intel's TCB signing key, directly under the root, in date.
    let signed: SignedTcbInfo<'_> = serde_json::from_slice(&coll.tcb_info)
        .map_err(|e| format!("tcb_info.json is malformed: {e}"))?;
    let mut tcb_info: TcbInfo = serde_json::from_str(signed.body.get())
        .map_err(|e| format!("tcb_info.json is malformed: {e}"))?;
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
    .map_err(|()| "tcb_info.json: signature is invalid".to_string())?;
    if tcb_signer.intermediates != 0 {
        return Err("the TCB info signer must be issued directly by the Intel root".into());
    }

    // 2. QE identity, the same way.
    let signed: SignedQeIdentity<'_> = serde_json::from_slice(&coll.qe_identity)
        .map_err(|e| format!("qe_identity.json is malformed: {e}"))?;
    let qe_identity: QeIdentity = serde_json::from_str(signed.body.get())
        .map_err(|e| format!("qe_identity.json is malformed: {e}"))?;
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
    .map_err(|()| "qe_identity.json: signature is invalid".to_string())?;
    if qe_signer.intermediates != 0 {
        return Err("the QE identity signer must be issued directly by the Intel root".into());
    }
    let (want_id, versions): (&str, &[u8]) = if is_sgx {
        ("QE", &[2])
    } else {
        ("TD_QE", &[2, 3])
    };
    if qe_identity.id != want_id || !versions.contains(&qe_identity.version) {
        return Err(format!(
            "qe_identity.json is for {} version {}, this quote needs {want_id}",
            qe_identity.id, qe_identity.version
        ));
    }

    // 3. The PCK certificate chain inside the quote, and the platform's SVNs in it.
    let pck_pem = quote
        .raw_cert_chain()
        .map_err(|_| "the quote carries no PCK certificate chain".to_string())?;
    let pck = chain_check(pck_pem, "PCK certificate")?;
    let pck_ext = dcap_qvl::intel::parse_pck_extension(&pck.leaf)
        .map_err(|e| format!("the PCK certificate's SGX extension: {e:#}"))?;

    // 4–5. The QE report is signed by the PCK key and binds the attestation key.
    verify_p256(&pck.key, &auth.qe_report, &auth.qe_report_signature)
        .map_err(|()| "the QE report signature (by the PCK key) is invalid".to_string())?;
    let qe_report = QeReport::parse(&auth.qe_report);
    let mut bound = digest::Context::new(&digest::SHA256);
    bound.update(&auth.ecdsa_attestation_key);
    bound.update(&auth.qe_auth_data.data);
    if qe_report.report_data[..32] != *bound.finish().as_ref() {
        return Err("the QE report does not bind the quote's attestation key".into());
    }

    // 6. The QE is Intel's, and its TCB level.
    let qe_level = qe_tcb_level(&qe_report, &qe_identity)?;

    // 7. The TEE report is signed by the attestation key.
    let mut attestation_key = [0x04u8; 65];
    attestation_key[1..].copy_from_slice(&auth.ecdsa_attestation_key);
    let signed_part = raw
        .get(..quote.signed_length())
        .ok_or("the quote is shorter than its signed part")?;
    verify_p256(&attestation_key, signed_part, &auth.ecdsa_signature)
        .map_err(|()| "the quote signature (by the attestation key) is invalid".to_string())?;

    // 8. The platform's TCB level (and for TDX, the module's).
    if hex::decode(&tcb_info.fmspc).ok().as_deref() != Some(&pck_ext.fmspc[..]) {
        return Err(
            "tcb_info.json is for another platform (FMSPC differs from the PCK certificate's)"
                .into(),
        );
    }
    if hex::decode(&tcb_info.pce_id).ok().as_deref() != Some(&pck_ext.pce_id[..]) {
        return Err(
            "tcb_info.json is for another PCE (PCEID differs from the PCK certificate's)".into(),
        );
    }
    match (is_sgx, tcb_info.id.as_str()) {
        (true, "SGX") if tcb_info.version >= 2 => {}
        (false, "TDX") if tcb_info.version >= 3 => {}
        _ => {
            return Err(format!(
                "tcb_info.json is {} TCB info version {}, not for this quote",
                tcb_info.id, tcb_info.version
            ));
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
        return Err("the platform's TCB level is Revoked".into());
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
) -> Result<Signer, String> {
    let certs = crate::pem::certificates(pem);
    let Some((leaf, rest)) = certs.split_first() else {
        return Err(format!("the {what}'s certificate chain is empty"));
    };
    if certs.len() > MAX_CHAIN {
        return Err(format!("the {what}'s certificate chain is too long"));
    }
    let intermediates: Vec<CertificateDer<'_>> =
        rest.iter().map(|c| CertificateDer::from(&c[..])).collect();
    let leaf_der = CertificateDer::from(&leaf[..]);
    let ee = EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("the {what}'s certificate does not parse: {e}"))?;
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
            format!("the {what}'s certificate chain does not verify to the Intel SGX Root CA: {e}")
        })?;
    let intermediates = path.intermediate_certificates().count();
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| format!("the {what}'s certificate does not parse: {e}"))?;
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

fn hex_sig(text: &str, file: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|_| format!("{file}: the signature is not hex"))
}

fn in_date(issued: &str, next_update: &str, now: u64, file: &str) -> Result<(), String> {
    let (Some(issued), Some(next)) = (
        crate::parse_rfc3339(issued),
        crate::parse_rfc3339(next_update),
    ) else {
        return Err(format!("{file}: issueDate or nextUpdate is not a date"));
    };
    if now < issued {
        return Err(format!(
            "{file} is not valid yet (issued after the verification time)"
        ));
    }
    if now > next {
        return Err(format!(
            "{file} has expired (nextUpdate is before the verification time)"
        ));
    }
    Ok(())
}

/// Statuses Intel defines for each structure; anything else is not a level we know.
fn known_status(status: TcbStatus, in_structure: &str, known: &[TcbStatus]) -> Result<(), String> {
    if known.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "{in_structure} holds an unexpected TCB status {status}"
        ))
    }
}

fn qe_tcb_level(qe: &QeReport, id: &QeIdentity) -> Result<QeTcbLevel, String> {
    use TcbStatus::*;
    if qe.mr_signer != id.mrsigner {
        return Err(
            "the quoting enclave is not Intel's (MRSIGNER differs from the QE identity)".into(),
        );
    }
    if qe.attributes[0] & 0x02 != 0 {
        return Err("the quoting enclave runs in debug mode".into());
    }
    if qe.isv_prod_id != id.isvprodid {
        return Err("the quoting enclave's ISVPRODID differs from the QE identity".into());
    }
    let mask = u32::from_le_bytes(id.miscselect_mask);
    if qe.misc_select & mask != u32::from_le_bytes(id.miscselect) & mask {
        return Err("the quoting enclave's MISCSELECT differs from the QE identity".into());
    }
    let attributes_match = qe
        .attributes
        .iter()
        .zip(&id.attributes)
        .zip(&id.attributes_mask)
        .all(|((have, want), mask)| have & mask == want & mask);
    if !attributes_match {
        return Err("the quoting enclave's ATTRIBUTES differ from the QE identity".into());
    }
    let level = id
        .tcb_levels
        .iter()
        .find(|l| qe.isv_svn >= l.tcb.isvsvn)
        .ok_or_else(|| {
            format!(
                "the quoting enclave's ISVSVN {} is below every level of the QE identity",
                qe.isv_svn
            )
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
) -> Result<&'a TcbLevel, String> {
    use TcbStatus::*;
    for level in &info.tcb_levels {
        let short = level
            .shortfalls(cpu_svn, pce_svn, tee_tcb_svn)
            .map_err(|e| format!("tcb_info.json: {e:#}"))?;
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
    Err("no matching TCB level: the platform's TCB is not in tcb_info.json".into())
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
) -> Result<TcbLevel, String> {
    let mut level = platform_level(info, &pck.cpu_svn, pck.pce_svn, Some(tee_tcb_svn))?.clone();
    let Some(identity) = info
        .tdx_module_identity(tee_tcb_svn)
        .map_err(|e| format!("tcb_info.json: {e:#}"))?
    else {
        return Ok(level);
    };
    let module: &TdxModuleTcbLevel = identity
        .tcb_levels
        .iter()
        .find(|l| l.shortfall(tee_tcb_svn).is_none())
        .ok_or_else(|| {
            format!(
                "the TDX module's ISVSVN {} is below every level of its identity",
                tee_tcb_svn[0]
            )
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
fn check_tdx_module(info: &TcbInfo, td: &TDReport10) -> Result<(), String> {
    let base = info
        .tdx_module
        .as_ref()
        .ok_or("tcb_info.json has no tdxModule")?;
    let identity = info
        .tdx_module_identity(&td.tee_tcb_svn)
        .map_err(|e| format!("tcb_info.json: {e:#}"))?;
    let (signer, attributes, mask) = match identity {
        Some(i) => (&i.mrsigner, &i.attributes, &i.attributes_mask),
        None => (&base.mrsigner, &base.attributes, &base.attributes_mask),
    };
    let decode = |h: &str, len: usize| {
        hex::decode(h)
            .ok()
            .filter(|b| b.len() == len)
            .ok_or_else(|| "tcb_info.json: a TDX module field is not hex of its size".to_string())
    };
    let (signer, attributes, mask) = (
        decode(signer, 48)?,
        decode(attributes, 8)?,
        decode(mask, 8)?,
    );
    if td.mr_signer_seam[..] != signer[..] {
        return Err(
            "the TDX module is not Intel's (MRSIGNER_SEAM differs from tcb_info.json)".into(),
        );
    }
    for ((have, want), mask) in td.seam_attributes.iter().zip(&attributes).zip(&mask) {
        if have & mask != want & mask || have & !mask != 0 {
            return Err("the TDX module's SEAM attributes differ from tcb_info.json".into());
        }
    }
    Ok(())
}

/// TD attributes that make the report untrustworthy whatever the policy says (debug and
/// a service-TD binding are the policy's to decide).
fn check_td_attributes(report: &Report, td: &TDReport10) -> Result<(), String> {
    let attrs = TDAttributes::parse(td.td_attributes)
        .map_err(|_| "TD attributes do not parse".to_string())?;
    if attrs.reserved != 0 {
        return Err("reserved TD attribute bits are set".into());
    }
    if attrs.sec.migratable {
        return Err("the TD is migratable".into());
    }
    if !attrs.sec.sept_ve_disable {
        return Err("the TD does not have SEPT_VE_DISABLE set".into());
    }
    if attrs.sec.servtd_ext && matches!(report, Report::TD10(_)) {
        return Err("a TD 1.0 report with SERVTD_EXT set".into());
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
