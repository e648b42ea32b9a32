#![no_main]
//! DCAP quotes (untrusted, from a node or a file): extent, parse, verify against the real
//! collateral of a captured vector (when ../shared/vectors is there), with revocation data
//! and without it (`--dangerous-skip-revocation`'s own appraisal path). Must never panic.
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use teekms_attest::TeeKind;
use teekms_attest::danger::verify_dcap_ignoring_revocation;
use teekms_attest::dcap::{DcapCollateral, quote_extent, verify_dcap};

fn collateral() -> &'static DcapCollateral {
    static C: OnceLock<DcapCollateral> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/sgx/dcapqvl-sgx-v3-processor-ca");
        let read = |n: &str| std::fs::read(dir.join(n)).unwrap_or_default();
        let text = |n: &str| String::from_utf8(read(n)).unwrap_or_default();
        DcapCollateral {
            tcb_info: read("tcb_info.json"),
            qe_identity: read("qe_identity.json"),
            tcb_info_issuer_chain: text("tcb_info_issuer_chain.pem"),
            qe_identity_issuer_chain: text("qe_identity_issuer_chain.pem"),
            pck_crl: Some(read("pck_crl.der")),
            pck_crl_issuer_chain: Some(text("pck_crl_issuer_chain.pem")),
            root_ca_crl: Some(read("root_ca_crl.der")),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = quote_extent(data);
    let now = 1_752_919_277;
    for tee in [TeeKind::Sgx, TeeKind::Tdx] {
        let empty = DcapCollateral::default();
        assert!(!verify_dcap(tee, data, &empty, now).verified);
        let with = verify_dcap(tee, data, collateral(), now);
        let without = verify_dcap_ignoring_revocation(tee, data, collateral(), now);
        // Whatever the two paths conclude, they conclude it alike.
        assert_eq!(with.verified, without.verified);
        assert_eq!(with.tcb_status, without.tcb_status);
    }
});
