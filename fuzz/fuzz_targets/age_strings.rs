#![no_main]
//! What `age` hands age-plugin-teekms (untrusted: anyone can write a recipient, an
//! identity file or a stanza): recipients and identities parse strictly and re-encode to
//! the same bytes; bech32 text never panics.
use libfuzzer_sys::fuzz_target;
use teekms_age::{Identity, Recipient, bech32_decode};

fuzz_target!(|data: &[u8]| {
    if let Some(r) = Recipient::from_bytes(data) {
        assert_eq!(r.to_bytes(), data);
    }
    if let Some(i) = Identity::from_bytes(data) {
        assert_eq!(i.to_bytes(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bech32_decode("age1teekms", text);
        let _ = bech32_decode("age-plugin-teekms-", text);
    }
});
