use teekms_platform::SimRoot;
use teekms_server::{ServeConfig, serve};

use std::path::Path;

use teekms_attest::TeeKind;
use teekms_attest::snp::Product;

use super::tee::platform;
use crate::cli::{PlatformArgs, ServeArgs, SimRootArg, TeeArg};
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub async fn run(args: ServeArgs) -> CmdResult {
    teekms_server::warm_up_rng();
    if matches!(args.tee, TeeArg::Sim) {
        paths::say("stderr", "WARN", super::tee::SIM_WARNING);
    }
    let mut platform_args = args.platform.clone();
    if let Some(url) = &args.platform.collateral_url {
        let dir = fetch_own_collateral(args.tee, &platform_args, &args.data_dir, url).await?;
        platform_args.collateral = Some(dir);
    }
    let platform = platform(args.tee, &platform_args, &args.data_dir)?;
    let min_deletion_wait = teekms_attest::policy::parse_duration(&args.min_deletion_wait)
        .map_err(|e| Failure::usage(format!("--min-deletion-wait: {e}")))?;
    let stream_idle_timeout =
        match teekms_attest::policy::parse_duration(&args.stream_idle_timeout) {
            Ok(0) => Err("it must be at least 1s".to_owned()),
            other => other.map_err(|e| e.to_string()),
        }
        .map(std::time::Duration::from_secs)
        .map_err(|e| Failure::usage(format!("--stream-idle-timeout: {e}")))?;
    let stream_memory = parse_size(&args.stream_memory)
        .map_err(|e| Failure::usage(format!("--stream-memory: {e}")))?;
    if args.max_connections == Some(0) {
        return Err(Failure::usage("--max-connections must be at least 1"));
    }
    let recovery = match args.recovery_threshold {
        Some(threshold) => Some(teekms_server::RecoverySetup {
            threshold,
            officers: args
                .recovery_officers
                .iter()
                .map(|p| super::recovery::load_officer_public(p))
                .collect::<Result<_, _>>()?,
        }),
        None => None,
    };
    let server = serve(ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        platform,
        min_deletion_wait,
        stream_idle_timeout,
        stream_memory,
        max_connections: args.max_connections,
        collateral_warn_days: args.collateral_warn,
        tls: tls_settings(&args)?,
        aws_region: aws_region(&args.aws_region)?,
        transit_mount: transit_mount(&args.transit_mount)?,
        metrics_listen: args.metrics_listen,
        confirm_data_plane: args.data_plane_confirmation == crate::cli::Switch::On,
        advertise: match &args.advertise {
            Some(url) => Some(
                teekms_client::NodeUrl::parse(url)
                    .map_err(|e| Failure::usage(format!("--advertise: {e}")))?
                    .to_string(),
            ),
            None => None,
        },
        recovery,
        store: args.store.clone(),
        join: args.join.clone(),
        cluster_admin: match &args.cluster_admin {
            // Taken once and for good: a mistyped fingerprint would leave the cluster
            // without an admin who can sign in.
            Some(fp) => {
                let fp = fp.trim().to_ascii_lowercase();
                if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Failure::usage(
                        "--cluster-admin is an owner fingerprint: 64 hex characters",
                    )
                    .hint("`teekms owner init` prints yours"));
                }
                Some(fp)
            }
            None => None,
        },
        cluster_policy: match &args.cluster_policy {
            Some(p) => {
                let text = String::from_utf8(paths::read(p, "cluster policy", 64 * 1024)?)
                    .map_err(|_| Failure::usage(format!("{} is not UTF-8", p.display())))?;
                teekms_attest::Policy::from_toml(&text)
                    .map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
                Some(text)
            }
            None => None,
        },
    })
    .await
    .map_err(|e| {
        let hint = match &e {
            teekms_server::ServerError::InUse { .. } => {
                "one data dir serves one node; nothing in it was changed"
            }
            teekms_server::ServerError::Io { .. } => {
                "check --listen (is another process on that port?) and the permissions of --data-dir"
            }
            teekms_server::ServerError::Damaged(_) => {
                "the data dir was sealed by another TEE or altered: restore it from a backup, or, if this node's hardware changed, restore its state with `teekms recovery restore`"
            }
            _ => "check --data-dir, --listen and the options the message names",
        };
        Failure::usage(format!("cannot start the node: {e}")).hint(hint)
    })?;
    paths::say(
        "stdout",
        "INFO",
        &format!(
            "teekms node {} listening on {}",
            server.node_id,
            server.url()
        ),
    );
    if let Some(addr) = server.metrics_addr {
        paths::say(
            "stderr",
            "INFO",
            &format!("metrics on http://{addr}/metrics"),
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    paths::say("stderr", "INFO", "shutting down");
    server.shutdown().await;
    Ok(())
}

/// Fetches the collateral for this node's own evidence into DATA_DIR/collateral, before
/// serving (never inside a handshake). The directory doubles as a cache for offline restarts.
async fn fetch_own_collateral(
    tee: TeeArg,
    args: &PlatformArgs,
    data_dir: &Path,
    url: &str,
) -> Result<std::path::PathBuf, Failure> {
    let probe = platform(tee, args, data_dir)?;
    let evidence = probe
        .evidence(&[0; 64])
        .map_err(|e| Failure::usage(e.to_string()))?;
    let products: &[Option<Product>] = match probe.tee() {
        TeeKind::Snp => &[
            Some(Product::Milan),
            Some(Product::Genoa),
            Some(Product::Turin),
        ],
        TeeKind::Sim => {
            return Err(Failure::usage(
                "the sim TEE needs no collateral; drop --collateral-url",
            ));
        }
        _ => &[None],
    };
    let mut last = None;
    for product in products {
        let plan = teekms_attest::collateral::fetch_plan(probe.tee(), &evidence, *product)
            .map_err(|e| Failure::usage(e.to_string()))?;
        match teekms_client::fetch::fetch_collateral(url, &plan).await {
            Ok(files) => {
                let dir = data_dir.join("collateral");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
                for (name, contents) in &files.files {
                    paths::write_atomic(&dir.join(name), contents, 0o644)?;
                }
                return Ok(dir);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Failure::from(last.expect("at least one attempt"))
        .hint("check --collateral-url, or ship a collateral directory with --collateral"))
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

/// Parses a size such as `256MiB`, `1GiB`, `512KiB` or `1048576` (bytes): at least 1 MiB,
/// at most 1 TiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"256MiB\""))?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return Err(format!("{text:?}: the unit must be B, KiB, MiB or GiB")),
    };
    n.checked_mul(1 << shift)
        .filter(|b| (1 << 20..=1 << 40).contains(b))
        .ok_or_else(|| format!("{text:?} must be between 1MiB and 1024GiB"))
}

/// `--tls-san` and `--tls-cert-lifetime`, checked before anything starts.
fn tls_settings(args: &ServeArgs) -> Result<teekms_server::TlsSettings, Failure> {
    for name in &args.tls_san {
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        let is_dns = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && (label == "*"
                        || label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            });
        if !is_ip && !is_dns {
            return Err(Failure::usage(format!(
                "--tls-san {name:?} is neither an IP address nor a DNS name"
            )));
        }
    }
    let lifetime = teekms_attest::policy::parse_duration(&args.tls_cert_lifetime)
        .map_err(|e| Failure::usage(format!("--tls-cert-lifetime: {e}")))?;
    // Ten seconds is for tests of renewal; days are for service.
    if !(10..=366 * 24 * 3600).contains(&lifetime) {
        return Err(Failure::usage(
            "--tls-cert-lifetime must be from 10 seconds to a year",
        ));
    }
    Ok(teekms_server::TlsSettings {
        names: args.tls_san.clone(),
        cert_lifetime: lifetime,
    })
}

/// `--transit-mount`: one path segment that no native endpoint uses.
fn transit_mount(name: &str) -> Result<String, Failure> {
    const TAKEN: [&str; 15] = [
        "keys",
        "envelope",
        "access-keys",
        "workload",
        "cluster",
        "audit",
        "ping",
        "health",
        "ready",
        "attestation",
        "ca",
        "stream",
        "streams",
        "sys",
        "auth",
    ];
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !plain || TAKEN.contains(&name) {
        return Err(Failure::usage(format!(
            "--transit-mount {name:?} must be one path segment (a-z, 0-9, - and _) that is not one of the node's own: {}",
            TAKEN.join(", ")
        )));
    }
    Ok(name.to_owned())
}

/// `--aws-region`: lowercase letters, digits and dashes, as AWS names regions.
fn aws_region(region: &str) -> Result<String, Failure> {
    if region.is_empty()
        || region.len() > 32
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Failure::usage(format!(
            "--aws-region {region:?} is not a region name (such as us-east-1)"
        )));
    }
    Ok(region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "MiB",
            "1KiB",
            "2TiB",
            "99999999999999999999GiB",
            "5 MiB",
            "-1MiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
