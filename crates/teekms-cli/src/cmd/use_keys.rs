//! Using keys a node holds: lifecycle and policy (`teekms key ...`), envelope
//! operations, access keys and the audit log.

use std::io::{Read, Write};
use std::path::Path;

use teekms_client::{VerifiedConnection, secret_of};
use teekms_core::access::Operation;
use teekms_core::api::{
    AccessKeyCreateRequest, B64, DecryptRequest, EncryptRequest, GenerateDataKeyRequest,
    KeyDescription, ReEncryptRequest, SecretB64,
};
use teekms_core::context::{EncryptionContext, context_aad};
use teekms_core::envelope::Envelope;

use crate::cli::{
    AccessCmd, AuditCmd, AuditSource, ClusterCmd, ClusterPolicyCmd, EnvelopeCmd, InOut, KeyAdmin,
    KeyPolicyCmd,
};
use crate::failure::{CmdResult, EXIT_REJECTED, Failure};
use crate::paths;

use super::connect::connect;
use super::format_time;

/// Largest envelope input read (the node takes 64 KiB of plaintext; ciphertexts are a
/// little larger).
const MAX_ENVELOPE_INPUT: u64 = 128 * 1024;

fn print_description(d: &KeyDescription, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(d).expect("descriptions serialize")
        );
        return;
    }
    let state = match (d.enabled, d.deletion_at) {
        (_, Some(at)) => format!("pending deletion at {}", format_time(at)),
        (true, None) => "enabled".into(),
        (false, None) => "disabled".into(),
    };
    println!("key {} (owner {})", d.key_id, d.owner);
    println!("  state: {state}");
    if !d.arn.is_empty() {
        println!("  AWS KMS API: {} (alias/{})", d.arn, d.key_id);
    }
    println!(
        "  current version: {}, decrypts from version {}, exportable: {}",
        d.current_version, d.min_decryption_version, d.exportable
    );
    for v in &d.versions {
        println!(
            "  version {:>3}  created {}  kcv {}",
            v.key_version,
            format_time(v.created_at),
            v.kcv
        );
    }
}

/// The key lifecycle verbs of `teekms key`.
pub async fn admin(cmd: crate::cli::KeyCmd) -> CmdResult {
    use crate::cli::KeyCmd as K;
    let (key, desc) = match cmd {
        K::Describe {
            key_id,
            key_owner,
            json,
            node,
        } => {
            let d = connect(&node)
                .await?
                .describe(&key_id, key_owner.as_deref())
                .await?;
            print_description(&d, json);
            return Ok(());
        }
        K::Rotate(k) => {
            let d = connect(&k.node).await?.rotate(&k.key_id).await?;
            (k, d)
        }
        K::Enable(k) => {
            let d = connect(&k.node).await?.set_enabled(&k.key_id, true).await?;
            (k, d)
        }
        K::Disable(k) => {
            let d = connect(&k.node)
                .await?
                .set_enabled(&k.key_id, false)
                .await?;
            (k, d)
        }
        K::ScheduleDeletion { key, wait } => {
            if let Some(w) = &wait {
                check_duration("--wait", w)?;
            }
            let d = connect(&key.node)
                .await?
                .schedule_deletion(&key.key_id, wait.as_deref())
                .await?;
            (key, d)
        }
        K::CancelDeletion(k) => {
            let d = connect(&k.node).await?.cancel_deletion(&k.key_id).await?;
            (k, d)
        }
        K::MinDecryptionVersion { key, version } => {
            let d = connect(&key.node)
                .await?
                .set_min_decryption_version(&key.key_id, version)
                .await?;
            (key, d)
        }
        K::Export {
            key,
            version,
            output,
        } => return export(key, version, &output).await,
        K::Policy(p) => return policy(p).await,
        _ => unreachable!("routed by key::run"),
    };
    print_description(&desc, key.json);
    Ok(())
}

async fn export(key: KeyAdmin, version: Option<u64>, output: &Path) -> CmdResult {
    let mut conn = connect(&key.node).await?;
    let (v, dek) = conn.export(&key.key_id, version).await?;
    paths::write_new_secret(output, dek.to_file_text().as_bytes(), "data key")?;
    eprintln!(
        "exported version {v} of key {} (kcv {}) to {}",
        key.key_id,
        dek.kcv(),
        output.display()
    );
    Ok(())
}

