//! Every parser of untrusted bytes, on arbitrary and on mutated valid input: never a
//! panic, never an acceptance it should not give. (The fuzz/ targets go deeper.)

use proptest::prelude::*;
use teekms_attest::{AttestationDocument, Freshness, NodeStatement, Policy, verify_document};
use teekms_core::record::DataKeyRecord;
use teekms_core::{Bundle, DataKey, KeyId, NodeKeys, OwnerPublicKey, Receipt, SealingKey};

fn vector_document() -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/binding-v1.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["document"].to_string().into_bytes()
}

proptest! {
    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let policy = Policy::sim([7; 32], None);
        if let Ok(doc) = AttestationDocument::from_json(&data) {
            prop_assert!(!verify_document(&doc, &policy, Freshness::Offline, 0).accepted);
        }
        prop_assert!(teekms_attest::sim::parse_and_verify(&data).is_err());
        let _ = NodeStatement::from_canonical_bytes(&data);
        let _ = Bundle::from_json(&data);
        let _ = Receipt::from_json(&data);
        let _ = DataKey::from_file_text(&data);
        let _ = NodeKeys::from_bytes(&data);
        let key = SealingKey::from_bytes([1; 32]);
        prop_assert!(DataKeyRecord::open(&key, &OwnerPublicKey([2; 32]), &KeyId::new("k").unwrap(), 1, &data).is_err());
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = Policy::from_toml(text);
        }
    }

    #[test]
    fn mutated_documents_never_verify_as_the_original(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let doc = vector_document();
        let mut bad = doc.clone();
        let i = pos.index(bad.len());
        bad[i] ^= flip;
        if let Ok(parsed) = AttestationDocument::from_json(&bad) {
            let original = AttestationDocument::from_json(&doc).unwrap();
            // Either it is rejected, or the change did not alter what was verified.
            let policy = Policy::sim(match teekms_attest::sim::parse_and_verify(&original.evidence) {
                Ok(ev) => ev.root_public_key,
                Err(_) => unreachable!(),
            }, None);
            if verify_document(&parsed, &policy, Freshness::Offline, 0).accepted {
                prop_assert_eq!(parsed, original);
            }
        }
    }
}
