#![no_main]
//! Envelope ciphertexts (untrusted, from any caller): parse strictly, then open. Nothing
//! random may authenticate; whatever parses re-encodes to a header that parses the same.
use libfuzzer_sys::fuzz_target;
use teekms_core::DataKey;
use teekms_core::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        let dek = DataKey::from_bytes(&[7; 32]).unwrap();
        assert!(env.open(&dek, b"").is_err());
    }
});
