//! Intel SGX under Gramine: evidence and sealing keys through `/dev/attestation`.
//!
//! Evidence: write the 64-byte report data to `user_report_data`, read the DCAP quote from
//! `quote`. Sealing: Gramine exposes 16-byte SGX sealing keys as
//! `keys/_sgx_mrsigner` (survives upgrades by the same signer; the default) and
//! `keys/_sgx_mrenclave` (this exact enclave only). We expand the chosen one with HKDF
//! into the 256-bit hardware sealing key. The directory is configurable so tests can
//! imitate it with captured quotes.

use std::path::{Path, PathBuf};

use teekms_attest::TeeKind;
use teekms_core::SealingKey;

use crate::files::io;
use crate::{Platform, PlatformError, read_secret_file};

/// Where Gramine mounts its attestation interface.
pub const DEFAULT_DIR: &str = "/dev/attestation";

/// Which SGX sealing identity the node's state is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealTo {
    /// MRSIGNER: later versions from the same signer can unseal (default).
    MrSigner,
    /// MRENCLAVE: only this exact enclave; upgrades migrate through a peer.
    MrEnclave,
}

/// The SGX TEE as Gramine presents it.
pub struct GramineSgx {
    dir: PathBuf,
    seal_to: SealTo,
    collateral: Option<serde_json::Value>,
}

impl GramineSgx {
    /// Opens the interface at `dir` and checks that Gramine does DCAP attestation there.
    pub fn open(
        dir: &Path,
        seal_to: SealTo,
        collateral: Option<serde_json::Value>,
    ) -> Result<GramineSgx, PlatformError> {
        let kind_path = dir.join("attestation_type");
        let kind = std::fs::read_to_string(&kind_path).map_err(io(
            "Gramine attestation type (is this running under gramine-sgx?)",
            &kind_path,
        ))?;
        if kind.trim() != "dcap" {
            return Err(PlatformError::Damaged {
                what: "Gramine attestation type",
                path: kind_path.display().to_string(),
                reason: format!(
                    "is {:?}; teekms needs sgx.remote_attestation = \"dcap\" in the manifest",
                    kind.trim()
                ),
            });
        }
        Ok(GramineSgx {
            dir: dir.to_owned(),
            seal_to,
            collateral,
        })
    }
}

impl Platform for GramineSgx {
    fn tee(&self) -> TeeKind {
        TeeKind::Sgx
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError> {
        let rd = self.dir.join("user_report_data");
        std::fs::write(&rd, report_data).map_err(io("Gramine user_report_data", &rd))?;
        let quote = self.dir.join("quote");
        std::fs::read(&quote).map_err(io("Gramine quote", &quote))
    }

    fn collateral(&self) -> Option<serde_json::Value> {
        self.collateral.clone()
    }

    fn sealing_key(&self) -> Result<SealingKey, PlatformError> {
        let (name, label): (&str, &[u8]) = match self.seal_to {
            SealTo::MrSigner => ("_sgx_mrsigner", b"sgx-mrsigner"),
            SealTo::MrEnclave => ("_sgx_mrenclave", b"sgx-mrenclave"),
        };
        let path = self.dir.join("keys").join(name);
        let raw = read_secret_file("Gramine SGX sealing key", &path)?.ok_or_else(|| {
            PlatformError::Damaged {
                what: "Gramine SGX sealing key",
                path: path.display().to_string(),
                reason: "is missing".into(),
            }
        })?;
        if raw.len() != 16 {
            return Err(PlatformError::Damaged {
                what: "Gramine SGX sealing key",
                path: path.display().to_string(),
                reason: format!("expected 16 bytes, found {}", raw.len()),
            });
        }
        Ok(crate::expand_sealing_key(&raw, label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_gramine(quote: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("attestation_type"), "dcap\n").unwrap();
        std::fs::write(dir.path().join("quote"), quote).unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/_sgx_mrsigner"), [1u8; 16]).unwrap();
        std::fs::write(dir.path().join("keys/_sgx_mrenclave"), [2u8; 16]).unwrap();
        dir
    }

    #[test]
    fn writes_report_data_reads_quote_and_derives_sealing_keys() {
        let captured = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors/sgx/dcapqvl-sgx-v3-processor-ca/quote.bin"
        ))
        .unwrap();
        let dir = fake_gramine(&captured);
        let p = GramineSgx::open(dir.path(), SealTo::MrSigner, None).unwrap();
        assert_eq!(p.evidence(&[9; 64]).unwrap(), captured);
        assert_eq!(
            std::fs::read(dir.path().join("user_report_data")).unwrap(),
            [9u8; 64]
        );
        let signer = p.sealing_key().unwrap();
        let enclave = GramineSgx::open(dir.path(), SealTo::MrEnclave, None)
            .unwrap()
            .sealing_key()
            .unwrap();
        assert_ne!(signer.expose(), enclave.expose());
        assert_eq!(
            signer.expose(),
            p.sealing_key().unwrap().expose(),
            "deterministic"
        );
    }

    #[test]
    fn refuses_non_dcap_gramine_and_bad_keys() {
        let dir = fake_gramine(b"q");
        std::fs::write(dir.path().join("attestation_type"), "none\n").unwrap();
        assert!(GramineSgx::open(dir.path(), SealTo::MrSigner, None).is_err());
        std::fs::write(dir.path().join("attestation_type"), "dcap\n").unwrap();
        std::fs::write(dir.path().join("keys/_sgx_mrsigner"), [1u8; 15]).unwrap();
        assert!(
            GramineSgx::open(dir.path(), SealTo::MrSigner, None)
                .unwrap()
                .sealing_key()
                .is_err()
        );
        assert!(GramineSgx::open(Path::new("/nonexistent"), SealTo::MrSigner, None).is_err());
    }
}
