//! AMD SEV-SNP attestation reports, verified offline.
//!
//! ARK (pinned, compiled in: Milan, Genoa, Turin) → ASK or ASVK → VCEK or VLEK → report.
//! Certificate signatures are RSASSA-PSS/SHA-384 (salt 48), the report signature ECDSA
//! P-384/SHA-384; all four checks run on aws-lc-rs. We also check every certificate's
//! validity at the verification time, the AMD CRL when one is given, and the VCEK's TCB
//! and hwID extensions against the report's REPORTED_TCB and CHIP_ID.

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};
use der::Decode;
use serde_json::json;
use x509_cert::Certificate;

use crate::EvidenceError;

/// Length of an SNP ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;

/// An AMD product line, which fixes the root key and the TCB_VERSION layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005 (TCB_VERSION adds an FMC byte).
    Turin,
}

const ARKS: [(Product, &str); 3] = [
    (Product::Milan, include_str!("../roots/amd/milan_ark.pem")),
    (Product::Genoa, include_str!("../roots/amd/genoa_ark.pem")),
    (Product::Turin, include_str!("../roots/amd/turin_ark.pem")),
];

/// Files of an SNP collateral directory (contents).
#[derive(Clone, Debug, Default)]
pub struct SnpCollateral {
    /// `vcek.der` or `vlek.der`.
    pub vek: Vec<u8>,
    /// True if `vek` came from `vlek.der`.
    pub is_vlek: bool,
    /// `ask.pem` or `asvk.pem` (PEM or DER).
    pub ask: Vec<u8>,
    /// `ark.pem`, if given: must equal the pinned ARK of its product.
    pub ark: Option<Vec<u8>>,
    /// AMD `crl.der`, if given.
    pub crl: Option<Vec<u8>>,
}

/// The decoded TCB_VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcb {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// Decodes a raw TCB_VERSION for `product`.
    pub fn decode(raw: u64, product: Product) -> Tcb {
        let b = raw.to_le_bytes();
        match product {
            Product::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            _ => Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"fmc": self.fmc, "bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode})
    }
}

/// The fields teekms reads from a report.
#[derive(Clone, Debug)]
pub struct SnpReport {
    /// Report format version (2, 3 or 5).
    pub version: u32,
    /// Guest policy.
    pub policy: u64,
    /// VMPL the report was requested at.
    pub vmpl: u32,
    /// 0 = VCEK, 1 = VLEK.
    pub signing_key: u8,
    /// 64 bytes the guest bound.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host-provided data.
    pub host_data: [u8; 32],
    /// REPORTED_TCB, raw.
    pub reported_tcb: u64,
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    raw_signature_r: [u8; 72],
    raw_signature_s: [u8; 72],
}

