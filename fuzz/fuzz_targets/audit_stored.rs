#![no_main]
//! Audit entries in their stored form, read back from the untrusted store (compact
//! binary, or the JSON of earlier versions): never panics; what decodes survives a
//! round trip through the compact form unchanged.
use libfuzzer_sys::fuzz_target;
use teekms_core::audit::stored::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode(data) {
        assert_eq!(decode(&encode(&entry)).unwrap(), entry);
    }
});
