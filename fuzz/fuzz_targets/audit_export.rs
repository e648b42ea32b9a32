#![no_main]
//! Audit exports (untrusted files, from any disk or USB stick): parsed and verified
//! against a fixed node key. Never panics, and made-up bytes never verify.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert!(teekms_core::audit::export::verify_export(text, "node", &[7; 32]).is_err());
});
