#![no_main]
//! SEV-SNP reports and endorsement certificates (untrusted): parse and verify. The input
//! is laid over a report-sized buffer with a valid version and algorithm, so the fuzzer
//! reaches the chain and signature checks instead of stopping at the length check.
use libfuzzer_sys::fuzz_target;
use teekms_attest::snp::{REPORT_LEN, SnpCollateral, SnpReport, verify_snp};

fuzz_target!(|data: &[u8]| {
    let _ = SnpReport::parse(data);
    let (head, cert) = data.split_at(data.len().min(0x330));
    let mut report = vec![0u8; REPORT_LEN];
    report[..head.len()].copy_from_slice(head);
    report[0] = 2;
    report[0x34] = 1;
    let coll = SnpCollateral {
        vek: cert.to_vec(),
        ask: cert.to_vec(),
        ..SnpCollateral::default()
    };
    assert!(!verify_snp(&report, &coll, 1_748_736_000).verified);
});
