//! Verification of an attestation document: evidence, binding, then policy.

use serde::Serialize;

use crate::collateral::CollateralFiles;
use crate::evidence::verify_evidence;
use crate::policy::AcceptEntry;
use crate::{AttestationDocument, EvidenceError, NodeStatement, Policy, TeeKind, sim};

/// What the verifier expects of the statement's nonce. Required: the binding check is
/// never optional, only its freshness part is chosen.
#[derive(Clone, Copy, Debug)]
pub enum Freshness<'a> {
    /// The verifier sent this nonce; the statement must carry exactly it.
    Nonce(&'a [u8]),
    /// Offline verification of a saved document: any nonce (or none) is accepted.
    Offline,
}

/// Proof that a node's evidence verified and its policy admitted it.
///
/// Only [`verify_document`] makes one, so any function that demands a `&VerifiedNode`
/// (wrapping a data key, checking a receipt) cannot run on unverified keys.
#[derive(Clone, Debug)]
pub struct VerifiedNode {
    statement: NodeStatement,
    statement_hash: [u8; 64],
}

impl VerifiedNode {
    /// The verified statement.
    pub fn statement(&self) -> &NodeStatement {
        &self.statement
    }

    /// The statement hash that the evidence's report data equals.
    pub fn statement_hash(&self) -> &[u8; 64] {
        &self.statement_hash
    }

    /// The attested HPKE public key.
    pub fn hpke_public_key(&self) -> &[u8; 32] {
        &self.statement.hpke_public_key.0
    }

    /// The attested receipt-signing key.
    pub fn signing_public_key(&self) -> &[u8; 32] {
        &self.statement.signing_public_key.0
    }

    /// SHA-256 of the attested TLS certificate's public key.
    pub fn tls_spki_sha256(&self) -> &[u8; 32] {
        &self.statement.tls_spki_sha256.0
    }
}

/// The outcome of verifying a document; serializes as the JSON verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Evidence authentic and bound to the statement.
    pub verified: bool,
    /// Verified and admitted by the policy.
    pub accepted: bool,
    /// The TEE the document names.
    pub tee: TeeKind,
    /// Intel TCB status (real Intel TEEs only).
    pub tcb_status: Option<String>,
    /// Intel advisory ids that apply (real Intel TEEs only).
    pub advisory_ids: Vec<String>,
    /// Why it was not verified or not accepted (empty when accepted).
    pub reasons: Vec<String>,
    /// Claims read from the evidence (present whenever it parsed).
    pub claims: Option<serde_json::Value>,
    /// The node statement.
    pub statement: NodeStatement,
    /// SHA-512 of the statement's canonical encoding, hex.
    pub statement_hash: String,
    #[serde(skip)]
    node: Option<VerifiedNode>,
}

impl Verdict {
    /// The proof of verification, if the document was accepted.
    pub fn verified_node(&self) -> Option<&VerifiedNode> {
        self.node.as_ref()
    }

    /// The proof, or the verdict explaining the refusal.
    pub fn into_verified_node(self) -> Result<VerifiedNode, Box<Verdict>> {
        match self.node {
            Some(n) => Ok(n),
            None => Err(Box::new(self)),
        }
    }
}

/// Verifies evidence, binding and policy.
///
/// `now_unix` is the verification time (used for collateral validity on real TEEs).
pub fn verify_document(
    doc: &AttestationDocument,
    policy: &Policy,
    freshness: Freshness<'_>,
    now_unix: u64,
) -> Verdict {
    verify_with_binding(doc, policy, freshness, now_unix, doc.statement.hash())
}

/// [`verify_document`] where the evidence's report data is `expected` rather than the
/// statement's hash: RA-TLS certificates bind the hash of their claims, which carry the
/// statement (spec/ratls-v1.md).
pub(crate) fn verify_with_binding(
    doc: &AttestationDocument,
    policy: &Policy,
    freshness: Freshness<'_>,
    now_unix: u64,
    expected: [u8; 64],
) -> Verdict {
    let statement_hash = doc.statement.hash();
    let mut verdict = Verdict {
        verified: false,
        accepted: false,
        tee: doc.tee,
        tcb_status: None,
        advisory_ids: Vec::new(),
        reasons: Vec::new(),
        claims: None,
        statement: doc.statement.clone(),
        statement_hash: hex::encode(statement_hash),
        node: None,
    };
    if doc.tee != TeeKind::Sim {
        verify_real(
            doc,
            policy,
            freshness,
            now_unix,
            (statement_hash, expected),
            &mut verdict,
        );
        return verdict;
    }
    let evidence = match check_evidence(doc, &expected, freshness) {
        Ok(ev) => ev,
        Err((claims, e)) => {
            verdict.claims = claims;
            verdict.reasons.push(e.to_string());
            return verdict;
        }
    };
    verdict.claims = Some(evidence.claims());
    verdict.verified = true;
    let mut reasons = Vec::new();
    for (i, entry) in policy.entries().iter().enumerate() {
        match evidence.appraise(entry) {
            Ok(()) => {
                verdict.accepted = true;
                verdict.node = Some(VerifiedNode {
                    statement: doc.statement.clone(),
                    statement_hash,
                });
                return verdict;
            }
            Err(why) => reasons.push(format!("policy entry accept[{i}]: {why}")),
        }
    }
    verdict.reasons = reasons;
    verdict
}

