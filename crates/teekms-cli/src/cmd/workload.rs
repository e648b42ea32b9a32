//! `teekms workload fetch`: a program inside a TEE obtains a key by attestation.

use teekms_client::Identity;
use teekms_core::NodeKeys;

use crate::cli::WorkloadCmd;
use crate::failure::{CmdResult, Failure};
use crate::paths;

use super::{now, parse_url, warn_if_sim};

pub async fn run(cmd: WorkloadCmd) -> CmdResult {
    match cmd {
        WorkloadCmd::Attest {
            tee,
            key_out,
            output,
            platform,
        } => attest(tee, &key_out, output.as_deref(), &platform),
        WorkloadCmd::Open { key, io } => open(&key, &io),
        fetch @ WorkloadCmd::Fetch { .. } => self::fetch(fetch).await,
    }
}

/// `teekms workload attest`: a fresh key set, and this TEE's evidence for it.
fn attest(
    tee: crate::cli::TeeArg,
    key_out: &std::path::Path,
    output: Option<&std::path::Path>,
    platform_args: &crate::cli::PlatformArgs,
) -> CmdResult {
    if key_out.exists() {
        return Err(Failure::usage(format!(
            "{} exists; keys are never overwritten",
            key_out.display()
        )));
    }
    let scratch = tempfile::tempdir()
        .map_err(|e| Failure::usage(format!("cannot make a temporary directory: {e}")))?;
    let platform = super::tee::platform(tee, platform_args, scratch.path())?;
    let keys = NodeKeys::generate();
    let statement = keys.statement(platform.tee(), None);
    let evidence = platform
        .evidence(&statement.hash())
        .map_err(|e| Failure::usage(format!("cannot make evidence in this TEE: {e}")))?;
    let doc = teekms_attest::AttestationDocument {
        version: teekms_attest::document::DOCUMENT_VERSION,
        tee: platform.tee(),
        evidence,
        statement,
        collateral: platform.collateral(),
    };
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(keys.to_bytes().as_slice())));
    paths::write_new_secret(key_out, text.as_bytes(), "workload key")?;
    let json = doc.to_json();
    match output {
        Some(p) => paths::write_atomic(p, json.as_bytes(), 0o644)?,
        None => println!("{json}"),
    }
    warn_if_sim(platform.tee());
    Ok(())
}

/// `teekms workload open`: a CiphertextForRecipient opened with the workload's key.
fn open(key: &std::path::Path, io: &crate::cli::InOut) -> CmdResult {
    use base64::Engine;
    let text = zeroize::Zeroizing::new(paths::read(key, "workload key", 4096)?);
    let bytes = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| Failure::usage(format!("{} is not a workload key file", key.display())))?;
    let keys = NodeKeys::from_bytes(&bytes)
        .map_err(|e| Failure::usage(format!("{}: {e}", key.display())))?;
    let input = match &io.input {
        Some(p) => paths::read(p, "CiphertextForRecipient", 1 << 20)?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::io::stdin(), 1 << 20),
                &mut buf,
            )
            .map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
            buf
        }
    };
    // Raw bytes start with the magic; otherwise it is base64 (as in AWS's JSON).
    let blob = if input.starts_with(teekms_core::recipient::MAGIC) {
        input
    } else {
        let t: Vec<u8> = input
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&t)
            .map_err(|_| {
                Failure::usage("the input is neither a CiphertextForRecipient nor its base64")
            })?
    };
    let plaintext =
        teekms_core::recipient::open(&keys, &blob).map_err(|e| Failure::rejected(e.to_string()))?;
    match &io.output {
        Some(p) => paths::write_atomic(p, &plaintext, 0o600),
        None => std::io::Write::write_all(&mut std::io::stdout(), &plaintext)
            .map_err(|e| Failure::usage(format!("writing stdout: {e}"))),
    }
}

async fn fetch(cmd: WorkloadCmd) -> CmdResult {
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
    } = cmd
    else {
        unreachable!("called for fetch only")
    };
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
