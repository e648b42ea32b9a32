//! `teekms age`: recipients and identities for `age` with `age-plugin-teekms`
//! (spec/age-plugin-v1.md).

use teekms_core::KeyId;

use crate::cli::AgeCmd;
use crate::failure::{CmdResult, Failure};
use crate::paths;

use super::connect::connect;

pub async fn run(cmd: AgeCmd) -> CmdResult {
    match cmd {
        AgeCmd::Recipient {
            key_id,
            key_owner,
            node,
        } => {
            let id = KeyId::new(&key_id).map_err(|e| Failure::usage(e.to_string()))?;
            let mut conn = connect(&node).await?;
            let r = conn.age_recipient(&key_id, key_owner.as_deref()).await?;
            let owner = teekms_core::OwnerPublicKey(r.owner_public_key.0);
            if r.key_id != key_id {
                return Err(Failure::rejected("the node answered for another key"));
            }
            teekms_core::age::verify_certificate(
                conn.node(),
                &owner,
                &id,
                r.key_version,
                &r.public_key.0,
                &r.signature.0,
            )
            .map_err(|e| Failure::rejected(e.to_string()))?;
            let recipient = teekms_age::Recipient {
                owner,
                key_id,
                key_version: r.key_version,
                public_key: r.public_key.0,
            };
            println!("{}", recipient.encode());
            eprintln!(
                "the age recipient of key {} version {}, certified by node {} (verified): age -r <it> encrypts with no node; decrypting asks the node",
                recipient.key_id,
                r.key_version,
                conn.node().statement().node_id
            );
        }
        AgeCmd::Identity {
            node,
            ca,
            access_key,
            output,
        } => {
            super::parse_url(&node)?;
            let absolute = |p: &std::path::Path, what: &str| {
                std::fs::canonicalize(p)
                    .map_err(|e| Failure::usage(format!("{what} {}: {e}", p.display())))
                    .map(|p| p.to_string_lossy().into_owned())
            };
            let ca_file = absolute(&ca, "the CA file")?;
            let token_file = absolute(&access_key, "the access key file")?;
            let token = paths::read(&access_key, "access key", 1024)?;
            let token = String::from_utf8_lossy(&token);
            if !token.trim().starts_with("ak-") || !token.contains('.') {
                return Err(Failure::usage(format!(
                    "{} is not an access key token file (from `teekms access create -o`)",
                    access_key.display()
                )));
            }
            let identity = teekms_age::Identity {
                node: node.clone(),
                ca_file,
                token_file,
            };
            let text = format!(
                "# teekms age identity: node {node}; the secret stays in {}\n{}\n",
                identity.token_file,
                identity.encode()
            );
            paths::write_new_secret(&output, text.as_bytes(), "age identity")?;
            eprintln!(
                "age identity in {} (age -d -i {})",
                output.display(),
                output.display()
            );
        }
    }
    Ok(())
}
