//! Files the CLI reads and writes, and their default places (XDG base directories).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use teekms_attest::{AttestationDocument, Policy};
use teekms_core::{DataKey, OwnerKey};

use crate::failure::Failure;

fn xdg_dir(var: &str, fallback: &str) -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(fallback)),
        None => Err(Failure::usage(format!("neither {var} nor HOME is set"))
            .hint("pass the file explicitly")),
    }
}

/// The owner key file: --owner, TEEKMS_OWNER, or $XDG_CONFIG_HOME/teekms/owner.key.
pub fn owner_path(explicit: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    match explicit {
        Some(p) => Ok(p.clone()),
        None => Ok(xdg_dir("XDG_CONFIG_HOME", ".config")?.join("teekms/owner.key")),
    }
}

/// This user's teekms data dir: $XDG_DATA_HOME/teekms.
pub fn data_dir() -> Result<PathBuf, Failure> {
    Ok(xdg_dir("XDG_DATA_HOME", ".local/share")?.join("teekms"))
}

/// The sim root file: --sim-root, TEEKMS_SIM_ROOT, or $XDG_DATA_HOME/teekms/sim-root.key.
pub fn sim_root_path(explicit: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    match explicit {
        Some(p) => Ok(p.clone()),
        None => Ok(xdg_dir("XDG_DATA_HOME", ".local/share")?.join("teekms/sim-root.key")),
    }
}

pub fn read(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Failure::usage(format!("cannot read {what} {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Failure::usage(format!("cannot read {what} {}: {e}", path.display())))?;
    if buf.len() as u64 > max {
        return Err(Failure::usage(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

pub fn load_owner(explicit: &Option<PathBuf>) -> Result<OwnerKey, Failure> {
    let path = owner_path(explicit)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                Failure::usage(format!("no owner key at {}", path.display()))
                    .hint("create one with `teekms owner init` (or pass --owner FILE)"),
            );
        }
        Err(e) => {
            return Err(Failure::usage(format!(
                "cannot read owner key {}: {e}",
                path.display()
            )));
        }
    };
    OwnerKey::from_pem(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

pub fn load_policy(path: &Path) -> Result<Policy, Failure> {
    let bytes = read(path, "policy", teekms_attest::policy::MAX_POLICY_LEN as u64)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("policy {} is not UTF-8", path.display())))?;
    Policy::from_toml(&text).map_err(|e| {
        Failure::usage(format!("policy {}: {e}", path.display()))
            .hint("a policy is a list of [[accept]] entries; for the sim TEE: tee = \"sim\" and sim_root = \"<hex from `teekms sim root`>\"")
    })
}

pub fn load_dek(path: &Path) -> Result<DataKey, Failure> {
    let bytes = zeroize::Zeroizing::new(read(path, "data key", 1024)?);
    DataKey::from_file_text(&bytes).map_err(|e| {
        Failure::usage(format!("{}: {e}", path.display()))
            .hint("make one with `teekms key generate -o FILE`")
    })
}

pub fn load_key_policy(path: &Option<PathBuf>) -> Result<String, Failure> {
    let Some(path) = path else {
        return Ok(teekms_core::bundle::DEFAULT_KEY_POLICY.to_owned());
    };
    let bytes = read(
        path,
        "key policy",
        teekms_core::bundle::MAX_KEY_POLICY_LEN as u64,
    )?;
    let text = String::from_utf8(bytes).map_err(|_| Failure::usage("key policy is not UTF-8"))?;
    teekms_core::bundle::validate_key_policy(text.trim())
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok(text.trim().to_owned())
}

/// Reads an attestation document; a document that does not parse is a rejection.
pub fn load_document(path: &Path) -> Result<AttestationDocument, Failure> {
    let bytes = read(
        path,
        "attestation document",
        teekms_attest::document::MAX_DOCUMENT_LEN as u64,
    )?;
    AttestationDocument::from_json(&bytes).map_err(|e| {
        Failure::rejected(format!("{}: {e}", path.display()))
            .hint("fetch the document again with `teekms attest fetch`; do not edit it")
    })
}

/// Writes a file atomically (temporary file beside it, fsync, rename), mode `mode`. A
/// path that is not a regular file (`/dev/null`, `/dev/stdout`, a FIFO) is written into
/// as it is: a rename would put a file in place of the device.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::usage(format!("cannot write {}: {e}", path.display()));
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(fail);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    let r = f
        .write_all(contents)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(fail)
}

/// Creates a new file with mode 0600; refuses to overwrite.
pub fn write_new_secret(path: &Path, contents: &[u8], what: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::usage(format!(
                    "{} already exists; refusing to overwrite a {what}",
                    path.display()
                ))
                .hint("choose another file name")
            } else {
                Failure::usage(format!("cannot create {}: {e}", path.display()))
            }
        })?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
}

/// Whether `dir` holds a teekms node (its sealed records); a store that cannot be read is
/// an error that says so.
pub fn holds_node(dir: &Path) -> Result<bool, Failure> {
    teekms_server::has_node(dir).map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))
}

/// Whether `serve --log-format json` asked for JSON lines.
pub static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One JSON line (`timestamp`, `level`, `message`, and a `hint` if any) on `stream`
/// (`stdout` or `stderr`): what `serve --log-format json` prints instead of text.
pub fn say_json(stream: &str, level: &str, message: &str, hint: Option<&str>) {
    let mut line = serde_json::json!({
        "timestamp": teekms_attest::format_rfc3339(crate::cmd::now()),
        "level": level,
        "message": message,
    });
    if let Some(h) = hint {
        line["hint"] = serde_json::Value::String(h.to_owned());
    }
    if stream == "stdout" {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// A line of `serve` for people: text, or JSON under `--log-format json`.
pub fn say(stream: &str, level: &str, message: &str) {
    if JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
        say_json(stream, level, message, None);
    } else if stream == "stdout" {
        println!("{message}");
    } else {
        eprintln!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO (as /dev/null or /dev/stdout would be) is written into, never replaced.
    #[test]
    fn special_files_are_written_into_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe", 0o644).unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let plain = dir.path().join("plain");
        write_atomic(&plain, b"a file", 0o644).unwrap();
        assert_eq!(std::fs::read(&plain).unwrap(), b"a file");
    }
}
