//! Offline collateral: the files of a collateral directory, by name.
//!
//! The directory layout is the product's offline collateral format (the names of
//! ../shared/vectors/MANIFEST.md); inside an attestation document the same files travel
//! as `{"files": {"<name>": "<base64>"}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dcap::DcapCollateral;
use crate::snp::SnpCollateral;

/// The file names a collateral directory may hold.
pub const KNOWN_FILES: &[&str] = &[
    "tcb_info.json",
    "qe_identity.json",
    "tcb_info_issuer_chain.pem",
    "qe_identity_issuer_chain.pem",
    "pck_crl.der",
    "pck_crl_issuer_chain.pem",
    "root_ca_crl.der",
    "vcek.der",
    "vlek.der",
    "ask.pem",
    "asvk.pem",
    "ark.pem",
    "crl.der",
];

/// Why collateral could not be used or fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollateralError {
    /// A file the evidence needs is not there.
    #[error("collateral file {0} is missing")]
    Missing(String),
    /// A text file (PEM) is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
    /// Both an SNP VCEK and a VLEK were given.
    #[error("give one of vcek.der and vlek.der, not both")]
    BothKeys,
    /// Neither an SNP VCEK nor a VLEK was given.
    #[error("collateral file vcek.der (or vlek.der) is missing")]
    NoKey,
    /// The DCAP revocation files are not all there.
    #[error(
        "revocation data is missing (pck_crl.der, pck_crl_issuer_chain.pem and root_ca_crl.der are all required; --dangerous-skip-revocation verifies without them)"
    )]
    MissingRevocation,
    /// A file does not parse as what its name says.
    #[error("{file} is malformed: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The evidence to fetch collateral for does not parse.
    #[error(transparent)]
    Evidence(#[from] crate::EvidenceError),
    /// What to fetch cannot be decided, or a fetched response is not what was asked for.
    #[error("{0}")]
    Fetch(String),
}

fn malformed(file: &str, reason: impl std::fmt::Display) -> CollateralError {
    CollateralError::Malformed {
        file: file.into(),
        reason: reason.to_string(),
    }
}

/// Largest collateral file accepted, in bytes.
pub const MAX_FILE_LEN: usize = 256 * 1024;

/// Collateral files by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralFiles {
    /// File name → contents (base64 in JSON).
    #[serde(with = "files_b64")]
    pub files: BTreeMap<String, Vec<u8>>,
}

mod files_b64 {
    use std::collections::BTreeMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, String> = v.iter().map(|(k, v)| (k, STANDARD.encode(v))).collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                if !super::KNOWN_FILES.contains(&k.as_str()) {
                    return Err(serde::de::Error::custom(format!(
                        "unknown collateral file {k:?}"
                    )));
                }
                STANDARD.decode(v.as_bytes()).map(|b| (k, b)).map_err(|e| {
                    serde::de::Error::custom(format!("collateral file is not base64: {e}"))
                })
            })
            .collect()
    }
}

impl CollateralFiles {
    /// Adds a file (only known names are kept; the caller reports the others).
    pub fn insert(&mut self, name: &str, contents: Vec<u8>) -> bool {
        if KNOWN_FILES.contains(&name) {
            self.files.insert(name.to_owned(), contents);
            true
        } else {
            false
        }
    }

    /// A file's contents, if present.
    pub fn get(&self, name: &str) -> Option<&Vec<u8>> {
        self.files.get(name)
    }

    fn required(&self, name: &str) -> Result<&Vec<u8>, CollateralError> {
        self.get(name)
            .ok_or_else(|| CollateralError::Missing(name.into()))
    }

    fn text(&self, name: &str) -> Result<String, CollateralError> {
        String::from_utf8(self.required(name)?.clone())
            .map_err(|_| CollateralError::NotUtf8(name.into()))
    }

