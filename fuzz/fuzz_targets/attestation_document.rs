#![no_main]
//! Attestation documents (untrusted JSON from a node or a USB stick): parse, then verify
//! evidence, binding and policy. Must never panic; must never accept without the pinned root.
use libfuzzer_sys::fuzz_target;
use teekms_attest::{AttestationDocument, Freshness, Policy, verify_document};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = AttestationDocument::from_json(data) {
        let policy = Policy::sim([7; 32], None);
        let v = verify_document(&doc, &policy, Freshness::Offline, 0);
        assert!(!v.accepted || v.verified);
        let _ = teekms_attest::sim::parse_and_verify(&doc.evidence);
    }
    let _ = teekms_attest::sim::parse_and_verify(data);
});
