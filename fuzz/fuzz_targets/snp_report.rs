#![no_main]
//! SEV-SNP reports and endorsement certificates (untrusted): parse and verify.
use libfuzzer_sys::fuzz_target;
use teekms_attest::snp::{SnpCollateral, SnpReport, verify_snp};

fuzz_target!(|data: &[u8]| {
    let _ = SnpReport::parse(data);
    let (report, cert) = data.split_at(data.len().min(0x4A0));
    let coll = SnpCollateral { vek: cert.to_vec(), ask: cert.to_vec(), ..SnpCollateral::default() };
    assert!(!verify_snp(report, &coll, 1_748_736_000).verified);
});
