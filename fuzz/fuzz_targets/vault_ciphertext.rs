#![no_main]
//! Vault Transit ciphertexts (`vault:v<N>:<base64>`, untrusted, from any Transit caller):
//! parse strictly; what parses re-encodes to the same text.
use libfuzzer_sys::fuzz_target;
use teekms_core::envelope::{from_vault_form, to_vault_form};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((version, bytes)) = from_vault_form(text) {
        assert_eq!(to_vault_form(version, &bytes), text);
    }
});
