//! `verify`: evidence verification with collateral in memory, next to the signature
//! operations it performs.

use super::*;

pub(crate) fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

pub(crate) fn verify_bench() {
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    use teekms_attest::TeeKind;
    use teekms_attest::collateral::{CollateralFiles, KNOWN_FILES};
    let load = |folder: &str| {
        let dir = vectors().join(folder);
        let mut files = CollateralFiles::default();
        for name in KNOWN_FILES {
            if let Ok(b) = std::fs::read(dir.join(name)) {
                files.insert(name, b);
            }
        }
        (dir, files)
    };
    println!("\n## Evidence verification, collateral in memory (mean per verification)");
    // DCAP: the SGX v3 vector. Its verification performs 10 ECDSA P-256 verifications
    // (quote, QE report, PCK leaf and intermediate, TCB info and its signer, QE identity
    // and its signer, root CA CRL, PCK CRL). The reference is 10 x one real P-256 verify
    // of this quote's own signature, on aws-lc-rs.
    let (dir, files) = load("sgx/dcapqvl-sgx-v3-processor-ca");
    let quote = std::fs::read(dir.join("quote.bin")).unwrap();
    let coll = files.dcap().unwrap().prepare().unwrap();
    let now = 1_752_919_277;
    let verify = || teekms_attest::dcap::verify_dcap_prepared(TeeKind::Sgx, &quote, Ok(&coll), now);
    assert!(verify().verified);
    let body_end = 48 + 384;
    let sig = &quote[body_end + 4..body_end + 68];
    let mut key = vec![4u8];
    key.extend_from_slice(&quote[body_end + 68..body_end + 132]);
    let pk = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key);
    pk.verify(&quote[..body_end], sig)
        .expect("the quote's own signature verifies");
    let (dcap, ten, ratio) = interleaved(
        || {
            std::hint::black_box(verify());
        },
        || {
            for _ in 0..10 {
                std::hint::black_box(pk.verify(&quote[..body_end], sig).is_ok());
            }
        },
    );
    let (one, sig_work) = (ten / 10, ten);
    println!(
        "DCAP SGX v3 verify: {:>8.1} us; its signature work (10 x P-256 verify, {:.1} us each): {:>6.1} us; median ratio of 9 interleaved rounds {:.2} (goal <= 1.2)",
        dcap.as_secs_f64() * 1e6,
        one.as_secs_f64() * 1e6,
        sig_work.as_secs_f64() * 1e6,
        ratio
    );
    // SNP: three RSA-4096 PSS verifications and one ECDSA P-384.
    let (dir, files) = load("snp/virtee-milan-vcek");
    let report = std::fs::read(dir.join("report.bin")).unwrap();
    let coll = files.snp().unwrap();
    let now = 1_748_736_000;
    assert!(teekms_attest::snp::verify_snp(&report, &coll, now).verified);
    let snp = time_per_op(|| {
        std::hint::black_box(teekms_attest::snp::verify_snp(&report, &coll, now));
    });
    println!(
        "SNP Milan VCEK verify: {:>6.1} us (goal < 1000 us)",
        snp.as_secs_f64() * 1e6
    );
}
