use std::path::{Path, PathBuf};

use teekms_attest::{Freshness, VerifiedNode, verify_document};
use teekms_core::{Bundle, DataKey, KeyId, Receipt};
use teekms_server::{OpError, open_node};

use crate::cli::{CollateralArg, DeployArgs, KeyCmd, OwnerArg, PlatformArgs, TeeArg, WrapArgs};
use crate::cmd::connect::connect_verified;
use crate::cmd::{format_time, now, parse_url, warn_if_sim};
use crate::failure::{CmdResult, EXIT_REJECTED, Failure};
use crate::paths;

pub async fn run(cmd: KeyCmd) -> CmdResult {
    match cmd {
        KeyCmd::Generate { output } => {
            let dek = DataKey::generate();
            paths::write_new_secret(&output, dek.to_file_text().as_bytes(), "data key")?;
            println!(
                "wrote a new 256-bit data key to {} (kcv {})",
                output.display(),
                dek.kcv()
            );
            Ok(())
        }
        KeyCmd::Deploy(args) => deploy(args).await,
        cmd @ (KeyCmd::Describe { .. }
        | KeyCmd::Rotate(_)
        | KeyCmd::Enable(_)
        | KeyCmd::Disable(_)
        | KeyCmd::ScheduleDeletion { .. }
        | KeyCmd::CancelDeletion(_)
        | KeyCmd::MinDecryptionVersion { .. }
        | KeyCmd::Export { .. }
        | KeyCmd::Policy(_)) => super::use_keys::admin(cmd).await,
        KeyCmd::Wrap(args) => wrap(args),
        KeyCmd::Import {
            bundle,
            node,
            data_dir,
            tee,
            policy,
            receipt,
            platform,
        } => {
            let receipt_path = receipt.unwrap_or_else(|| {
                let mut p = bundle.clone().into_os_string();
                p.push(".receipt");
                PathBuf::from(p)
            });
            let b = load_bundle(&bundle)?;
            match (node, data_dir) {
                (Some(node), None) => {
                    import_online(&node, policy.as_deref(), &b, &receipt_path).await
                }
                (None, Some(dir)) => import_offline(&dir, tee, &platform, &b, &receipt_path),
                _ => Err(Failure::usage("give exactly one of --node and --data-dir")),
            }
        }
        KeyCmd::CheckReceipt {
            receipt,
            evidence,
            policy,
            key_id,
            dek,
            owner,
            collateral,
        } => {
            let node = verify_offline(&evidence, &policy, &collateral)?;
            let owner = paths::load_owner(&owner.owner)?;
            let key_id = parse_key_id(&key_id)?;
            let dek = paths::load_dek(&dek)?;
            let bytes = paths::read(
                &receipt,
                "receipt",
                teekms_core::receipt::MAX_RECEIPT_LEN as u64,
            )?;
            let r = Receipt::from_json(&bytes).map_err(|e| Failure::rejected(e.to_string()))?;
            r.verify(&node, &owner.public_key(), &key_id, &dek.kcv())
                .map_err(|e| Failure::rejected(e.to_string()))?;
            println!(
                "receipt verified: node {} holds key {} (kcv {}, version {})",
                r.node_id, r.key_id, r.kcv, r.key_version
            );
            Ok(())
        }
        KeyCmd::List {
            node,
            policy,
            json,
            owner,
            collateral,
        } => list(&node, &policy, json, &owner, &collateral).await,
    }
}

fn parse_key_id(s: &str) -> Result<KeyId, Failure> {
    KeyId::new(s).map_err(|e| Failure::usage(e.to_string()))
}

fn load_bundle(path: &Path) -> Result<Bundle, Failure> {
    let bytes = paths::read(path, "bundle", teekms_core::bundle::MAX_BUNDLE_LEN as u64)?;
    Bundle::from_json(&bytes).map_err(|e| {
        Failure::rejected(format!("{}: {e}", path.display()))
            .hint("ask the owner for a fresh bundle; do not edit it")
    })
}

async fn deploy(a: DeployArgs) -> CmdResult {
    let (node, policy, receipt_out, collateral) =
        (&a.node, &a.policy, a.receipt.as_deref(), &a.collateral);
    let owner = paths::load_owner(&a.owner.owner)?;
    let key_id = parse_key_id(&a.key_id)?;
    let dek = paths::load_dek(&a.dek)?;
    let key_policy = paths::load_key_policy(&a.key_policy)?;
    let mut conn = connect_verified(node, policy, Some(&owner), collateral).await?;
    eprintln!("verified node {}", conn.node().statement().node_id);
    let (receipt, created) = conn.deploy(&owner, &key_id, &key_policy, &dek).await?;
    if let Some(path) = receipt_out {
        paths::write_atomic(path, (receipt.to_json() + "\n").as_bytes(), 0o644)?;
    }
    if created {
        println!(
            "deployed key {key_id} to node {} (kcv {}); the signed receipt checks out",
            receipt.node_id, receipt.kcv
        );
    } else {
        println!(
            "key {key_id} was already on node {} with the same material (kcv {}); nothing changed",
            receipt.node_id, receipt.kcv
        );
    }
    Ok(())
}

