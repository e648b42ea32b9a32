use std::sync::Arc;

use teekms_platform::{Platform, SimPlatform, SimRoot};
use teekms_server::{ServeConfig, serve};

use crate::cli::{ServeArgs, SimRootArg, TeeArg};
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub const SIM_WARNING: &str = "WARNING: --tee sim is INSECURE. The simulated TEE protects nothing: its \"hardware\" keys are files. Use it only for development and tests.";

pub fn platform(
    tee: TeeArg,
    sim_root: &SimRootArg,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn Platform>, Failure> {
    match tee {
        TeeArg::Sim => {
            let root = paths::sim_root_path(&sim_root.sim_root)?;
            let p =
                SimPlatform::open(&root, data_dir).map_err(|e| Failure::usage(e.to_string()))?;
            Ok(Arc::new(p))
        }
        TeeArg::Sgx | TeeArg::Tdx | TeeArg::Snp => Err(Failure::usage(
            "running on real TEE hardware is not supported by this version of teekms",
        )
        .hint("use --tee sim for development")),
    }
}

pub async fn run(args: ServeArgs) -> CmdResult {
    teekms_core::warm_up_rng();
    if matches!(args.tee, TeeArg::Sim) {
        eprintln!("{SIM_WARNING}");
    }
    let platform = platform(args.tee, &args.sim_root, &args.data_dir)?;
    let server = serve(ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        platform,
    })
    .await
    .map_err(|e| {
        Failure::usage(format!("cannot start the node: {e}")).hint(
            "check --data-dir and --listen; a damaged data dir must be restored from a backup",
        )
    })?;
    println!(
        "teekms node {} listening on {}",
        server.node_id,
        server.url()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    eprintln!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub fn sim_root(arg: SimRootArg) -> CmdResult {
    let path = paths::sim_root_path(&arg.sim_root)?;
    let root = SimRoot::load_or_create(&path).map_err(|e| Failure::usage(e.to_string()))?;
    println!("{}", hex::encode(root.public_key()));
    Ok(())
}
