//! Reaching a node: verified (fresh evidence against the owner's policy) before any
//! credential or secret is sent, as its owner or with an access key.

use std::path::Path;

use teekms_client::VerifiedConnection;

use crate::cli::{CollateralArg, NodeArgs};
use crate::cmd::{now, parse_url, warn_if_sim};
use crate::failure::Failure;
use crate::paths;

/// Connects to the node at `node` once its fresh evidence verifies against `policy`.
pub async fn connect_verified(
    node: &str,
    policy: &Path,
    owner: Option<&teekms_core::OwnerKey>,
    collateral: &CollateralArg,
) -> Result<teekms_client::VerifiedConnection, Failure> {
    let url = parse_url(node)?;
    let policy = paths::load_policy(policy)?;
    let files = match &collateral.collateral {
        Some(dir) => Some(super::evidence::read_collateral_dir(dir)?),
        None => None,
    };
    let conn = teekms_client::connect_verified_with_collateral(
        &url,
        &policy,
        owner,
        now(),
        files.as_ref(),
    )
    .await?;
    warn_if_sim(conn.node().statement().tee);
    crate::freshness::watch(&conn);
    Ok(conn)
}

/// Connects to a verified node as the owner, or with an access key (then anonymously:
/// the token is the credential, sent only after the node verified).
pub async fn connect(node: &NodeArgs) -> Result<VerifiedConnection, Failure> {
    let token = match &node.access_key {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let owner = match token {
        Some(_) => None,
        None => Some(paths::load_owner(&node.owner.owner)?),
    };
    let mut conn =
        connect_verified(&node.node, &node.policy, owner.as_ref(), &node.collateral).await?;
    if let Some(t) = token {
        conn.use_access_key(&t);
    }
    Ok(conn)
}

fn read_token(path: &Path) -> Result<zeroize::Zeroizing<String>, Failure> {
    let bytes = zeroize::Zeroizing::new(paths::read(path, "access key file", 1024)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::usage(format!("{} is not an access key token", path.display())))?;
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

/// `teekms ca export`: the CA certificate, only from a node whose fresh evidence the
/// policy admits, and only if its key is the one the node's statement binds.
pub async fn ca(cmd: crate::cli::CaCmd) -> crate::failure::CmdResult {
    let crate::cli::CaCmd::Export {
        node,
        policy,
        output,
        collateral,
    } = cmd;
    let mut conn = connect_verified(&node, &policy, None, &collateral).await?;
    let pem = conn.cluster_ca_pem().await?;
    match &output {
        Some(path) => {
            paths::write_atomic(path, pem.as_bytes(), 0o644)?;
            eprintln!(
                "the CA of node {}'s cluster, verified, in {} (use it as AWS_CA_BUNDLE)",
                conn.node().statement().node_id,
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    Ok(())
}