async fn policy(cmd: KeyPolicyCmd) -> CmdResult {
    match cmd {
        KeyPolicyCmd::Get { key_id, node } => {
            let p = connect(&node).await?.get_policy(&key_id).await?;
            println!("{}", serde_json::to_string_pretty(&p).expect("JSON"));
        }
        KeyPolicyCmd::Set { key_id, file, node } => {
            let text = paths::load_key_policy(&Some(file))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Failure::usage(e.to_string()))?;
            let d = connect(&node).await?.set_policy(&key_id, &value).await?;
            eprintln!("policy of key {} replaced", d.key_id);
        }
    }
    Ok(())
}

fn read_input(io: &InOut) -> Result<Vec<u8>, Failure> {
    match &io.input {
        Some(p) => paths::read(p, "input", MAX_ENVELOPE_INPUT),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(MAX_ENVELOPE_INPUT + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
            if buf.len() as u64 > MAX_ENVELOPE_INPUT {
                return Err(Failure::usage(
                    "the input is larger than an envelope takes (64 KiB); use `teekms encrypt --node`",
                ));
            }
            Ok(buf)
        }
    }
}

fn write_output(io: &InOut, bytes: &[u8], mode: u32) -> CmdResult {
    match &io.output {
        Some(p) => paths::write_atomic(p, bytes, mode),
        None => std::io::stdout()
            .write_all(bytes)
            .and_then(|_| std::io::stdout().flush())
            .map_err(|e| Failure::usage(format!("writing stdout: {e}"))),
    }
}

/// An encryption context from `--context KEY=VALUE` arguments (none: no context).
fn parse_context(pairs: &[String]) -> Result<Option<EncryptionContext>, Failure> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut context = EncryptionContext::new();
    for pair in pairs {
        let (k, v) =
            teekms_core::context::parse_pair(pair).map_err(|e| Failure::usage(e.to_string()))?;
        if context.insert(k.clone(), v).is_some() {
            return Err(Failure::usage(format!("--context names key {k:?} twice")));
        }
    }
    Ok(Some(context))
}

fn b64(text: Option<String>) -> Option<B64> {
    text.map(|a| B64(a.into_bytes()))
}