    /// The DCAP collateral (CRLs optional here; their absence is reported later).
    pub fn dcap(&self) -> Result<DcapCollateral, CollateralError> {
        Ok(DcapCollateral {
            tcb_info: self.required("tcb_info.json")?.clone(),
            qe_identity: self.required("qe_identity.json")?.clone(),
            tcb_info_issuer_chain: self.text("tcb_info_issuer_chain.pem")?,
            qe_identity_issuer_chain: self.text("qe_identity_issuer_chain.pem")?,
            pck_crl: self.get("pck_crl.der").cloned(),
            pck_crl_issuer_chain: self
                .get("pck_crl_issuer_chain.pem")
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            root_ca_crl: self.get("root_ca_crl.der").cloned(),
        })
    }

    /// The SNP collateral: a VCEK with its ASK, or a VLEK with its ASVK.
    pub fn snp(&self) -> Result<SnpCollateral, CollateralError> {
        let (vek, is_vlek, ask) = match (self.get("vcek.der"), self.get("vlek.der")) {
            (Some(v), None) => (v, false, self.required("ask.pem")?),
            (None, Some(v)) => (v, true, self.required("asvk.pem")?),
            (Some(_), Some(_)) => return Err(CollateralError::BothKeys),
            (None, None) => return Err(CollateralError::NoKey),
        };
        Ok(SnpCollateral {
            vek: vek.clone(),
            is_vlek,
            ask: ask.clone(),
            ark: self.get("ark.pem").cloned(),
            crl: self.get("crl.der").cloned(),
        })
    }
}

/// One piece of collateral, described for `teekms collateral show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CollateralItem {
    /// File name.
    pub file: String,
    /// What it is and what it covers (FMSPC, product, TCB).
    pub covers: String,
    /// Issued / valid from (Unix seconds), when known.
    pub issued: Option<u64>,
    /// Next update / valid until (Unix seconds), when known.
    pub expires: Option<u64>,
}

fn cert_validity(der: &[u8]) -> Option<(String, u64, u64)> {
    use der::Decode;
    let der = if der.starts_with(b"-----BEGIN") {
        crate::pem::certificates(der).into_iter().next()?
    } else {
        der.to_vec()
    };
    let cert = x509_cert::Certificate::from_der(&der).ok()?;
    let tbs = cert.tbs_certificate();
    let v = tbs.validity();
    Some((
        tbs.subject().to_string(),
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    ))
}

fn signed_json_body(bytes: &[u8], key: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(v.get(key)?.clone())
}

impl CollateralFiles {
    /// When the first of these files stops being valid (its `nextUpdate`, or its
    /// certificate's end of validity): the time evidence that needs them stops verifying.
    /// None if no file states an end.
    pub fn expires_at(&self) -> Option<u64> {
        self.describe().iter().filter_map(|i| i.expires).min()
    }

