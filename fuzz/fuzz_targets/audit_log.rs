#![no_main]
//! Audit logs read back from the untrusted store: entries split on newlines, verified in
//! order. Must never panic, and random entries must never verify.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let entries: Vec<(u64, &[u8])> = data
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect();
    assert!(teekms_core::audit::verify_log(&[3; 32], entries).is_err() || data.is_empty());
});
