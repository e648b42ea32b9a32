#![no_main]
//! DCAP quotes (untrusted, from a node or a file): extent, parse, verify against fixed
//! collateral. Must never panic; random bytes must never verify.
use libfuzzer_sys::fuzz_target;
use teekms_attest::TeeKind;
use teekms_attest::dcap::{DcapCollateral, quote_extent, verify_dcap};

fuzz_target!(|data: &[u8]| {
    let _ = quote_extent(data);
    for tee in [TeeKind::Sgx, TeeKind::Tdx] {
        assert!(!verify_dcap(tee, data, &DcapCollateral::default(), 1_752_919_277).verified);
    }
});
