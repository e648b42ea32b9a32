#![no_main]
//! Policy files: parse; whatever parses round-trips through to_toml.
use libfuzzer_sys::fuzz_target;
use teekms_attest::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::from_toml(text)
    {
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }
});
