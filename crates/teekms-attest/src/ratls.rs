//! RA-TLS certificates (spec/ratls-v1.md): evidence carried in an X.509 extension and
//! bound to the certificate's public key, so that a TLS handshake authenticates a TEE.
//!
//! The extension is the TCG DICE tagged evidence (OID 2.23.133.5.4.9): CBOR tag 60000
//! around `[evidence, claims]`, where `claims` is a serialized CBOR map whose
//! `pubkey-hash` names the certificate's key and whose SHA-256 is the first half of the
//! evidence's report data (the rest zero), as Gramine makes them for SGX. teekms adds
//! claims naming its TEE kind and its node statement (so a peer learns the HPKE key to
//! seal to). Gramine's legacy SGX extension (the bare quote, report data = SHA-256 of the
//! public key) is read too.

use der::{Decode, Encode};

use crate::cbor::Item;
use crate::collateral::CollateralFiles;
use crate::document::{AttestationDocument, DOCUMENT_VERSION};
use crate::statement::NodeStatement;
use crate::{Freshness, Policy, TeeKind, Verdict};

/// TCG DICE tagged evidence.
pub const DICE_TAGGED_EVIDENCE_OID: &str = "2.23.133.5.4.9";
/// [`DICE_TAGGED_EVIDENCE_OID`] as arcs, for certificate builders.
pub const TCG_DICE_TAGGED_EVIDENCE_ARCS: &[u64] = &[2, 23, 133, 5, 4, 9];
/// Gramine's legacy SGX quote extension. Gramine writes the DER of an OID *inside* the
/// OID field (bytes `06 09 2A 86 48 86 F8 4D 8A 39 06`), which parses as this.
pub const GRAMINE_LEGACY_OID: &str = "0.6.9.42.840.113741.1337.6";
/// CBOR tag of "TEE quote" evidence (IANA).
pub const TEE_QUOTE_TAG: u64 = 60000;
/// `pubkey-hash` algorithm id for SHA-256 (IANA named information).
const SHA256_ALG: u64 = 1;
const SHA384_ALG: u64 = 7;
const SHA512_ALG: u64 = 8;

/// How the certificate carries its evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TCG DICE tagged evidence with claims.
    DiceTagged,
    /// Gramine's legacy extension: the bare SGX quote.
    GramineLegacy,
}

/// What an RA-TLS certificate carries, its binding to the key already checked where the
/// format allows it without the evidence (`pubkey-hash`).
#[derive(Clone, Debug)]
pub struct RaTlsEvidence {
    /// The format.
    pub format: Format,
    /// The raw evidence (a DCAP quote, an SNP report, sim evidence).
    pub evidence: Vec<u8>,
    /// The serialized claims map (DICE format).
    pub claims: Option<Vec<u8>>,
    /// The report data the evidence must carry to bind this certificate.
    pub expected_report_data: [u8; 64],
    /// How much of the report data that binding covers (32: Gramine compares the first
    /// half only; the rest is then not checked).
    pub bound_len: usize,
    /// teekms claims: the TEE kind.
    pub tee: Option<TeeKind>,
    /// teekms claims: the node or workload statement.
    pub statement: Option<NodeStatement>,
    /// teekms claims: collateral for real-TEE evidence.
    pub collateral: Option<CollateralFiles>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    crate::sha256(b)
}

/// The report data that binds `claims`: SHA-256 of them, then 32 zero bytes.
pub fn report_data_for_claims(claims: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&sha256(claims));
    rd
}

/// The claims buffer of a teekms RA-TLS certificate for `spki_der`.
pub fn claims_buffer(
    spki_der: &[u8],
    tee: TeeKind,
    statement: &NodeStatement,
    collateral: Option<&CollateralFiles>,
) -> Vec<u8> {
    let hash_entry = Item::Array(vec![
        Item::Uint(SHA256_ALG),
        Item::Bytes(sha256(spki_der).to_vec()),
    ]);
    let mut pairs = vec![
        (
            Item::Text("pubkey-hash".into()),
            Item::Bytes(hash_entry.encode()),
        ),
        (
            Item::Text("teekms-tee".into()),
            Item::Text(tee.as_str().into()),
        ),
        (
            Item::Text("teekms-statement".into()),
            Item::Bytes(statement.canonical_bytes()),
        ),
    ];
    if let Some(c) = collateral {
        pairs.push((
            Item::Text("teekms-collateral".into()),
            Item::Bytes(serde_json::to_vec(c).expect("collateral serializes")),
        ));
    }
    Item::Map(pairs).encode()
}

