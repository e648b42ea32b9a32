#![no_main]
//! Policy files: parse; whatever parses as sim-only round-trips through to_toml.
use libfuzzer_sys::fuzz_target;
use teekms_attest::Policy;
use teekms_attest::policy::AcceptEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::from_toml(text)
        && p.entries()
            .iter()
            .all(|e| matches!(e, AcceptEntry::Sim { .. }))
    {
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }
});