    /// Describes every known file: what it covers and its validity window. Files that do
    /// not parse are listed with `covers` saying so.
    pub fn describe(&self) -> Vec<CollateralItem> {
        let mut out = Vec::new();
        for (name, bytes) in &self.files {
            let item = |covers: String, issued: Option<u64>, expires: Option<u64>| CollateralItem {
                file: name.clone(),
                covers,
                issued,
                expires,
            };
            let described = match name.as_str() {
                "tcb_info.json" | "qe_identity.json" => {
                    let key = if name == "tcb_info.json" {
                        "tcbInfo"
                    } else {
                        "enclaveIdentity"
                    };
                    signed_json_body(bytes, key).map(|b| {
                        let id = b["id"].as_str().unwrap_or("SGX");
                        let covers = match b["fmspc"].as_str() {
                            Some(f) => format!(
                                "{id} TCB info for FMSPC {f}, evaluation data {}",
                                b["tcbEvaluationDataNumber"]
                            ),
                            None => format!(
                                "{id} identity, evaluation data {}",
                                b["tcbEvaluationDataNumber"]
                            ),
                        };
                        let date = |k: &str| b[k].as_str().and_then(crate::parse_rfc3339);
                        item(covers, date("issueDate"), date("nextUpdate"))
                    })
                }
                "pck_crl.der" | "root_ca_crl.der" | "crl.der" => {
                    use der::Decode;
                    x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(
                        bytes,
                    )
                    .ok()
                    .map(|crl| {
                        let t = &crl.tbs_cert_list;
                        item(
                            format!(
                                "CRL by {} ({} revoked)",
                                t.issuer,
                                t.revoked_certificates.as_ref().map_or(0, Vec::len)
                            ),
                            Some(t.this_update.to_unix_duration().as_secs()),
                            t.next_update.map(|n| n.to_unix_duration().as_secs()),
                        )
                    })
                }
                _ => {
                    // Certificates and chains: the earliest expiry in the file counts.
                    let certs: Vec<(String, u64, u64)> = if bytes.starts_with(b"-----BEGIN") {
                        crate::pem::certificates(bytes)
                            .iter()
                            .filter_map(|d| cert_validity(d))
                            .collect()
                    } else {
                        cert_validity(bytes).into_iter().collect()
                    };
                    (!certs.is_empty()).then(|| {
                        let subjects: Vec<&str> = certs.iter().map(|c| c.0.as_str()).collect();
                        item(
                            format!("certificates: {}", subjects.join(" / ")),
                            certs.iter().map(|c| c.1).max(),
                            certs.iter().map(|c| c.2).min(),
                        )
                    })
                }
            };
            out.push(described.unwrap_or_else(|| item("does not parse".into(), None, None)));
        }
        out
    }
}

/// One request of a collateral fetch: a path under the service URL, the file its body
/// becomes, and optionally a response header that carries another file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchItem {
    /// Path and query, appended to the service's base URL.
    pub path: String,
    /// File the body is saved as.
    pub body_file: &'static str,
    /// `(header name, file)`: a URL-encoded PEM chain in a response header.
    pub header_file: Option<(&'static str, &'static str)>,
}

/// What to fetch for a piece of evidence: from a PCCS or Intel PCS (API v4) for DCAP,
/// from AMD KDS for SNP. Pure: it reads the evidence, the caller does the I/O.
pub fn fetch_plan(
    tee: crate::TeeKind,
    evidence: &[u8],
    product: Option<crate::snp::Product>,
) -> Result<Vec<FetchItem>, CollateralError> {
    use crate::TeeKind;
    match tee {
        TeeKind::Sgx | TeeKind::Tdx => {
            let end = crate::dcap::quote_extent(evidence)?;
            let quote = dcap_qvl::quote::Quote::parse(&evidence[..end])
                .map_err(|e| CollateralError::Fetch(format!("malformed quote: {e}")))?;
            let fmspc = dcap_qvl::intel::quote_fmspc(&quote)
                .map_err(|e| CollateralError::Fetch(format!("cannot read the FMSPC: {e}")))?;
            let ca = match dcap_qvl::intel::quote_ca(&quote)
                .map_err(|e| CollateralError::Fetch(format!("cannot read the PCK CA: {e}")))?
            {
                dcap_qvl::config::PckCa::Processor => "processor",
                dcap_qvl::config::PckCa::Platform => "platform",
            };
            let family = if tee == TeeKind::Tdx { "tdx" } else { "sgx" };
            Ok(vec![
                FetchItem {
                    path: format!(
                        "/{family}/certification/v4/tcb?fmspc={}",
                        hex::encode_upper(fmspc)
                    ),
                    body_file: "tcb_info.json",
                    header_file: Some(("TCB-Info-Issuer-Chain", "tcb_info_issuer_chain.pem")),
                },
                FetchItem {
                    path: format!("/{family}/certification/v4/qe/identity"),
                    body_file: "qe_identity.json",
                    header_file: Some((
                        "SGX-Enclave-Identity-Issuer-Chain",
                        "qe_identity_issuer_chain.pem",
                    )),
                },
                FetchItem {
                    path: format!("/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"),
                    body_file: "pck_crl.der",
                    header_file: Some(("SGX-PCK-CRL-Issuer-Chain", "pck_crl_issuer_chain.pem")),
                },
                FetchItem {
                    path: "/sgx/certification/v4/rootcacrl".into(),
                    body_file: "root_ca_crl.der",
                    header_file: None,
                },
            ])
        }
        TeeKind::Snp => {
            let report = crate::snp::SnpReport::parse(evidence)?;
            let product = product.ok_or_else(|| {
                CollateralError::Fetch(
                    "an SNP fetch needs the product (milan, genoa or turin)".into(),
                )
            })?;
            let name = match product {
                crate::snp::Product::Milan => "Milan",
                crate::snp::Product::Genoa => "Genoa",
                crate::snp::Product::Turin => "Turin",
            };
            let t = crate::snp::Tcb::decode(report.reported_tcb, product);
            let (hwid, fmc) = match t.fmc {
                // Turin's KDS takes the first 8 bytes of CHIP_ID and an FMC level.
                Some(f) => (hex::encode(&report.chip_id[..8]), format!("fmcSPL={f}&")),
                None => (hex::encode(report.chip_id), String::new()),
            };
            Ok(vec![
                FetchItem {
                    path: format!(
                        "/vcek/v1/{name}/{hwid}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
                        t.bootloader, t.tee, t.snp, t.microcode
                    ),
                    body_file: "vcek.der",
                    header_file: None,
                },
                FetchItem {
                    path: format!("/vcek/v1/{name}/cert_chain"),
                    body_file: "cert_chain.pem",
                    header_file: None,
                },
            ])
        }
        TeeKind::Sim => Err(CollateralError::Fetch(
            "sim evidence needs no collateral".into(),
        )),
    }
}

