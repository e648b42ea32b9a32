//! The simulated TEE. INSECURE: for development and tests only.
//!
//! The "platform root" is an Ed25519 key in the user's data directory (outside any node's
//! data dir); the "hardware sealing key" is a file in the node's data dir; the
//! measurement is SHA-384 of the running executable.

use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use teekms_attest::{TeeKind, sim};
use teekms_core::SealingKey;

use crate::{Platform, PlatformError, read_secret_file, write_new_secret_file};

/// File name of the sim hardware sealing key inside a node's data dir.
pub const SEALING_KEY_FILE: &str = "sim-sealing.key";

/// The simulated platform root key.
pub struct SimRoot {
    pair: Ed25519KeyPair,
}

impl SimRoot {
    /// Loads the root at `path`, creating it (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<SimRoot, PlatformError> {
        const WHAT: &str = "sim root key";
        if read_secret_file(WHAT, path)?.is_none() {
            let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .expect("keygen");
            match write_new_secret_file(WHAT, path, doc.as_ref()) {
                Ok(()) => {}
                // Another process created it first: use theirs.
                Err(PlatformError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let der = read_secret_file(WHAT, path)?.ok_or_else(|| PlatformError::Damaged {
            what: WHAT,
            path: path.display().to_string(),
            reason: "vanished after creation".into(),
        })?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            PlatformError::Damaged {
                what: WHAT,
                path: path.display().to_string(),
                reason: format!("not an Ed25519 PKCS#8 key ({e}); delete it to make a new root"),
            }
        })?;
        Ok(SimRoot { pair })
    }

    /// The root's public key, to pin in a policy as `sim_root`.
    pub fn public_key(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("32 bytes")
    }

    /// Signs sim evidence for `measurement` and `report_data`.
    pub fn evidence(&self, measurement: &[u8; 48], report_data: &[u8; 64]) -> Vec<u8> {
        let root = self.public_key();
        let sig: [u8; 64] = self
            .pair
            .sign(&sim::signed_body(measurement, report_data, &root))
            .as_ref()
            .try_into()
            .expect("64 bytes");
        sim::assemble(measurement, report_data, &root, &sig)
    }
}

/// The sim TEE as seen by a node.
pub struct SimPlatform {
    root: SimRoot,
    measurement: [u8; 48],
    sealing_key_path: PathBuf,
    sealing: bool,
}

impl SimPlatform {
    /// Opens the sim TEE for a node whose data dir is `data_dir`.
    pub fn open(root_path: &Path, data_dir: &Path) -> Result<SimPlatform, PlatformError> {
        Ok(SimPlatform {
            root: SimRoot::load_or_create(root_path)?,
            measurement: measure_current_exe()?,
            sealing_key_path: data_dir.join(SEALING_KEY_FILE),
            sealing: true,
        })
    }

    /// The same sim TEE without a sealing key, as TDX is: for running and testing nodes
    /// that keep their keys in memory and join a cluster at every start.
    pub fn without_sealing_key(mut self) -> SimPlatform {
        self.sealing = false;
        self
    }

    /// The measurement this node reports.
    pub fn measurement(&self) -> [u8; 48] {
        self.measurement
    }
}

impl Platform for SimPlatform {
    fn tee(&self) -> TeeKind {
        TeeKind::Sim
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        Ok(self.root.evidence(&self.measurement, report_data))
    }

    fn sealing_key(&self) -> Result<SealingKey, PlatformError> {
        if !self.sealing {
            return Err(PlatformError::Damaged {
                what: "sim sealing key",
                path: self.sealing_key_path.display().to_string(),
                reason: "this sim TEE imitates one without a sealing key (TDX)".into(),
            });
        }
        sim_sealing_key(&self.sealing_key_path)
    }

    fn has_sealing_key(&self) -> bool {
        self.sealing
    }
}

/// The sim hardware sealing key at `path`, created on first use.
pub fn sim_sealing_key(path: &Path) -> Result<SealingKey, PlatformError> {
    const WHAT: &str = "sim hardware sealing key";
    if read_secret_file(WHAT, path)?.is_none() {
        let fresh = SealingKey::generate();
        match write_new_secret_file(WHAT, path, fresh.expose()) {
            Ok(()) => {}
            Err(PlatformError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let bytes = read_secret_file(WHAT, path)?.unwrap_or_default();
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| PlatformError::Damaged {
            what: WHAT,
            path: path.display().to_string(),
            reason: format!("expected 32 bytes, found {}", bytes.len()),
        })?;
    Ok(SealingKey::from_bytes(arr))
}

/// SHA-384 of the running executable: the sim measurement.
pub fn measure_current_exe() -> Result<[u8; 48], PlatformError> {
    let exe = std::env::current_exe().map_err(|source| PlatformError::Io {
        what: "running executable",
        path: "/proc/self/exe".into(),
        source,
    })?;
    measure_file(&exe)
}

/// SHA-384 of a file.
pub fn measure_file(path: &Path) -> Result<[u8; 48], PlatformError> {
    let io = |source| PlatformError::Io {
        what: "executable to measure",
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA384);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().try_into().expect("48 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teekms_attest::sim::parse_and_verify;

    #[test]
    fn evidence_verifies_and_root_persists() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root/sim-root.key");
        let p = SimPlatform::open(&root_path, dir.path()).unwrap();
        let ev = p.evidence(&[7; 64]).unwrap();
        let parsed = parse_and_verify(&ev).unwrap();
        assert_eq!(parsed.report_data, [7; 64]);
        assert_eq!(parsed.measurement, p.measurement());
        let again = SimRoot::load_or_create(&root_path).unwrap();
        assert_eq!(again.public_key(), parsed.root_public_key);
        let k1 = p.sealing_key().unwrap();
        let k2 = p.sealing_key().unwrap();
        assert_eq!(k1.expose(), k2.expose());
        let mode = std::fs::metadata(&root_path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }
}
