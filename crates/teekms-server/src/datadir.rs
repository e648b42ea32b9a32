//! The data directory: private to the node's user, and held by one node at a time.
//!
//! Two nodes on one data dir would each believe they are the only writer of its store
//! (the key cache relies on it) and would race on its sealed records, so a node takes an
//! exclusive lock on `DATA_DIR/teekms.lock` for its whole life. The lock is the
//! kernel's (`flock`): it goes away with the process, however it ends, so a crash never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ServerError;

/// The lock file's name inside a data dir; it holds the locking process's id.
pub const LOCK_FILE: &str = "teekms.lock";

/// Subdirectories a node writes into (their files are tightened too).
const SUBDIRS: &[&str] = &["recovery", "collateral"];

/// Held while a node (or an offline command) uses a data dir; dropping it unlocks.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates `dir` if needed (0700), tightens an existing one and its files (0700 / 0600,
/// with a warning), and takes the exclusive lock. A data dir held by another process is
/// refused with [`ServerError::InUse`].
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, ServerError> {
    let io = |what: String| move |source| ServerError::Io { what, source };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating data dir {}", dir.display())))?;
    tighten(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(ServerError::InUse {
                dir: dir.to_owned(),
                pid: pid.trim().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(ServerError::Io {
                what: format!("locking {}", path.display()),
                source,
            });
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(DataDirLock { _file: file })
}

/// Makes the data dir 0700 and every file in it (and in the node's subdirectories) 0600,
/// warning about each that was looser: records are sealed, but their names, sizes and
/// the audit log's metadata are nobody else's business.
fn tighten(dir: &Path) -> Result<(), ServerError> {
    let mut loosened: Vec<PathBuf> = Vec::new();
    set_mode_at_most(dir, 0o700, &mut loosened)?;
    let mut dirs = vec![dir.to_owned()];
    dirs.extend(SUBDIRS.iter().map(|s| dir.join(s)).filter(|d| d.is_dir()));
    for d in &dirs {
        if d != dir {
            set_mode_at_most(d, 0o700, &mut loosened)?;
        }
        let entries = std::fs::read_dir(d).map_err(|source| ServerError::Io {
            what: format!("reading {}", d.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file {
                set_mode_at_most(&entry.path(), 0o600, &mut loosened)?;
            }
        }
    }
    if !loosened.is_empty() {
        tracing::warn!(
            paths = ?loosened,
            "the data dir or its files were readable by other users; tightened to 0700 / 0600"
        );
    }
    Ok(())
}

fn set_mode_at_most(path: &Path, mode: u32, changed: &mut Vec<PathBuf>) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        what: format!("setting the permissions of {}", path.display()),
        source,
    };
    let current = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))
            .map_err(io)?;
        changed.push(path.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("teekms.sqlite3"), b"x").unwrap();
        std::fs::set_permissions(
            dir.join("teekms.sqlite3"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let held = lock_data_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("teekms.sqlite3")), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        match lock_data_dir(&dir) {
            Err(e @ ServerError::InUse { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("in use by process {}", std::process::id())),
                    "{msg}"
                );
            }
            other => panic!("a second lock was given: {other:?}"),
        }
        drop(held);
        lock_data_dir(&dir).unwrap();
    }
}
