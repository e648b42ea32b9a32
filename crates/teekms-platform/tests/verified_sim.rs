//! `VerifiedSim`: sim evidence checked once (signature, statement, binding), then
//! appraised against policies by its claims alone.

use teekms_attest::document::DOCUMENT_VERSION;
use teekms_attest::{AttestationDocument, EvidenceError, Policy, TeeKind, VerifiedSim};
use teekms_core::NodeKeys;
use teekms_platform::SimRoot;

fn document(root: &SimRoot, keys: &NodeKeys, measurement: [u8; 48]) -> AttestationDocument {
    let statement = keys.statement(TeeKind::Sim, None);
    AttestationDocument {
        version: DOCUMENT_VERSION,
        tee: TeeKind::Sim,
        evidence: root.evidence(&measurement, &statement.hash()),
        statement,
        collateral: None,
    }
}

#[test]
fn sim_evidence_is_checked_once_then_appraised_by_its_claims() {
    let dir = tempfile::tempdir().unwrap();
    let root = SimRoot::load_or_create(&dir.path().join("root.key")).unwrap();
    let keys = NodeKeys::generate();
    let doc = document(&root, &keys, [7; 48]);
    let bound = doc.statement.hash();

    let verified = VerifiedSim::check(&doc, &bound).unwrap();
    assert!(verified.admitted_by(&Policy::sim(root.public_key(), Some([7; 48]))));
    assert!(verified.admitted_by(&Policy::sim(root.public_key(), None)));
    assert!(!verified.admitted_by(&Policy::sim(root.public_key(), Some([8; 48]))));
    assert!(!verified.admitted_by(&Policy::sim([1; 32], None)));
    assert_eq!(verified.claims()["measurement"], "07".repeat(48));

    // Evidence bound to other data, or altered, is never a VerifiedSim.
    assert!(matches!(
        VerifiedSim::check(&doc, &[0; 64]),
        Err(EvidenceError::BindingMismatch)
    ));
    let mut altered = doc.clone();
    let last = altered.evidence.len() - 1;
    altered.evidence[last] ^= 1;
    assert!(VerifiedSim::check(&altered, &bound).is_err());
    let mut other_key = doc.clone();
    other_key.statement = NodeKeys::generate().statement(TeeKind::Sim, None);
    assert!(VerifiedSim::check(&other_key, &other_key.statement.hash()).is_err());
}