/// Real TEE evidence: verified with the document's collateral at `now_unix`, bound to
/// the statement, then appraised.
fn verify_real(
    doc: &AttestationDocument,
    policy: &Policy,
    freshness: Freshness<'_>,
    now_unix: u64,
    (statement_hash, expected): ([u8; 64], [u8; 64]),
    verdict: &mut Verdict,
) {
    if let Err(e) = doc.statement.validate() {
        verdict.reasons.push(e.to_string());
        return;
    }
    let files: CollateralFiles = match &doc.collateral {
        None => CollateralFiles::default(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(f) => f,
            Err(e) => {
                verdict
                    .reasons
                    .push(format!("the document's collateral is malformed: {e}"));
                return;
            }
        },
    };
    let ev = verify_evidence(doc.tee, &doc.evidence, &files, policy, now_unix);
    verdict.claims = ev.claims;
    verdict.tcb_status = ev.tcb_status;
    verdict.advisory_ids = ev.advisory_ids;
    if !ev.verified {
        verdict.reasons = ev.reasons;
        return;
    }
    // Compare in full; never pad or truncate report data.
    if ev.report_data != Some(expected) {
        verdict
            .reasons
            .push(EvidenceError::BindingMismatch.to_string());
        return;
    }
    if let Freshness::Nonce(expected) = freshness
        && doc.statement.nonce_bytes().ok().flatten().as_deref() != Some(expected)
    {
        verdict
            .reasons
            .push(EvidenceError::NonceMismatch.to_string());
        return;
    }
    verdict.verified = true;
    if ev.accepted {
        verdict.accepted = true;
        verdict.node = Some(VerifiedNode {
            statement: doc.statement.clone(),
            statement_hash,
        });
    } else {
        verdict.reasons = ev.reasons;
    }
}

/// Sim evidence whose statement, signature and binding verified: appraising it against
/// further policies needs no second signature check. Only [`VerifiedSim::check`] makes
/// one. (Real-TEE evidence is verified per policy: its checks depend on the policy's
/// TCB and collateral rules.)
#[derive(Clone, Debug)]
pub struct VerifiedSim(sim::SimEvidence);

impl VerifiedSim {
    /// Verifies sim evidence bound to `expected_report_data` (any nonce).
    pub fn check(
        doc: &AttestationDocument,
        expected_report_data: &[u8; 64],
    ) -> Result<VerifiedSim, EvidenceError> {
        match check_evidence(doc, expected_report_data, Freshness::Offline) {
            Ok(CheckedEvidence::Sim(ev)) => Ok(VerifiedSim(ev)),
            Err((_, e)) => Err(e),
        }
    }

    /// Its claims, as a [`Verdict`] gives them.
    pub fn claims(&self) -> serde_json::Value {
        CheckedEvidence::Sim(self.0.clone()).claims()
    }

    /// Whether an entry of `policy` admits it.
    pub fn admitted_by(&self, policy: &Policy) -> bool {
        let checked = CheckedEvidence::Sim(self.0.clone());
        policy.entries().iter().any(|e| checked.appraise(e).is_ok())
    }
}

/// Evidence whose signatures and binding verified, not yet appraised.
enum CheckedEvidence {
    Sim(sim::SimEvidence),
}

type Failure = (Option<serde_json::Value>, EvidenceError);

fn check_evidence(
    doc: &AttestationDocument,
    expected_report_data: &[u8; 64],
    freshness: Freshness<'_>,
) -> Result<CheckedEvidence, Failure> {
    doc.statement.validate().map_err(|e| (None, e))?;
    let (evidence, report_data) = match doc.tee {
        TeeKind::Sim => {
            let ev = sim::parse_and_verify(&doc.evidence).map_err(|e| (None, e))?;
            let rd = ev.report_data;
            (CheckedEvidence::Sim(ev), rd)
        }
        other => return Err((None, EvidenceError::Unsupported(other.as_str()))),
    };
    // Compare in full; never pad or truncate report data.
    if report_data != *expected_report_data {
        return Err((Some(evidence.claims()), EvidenceError::BindingMismatch));
    }
    if let Freshness::Nonce(expected) = freshness {
        let got = doc.statement.nonce_bytes().map_err(|e| (None, e))?;
        if got.as_deref() != Some(expected) {
            return Err((Some(evidence.claims()), EvidenceError::NonceMismatch));
        }
    }
    Ok(evidence)
}

impl CheckedEvidence {
    fn claims(&self) -> serde_json::Value {
        match self {
            CheckedEvidence::Sim(ev) => serde_json::json!({
                "measurement": hex::encode(ev.measurement),
                "sim_root": hex::encode(ev.root_public_key),
                "report_data": hex::encode(ev.report_data),
                "debug": false,
            }),
        }
    }

    fn appraise(&self, entry: &AcceptEntry) -> Result<(), crate::evidence::Mismatch> {
        match (self, entry) {
            (
                CheckedEvidence::Sim(ev),
                AcceptEntry::Sim {
                    sim_root,
                    measurement,
                },
            ) => {
                if ev.root_public_key != *sim_root {
                    return Err(crate::evidence::Mismatch::NotPinned {
                        field: "sim root",
                        got: hex::encode(ev.root_public_key),
                        want: hex::encode(sim_root),
                    });
                }
                if let Some(m) = measurement
                    && *m != ev.measurement
                {
                    return Err(crate::evidence::Mismatch::NotPinned {
                        field: "measurement",
                        got: hex::encode(ev.measurement),
                        want: hex::encode(m),
                    });
                }
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(crate::evidence::Mismatch::NotAllowed(
                "entry is for another tee",
            )),
        }
    }
}