/// `teekms envelope ...`.
pub async fn envelope(cmd: EnvelopeCmd) -> CmdResult {
    match cmd {
        EnvelopeCmd::Encrypt {
            key_id,
            key_owner,
            aad,
            context,
            io,
            node,
        } => {
            super::refuse_ciphertext_to_terminal(io.output.as_deref())?;
            let req = EncryptRequest {
                key_id,
                owner: key_owner,
                plaintext: SecretB64(zeroize::Zeroizing::new(read_input(&io)?)),
                aad: b64(aad),
                context: parse_context(&context)?,
            };
            let ct = connect(&node).await?.encrypt_request(&req).await?;
            write_output(&io, &ct.ciphertext.0, 0o644)?;
            eprintln!(
                "encrypted under key {} version {}",
                ct.key_id, ct.key_version
            );
        }
        EnvelopeCmd::Decrypt {
            aad,
            context,
            dek,
            node,
            via,
            collateral,
            io,
        } => {
            let ct = unwrap_vault_form(read_input(&io)?)?;
            let context = parse_context(&context)?;
            let pt = match (dek, node) {
                (Some(dek), _) => open_offline(&paths::load_dek(&dek)?, &ct, aad, context)?,
                (None, Some(node)) => {
                    let req = DecryptRequest {
                        ciphertext: B64(ct),
                        aad: b64(aad),
                        context,
                    };
                    let resp = super::crypt::connect(&node, &via, collateral)
                        .await?
                        .decrypt_request(&req)
                        .await?;
                    secret_of(&resp, "decrypt", None)?
                }
                (None, None) => unreachable!("clap requires --dek or --node"),
            };
            write_output(&io, &pt, 0o600)?;
        }
        EnvelopeCmd::GenerateDataKey {
            key_id,
            key_owner,
            output,
            wrapped,
            context,
            node,
        } => {
            let req = GenerateDataKeyRequest {
                key_id,
                owner: key_owner,
                aad: None,
                context: parse_context(&context)?,
                number_of_bytes: None,
            };
            let resp = connect(&node)
                .await?
                .generate_data_key_request(&req)
                .await?;
            let key = secret_of(&resp, "generate-data-key", None)?;
            let dek = teekms_core::DataKey::from_bytes(&key)
                .ok_or_else(|| Failure::rejected("the node returned a key of the wrong size"))?;
            let Some(B64(wrapped_bytes)) = resp.ciphertext else {
                return Err(Failure::rejected("the node returned no wrapped copy"));
            };
            paths::write_atomic(&wrapped, &wrapped_bytes, 0o644)?;
            paths::write_new_secret(&output, dek.to_file_text().as_bytes(), "data key")?;
            eprintln!(
                "data key (kcv {}) in {}, wrapped under key {} version {} in {}",
                dek.kcv(),
                output.display(),
                resp.key_id,
                resp.key_version,
                wrapped.display()
            );
        }
        EnvelopeCmd::ReEncrypt {
            aad,
            context,
            to_key_id,
            to_aad,
            to_context,
            io,
            node,
        } => {
            super::refuse_ciphertext_to_terminal(io.output.as_deref())?;
            let ct = read_input(&io)?;
            let req = ReEncryptRequest {
                ciphertext: B64(ct),
                aad: b64(aad),
                context: parse_context(&context)?,
                destination_key_id: to_key_id,
                destination_owner: None,
                destination_aad: b64(to_aad),
                destination_context: parse_context(&to_context)?,
            };
            let out = connect(&node).await?.re_encrypt(&req).await?;
            write_output(&io, &out.ciphertext.0, 0o644)?;
            eprintln!(
                "re-encrypted under key {} version {}",
                out.key_id, out.key_version
            );
        }
    }
    Ok(())
}

/// A ciphertext in Vault Transit's form (`vault:v<N>:<base64>`, spec/vault-transit-v1.md)
/// as the envelope it holds; anything else as it is.
fn unwrap_vault_form(input: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if !input.starts_with(b"vault:v") {
        return Ok(input);
    }
    std::str::from_utf8(&input)
        .ok()
        .and_then(|t| teekms_core::envelope::from_vault_form(t.trim_end()))
        .map(|(_, envelope)| envelope)
        .ok_or_else(|| Failure::rejected("the input starts like vault:v<N>: but is not one"))
}

/// Opens an envelope with the owner's own copy of the key version that made it: no
/// node, no lock-in.
fn open_offline(
    dek: &teekms_core::DataKey,
    ciphertext: &[u8],
    aad: Option<String>,
    context: Option<EncryptionContext>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    let env = Envelope::parse(ciphertext).map_err(|e| Failure::rejected(e.to_string()))?;
    let aad = match (aad, context) {
        (Some(a), _) => a.into_bytes(),
        (None, Some(c)) => context_aad(&c).map_err(|e| Failure::usage(e.to_string()))?,
        (None, None) => Vec::new(),
    };
    env.open(dek, &aad).map_err(|e| {
        Failure::rejected(e.to_string()).hint(format!(
            "it was made by key {:?} version {}: check that --dek is that version (its check value is in `teekms key describe`) and that --aad or --context match",
            env.header.key_id.as_str(),
            env.header.key_version
        ))
    })
}

