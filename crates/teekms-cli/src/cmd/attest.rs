use teekms_attest::{Freshness, verify_document};

use crate::cli::AttestCmd;
use crate::cmd::{parse_url, warn_if_sim};
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub async fn run(cmd: AttestCmd) -> CmdResult {
    match cmd {
        AttestCmd::Fetch { node, output } => {
            let url = parse_url(&node)?;
            let mut conn = teekms_client::connect(&url, None).await?;
            let doc = conn.attestation(None).await?;
            let text = doc.to_json() + "\n";
            match output {
                Some(path) => {
                    paths::write_atomic(&path, text.as_bytes(), 0o644)?;
                    eprintln!(
                        "saved the attestation of node {} ({}) to {}; it is not verified yet: run `teekms attest verify {} --policy POLICY`",
                        doc.statement.node_id,
                        doc.tee,
                        path.display(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        AttestCmd::Verify {
            document,
            policy,
            json,
            collateral,
            at,
        } => {
            let at = super::time_arg(&at)?;
            verify(&document, &policy, json, collateral.as_deref(), at)
        }
    }
}

fn verify(
    document: &std::path::Path,
    policy: &std::path::Path,
    json: bool,
    collateral: Option<&std::path::Path>,
    at: u64,
) -> CmdResult {
    let policy = paths::load_policy(policy)?;
    let doc = match paths::load_document(document) {
        Ok(mut doc) => {
            if let Some(dir) = collateral {
                let files = super::evidence::read_collateral_dir(dir)?;
                doc.collateral = Some(serde_json::to_value(&files).expect("collateral serializes"));
            }
            doc
        }
        Err(f) if json && f.code == crate::failure::EXIT_REJECTED => {
            let v = serde_json::json!({
                "verified": false, "accepted": false, "tee": null,
                "reasons": [f.message.clone()], "claims": null, "statement": null,
            });
            println!("{v}");
            return Err(f);
        }
        Err(f) => return Err(f),
    };
    warn_if_sim(doc.tee);
    let verdict = verify_document(&doc, &policy, Freshness::Offline, at);
    if json {
        println!(
            "{}",
            serde_json::to_string(&verdict).expect("verdicts serialize")
        );
    } else if verdict.accepted {
        println!(
            "ACCEPTED: {} node {}",
            verdict.tee, verdict.statement.node_id
        );
        super::print_claims(verdict.claims.as_ref());
        println!("  hpke_public_key: {}", verdict.statement.hpke_public_key);
    } else {
        println!(
            "REJECTED: {} node {} ({})",
            verdict.tee,
            verdict.statement.node_id,
            if verdict.verified {
                "evidence verified, but no policy entry admits it"
            } else {
                "evidence did not verify"
            }
        );
        for r in &verdict.reasons {
            println!("  - {r}");
        }
    }
    if verdict.accepted {
        Ok(())
    } else {
        Err(Failure::rejected(format!(
            "the node's evidence was rejected: {}",
            verdict.reasons.join("; ")
        )))
    }
}