impl SnpReport {
    /// Parses a report strictly: exact length, known version, ECDSA P-384 signature.
    pub fn parse(raw: &[u8]) -> Result<SnpReport, EvidenceError> {
        let bad = |reason: String| EvidenceError::Malformed {
            tee: "SEV-SNP",
            reason,
        };
        if raw.len() != REPORT_LEN {
            return Err(bad(format!(
                "an SNP report is {REPORT_LEN} bytes, this is {}",
                raw.len()
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(0);
        if !matches!(version, 2 | 3 | 5) {
            return Err(bad(format!("unsupported SNP report version {version}")));
        }
        // The unsigned tail of the signature field is reserved (zero): an altered byte
        // there must not pass for the same report.
        if raw[0x330..].iter().any(|&b| b != 0) {
            return Err(bad("reserved bytes after the signature are not zero".into()));
        }
        if u32_at(0x34) != 1 {
            return Err(bad(format!(
                "unsupported signature algorithm {} (1 = ECDSA P-384)",
                u32_at(0x34)
            )));
        }
        Ok(SnpReport {
            version,
            policy: u64_at(0x08),
            vmpl: u32_at(0x30),
            signing_key: ((u32_at(0x48) >> 2) & 0x7) as u8,
            report_data: raw[0x50..0x90].try_into().expect("64"),
            measurement: raw[0x90..0xC0].try_into().expect("48"),
            host_data: raw[0xC0..0xE0].try_into().expect("32"),
            reported_tcb: u64_at(0x180),
            chip_id: raw[0x1A0..0x1E0].try_into().expect("64"),
            raw_signature_r: raw[0x2A0..0x2E8].try_into().expect("72"),
            raw_signature_s: raw[0x2E8..0x330].try_into().expect("72"),
        })
    }

    /// Guest policy bit 19: debugging allowed.
    pub fn debug(&self) -> bool {
        self.policy & (1 << 19) != 0
    }

    /// Guest policy bit 18: a migration agent may be associated.
    pub fn migrate_ma(&self) -> bool {
        self.policy & (1 << 18) != 0
    }

    /// The ECDSA signature as fixed-size big-endian r || s.
    fn signature(&self) -> Result<[u8; 96], ChainError> {
        let mut out = [0u8; 96];
        for (half, raw) in [&self.raw_signature_r, &self.raw_signature_s]
            .into_iter()
            .enumerate()
        {
            if raw[48..].iter().any(|&b| b != 0) {
                return Err(ChainError::SignatureTooLarge);
            }
            // Little-endian on the wire, big-endian for the verifier.
            for (i, b) in raw[..48].iter().enumerate() {
                out[half * 48 + 47 - i] = *b;
            }
        }
        Ok(out)
    }
}

/// The result of checking an SNP report (before any policy).
#[derive(Clone, Debug)]
pub struct SnpResult {
    /// Claims (present whenever the report parses).
    pub claims: Option<serde_json::Value>,
    /// Authentic, chain to a pinned ARK, certificates valid at that time, TCB consistent.
    pub verified: bool,
    /// Why not.
    pub reasons: Vec<String>,
    /// The parsed report.
    pub report: Option<SnpReport>,
    /// Which ARK the chain ends in.
    pub product: Option<Product>,
    /// The endorsement key is a VLEK.
    pub vlek: bool,
    /// notBefore of the VCEK/VLEK (Unix seconds), once the chain verified.
    pub vek_not_before: Option<u64>,
}

/// Raw DER TLV: returns (whole element, content, rest).
fn tlv(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&_tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((&input[..header + len], &rest[..len], &rest[len..]))
}

/// The tbsCertificate bytes exactly as received (signatures cover these, not a re-encoding).
fn raw_tbs(der: &[u8]) -> Option<&[u8]> {
    let (_, content, _) = tlv(der)?;
    let (tbs, _, _) = tlv(content)?;
    Some(tbs)
}

/// The compiled-in ARKs, parsed and self-signature-checked once per process (they are
/// constants; checking them on every verification would only repeat an RSA-4096 verify).
fn pinned_arks() -> &'static [(Product, Cert)] {
    static ARKS_PARSED: std::sync::OnceLock<Vec<(Product, Cert)>> = std::sync::OnceLock::new();
    ARKS_PARSED.get_or_init(|| {
        ARKS.iter()
            .map(|(p, pem)| {
                let ark =
                    Cert::parse("pinned ARK", pem.as_bytes()).expect("compiled-in ARKs parse");
                assert!(
                    ark.signed_by(&ark),
                    "compiled-in {p:?} ARK is not self-signed"
                );
                (*p, ark)
            })
            .collect()
    })
}

/// Why an SNP report's endorsement chain or signature does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The report names another kind of endorsement key than the one given.
    #[error("the report was signed with key type {found}, but a {given} was given")]
    WrongKeyType {
        /// The report's SIGNING_KEY.
        found: u8,
        /// VCEK or VLEK.
        given: &'static str,
    },
    /// A PEM file holds no certificate.
    #[error("{0} is not PEM")]
    NotPem(String),
    /// A certificate is not X.509.
    #[error("{name} does not parse as X.509: {reason}")]
    NotX509 {
        /// Which certificate.
        name: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The ASK (ASVK) chains to none of the pinned ARKs.
    #[error("the {0} is not signed by any pinned AMD ARK (Milan, Genoa, Turin)")]
    UnknownArk(&'static str),
    /// `ark.pem` is given and is not the pinned ARK of its product.
    #[error("ark.pem is not AMD's pinned {0:?} ARK")]
    NotPinnedArk(Product),
    /// A certificate is not signed by its issuer.
    #[error("the {cert} is not signed by the {issuer}")]
    NotSignedBy {
        /// The certificate.
        cert: &'static str,
        /// Its issuer.
        issuer: &'static str,
    },
    /// A certificate or CRL is not valid yet at the verification time.
    #[error("{0} is not valid yet at the verification time")]
    NotYetValid(String),
    /// A certificate or CRL has expired at the verification time.
    #[error("{0} has expired at the verification time")]
    Expired(String),
    /// The report's signature is not in the format's range.
    #[error("report signature component is larger than 384 bits")]
    SignatureTooLarge,
    /// The report's signature does not verify under the endorsement key.
    #[error("the report signature does not verify under the {0}")]
    BadReportSignature(&'static str),
    /// The endorsement key lacks a TCB extension.
    #[error("the endorsement key lacks the TCB extension {0}")]
    MissingTcbExtension(&'static str),
    /// A TCB extension is not a small integer.
    #[error("the endorsement key's TCB extension {0} is not a small INTEGER")]
    BadTcbExtension(&'static str),
    /// REPORTED_TCB differs from the endorsement key's TCB.
    #[error("REPORTED_TCB {what} SPL {reported} differs from the endorsement key's {cert}")]
    TcbMismatch {
        /// Which component.
        what: &'static str,
        /// The report's SPL.
        reported: u8,
        /// The certificate's SPL.
        cert: u8,
    },
    /// The VCEK has no hwID.
    #[error("VCEK lacks the hwID extension")]
    NoHwid,
    /// The VCEK's hwID does not parse.
    #[error("VCEK hwID is malformed")]
    BadHwid,
    /// The report comes from another chip than the VCEK's.
    #[error("the report's CHIP_ID is not the VCEK's hwID (a report from another chip)")]
    OtherChip,
    /// `crl.der` is not a CRL signed by the ARK with AMD's parameters.
    #[error("crl.der {0}")]
    BadCrl(String),
    /// A certificate of the chain is revoked.
    #[error("{0} is revoked by AMD's CRL")]
    Revoked(String),
}

struct Cert {
    der: Vec<u8>,
    parsed: Certificate,
}

impl Cert {
    fn parse(name: &str, bytes: &[u8]) -> Result<Cert, ChainError> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            crate::pem::certificates(bytes)
                .into_iter()
                .next()
                .ok_or_else(|| ChainError::NotPem(name.into()))?
        } else {
            bytes.to_vec()
        };
        let parsed = Certificate::from_der(&der).map_err(|e| ChainError::NotX509 {
            name: name.into(),
            reason: e.to_string(),
        })?;
        Ok(Cert { der, parsed })
    }

    fn public_key(&self) -> &[u8] {
        self.parsed
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
    }

    /// True if `issuer` signed this certificate with RSASSA-PSS / SHA-384 / MGF1-SHA-384 /
    /// salt 48, and both algorithm fields of the certificate say exactly that.
    fn signed_by(&self, issuer: &Cert) -> bool {
        let inner = self.parsed.tbs_certificate().signature();
        let outer = self.parsed.signature_algorithm();
        if !is_amd_pss(inner) || inner != outer {
            return false;
        }
        let Some(tbs) = raw_tbs(&self.der) else {
            return false;
        };
        let sig = self.parsed.signature().raw_bytes();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, issuer.public_key())
            .verify(tbs, sig)
            .is_ok()
    }

    fn check_validity(&self, name: &str, now: u64) -> Result<(), ChainError> {
        let v = self.parsed.tbs_certificate().validity();
        let (nb, na) = (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        );
        if now < nb {
            return Err(ChainError::NotYetValid(name.into()));
        }
        if now > na {
            return Err(ChainError::Expired(name.into()));
        }
        Ok(())
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.parsed
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    fn serial(&self) -> &[u8] {
        self.parsed.tbs_certificate().serial_number().as_bytes()
    }
}

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
/// RSASSA-PSS-params of every AMD signature: SHA-384, MGF1 with SHA-384, salt 48,
/// trailer 1, with the trailer spelled out (as in AMD's Milan certificates).
const AMD_PSS_PARAMS: [u8; 59] = [
    0x30, 0x39, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0xa2, 0x03, 0x02, 0x01, 0x30, 0xa3, 0x03, 0x02, 0x01, 0x01,
];

/// The same parameters with the trailer left out, as DER wants a DEFAULT value encoded
/// (and as AMD's KDS issues Genoa certificates): the same sequence, 5 bytes shorter.
fn amd_pss_params_default_trailer() -> [u8; 54] {
    let mut der = [0u8; 54];
    der.copy_from_slice(&AMD_PSS_PARAMS[..54]);
    der[1] = 0x34;
    der
}

/// True if the parameters are RSASSA-PSS / SHA-384 / MGF1-SHA-384 / salt 48 / trailer 1
/// in one of its two encodings (trailer explicit or omitted), and nothing else.
fn is_amd_pss_params(params: &[u8]) -> bool {
    params == AMD_PSS_PARAMS || params == amd_pss_params_default_trailer()
}

/// True if an algorithm identifier names RSASSA-PSS with AMD's parameters.
fn is_amd_pss(alg: &x509_cert::spki::AlgorithmIdentifierOwned) -> bool {
    use der::Encode;
    alg.oid.to_string() == OID_RSASSA_PSS
        && alg
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok())
            .is_some_and(|der| is_amd_pss_params(&der))
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

fn spl(cert: &Cert, oid: &'static str) -> Result<u8, ChainError> {
    let raw = cert
        .extension(oid)
        .ok_or(ChainError::MissingTcbExtension(oid))?;
    u8::from_der(raw).map_err(|_| ChainError::BadTcbExtension(oid))
}

/// Checks the endorsement key's TCB extensions against REPORTED_TCB (VCEK and VLEK both
/// carry them) and, for a VCEK, its hwID against CHIP_ID (a VLEK names no chip).
fn check_vek_extensions(
    vcek: &Cert,
    report: &SnpReport,
    product: Product,
    is_vlek: bool,
) -> Result<(), ChainError> {
    let tcb = Tcb::decode(report.reported_tcb, product);
    let pairs = [
        ("boot loader", OID_BL_SPL, tcb.bootloader),
        ("TEE", OID_TEE_SPL, tcb.tee),
        ("SNP", OID_SNP_SPL, tcb.snp),
        ("microcode", OID_UCODE_SPL, tcb.microcode),
    ];
    for (what, oid, reported) in pairs {
        let cert_spl = spl(vcek, oid)?;
        if cert_spl != reported {
            return Err(ChainError::TcbMismatch {
                what,
                reported,
                cert: cert_spl,
            });
        }
    }
    if let Some(fmc) = tcb.fmc {
        let cert_spl = spl(vcek, OID_FMC_SPL)?;
        if cert_spl != fmc {
            return Err(ChainError::TcbMismatch {
                what: "FMC",
                reported: fmc,
                cert: cert_spl,
            });
        }
    }
    if is_vlek {
        return Ok(());
    }
    let hwid = vcek.extension(OID_HWID).ok_or(ChainError::NoHwid)?;
    let hwid = if hwid.len() == 64 {
        hwid.to_vec()
    } else {
        der::asn1::OctetString::from_der(hwid)
            .map(|o| o.as_bytes().to_vec())
            .map_err(|_| ChainError::BadHwid)?
    };
    if hwid != report.chip_id {
        return Err(ChainError::OtherChip);
    }
    Ok(())
}

fn check_crl(
    crl_der: &[u8],
    ark: &Cert,
    certs: &[(&str, &Cert)],
    now: u64,
) -> Result<(), ChainError> {
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(crl_der)
        .map_err(|e| ChainError::BadCrl(format!("is not a DER CRL: {e}")))?;
    let tbs = tlv(crl_der)
        .and_then(|(_, c, _)| tlv(c))
        .map(|(t, _, _)| t)
        .ok_or_else(|| ChainError::BadCrl("is malformed".into()))?;
    if !is_amd_pss(&crl.signature_algorithm)
        || crl.signature_algorithm != crl.tbs_cert_list.signature
    {
        return Err(ChainError::BadCrl(
            "is not signed with AMD's RSASSA-PSS parameters (SHA-384, MGF1-SHA-384, salt 48)"
                .into(),
        ));
    }
    if UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, ark.public_key())
        .verify(tbs, crl.signature.raw_bytes())
        .is_err()
    {
        return Err(ChainError::BadCrl("is not signed by the ARK".into()));
    }
    if now < crl.tbs_cert_list.this_update.to_unix_duration().as_secs() {
        return Err(ChainError::NotYetValid("crl.der".into()));
    }
    if let Some(next) = crl.tbs_cert_list.next_update
        && now > next.to_unix_duration().as_secs()
    {
        return Err(ChainError::Expired("crl.der".into()));
    }
    for revoked in crl.tbs_cert_list.revoked_certificates.iter().flatten() {
        for (name, cert) in certs {
            if revoked.serial_number.as_bytes() == cert.serial() {
                return Err(ChainError::Revoked((*name).into()));
            }
        }
    }
    Ok(())
}

fn claims(report: &SnpReport, product: Option<Product>) -> serde_json::Value {
    let tcb = Tcb::decode(report.reported_tcb, product.unwrap_or(Product::Milan));
    json!({
        "measurement": hex::encode(report.measurement),
        "host_data": hex::encode(report.host_data),
        "report_data": hex::encode(report.report_data),
        "policy": format!("{:#x}", report.policy),
        "vmpl": report.vmpl,
        "reported_tcb": hex::encode(report.reported_tcb.to_le_bytes()),
        "reported_tcb_fields": tcb.json(),
        "chip_id": hex::encode(report.chip_id),
        "debug": report.debug(),
        "migration_agent": report.migrate_ma(),
        "version": report.version,
    })
}

/// Verifies an SNP report at `now_unix`.
pub fn verify_snp(raw: &[u8], c: &SnpCollateral, now_unix: u64) -> SnpResult {
    verify_snp_with(raw, Ok(c), now_unix)
}

/// Verifies an SNP report with its collateral, or the reason the collateral could not be
/// read (claims are still read from the report).
pub fn verify_snp_with(
    raw: &[u8],
    collateral: Result<&SnpCollateral, &crate::collateral::CollateralError>,
    now_unix: u64,
) -> SnpResult {
    let mut out = SnpResult {
        claims: None,
        verified: false,
        reasons: Vec::new(),
        report: None,
        product: None,
        vlek: collateral.is_ok_and(|c| c.is_vlek),
        vek_not_before: None,
    };
    let report = match SnpReport::parse(raw) {
        Ok(r) => r,
        Err(EvidenceError::Malformed { reason, .. }) => {
            out.reasons.push(format!("malformed SNP report: {reason}"));
            return out;
        }
        Err(e) => {
            out.reasons.push(e.to_string());
            return out;
        }
    };
    out.claims = Some(claims(&report, None));
    out.report = Some(report.clone());
    let c = match collateral {
        Ok(c) => c,
        Err(e) => {
            out.reasons.push(e.to_string());
            return out;
        }
    };
    match check_chain(raw, &report, c, now_unix) {
        Ok((product, not_before)) => {
            out.product = Some(product);
            out.vek_not_before = Some(not_before);
            out.claims = Some(claims(&report, Some(product)));
            out.verified = true;
        }
        Err(e) => out.reasons.push(e.to_string()),
    }
    out
}

fn check_chain(
    raw: &[u8],
    report: &SnpReport,
    c: &SnpCollateral,
    now: u64,
) -> Result<(Product, u64), ChainError> {
    let (vek_name, ask_name) = if c.is_vlek {
        ("VLEK", "ASVK")
    } else {
        ("VCEK", "ASK")
    };
    if report.signing_key != u8::from(c.is_vlek) {
        return Err(ChainError::WrongKeyType {
            found: report.signing_key,
            given: vek_name,
        });
    }
    let vek = Cert::parse(vek_name, &c.vek)?;
    let ask = Cert::parse(ask_name, &c.ask)?;
    let (product, ark) = pinned_arks()
        .iter()
        .find(|(_, ark)| ask.signed_by(ark))
        .map(|(p, ark)| (*p, ark))
        .ok_or(ChainError::UnknownArk(ask_name))?;
    if let Some(given) = &c.ark {
        let given = Cert::parse("ark.pem", given)?;
        if given.der != ark.der {
            return Err(ChainError::NotPinnedArk(product));
        }
    }
    if !vek.signed_by(&ask) {
        return Err(ChainError::NotSignedBy {
            cert: vek_name,
            issuer: ask_name,
        });
    }
    for (name, cert) in [("ARK", ark), (ask_name, &ask), (vek_name, &vek)] {
        cert.check_validity(name, now)?;
    }
    let sig = report.signature()?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, vek.public_key())
        .verify(&raw[..SIGNED_LEN], &sig)
        .map_err(|_| ChainError::BadReportSignature(vek_name))?;
    check_vek_extensions(&vek, report, product, c.is_vlek)?;
    if let Some(crl) = &c.crl {
        check_crl(crl, ark, &[(ask_name, &ask), (vek_name, &vek)], now)?;
    }
    let not_before = vek
        .parsed
        .tbs_certificate()
        .validity()
        .not_before
        .to_unix_duration()
        .as_secs();
    Ok((product, not_before))
}

#[cfg(test)]
mod pss_tests {
    use super::*;

    /// RSASSA-PSS-params built by hand: hash, MGF1 hash, salt, and the trailer (None:
    /// left out).
    fn params(hash: &[u8], mgf_hash: &[u8], salt: u8, trailer: Option<u8>) -> Vec<u8> {
        let alg = |oid: &[u8]| {
            let mut a = vec![0x30, oid.len() as u8 + 4, 0x06, oid.len() as u8];
            a.extend_from_slice(oid);
            a.extend_from_slice(&[0x05, 0x00]);
            a
        };
        let tagged = |tag: u8, body: Vec<u8>| {
            let mut t = vec![tag, body.len() as u8];
            t.extend(body);
            t
        };
        const MGF1: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
        let mut mgf = vec![0x06, MGF1.len() as u8];
        mgf.extend_from_slice(&MGF1);
        mgf.extend(alg(mgf_hash));
        let mut body = tagged(0xa0, alg(hash));
        body.extend(tagged(0xa1, tagged(0x30, mgf)));
        body.extend(tagged(0xa2, vec![0x02, 0x01, salt]));
        if let Some(t) = trailer {
            body.extend(tagged(0xa3, vec![0x02, 0x01, t]));
        }
        tagged(0x30, body)
    }

    #[test]
    fn exactly_amds_pss_parameters_pass_in_either_encoding() {
        const SHA384: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
        const SHA256: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
        let explicit = params(&SHA384, &SHA384, 48, Some(1));
        assert_eq!(explicit, AMD_PSS_PARAMS);
        assert!(is_amd_pss_params(&explicit), "explicit trailer");
        assert!(
            is_amd_pss_params(&params(&SHA384, &SHA384, 48, None)),
            "omitted trailer"
        );
        for (what, p) in [
            ("salt 32", params(&SHA384, &SHA384, 32, Some(1))),
            (
                "salt 32, omitted trailer",
                params(&SHA384, &SHA384, 32, None),
            ),
            ("SHA-256", params(&SHA256, &SHA256, 48, Some(1))),
            ("MGF1-SHA-256", params(&SHA384, &SHA256, 48, None)),
            ("trailer 2", params(&SHA384, &SHA384, 48, Some(2))),
        ] {
            assert!(!is_amd_pss_params(&p), "{what} must be refused");
        }
        assert!(!is_amd_pss_params(&[]));
        assert!(!is_amd_pss_params(&AMD_PSS_PARAMS[..58]));
    }
}
