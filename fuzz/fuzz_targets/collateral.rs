#![no_main]
//! Collateral files and the SNP certificate table (untrusted: from a PCCS, KDS, a USB
//! stick or a host's auxblob): describe, prepare, split. Never panics.
use libfuzzer_sys::fuzz_target;
use teekms_attest::collateral::{CollateralFiles, KNOWN_FILES};

fuzz_target!(|data: &[u8]| {
    let mut files = CollateralFiles::default();
    for name in KNOWN_FILES {
        files.insert(name, data.to_vec());
    }
    let _ = files.describe();
    if let Ok(c) = files.dcap() {
        let _ = c.prepare();
    }
    let _ = files.snp();
    let _ = teekms_platform::configfs::parse_cert_table(data);
});
