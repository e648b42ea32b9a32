use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::PlatformError;

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PlatformError + 'a {
    move |source| PlatformError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Reads a small secret file; `Ok(None)` if it does not exist.
pub fn read_secret_file(
    what: &'static str,
    path: &Path,
) -> Result<Option<Zeroizing<Vec<u8>>>, PlatformError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(what, path)(e)),
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    Read::by_ref(&mut f)
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(io(what, path))?;
    Ok(Some(buf))
}

/// Creates a new file with mode 0600, durably (written, synced, directory synced). Fails
/// if the file exists, so two racing creators cannot overwrite each other.
pub fn write_new_secret_file(
    what: &'static str,
    path: &Path,
    contents: &[u8],
) -> Result<(), PlatformError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(what, dir))?;
    }
    // Write beside, then link into place: a crash never leaves a half-written key file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(what, &tmp))?;
    let result = f
        .write_all(contents)
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io(what, path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(what, dir))?;
    }
    Ok(())
}
