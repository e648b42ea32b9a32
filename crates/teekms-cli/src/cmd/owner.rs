use teekms_core::OwnerKey;

use crate::cli::OwnerCmd;
use crate::failure::CmdResult;
use crate::paths;

pub fn run(cmd: OwnerCmd) -> CmdResult {
    let OwnerCmd::Init(arg) = cmd;
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
