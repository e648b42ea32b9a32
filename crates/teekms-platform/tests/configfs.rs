//! The configfs-tsm attester against a directory tree that imitates the kernel interface:
//! a "kernel" thread populates each new report entry the way configfs-tsm does, feeding
//! it captured evidence from ../shared/vectors. Captured evidence cannot bind report data
//! made here, so these tests check the interface, not the binding (sim tests cover that).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use teekms_attest::TeeKind;
use teekms_attest::collateral::CollateralFiles;
use teekms_platform::configfs::{ConfigfsTsm, DerivedKeySource, encode_cert_table};
use teekms_platform::{Platform, PlatformError};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn put(path: &Path, data: &[u8]) {
    // Atomic, like a kernel attribute: never seen half-written.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct FakeKernel {
    stop: Arc<AtomicBool>,
    entries: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl FakeKernel {
    /// Serves `outblob`/`auxblob` for every new entry under `root`; the first `races`
    /// entries see a concurrent writer (generation moves by 2).
    fn start(
        root: &Path,
        provider: &'static str,
        outblob: Vec<u8>,
        auxblob: Option<Vec<u8>>,
        races: usize,
    ) -> FakeKernel {
        let stop = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(AtomicUsize::new(0));
        let (root, s, e) = (root.to_owned(), stop.clone(), entries.clone());
        let thread = std::thread::spawn(move || {
            let mut seen = HashSet::new();
            let mut inblobs = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&root).unwrap().flatten() {
                    let dir = entry.path();
                    if !seen.insert(dir.clone()) {
                        continue;
                    }
                    let n = e.fetch_add(1, Ordering::Relaxed);
                    put(&dir.join("provider"), provider.as_bytes());
                    put(&dir.join("generation"), b"0\n");
                    let inblob = dir.join("inblob");
                    while std::fs::metadata(&inblob)
                        .map(|m| m.len() != 64)
                        .unwrap_or(true)
                    {
                        if s.load(Ordering::Relaxed) {
                            return inblobs;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    inblobs.push(std::fs::read(&inblob).unwrap());
                    put(
                        &dir.join("generation"),
                        if n < races { b"2\n" } else { b"1\n" },
                    );
                    if let Some(aux) = &auxblob {
                        put(&dir.join("auxblob"), aux);
                    }
                    put(&dir.join("outblob"), &outblob);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            inblobs
        });
        FakeKernel {
            stop,
            entries,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The attester removes its entries; configfs would, the imitation needs the files gone.
fn remaining_entries(root: &Path) -> usize {
    std::fs::read_dir(root).unwrap().count()
}

#[test]
fn tdx_report_through_configfs() {
    let root = tempfile::tempdir().unwrap();
    let quote = std::fs::read(vectors().join("tdx/dcapqvl-tdx-v4-uptodate/quote.bin")).unwrap();
    let kernel = FakeKernel::start(root.path(), "tdx_guest", quote.clone(), None, 0);
    let tsm = ConfigfsTsm::new(root.path(), TeeKind::Tdx, None, CollateralFiles::default());
    // The imitation cannot remove non-empty directories the way configfs does, so entries
    // stay; what matters is what went in and came out.
    assert_eq!(tsm.evidence(&[7; 64]).unwrap(), quote);
    assert!(tsm.collateral().is_none());
    let inblobs = kernel.finish();
    assert_eq!(inblobs, vec![vec![7u8; 64]]);
    assert_eq!(remaining_entries(root.path()), 1);
    let err = tsm.sealing_key().err().unwrap().to_string();
    assert!(err.contains("TDX has no sealing key"), "{err}");
}

#[test]
fn snp_report_with_its_certificate_table_verifies() {
    let root = tempfile::tempdir().unwrap();
    let dir = vectors().join("snp/virtee-milan-vcek");
    let report = std::fs::read(dir.join("report.bin")).unwrap();
    let vcek = std::fs::read(dir.join("vcek.der")).unwrap();
    let ask = std::fs::read(dir.join("ask.pem")).unwrap();
    let ark = std::fs::read(dir.join("ark.pem")).unwrap();
    let table = encode_cert_table(&[("vcek.der", &vcek), ("ask.pem", &ask), ("ark.pem", &ark)]);
    let kernel = FakeKernel::start(root.path(), "sev_guest", report.clone(), Some(table), 0);
    let tsm = ConfigfsTsm::new(root.path(), TeeKind::Snp, None, CollateralFiles::default());
    assert_eq!(tsm.evidence(&[1; 64]).unwrap(), report);
    kernel.finish();
    // The certificates from auxblob are the collateral that verifies the report.
    let files: CollateralFiles = serde_json::from_value(tsm.collateral().unwrap()).unwrap();
    assert_eq!(files.files["vcek.der"], vcek);
    let policy = teekms_attest::Policy::default_for(TeeKind::Snp).unwrap();
    let v = teekms_attest::evidence::verify_evidence(
        TeeKind::Snp,
        &report,
        &files,
        &policy,
        1_748_736_000,
    );
    assert!(v.verified && v.accepted, "{:?}", v.reasons);
}

#[test]
fn a_racing_writer_makes_the_attester_retry() {
    let root = tempfile::tempdir().unwrap();
    let quote = std::fs::read(vectors().join("tdx/dcapqvl-tdx-v4-uptodate/quote.bin")).unwrap();
    let kernel = FakeKernel::start(root.path(), "tdx_guest", quote.clone(), None, 1);
    let tsm = ConfigfsTsm::new(root.path(), TeeKind::Tdx, None, CollateralFiles::default());
    assert_eq!(tsm.evidence(&[2; 64]).unwrap(), quote);
    assert_eq!(
        kernel.entries.load(Ordering::Relaxed),
        2,
        "one lost race, one retry"
    );
    kernel.finish();
    // Racing on every attempt: a clear error after the bounded retries.
    let root = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::start(root.path(), "tdx_guest", quote, None, usize::MAX);
    let tsm = ConfigfsTsm::new(root.path(), TeeKind::Tdx, None, CollateralFiles::default());
    let err = tsm.evidence(&[2; 64]).unwrap_err().to_string();
    assert!(err.contains("another writer"), "{err}");
    kernel.finish();
}

#[test]
fn wrong_provider_and_missing_tree_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let kernel = FakeKernel::start(root.path(), "sev_guest", vec![0; 10], None, 0);
    let tsm = ConfigfsTsm::new(root.path(), TeeKind::Tdx, None, CollateralFiles::default());
    let err = tsm.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(err.contains("sev_guest"), "{err}");
    kernel.finish();
    let tsm = ConfigfsTsm::new(
        Path::new("/nonexistent/tsm"),
        TeeKind::Snp,
        None,
        CollateralFiles::default(),
    );
    assert!(
        tsm.evidence(&[0; 64])
            .unwrap_err()
            .to_string()
            .contains("configfs-tsm")
    );
}

/// The derived-key ioctl is the one thing a directory cannot imitate: a test double.
struct FixedDerivedKey([u8; 32]);

impl DerivedKeySource for FixedDerivedKey {
    fn derived_key(&self) -> Result<[u8; 32], PlatformError> {
        Ok(self.0)
    }
}

#[test]
fn snp_sealing_key_comes_from_the_derived_key() {
    let root = tempfile::tempdir().unwrap();
    let a = ConfigfsTsm::new(
        root.path(),
        TeeKind::Snp,
        Some(Box::new(FixedDerivedKey([3; 32]))),
        CollateralFiles::default(),
    );
    let b = ConfigfsTsm::new(
        root.path(),
        TeeKind::Snp,
        Some(Box::new(FixedDerivedKey([4; 32]))),
        CollateralFiles::default(),
    );
    let ka = a.sealing_key().unwrap();
    assert_eq!(ka.expose(), a.sealing_key().unwrap().expose());
    assert_ne!(ka.expose(), b.sealing_key().unwrap().expose());
    assert_ne!(
        ka.expose(),
        &[3; 32],
        "the derived key is expanded, never used raw"
    );
    let none = ConfigfsTsm::new(root.path(), TeeKind::Snp, None, CollateralFiles::default());
    assert!(none.sealing_key().is_err());
}
