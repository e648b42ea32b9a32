#![no_main]
//! The canonical statement decoder: whatever decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use teekms_attest::NodeStatement;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = NodeStatement::from_canonical_bytes(data) {
        assert_eq!(s.canonical_bytes(), data);
    }
});
