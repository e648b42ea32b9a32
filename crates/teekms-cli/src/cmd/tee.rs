//! The TEE a command runs in: chosen by name, or detected (never sim), and opened.

use std::path::Path;
use std::sync::Arc;

use teekms_attest::TeeKind;
use teekms_attest::collateral::CollateralFiles;
use teekms_platform::configfs::ConfigfsTsm;
use teekms_platform::gramine::{GramineSgx, SealTo};
use teekms_platform::sys::SevGuestDevice;
use teekms_platform::{Platform, SimPlatform};

use crate::cli::{PlatformArgs, SealToArg, TeeArg};
use crate::failure::Failure;
use crate::paths;

/// Printed whenever a node is run on the simulated TEE.
pub const SIM_WARNING: &str = "WARNING: --tee sim is INSECURE. The simulated TEE protects nothing: its \"hardware\" keys are files. Use it only for development and tests.";

pub fn platform(
    tee: TeeArg,
    args: &PlatformArgs,
    data_dir: &Path,
) -> Result<Arc<dyn Platform>, Failure> {
    let fail = |e: teekms_platform::PlatformError| Failure::usage(e.to_string());
    let tee = match tee {
        TeeArg::Auto => detect(args)?,
        other => other,
    };
    let collateral = match &args.collateral {
        Some(dir) => super::evidence::read_collateral_dir(dir)?,
        None => CollateralFiles::default(),
    };
    match tee {
        TeeArg::Sim => {
            let root = paths::sim_root_path(&args.sim_root.sim_root)?;
            let sim = SimPlatform::open(&root, data_dir).map_err(fail)?;
            // A sim node without a sealing key behaves as a TDX node does (deploy/cluster.md).
            Ok(match std::env::var_os("TEEKMS_SIM_NO_SEALING_KEY") {
                Some(_) => Arc::new(sim.without_sealing_key()),
                None => Arc::new(sim),
            })
        }
        TeeArg::Sgx => {
            let seal_to = match args.seal_to {
                SealToArg::Mrsigner => SealTo::MrSigner,
                SealToArg::Mrenclave => SealTo::MrEnclave,
            };
            let doc_collateral = (!collateral.files.is_empty())
                .then(|| serde_json::to_value(&collateral).expect("collateral serializes"));
            Ok(Arc::new(
                GramineSgx::open(&args.attestation_dir, seal_to, doc_collateral).map_err(fail)?,
            ))
        }
        TeeArg::Tdx => Ok(Arc::new(ConfigfsTsm::new(
            &args.tsm_dir,
            TeeKind::Tdx,
            None,
            collateral,
        ))),
        TeeArg::Snp => {
            let device = Box::new(SevGuestDevice::new(&args.sev_guest));
            Ok(Arc::new(ConfigfsTsm::new(
                &args.tsm_dir,
                TeeKind::Snp,
                Some(device),
                collateral,
            )))
        }
        TeeArg::Auto => unreachable!("resolved above"),
    }
}

/// The TEE present on this machine. Never sim: sim is only ever chosen by name.
fn detect(args: &PlatformArgs) -> Result<TeeArg, Failure> {
    if args.attestation_dir.join("attestation_type").exists() {
        return Ok(TeeArg::Sgx);
    }
    if args.tsm_dir.exists() {
        if Path::new("/dev/tdx_guest").exists() {
            return Ok(TeeArg::Tdx);
        }
        if args.sev_guest.exists() {
            return Ok(TeeArg::Snp);
        }
    }
    Err(Failure::usage("--tee auto found no TEE: no Gramine /dev/attestation, and no configfs-tsm with a TDX or SEV guest device")
        .hint("run inside an SGX enclave (gramine-sgx), a TDX or an SNP confidential VM; for development choose --tee sim explicitly"))
}
