#![no_main]
//! Recovery shares: sealed shares come from share files and from the cluster's database,
//! opened shares from officers' files; all untrusted. Parsing, opening with an officer
//! key, and recovering from any set of shares must never panic.
use libfuzzer_sys::fuzz_target;
use teekms_attest::hexbytes::HexBytes;
use teekms_core::hpke::HpkePrivateKey;
use teekms_core::recovery::{OpenShare, SealedShare, recover};

fuzz_target!(|data: &[u8]| {
    if let Ok(shares) = serde_json::from_slice::<Vec<SealedShare>>(data) {
        let officer = HpkePrivateKey::from_bytes(&[7; 32]).expect("a fixed X25519 key");
        for s in &shares {
            let _ = s.open(&officer);
        }
    }
    if let Ok(share) = serde_json::from_slice::<SealedShare>(data) {
        let officer = HpkePrivateKey::from_bytes(&[7; 32]).expect("a fixed X25519 key");
        let _ = share.open(&officer);
    }
    if let Ok(shares) = serde_json::from_slice::<Vec<OpenShare>>(data) {
        let _ = recover(&shares);
    }
    // The same bytes as raw opened shares (version, threshold, count, index, 32-byte y),
    // so that interpolation sees any mix of thresholds, duplicates and zero indexes.
    let shares: Vec<OpenShare> = data
        .chunks_exact(36)
        .take(16)
        .map(|c| OpenShare {
            version: c[0] % 2,
            cluster_check: HexBytes([9; 16]),
            threshold: c[1] % 8,
            count: c[2] % 8,
            index: c[3] % 8,
            share: HexBytes(c[4..36].try_into().expect("32 bytes")),
        })
        .collect();
    let _ = recover(&shares);
});