/// The node whose attestation document `evidence` is, verified offline against `policy`.
pub(super) fn verify_offline(
    evidence: &Path,
    policy: &Path,
    collateral: &CollateralArg,
) -> Result<VerifiedNode, Failure> {
    let policy = paths::load_policy(policy)?;
    let mut doc = paths::load_document(evidence)?;
    if let Some(dir) = &collateral.collateral {
        let files = super::evidence::read_collateral_dir(dir)?;
        doc.collateral = Some(serde_json::to_value(&files).expect("collateral serializes"));
    }
    warn_if_sim(doc.tee);
    verify_document(&doc, &policy, Freshness::Offline, now())
        .into_verified_node()
        .map_err(|v| {
            Failure::rejected(format!("the node's evidence was rejected: {}", v.reasons.join("; ")))
                .hint("nothing was done; check the policy and the attestation document (`teekms attest verify --json`)")
        })
}

fn wrap(a: WrapArgs) -> CmdResult {
    let (evidence, policy, output, collateral) = (&a.evidence, &a.policy, &a.output, &a.collateral);
    let owner = paths::load_owner(&a.owner.owner)?;
    let key_id = parse_key_id(&a.key_id)?;
    let dek = paths::load_dek(&a.dek)?;
    let key_policy = paths::load_key_policy(&a.key_policy)?;
    let node = verify_offline(evidence, policy, collateral)?;
    let bundle = Bundle::wrap(&node, &owner, &key_id, &key_policy, &dek)
        .map_err(|e| Failure::usage(e.to_string()))?;
    paths::write_atomic(output, (bundle.to_json() + "\n").as_bytes(), 0o644)?;
    println!(
        "wrapped key {key_id} (kcv {}) to node {} in {out}; import it into the running node with `teekms key import {out} --node https://HOST:PORT`, or into the stopped one, inside its TEE, with `teekms key import {out} --data-dir DIR --tee TEE`",
        dek.kcv(),
        node.statement().node_id,
        out = output.display(),
    );
    Ok(())
}

fn report_import(receipt: &Receipt, created: bool, receipt_path: &Path) -> CmdResult {
    paths::write_atomic(receipt_path, (receipt.to_json() + "\n").as_bytes(), 0o644)?;
    let what = if created {
        "imported"
    } else {
        "already held (same material)"
    };
    println!(
        "{what}: key {} (kcv {}) on node {}; receipt written to {}",
        receipt.key_id,
        receipt.kcv,
        receipt.node_id,
        receipt_path.display()
    );
    Ok(())
}

async fn import_online(
    node: &str,
    policy: Option<&Path>,
    bundle: &Bundle,
    receipt_path: &Path,
) -> CmdResult {
    let (receipt, created) = match policy {
        Some(policy) => {
            connect_verified(node, policy, None, &CollateralArg { collateral: None })
                .await?
                .import(bundle)
                .await?
        }
        None => {
            let url = parse_url(node)?;
            teekms_client::connect(&url, None)
                .await?
                .import(bundle)
                .await?
        }
    };
    report_import(&receipt, created, receipt_path)
}

fn import_offline(
    dir: &Path,
    tee: Option<TeeArg>,
    platform_args: &PlatformArgs,
    bundle: &Bundle,
    receipt_path: &Path,
) -> CmdResult {
    let tee = tee.ok_or_else(|| Failure::usage("--data-dir needs --tee (the node's TEE)"))?;
    if matches!(tee, TeeArg::Sim) {
        eprintln!("{}", super::tee::SIM_WARNING);
    }
    if !crate::paths::holds_node(dir)? {
        return Err(
            Failure::usage(format!("{} holds no teekms node", dir.display()))
                .hint("start the node once with `teekms serve` to create it"),
        );
    }
    let platform = super::tee::platform(tee, platform_args, dir)?;
    let node = open_node(platform, dir)
        .map_err(|e| Failure::usage(format!("cannot open the node: {e}")))?;
    let deployed =
        teekms_server::import_offline(node, dir, bundle, now()).map_err(deploy_failure)?;
    report_import(&deployed.receipt, deployed.created, receipt_path)
}

fn deploy_failure(e: OpError) -> Failure {
    let code = match e {
        OpError::Store(_) | OpError::Unavailable => crate::failure::EXIT_USAGE,
        _ => EXIT_REJECTED,
    };
    Failure {
        code,
        message: e.to_string(),
        hint: None,
    }
}

async fn list(
    node: &str,
    policy: &Path,
    json: bool,
    owner: &OwnerArg,
    collateral: &CollateralArg,
) -> CmdResult {
    let owner = paths::load_owner(&owner.owner)?;
    let mut conn = connect_verified(node, policy, Some(&owner), collateral).await?;
    let list = conn.list().await?;
    if json {
        println!("{}", serde_json::to_string(&list).expect("lists serialize"));
    } else {
        println!(
            "{:<40} {:>7} {:<20} kcv",
            "key id", "version", "created (UTC)"
        );
        for k in &list.keys {
            println!(
                "{:<40} {:>7} {:<20} {}",
                k.key_id,
                k.key_version,
                format_time(k.created_at),
                k.kcv
            );
        }
        if list.keys.is_empty() {
            println!("(no keys)");
        }
    }
    if list.damaged.is_empty() {
        return Ok(());
    }
    for d in &list.damaged {
        eprintln!(
            "damaged: key {:?} version {}: {}",
            d.key_id, d.key_version, d.error
        );
    }
    Err(Failure::rejected(format!("{} stored key record(s) failed authentication", list.damaged.len()))
        .hint("the node's storage was altered; restore those records from a backup or redeploy the keys from your copies"))
}
