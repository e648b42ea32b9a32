//! `teekms recovery`: officers' keys, opening shares, restoring a lost cluster.

use std::path::Path;

use teekms_core::hpke::HpkePrivateKey;
use teekms_core::recovery::{OpenShare, SealedShare};

use crate::cli::RecoveryCmd;
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub fn run(cmd: RecoveryCmd) -> CmdResult {
    match cmd {
        RecoveryCmd::OfficerInit { output } => {
            let key = HpkePrivateKey::generate();
            let public = format!("{}\n", hex::encode(key.public_key()));
            let secret = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
            paths::write_new_secret(&output, secret.as_bytes(), "officer key")?;
            let mut pub_path = output.clone().into_os_string();
            pub_path.push(".pub");
            paths::write_atomic(Path::new(&pub_path), public.as_bytes(), 0o644)?;
            println!("officer public key: {}", public.trim());
            eprintln!(
                "private key in {} (keep it offline); give {} to the cluster's creator",
                output.display(),
                Path::new(&pub_path).display()
            );
            Ok(())
        }
        RecoveryCmd::Open {
            share,
            officer,
            output,
        } => {
            let sealed: SealedShare =
                serde_json::from_slice(&paths::read(&share, "share", 64 * 1024)?).map_err(|e| {
                    Failure::rejected(format!("{} is not a recovery share: {e}", share.display()))
                })?;
            let key = load_officer_private(&officer)?;
            let open = sealed
                .open(&key)
                .map_err(|e| Failure::rejected(e.to_string()))?;
            let text = zeroize::Zeroizing::new(
                serde_json::to_string(&open).expect("shares serialize") + "\n",
            );
            paths::write_new_secret(&output, text.as_bytes(), "opened share")?;
            eprintln!(
                "share {} of {} (threshold {}) opened into {}",
                open.index,
                open.count,
                open.threshold,
                output.display()
            );
            Ok(())
        }
        RecoveryCmd::Restore {
            data_dir,
            store,
            tee,
            shares,
            platform,
        } => {
            if store.is_none() && !crate::paths::holds_node(&data_dir)? {
                return Err(Failure::usage(format!(
                    "{} holds no teekms store",
                    data_dir.display()
                ))
                .hint("give the lost node's data dir (or its backup), or --store for a PostgreSQL cluster"));
            }
            let mut open = Vec::new();
            for p in &shares {
                let bytes = zeroize::Zeroizing::new(paths::read(p, "opened share", 64 * 1024)?);
                let share: OpenShare = serde_json::from_slice(&bytes).map_err(|e| {
                    Failure::rejected(format!("{} is not an opened share: {e}", p.display()))
                        .hint("each officer opens theirs with `teekms recovery open`")
                })?;
                open.push(share);
            }
            let platform = super::tee::platform(tee, &platform, &data_dir)?;
            // On a thread of its own: the PostgreSQL client blocks, and must not run on
            // the async runtime this command is called from.
            let restored = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        teekms_server::restore_node(platform, &data_dir, store.as_deref(), &open)
                    })
                    .join()
                    .expect("restore thread")
            });
            let node_id = restored.map_err(|e| match e {
                teekms_server::ServerError::Recovery(_) => Failure::rejected(e.to_string()),
                other => Failure::usage(other.to_string()),
            })?;
            println!(
                "restored: node {node_id} holds the cluster again; start it with `teekms serve`"
            );
            Ok(())
        }
    }
}

fn parse_hex32(text: &str, path: &Path, what: &str) -> Result<[u8; 32], Failure> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| {
        Failure::usage(format!(
            "{} is not an {what} (64 hex characters)",
            path.display()
        ))
    })?;
    Ok(out)
}

/// An officer's public key file (64 hex characters).
pub fn load_officer_public(path: &Path) -> Result<[u8; 32], Failure> {
    let bytes = paths::read(path, "officer public key", 1024)?;
    parse_hex32(&String::from_utf8_lossy(&bytes), path, "officer public key")
}

fn load_officer_private(path: &Path) -> Result<HpkePrivateKey, Failure> {
    let bytes = zeroize::Zeroizing::new(paths::read(path, "officer key", 1024)?);
    let raw = zeroize::Zeroizing::new(parse_hex32(
        &String::from_utf8_lossy(&bytes),
        path,
        "officer key",
    )?);
    HpkePrivateKey::from_bytes(raw.as_ref())
        .map_err(|_| Failure::usage(format!("{} is not a usable X25519 key", path.display())))
}