/// The extension value: tag 60000 around `[evidence, claims]`.
pub fn evidence_extension(evidence: &[u8], claims: &[u8]) -> Vec<u8> {
    Item::Tag(
        TEE_QUOTE_TAG,
        Box::new(Item::Array(vec![
            Item::Bytes(evidence.to_vec()),
            Item::Bytes(claims.to_vec()),
        ])),
    )
    .encode()
}

fn hash_by_alg(alg: u64, data: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    let algo = match alg {
        SHA256_ALG => &digest::SHA256,
        SHA384_ALG => &digest::SHA384,
        SHA512_ALG => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(algo, data).as_ref().to_vec())
}

/// Why a certificate's RA-TLS evidence could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaTlsError {
    /// The certificate is not DER X.509.
    #[error("the certificate does not parse: {0}")]
    Certificate(#[source] der::Error),
    /// It has neither the DICE tagged-evidence extension nor Gramine's.
    #[error("the certificate carries no RA-TLS evidence extension")]
    NoEvidence,
    /// The evidence extension is malformed or names another key.
    #[error("RA-TLS evidence extension: {0}")]
    Extension(String),
    /// The certificate carries evidence but no teekms statement (not a teekms node's).
    #[error("not a teekms RA-TLS certificate (no teekms-tee and teekms-statement claims)")]
    NotTeekms,
    /// The statement names another TLS key than the certificate's.
    #[error("the statement names another key than the certificate's")]
    KeyMismatch,
}

/// Reads the evidence of an RA-TLS certificate and checks what can be checked without
/// it: the claims' `pubkey-hash` names this certificate's key.
pub fn extract(cert_der: &[u8]) -> Result<RaTlsEvidence, RaTlsError> {
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(RaTlsError::Certificate)?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(RaTlsError::Certificate)?;
    let exts: &[x509_cert::ext::Extension] = cert
        .tbs_certificate()
        .extensions()
        .map(|v| v.as_slice())
        .unwrap_or_default();
    let find = |oid: &str| {
        exts.iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
    };
    if let Some(value) = find(DICE_TAGGED_EVIDENCE_OID) {
        return parse_dice(&value, &spki);
    }
    if let Some(quote) = find(GRAMINE_LEGACY_OID) {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&sha256(&spki));
        return Ok(RaTlsEvidence {
            format: Format::GramineLegacy,
            evidence: quote,
            claims: None,
            expected_report_data: rd,
            bound_len: 32,
            tee: Some(TeeKind::Sgx),
            statement: None,
            collateral: None,
        });
    }
    Err(RaTlsError::NoEvidence)
}

