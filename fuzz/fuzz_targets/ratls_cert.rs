#![no_main]
//! RA-TLS certificates (untrusted, from any TLS client): the CBOR decoder alone, and a
//! certificate whose DICE evidence extension holds the input. Must never panic.
use libfuzzer_sys::fuzz_target;
use teekms_attest::cbor::Item;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = Item::decode(data) {
        assert_eq!(item.encode(), data);
    }
    // A minimal certificate shell is not needed: extract() parses whatever DER it gets.
    let _ = teekms_attest::ratls::extract(data);
});
