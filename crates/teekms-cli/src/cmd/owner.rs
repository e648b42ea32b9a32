use teekms_core::OwnerKey;

use crate::cli::{OwnerArg, OwnerCmd};
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub fn run(cmd: OwnerCmd) -> CmdResult {
    match cmd {
        OwnerCmd::Init(arg) => init(&arg),
        OwnerCmd::TlsCert { owner, cert, key } => {
            let owner_key = paths::load_owner(&owner.owner)?;
            let (cert_pem, key_pem) = teekms_client::owner_tls_certificate(&owner_key)
                .map_err(|e| Failure::usage(format!("cannot make the certificate: {e}")))?;
            // The key first, never over an existing file: it is the owner key itself.
            paths::write_new_secret(&key, key_pem.as_bytes(), "owner TLS key")?;
            paths::write_atomic(&cert, cert_pem.as_bytes(), 0o644)?;
            println!(
                "owner {}: certificate in {}, key in {} (as secret as the owner key)",
                owner_key.public_key().fingerprint(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

fn init(arg: &OwnerArg) -> CmdResult {
    let path = paths::owner_path(&arg.owner)?;
    if path.exists() {
        let key = paths::load_owner(&Some(path.clone()))?;
        println!("owner key exists: {}", path.display());
        println!("fingerprint: {}", key.public_key().fingerprint());
        return Ok(());
    }
    let key = OwnerKey::generate();
    paths::write_new_secret(&path, key.to_pem().as_bytes(), "owner key")?;
    println!("created owner key: {}", path.display());
    println!("fingerprint: {}", key.public_key().fingerprint());
    Ok(())
}
