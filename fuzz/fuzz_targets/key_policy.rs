#![no_main]
//! Key policies (untrusted, from an owner's request or a stored record) and access-key
//! tokens (untrusted, from any caller): strict parsing must never panic.
use libfuzzer_sys::fuzz_target;
use teekms_core::access::{KeyPolicy, parse_access_token};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KeyPolicy::parse(text);
        let _ = parse_access_token(&[1; 32], text);
    }
});