impl CollateralFiles {
    /// Stores a fetched response: the body (AMD's `cert_chain.pem` is split into
    /// `ask.pem` and `ark.pem`; a hex-encoded root CA CRL, as some PCCS versions send it,
    /// is decoded) and the URL-encoded chain in a header, if any.
    pub fn insert_fetched(
        &mut self,
        item: &FetchItem,
        body: Vec<u8>,
        header: Option<&str>,
    ) -> Result<(), CollateralError> {
        match item.body_file {
            "cert_chain.pem" => {
                let text =
                    String::from_utf8(body).map_err(|_| malformed("cert_chain.pem", "not PEM"))?;
                let blocks: Vec<&str> = text
                    .split_inclusive("-----END CERTIFICATE-----")
                    .filter(|b| b.contains("BEGIN"))
                    .collect();
                let [ask, ark] = blocks[..] else {
                    return Err(malformed(
                        "cert_chain.pem",
                        format!("{} certificates, expected ASK and ARK", blocks.len()),
                    ));
                };
                self.insert("ask.pem", ask.trim_start().as_bytes().to_vec());
                self.insert("ark.pem", ark.trim_start().as_bytes().to_vec());
            }
            "root_ca_crl.der" if !body.is_empty() && body.iter().all(|b| b.is_ascii_hexdigit()) => {
                let der =
                    hex::decode(&body).map_err(|_| malformed("root_ca_crl.der", "not hex"))?;
                self.insert("root_ca_crl.der", der);
            }
            name => {
                self.insert(name, body);
            }
        }
        if let Some((name, file)) = item.header_file {
            let value = header.ok_or_else(|| {
                CollateralError::Fetch(format!("the response lacks the {name} header"))
            })?;
            let text = percent_decode(value).map_err(|why| malformed(file, why))?;
            self.insert(file, text.into_bytes());
        }
        Ok(())
    }
}

/// Decodes a URL-encoded (percent-encoded) header value; the error says what is wrong.
pub fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding")?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "header is not UTF-8")
}
