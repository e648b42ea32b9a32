//! `teekms workload fetch`: a program inside a TEE obtains a key by attestation.

use teekms_client::Identity;
use teekms_core::NodeKeys;

use crate::cli::WorkloadCmd;
use crate::failure::{CmdResult, Failure};
use crate::paths;

use super::{now, parse_url, warn_if_sim};

pub async fn run(cmd: WorkloadCmd) -> CmdResult {
    let WorkloadCmd::Fetch {
        node,
        policy,
        key_id,
        key_owner,
        version,
        tee,
        output,
        gramine_key,
        gramine_keys_dir,
        platform,
    } = cmd;
    if let Some(out) = &output
        && out.exists()
    {
        return Err(Failure::usage(format!(
            "{} exists; keys are never overwritten",
            out.display()
        )));
    }
    // This program's keys are born here, in its TEE, for this exchange only.
    let scratch = tempfile::tempdir()
        .map_err(|e| Failure::usage(format!("cannot make a temporary directory: {e}")))?;
    let platform = super::tee::platform(tee, &platform, scratch.path())?;
    let keys = NodeKeys::generate();
    // Mutual RA-TLS: this program's certificate carries its evidence, and the node's
    // certificate is verified against --policy in the same handshake.
    let extension = platform
        .ratls_extension(&keys.statement(platform.tee(), None), keys.tls_spki_der())
        .map_err(|e| Failure::usage(format!("cannot make evidence in this TEE: {e}")))?;
    let url = parse_url(&node)?;
    let policy = paths::load_policy(&policy)?;
    let mut conn = teekms_client::connect_attested_as(
        &url,
        &policy,
        Identity::RaTlsWorkload(&keys, &extension),
        now(),
        None,
    )
    .await?;
    warn_if_sim(conn.node().statement().tee);
    let (v, dek) = conn
        .fetch_key(&key_id, key_owner.as_deref(), version, &keys)
        .await?;
    if let Some(out) = output {
        paths::write_new_secret(&out, dek.to_file_text().as_bytes(), "data key")?;
        eprintln!(
            "fetched version {v} of key {key_id} (kcv {}) into {}",
            dek.kcv(),
            out.display()
        );
    }
    if let Some(name) = gramine_key {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Failure::usage("--gramine-key is a plain key name"));
        }
        let path = gramine_keys_dir.join(&name);
        std::fs::write(&path, dek.gramine_key().as_ref()).map_err(|e| {
            Failure::usage(format!("cannot write {}: {e}", path.display()))
                .hint("run inside Gramine, or point --gramine-keys-dir at its key directory")
        })?;
        eprintln!(
            "fetched version {v} of key {key_id} (kcv {}) as Gramine key {name}",
            dek.kcv()
        );
    }
    Ok(())
}
