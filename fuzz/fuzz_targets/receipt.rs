#![no_main]
//! Receipts (untrusted, from a node): parse and re-serialize.
use libfuzzer_sys::fuzz_target;
use teekms_core::Receipt;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Receipt::from_json(data) {
        assert_eq!(Receipt::from_json(r.to_json().as_bytes()).unwrap(), r);
    }
});