/// `teekms access ...`.
pub async fn access(cmd: AccessCmd) -> CmdResult {
    match cmd {
        AccessCmd::Create {
            keys,
            operations,
            expires_in,
            description,
            output,
            aws_credentials,
            aws_profile,
            node,
        } => {
            let ops = operations
                .iter()
                .map(|o| {
                    serde_json::from_value::<Operation>(serde_json::Value::String(o.clone()))
                        .map_err(|_| {
                            Failure::usage(format!(
                                "unknown operation {o:?}: encrypt, decrypt, generate-data-key, re-encrypt, describe"
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(e) = &expires_in {
                check_duration("--expires-in", e)?;
            }
            for path in std::iter::once(&output).chain(aws_credentials.as_ref()) {
                if path.exists() {
                    return Err(Failure::usage(format!(
                        "{} exists; access key secrets are never overwritten",
                        path.display()
                    )));
                }
            }
            if aws_profile.is_empty()
                || !aws_profile
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(Failure::usage(format!(
                    "--aws-profile {aws_profile:?} is not a profile name (letters, digits, - _ .)"
                )));
            }
            let req = AccessKeyCreateRequest {
                keys,
                operations: ops,
                expires_in,
                description,
                aws: aws_credentials.is_some(),
            };
            let created = connect(&node)
                .await?
                .create_access_key_request(&req)
                .await?;
            let token = zeroize::Zeroizing::new(format!("{}\n", created.token));
            paths::write_new_secret(&output, token.as_bytes(), "access key")?;
            if let Some(path) = &aws_credentials {
                let secret = created.aws_secret_access_key.as_deref().ok_or_else(|| {
                    Failure::rejected(
                        "the node returned no AWS secret (is it older than this CLI?)",
                    )
                })?;
                let file = zeroize::Zeroizing::new(format!(
                    "[{aws_profile}]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                    created.info.id
                ));
                paths::write_new_secret(path, file.as_bytes(), "AWS credentials")?;
                eprintln!(
                    "AWS credentials (profile {aws_profile}) in {}: AWS_SHARED_CREDENTIALS_FILE={} with AWS_ENDPOINT_URL_KMS={} and AWS_CA_BUNDLE from `teekms ca export`",
                    path.display(),
                    path.display(),
                    node.node
                );
            }
            println!("{}", created.info.id);
            eprintln!(
                "access key {} created; its token is in {} (shown nowhere else). Name it in a key policy to grant it operations.",
                created.info.id,
                output.display()
            );
        }
        AccessCmd::List { json, node } => {
            let list = connect(&node).await?.list_access_keys().await?;
            if json {
                println!("{}", serde_json::to_string(&list).expect("JSON"));
            } else {
                for k in &list.access_keys {
                    let state = match (k.revoked_at, k.expires_at) {
                        (Some(t), _) => format!("revoked {}", format_time(t)),
                        (None, Some(t)) => format!("expires {}", format_time(t)),
                        (None, None) => "no expiry".into(),
                    };
                    let ops: Vec<&str> = k.operations.iter().map(|o| o.as_str()).collect();
                    println!(
                        "{}  keys {}  ops {}  {}  {}",
                        k.id,
                        k.keys.join(","),
                        ops.join(","),
                        state,
                        k.description
                    );
                }
                if list.access_keys.is_empty() {
                    println!("(no access keys)");
                }
            }
        }
        AccessCmd::Revoke { id, node } => {
            let info = connect(&node).await?.revoke_access_key(&id).await?;
            eprintln!("access key {} revoked", info.id);
        }
    }
    Ok(())
}

/// `teekms cluster ...`.
pub async fn cluster(cmd: ClusterCmd) -> CmdResult {
    let cmd = match cmd {
        ClusterCmd::Policy(cmd) => cmd,
        ClusterCmd::Status { node, json } => return cluster_status(&node, json).await,
        ClusterCmd::Resume { epoch, hash, node } => {
            return cluster_resume(&node, epoch, &hash).await;
        }
        ClusterCmd::Remove { node_id, node } => {
            connect(&node).await?.remove_member(&node_id).await?;
            eprintln!("member {node_id} removed; majorities count the members that remain");
            return Ok(());
        }
    };
    match cmd {
        ClusterPolicyCmd::Get { node } => {
            let p = connect(&node).await?.cluster_policy().await?;
            print!("{}", p.policy);
        }
        ClusterPolicyCmd::Set { file, node } => {
            let text = String::from_utf8(paths::read(&file, "cluster policy", 64 * 1024)?)
                .map_err(|_| Failure::usage(format!("{} is not UTF-8", file.display())))?;
            teekms_attest::Policy::from_toml(&text)
                .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
            connect(&node).await?.set_cluster_policy(&text).await?;
            eprintln!("cluster policy replaced; nodes that join from now on must satisfy it");
        }
    }
    Ok(())
}

/// `teekms cluster resume`: every member that waits to recover (the node named, and the
/// others it lists) is resumed at the epoch given; one line per member.
async fn cluster_resume(node: &crate::cli::NodeArgs, epoch: u64, hash: &str) -> CmdResult {
    let hash: [u8; 32] = hex::decode(hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Failure::usage("--hash must be 64 hex digits (the H of epoch E)"))?;
    let status = connect(node).await?.cluster_status().await?;
    let mut resumed = 0;
    let mut behind = Vec::new();
    for (i, m) in status.members.iter().enumerate() {
        if !m.recovering {
            continue;
        }
        // The first line is the node asked; the others are reached where they answer.
        let mut at = node.clone();
        if i > 0 {
            at.node = m.url.clone();
        }
        let answer = match connect(&at).await {
            Ok(mut conn) => conn
                .cluster_resume(epoch, hash)
                .await
                .map_err(Failure::from),
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) => {
                resumed += 1;
                match &a.alarm {
                    None => println!("{}  resumed at epoch {epoch}; it serves", a.node_id),
                    Some(alarm) => {
                        println!("{}  resumed at epoch {epoch}; ALARM {alarm}", a.node_id);
                        behind.push(a.node_id.clone());
                    }
                }
            }
            Err(e) => {
                println!("{}  {}  not resumed: {}", m.node_id, m.url, e.message);
                behind.push(m.node_id.clone());
            }
        }
    }
    if resumed == 0 && behind.is_empty() {
        eprintln!("no member waits to recover: nothing to resume");
        return Ok(());
    }
    if behind.is_empty() {
        return Ok(());
    }
    Err(Failure::rejected(format!(
        "{} member(s) do not serve: {}",
        behind.len(),
        behind.join(", ")
    ))
    .hint("a store behind the accepted epoch is refused: restore the newest copy of the store"))
}

/// `teekms cluster status`: one line per member (or JSON), this node first.
async fn cluster_status(node: &crate::cli::NodeArgs, json: bool) -> CmdResult {
    let status = connect(node).await?.cluster_status().await?;
    for m in &status.members {
        if json {
            println!("{}", serde_json::to_string(m).expect("status serializes"));
            continue;
        }
        let state = match (&m.epoch, &m.hash, &m.error, &m.alarm) {
            (_, _, Some(e), _) => format!("no answer: {e}"),
            (Some(e), Some(h), None, None) if m.recovering => {
                format!(
                    "epoch {e}  hash {h}  RECOVERING (its store's epoch; it waits for its peers or `cluster resume`)"
                )
            }
            (Some(e), Some(h), None, None) => format!("epoch {e}  hash {h}"),
            (Some(e), Some(h), None, Some(a)) => format!("epoch {e}  hash {h}  ALARM {a}"),
            _ => "no answer".into(),
        };
        println!("{}  {}  {state}", m.node_id, m.url);
    }
    Ok(())
}

/// `teekms audit ...`.
pub async fn audit(cmd: AuditCmd) -> CmdResult {
    match cmd {
        AuditCmd::Verify {
            source,
            tee,
            json,
            owner,
            platform,
        } => {
            if !source.file.is_empty() {
                let collateral = crate::cli::CollateralArg {
                    collateral: platform.collateral.clone(),
                };
                return verify_exports(&source, &collateral, json);
            }
            let source = AuditSource {
                node: source.node,
                policy: source.policy,
                data_dir: source.data_dir,
            };
            let report = match open_source(&source, tee, &owner, &platform).await? {
                Source::Node(mut conn) => conn.audit_verify().await?,
                Source::Dir(mut handle) => teekms_server::audit_verify_offline(&mut handle)
                    .map_err(|e| Failure::usage(e.to_string()))?,
            };
            if json {
                println!("{}", serde_json::to_string(&report).expect("JSON"));
            } else if report.ok {
                println!("audit log verified: {} entries", report.entries);
            } else {
                println!(
                    "audit log BROKEN at entry {}: {}",
                    report.broken_at.unwrap_or(0),
                    report.reason.as_deref().unwrap_or("")
                );
            }
            if report.ok {
                Ok(())
            } else {
                Err(Failure {
                    code: EXIT_REJECTED,
                    message: format!(
                        "the audit log is broken at entry {}",
                        report.broken_at.unwrap_or(0)
                    ),
                    hint: Some(
                        "the node's storage was altered; entries before that one still verify"
                            .into(),
                    ),
                })
            }
        }
        AuditCmd::Export {
            node,
            policy,
            from,
            to,
            output,
            owner,
            collateral,
        } => {
            let owner = paths::load_owner(&owner.owner)?;
            let mut conn =
                super::connect::connect_verified(&node, &policy, Some(&owner), &collateral).await?;
            let text = conn.audit_export(from, to).await?;
            // Checked against the node it came from before it is kept.
            let statement = conn.node().statement();
            let summary = teekms_core::audit::export::verify_export(
                &text,
                &hex::encode(statement.node_id.0),
                conn.node().signing_public_key(),
            )
            .map_err(|e| {
                Failure::rejected(format!("the node's export does not verify: {e}"))
                    .hint("nothing was written; run `teekms audit verify` against the node")
            })?;
            paths::write_atomic(&output, text.as_bytes(), 0o644)?;
            let c = &summary.checkpoint;
            println!(
                "exported entries {} to {} to {} ({} yours in full, {} of others as links); checkpoint signed by node {} at {}",
                c.from,
                c.to,
                output.display(),
                summary.shown,
                summary.linked,
                c.node_id,
                format_time(c.time)
            );
            Ok(())
        }
        AuditCmd::Prune {
            node,
            policy,
            before,
            force,
            owner,
            collateral,
        } => {
            let owner = paths::load_owner(&owner.owner)?;
            let mut conn =
                super::connect::connect_verified(&node, &policy, Some(&owner), &collateral).await?;
            let pruned = conn.audit_prune(before, force).await?;
            if pruned.removed == 0 {
                println!(
                    "nothing to prune: the log already starts after entry {}",
                    pruned.pruned_through
                );
            } else {
                println!(
                    "removed {} entries; the log now starts after entry {} (its checkpoint is kept, and `teekms audit verify` checks the rest from it)",
                    pruned.removed, pruned.pruned_through
                );
            }
            Ok(())
        }
        AuditCmd::Tail {
            source,
            tee,
            n,
            json,
            owner,
            platform,
        } => {
            // Each entry as stored (a JSON line), whichever the source.
            let lines: Vec<Vec<u8>> = match open_source(&source, tee, &owner, &platform).await? {
                Source::Node(mut conn) => conn
                    .audit_tail(n)
                    .await?
                    .entries
                    .iter()
                    .map(|e| serde_json::to_vec(e).expect("JSON"))
                    .collect(),
                Source::Dir(mut handle) => teekms_server::audit_tail_offline(&mut handle, n as u64)
                    .map_err(|e| Failure::usage(e.to_string()))?,
            };
            if json {
                for line in &lines {
                    println!("{}", String::from_utf8_lossy(line));
                }
            } else {
                print!("{}", audit_table(&lines));
            }
            Ok(())
        }
    }
}

/// The largest export `audit verify --file` reads (about 9 million entries of one owner).
const MAX_EXPORT_FILE: u64 = 4 << 30;

/// `audit verify --file ...`: each export checked offline against the node's evidence,
/// then that they join, in the order given.
fn verify_exports(
    source: &crate::cli::AuditVerifySource,
    collateral: &crate::cli::CollateralArg,
    json: bool,
) -> CmdResult {
    let (Some(evidence), Some(policy)) = (&source.evidence, &source.policy) else {
        return Err(Failure::usage("--file needs --evidence and --policy"));
    };
    let node = super::key::verify_offline(evidence, policy, collateral)?;
    let node_id = hex::encode(node.statement().node_id.0);
    let mut summaries = Vec::new();
    for file in &source.file {
        let text = paths::read(file, "audit export", MAX_EXPORT_FILE)?;
        let text = String::from_utf8(text)
            .map_err(|_| Failure::usage(format!("{} is not UTF-8", file.display())))?;
        let summary =
            teekms_core::audit::export::verify_export(&text, &node_id, node.signing_public_key())
                .map_err(|e| Failure {
                code: EXIT_REJECTED,
                message: format!("{}: {e}", file.display()),
                hint: Some("the export was altered, cut short, or made by another node".into()),
            })?;
        summaries.push(summary);
    }
    teekms_core::audit::export::check_joined(&summaries).map_err(|e| Failure {
        code: EXIT_REJECTED,
        message: e,
        hint: Some("give consecutive exports, oldest first".into()),
    })?;
    let (first, last) = (
        &summaries[0].checkpoint,
        &summaries[summaries.len() - 1].checkpoint,
    );
    let shown: u64 = summaries.iter().map(|s| s.shown).sum();
    let linked: u64 = summaries.iter().map(|s| s.linked).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "from": first.from,
                "to": last.to,
                "shown": shown,
                "linked": linked,
                "head": hex::encode(last.head.0),
                "node_id": node_id,
            })
        );
    } else {
        println!(
            "audit export verified: entries {} to {} in {} file(s), one chain ({shown} in full, {linked} as links), signed by node {node_id}",
            first.from,
            last.to,
            summaries.len()
        );
    }
    Ok(())
}

