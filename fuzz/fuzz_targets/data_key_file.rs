#![no_main]
//! The data-key file format: whatever parses is 64 lowercase hex and a newline.
use libfuzzer_sys::fuzz_target;
use teekms_core::DataKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = DataKey::from_file_text(data) {
        assert_eq!(k.to_file_text().as_bytes(), data);
    }
});
