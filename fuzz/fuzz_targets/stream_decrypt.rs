#![no_main]
//! The streaming-format decoder (untrusted files): header parsing, chunk layout and
//! authentication. Random input never decrypts under a fixed key.
use libfuzzer_sys::fuzz_target;
use teekms_core::DataKey;
use teekms_stream_io::decrypt;

fuzz_target!(|data: &[u8]| {
    let dek = DataKey::from_bytes(&[7; 32]).unwrap();
    let mut out = Vec::new();
    assert!(decrypt(&dek, data, &mut out).is_err() || data.len() >= 12 + 40 + 16);
});
