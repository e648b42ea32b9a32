#![no_main]
//! Sealed records and node key sets read from untrusted storage.
use libfuzzer_sys::fuzz_target;
use teekms_core::record::DataKeyRecord;
use teekms_core::{KeyId, NodeKeys, OwnerPublicKey, SealingKey};

fuzz_target!(|data: &[u8]| {
    let key = SealingKey::from_bytes([1; 32]);
    assert!(key.open("data-key", "x", 1, data).is_err() || data.len() >= 29);
    let _ = DataKeyRecord::open(
        &key,
        &OwnerPublicKey([2; 32]),
        &KeyId::new("k").unwrap(),
        1,
        data,
    );
    let _ = NodeKeys::from_bytes(data);
});