fn parse_dice(value: &[u8], spki: &[u8]) -> Result<RaTlsEvidence, RaTlsError> {
    let bad = |why: &str| RaTlsError::Extension(why.to_owned());
    let Item::Tag(TEE_QUOTE_TAG, inner) = Item::decode(value).map_err(|e| bad(&e.to_string()))?
    else {
        return Err(bad("not CBOR tag 60000 (TEE quote)"));
    };
    let Item::Array(parts) = *inner else {
        return Err(bad("the tagged item is not an array"));
    };
    let [Item::Bytes(evidence), Item::Bytes(claims)] = <[Item; 2]>::try_from(parts)
        .map_err(|_| bad("the array does not hold exactly [evidence, claims]"))?
    else {
        return Err(bad("evidence and claims must be byte strings"));
    };
    if claims.is_empty() {
        return Err(bad("empty claims"));
    }
    let map = Item::decode(&claims).map_err(|e| bad(&format!("claims: {e}")))?;
    let Item::Map(pairs) = &map else {
        return Err(bad("claims are not a map"));
    };
    if pairs.is_empty()
        || pairs
            .iter()
            .any(|(k, _)| !matches!(k, Item::Text(t) if !t.is_empty()))
    {
        return Err(bad("claims need text keys"));
    }
    let Some(Item::Bytes(entry)) = map.get("pubkey-hash") else {
        return Err(bad("no pubkey-hash claim"));
    };
    let Ok(Item::Array(entry)) = Item::decode(entry) else {
        return Err(bad("pubkey-hash is not an array"));
    };
    let (Some(Item::Uint(alg)), Some(Item::Bytes(hash)), 2) =
        (entry.first(), entry.get(1), entry.len())
    else {
        return Err(bad("pubkey-hash is not [algorithm, hash]"));
    };
    let want = hash_by_alg(*alg, spki).ok_or_else(|| bad("unknown pubkey-hash algorithm"))?;
    if want != *hash {
        return Err(bad(
            "pubkey-hash does not match the certificate's public key",
        ));
    }
    let tee = match map.get("teekms-tee") {
        Some(Item::Text(t)) => Some(TeeKind::parse(t).ok_or_else(|| bad("unknown teekms-tee"))?),
        None => None,
        Some(_) => return Err(bad("teekms-tee is not text")),
    };
    let statement = match map.get("teekms-statement") {
        Some(Item::Bytes(b)) => Some(
            NodeStatement::from_canonical_bytes(b)
                .map_err(|e| bad(&format!("teekms-statement: {e}")))?,
        ),
        None => None,
        Some(_) => return Err(bad("teekms-statement is not bytes")),
    };
    let collateral = match map.get("teekms-collateral") {
        Some(Item::Bytes(b)) => {
            Some(serde_json::from_slice(b).map_err(|e| bad(&format!("teekms-collateral: {e}")))?)
        }
        None => None,
        Some(_) => return Err(bad("teekms-collateral is not bytes")),
    };
    Ok(RaTlsEvidence {
        format: Format::DiceTagged,
        expected_report_data: report_data_for_claims(&claims),
        bound_len: 64,
        evidence,
        claims: Some(claims),
        tee,
        statement,
        collateral,
    })
}

impl RaTlsEvidence {
    /// Verifies a teekms RA-TLS certificate's evidence (signatures, collateral at
    /// `now_unix`, binding to the claims, so to the key) and appraises it against
    /// `policy`. Its statement must name the certificate's key too.
    pub fn verify(
        &self,
        cert_spki_sha256: &[u8; 32],
        policy: &Policy,
        now_unix: u64,
    ) -> Result<Verdict, RaTlsError> {
        let (Some(tee), Some(statement)) = (self.tee, &self.statement) else {
            return Err(RaTlsError::NotTeekms);
        };
        if statement.tls_spki_sha256.0 != *cert_spki_sha256 {
            return Err(RaTlsError::KeyMismatch);
        }
        let doc = AttestationDocument {
            version: DOCUMENT_VERSION,
            tee,
            evidence: self.evidence.clone(),
            statement: statement.clone(),
            collateral: self
                .collateral
                .as_ref()
                .map(|c| serde_json::to_value(c).expect("collateral serializes")),
        };
        Ok(crate::verify::verify_with_binding(
            &doc,
            policy,
            Freshness::Offline,
            now_unix,
            self.expected_report_data,
        ))
    }

    /// The document to keep for a verified peer, with the report data its evidence binds.
    pub fn document(&self) -> Option<(AttestationDocument, [u8; 64])> {
        Some((
            AttestationDocument {
                version: DOCUMENT_VERSION,
                tee: self.tee?,
                evidence: self.evidence.clone(),
                statement: self.statement.clone()?,
                collateral: self
                    .collateral
                    .as_ref()
                    .map(|c| serde_json::to_value(c).expect("collateral serializes")),
            },
            self.expected_report_data,
        ))
    }
}

/// [`crate::verify_document`] for a document taken from an RA-TLS certificate: its
/// evidence binds `report_data` (the claims' hash), not the statement's hash.
pub fn verify_document_bound(
    doc: &AttestationDocument,
    report_data: [u8; 64],
    policy: &Policy,
    now_unix: u64,
) -> Verdict {
    crate::verify::verify_with_binding(doc, policy, Freshness::Offline, now_unix, report_data)
}