enum Source {
    Node(Box<VerifiedConnection>),
    Dir(teekms_server::NodeHandle),
}

async fn open_source(
    source: &AuditSource,
    tee: Option<crate::cli::TeeArg>,
    owner: &crate::cli::OwnerArg,
    platform: &crate::cli::PlatformArgs,
) -> Result<Source, Failure> {
    if let (Some(node), Some(policy)) = (&source.node, &source.policy) {
        let owner = paths::load_owner(&owner.owner)?;
        let conn = super::connect::connect_verified(
            node,
            policy,
            Some(&owner),
            &crate::cli::CollateralArg { collateral: None },
        )
        .await?;
        return Ok(Source::Node(Box::new(conn)));
    }
    let dir = source
        .data_dir
        .as_ref()
        .ok_or_else(|| Failure::usage("give --node with --policy, or --data-dir with --tee"))?;
    let tee = tee.ok_or_else(|| Failure::usage("--data-dir needs --tee (the node's TEE)"))?;
    if !paths::holds_node(dir)? {
        return Err(Failure::usage(format!(
            "{} holds no teekms node",
            dir.display()
        )));
    }
    let platform = super::tee::platform(tee, platform, dir)?;
    let handle = teekms_server::open_node(platform, dir)
        .map_err(|e| Failure::usage(format!("cannot open the node: {e}")))?;
    Ok(Source::Dir(handle))
}

