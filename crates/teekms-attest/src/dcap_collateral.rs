//! Intel DCAP collateral: the pinned root, the collateral files of one quote, and their
//! conversion (once, for many quotes) into what the verifier takes. Both appraisals read
//! it: `dcap` (with dcap-qvl, revocation required) and `dcap_unrevoked` (the dangerous
//! path without revocation data).

use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::collateral::CollateralError;

/// The Intel SGX Root CA every DCAP chain must end in (DER).
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("../roots/intel_sgx_root_ca.der");

/// The TEE type of an SGX quote (its header's `tee_type`).
pub(crate) const TEE_TYPE_SGX: u32 = 0x00;

/// Collateral for one DCAP quote, as read from a collateral directory (file contents).
#[derive(Clone, Debug, Default)]
pub struct DcapCollateral {
    /// `tcb_info.json`: `{"tcbInfo": {...}, "signature": "<hex>"}`.
    pub tcb_info: Vec<u8>,
    /// `qe_identity.json`: `{"enclaveIdentity": {...}, "signature": "<hex>"}`.
    pub qe_identity: Vec<u8>,
    /// `tcb_info_issuer_chain.pem`.
    pub tcb_info_issuer_chain: String,
    /// `qe_identity_issuer_chain.pem`.
    pub qe_identity_issuer_chain: String,
    /// `pck_crl.der`, when present.
    pub pck_crl: Option<Vec<u8>>,
    /// `pck_crl_issuer_chain.pem`, when present.
    pub pck_crl_issuer_chain: Option<String>,
    /// `root_ca_crl.der`, when present.
    pub root_ca_crl: Option<Vec<u8>>,
}

#[derive(Deserialize)]
pub(crate) struct SignedTcbInfo<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    pub body: &'a RawValue,
    pub signature: String,
}

#[derive(Deserialize)]
pub(crate) struct SignedQeIdentity<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    pub body: &'a RawValue,
    pub signature: String,
}

fn collateral_v3(c: &DcapCollateral) -> Result<QuoteCollateralV3, CollateralError> {
    let tcb: SignedTcbInfo<'_> =
        serde_json::from_slice(&c.tcb_info).map_err(|e| malformed("tcb_info.json", e))?;
    let qe: SignedQeIdentity<'_> =
        serde_json::from_slice(&c.qe_identity).map_err(|e| malformed("qe_identity.json", e))?;
    let tcb_info_signature = hex::decode(&tcb.signature)
        .map_err(|_| malformed("tcb_info.json", "its signature is not hex"))?;
    let qe_identity_signature = hex::decode(&qe.signature)
        .map_err(|_| malformed("qe_identity.json", "its signature is not hex"))?;
    let (Some(pck_crl), Some(pck_crl_issuer_chain), Some(root_ca_crl)) =
        (&c.pck_crl, &c.pck_crl_issuer_chain, &c.root_ca_crl)
    else {
        return Err(CollateralError::MissingRevocation);
    };
    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain: pck_crl_issuer_chain.clone(),
        root_ca_crl: root_ca_crl.clone(),
        pck_crl: pck_crl.clone(),
        tcb_info_issuer_chain: c.tcb_info_issuer_chain.clone(),
        tcb_info: tcb.body.get().to_owned(),
        tcb_info_signature,
        qe_identity_issuer_chain: c.qe_identity_issuer_chain.clone(),
        qe_identity: qe.body.get().to_owned(),
        qe_identity_signature,
        pck_certificate_chain: None,
    })
}

/// A CRL's validity window `(thisUpdate, nextUpdate)` in Unix seconds. dcap-qvl checks
/// the signature and the entries but not that the CRL was already issued, so we check
/// the whole window ourselves.
fn crl_window(name: &str, der: &[u8]) -> Result<(u64, Option<u64>), CollateralError> {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .map_err(|e| malformed(name, format!("not a DER CRL: {e}")))?;
    let this = crl.tbs_cert_list.this_update.to_unix_duration().as_secs();
    let next = crl
        .tbs_cert_list
        .next_update
        .map(|t| t.to_unix_duration().as_secs());
    Ok((this, next))
}

/// `issueDate` of a signed TCB info or QE identity body.
fn issue_date(body: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Dated<'a> {
        #[serde(rename = "issueDate", borrow)]
        issue_date: &'a str,
    }
    crate::parse_rfc3339(serde_json::from_str::<Dated<'_>>(body).ok()?.issue_date)
}

/// A CRL's file name and validity window (`thisUpdate`, `nextUpdate`), Unix seconds.
pub(crate) type CrlWindow = (&'static str, u64, Option<u64>);

/// DCAP collateral checked for shape and converted once, ready to verify many quotes.
#[derive(Clone, Debug)]
pub struct PreparedCollateral {
    /// With its revocation data: dcap-qvl's form and the CRLs' validity windows.
    pub(crate) revocable: Result<(QuoteCollateralV3, [CrlWindow; 2]), CollateralError>,
    /// The files as given, for the appraisal without revocation data.
    pub(crate) files: DcapCollateral,
    pub(crate) issued: Option<u64>,
}

impl DcapCollateral {
    /// Converts the files into the verifier's form; errors name the defective file.
    /// Missing revocation data is not an error here: whether it may be missing is
    /// decided at verification ([`Revocation`]).
    pub fn prepare(&self) -> Result<PreparedCollateral, CollateralError> {
        let revocable = match collateral_v3(self) {
            Ok(v3) => {
                let (pck_this, pck_next) = crl_window("pck_crl.der", &v3.pck_crl)?;
                let (root_this, root_next) = crl_window("root_ca_crl.der", &v3.root_ca_crl)?;
                let windows = [
                    ("pck_crl.der", pck_this, pck_next),
                    ("root_ca_crl.der", root_this, root_next),
                ];
                Ok((v3, windows))
            }
            // Whether revocation data may be missing is decided at verification.
            Err(e @ CollateralError::MissingRevocation) => Err(e),
            Err(e) => return Err(e),
        };
        let bodies = [&self.tcb_info, &self.qe_identity];
        let issued = bodies
            .iter()
            .map(|file| {
                let v: serde_json::Value = serde_json::from_slice(file).ok()?;
                let body = v.get("tcbInfo").or_else(|| v.get("enclaveIdentity"))?;
                issue_date(&body.to_string())
            })
            .collect::<Option<Vec<u64>>>()
            .and_then(|d| d.into_iter().min());
        Ok(PreparedCollateral {
            revocable,
            files: self.clone(),
            issued,
        })
    }
}

fn malformed(file: &str, reason: impl std::fmt::Display) -> CollateralError {
    CollateralError::Malformed {
        file: file.into(),
        reason: reason.to_string(),
    }
}
