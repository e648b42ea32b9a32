#![no_main]
//! CiphertextForRecipient blobs (untrusted: a workload reads what a node, or anyone on
//! the way, hands it): parse strictly; nothing random opens; what parses re-encodes to
//! the same bytes.
use libfuzzer_sys::fuzz_target;
use teekms_core::NodeKeys;
use teekms_core::recipient;

fuzz_target!(|data: &[u8]| {
    if let Ok((op, sealed)) = recipient::decode(data) {
        assert_eq!(recipient::encode(&op, &sealed), data);
        let keys = NodeKeys::generate();
        assert!(recipient::open(&keys, data).is_err());
    }
});