/// Refuses a malformed or out-of-range duration before anything is sent (exit 2); the
/// node checks it again.
fn check_duration(flag: &str, text: &str) -> Result<(), Failure> {
    teekms_attest::policy::parse_duration(text)
        .map(|_| ())
        .map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// Audit entries as a table a person reads: one row each, every field in full, times in
/// RFC 3339; a line that is not an entry is shown as it is.
fn audit_table(lines: &[Vec<u8>]) -> String {
    use teekms_core::audit::AuditEntry;
    let dash = || "-".to_owned();
    let mut rows = vec![[
        "SEQ".to_owned(),
        "TIME".into(),
        "OPERATION".into(),
        "KEY".into(),
        "OWNER".into(),
        "CALLER".into(),
        "OUTCOME".into(),
    ]];
    let mut raw = Vec::new();
    for line in lines {
        match serde_json::from_slice::<AuditEntry>(line) {
            Ok(e) => rows.push([
                e.seq.to_string(),
                format_time(e.draft.time),
                e.draft.operation,
                match (e.draft.key_id, e.draft.key_version) {
                    (Some(k), Some(v)) => format!("{k} v{v}"),
                    (Some(k), None) => k,
                    _ => dash(),
                },
                e.draft.owner.unwrap_or_else(dash),
                e.draft.caller,
                e.draft.outcome,
            ]),
            Err(_) => raw.push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for line in raw {
        out.push_str(&line);
        out.push('\n');
    }
    out
}
