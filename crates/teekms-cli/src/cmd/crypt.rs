//! `teekms encrypt` / `teekms decrypt` with the owner's copy of a data key.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use teekms_core::KeyId;
use teekms_core::stream::{Header, StreamError};
use teekms_stream_io as stream;

use crate::cli::{DecryptArgs, EncryptArgs, NodeArgs, ViaNode};
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub async fn encrypt(a: EncryptArgs) -> CmdResult {
    super::refuse_ciphertext_to_terminal(a.output.as_deref())?;
    let key_id = KeyId::new(&a.key_id).map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(node) = &a.node {
        let mut conn =
            connect(node, &a.via, crate::cli::CollateralArg { collateral: None }).await?;
        let (owner, chunk_log2) = (a.via.key_owner.clone(), a.chunk_log2);
        return run(a.input.as_deref(), a.output.as_deref(), move |input, w| {
            through_node(move || async move {
                conn.stream_encrypt(
                    key_id.as_str(),
                    owner.as_deref(),
                    Some(chunk_log2),
                    input.into_reader(),
                    w,
                )
                .await
            })
        });
    }
    let dek = paths::load_dek(a.dek.as_deref().expect("clap requires --dek or --node"))?;
    let header = Header::new(key_id, a.key_version, a.chunk_log2);
    run(
        a.input.as_deref(),
        a.output.as_deref(),
        |input, w| match input {
            Input::File(f) => stream::encrypt_file(&dek, &header, &f, w),
            Input::Stream(r) => stream::encrypt(&dek, &header, r, w),
        },
    )
}

pub async fn decrypt(a: DecryptArgs) -> CmdResult {
    if let Some(node) = &a.node {
        let mut conn =
            connect(node, &a.via, crate::cli::CollateralArg { collateral: None }).await?;
        let owner = a.via.key_owner.clone();
        return run(a.input.as_deref(), a.output.as_deref(), move |input, w| {
            through_node(move || async move {
                conn.stream_decrypt(owner.as_deref(), input.into_reader(), w)
                    .await
            })
        });
    }
    let dek = paths::load_dek(a.dek.as_deref().expect("clap requires --dek or --node"))?;
    run(
        a.input.as_deref(),
        a.output.as_deref(),
        |input, w| match input {
            Input::File(f) => stream::decrypt_file(&dek, &f, w).map(|_| ()),
            Input::Stream(r) => stream::decrypt(&dek, r, w).map(|_| ()),
        },
    )
}

/// A verified node for streaming, as the owner or with an access key.
pub(super) async fn connect(
    node: &str,
    via: &ViaNode,
    collateral: crate::cli::CollateralArg,
) -> Result<teekms_client::VerifiedConnection, Failure> {
    let policy = via
        .policy
        .clone()
        .ok_or_else(|| Failure::usage("--node needs --policy"))?;
    super::connect::connect(&NodeArgs {
        node: node.to_owned(),
        policy,
        access_key: via.access_key.clone(),
        owner: via.owner.clone(),
        collateral,
    })
    .await
}

/// Runs a streaming exchange with a node from the synchronous pipeline below. Errors become stream errors so that a regular
/// output file is removed, as for local decryption.
fn through_node<F, Fut>(f: F) -> Result<(), StreamError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), teekms_client::ClientError>>,
{
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f()))
        .map_err(|e| StreamError::Malformed(e.to_string()))
}

/// A regular file (positional reads on all cores; its size is known) or a stream.
enum Input {
    File(File),
    Stream(Box<dyn Read + Send>),
}

impl Input {
    fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            Input::File(f) => Box::new(f),
            Input::Stream(r) => r,
        }
    }
}

/// Counts bytes written, for the progress line.
struct Counting<W> {
    inner: W,
    done: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where the output goes: a stream (stdout, pipe, device) written as it authenticates, or
/// a regular file that appears under its name only on success.
enum Sink {
    Stream(Box<dyn Write + Send>),
    File {
        tmp: PathBuf,
        target: PathBuf,
        file: File,
    },
}

fn open_sink(output: Option<&Path>) -> Result<Sink, Failure> {
    let Some(target) = output else {
        return Ok(Sink::Stream(Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        ))));
    };
    let fail =
        |e: std::io::Error| Failure::usage(format!("cannot write {}: {e}", target.display()));
    match std::fs::metadata(target) {
        Ok(m) if !m.is_file() => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(target)
                .map_err(fail)?;
            return Ok(Sink::Stream(Box::new(f)));
        }
        _ => {}
    }
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.teekms-tmp{}", std::process::id()));
    let file = File::create(&tmp).map_err(fail)?;
    Ok(Sink::File {
        tmp,
        target: target.to_owned(),
        file,
    })
}

fn run<F>(input: Option<&Path>, output: Option<&Path>, op: F) -> CmdResult
where
    F: FnOnce(Input, Box<dyn Write + Send>) -> Result<(), StreamError>,
{
    let (reader, size) = match input {
        Some(p) => {
            let f = File::open(p)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", p.display())))?;
            match f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()) {
                Some(size) => (Input::File(f), Some(size)),
                None => (Input::Stream(Box::new(f)), None),
            }
        }
        None => (Input::Stream(Box::new(std::io::stdin())), None),
    };
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let progress = (size.is_some() && std::io::stderr().is_terminal()).then(|| {
        let (done, finished, total) = (done.clone(), finished.clone(), size.unwrap_or(0));
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                let d = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>6.1}% {} / {} MiB",
                    d as f64 * 100.0 / total.max(1) as f64,
                    d >> 20,
                    total >> 20
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("\r100.0% {} MiB          ", total >> 20);
        })
    });
    let sink = open_sink(output)?;
    let counted = |w: Box<dyn Write + Send>| -> Box<dyn Write + Send> {
        Box::new(Counting {
            inner: w,
            done: done.clone(),
        })
    };
    let result = match sink {
        Sink::Stream(w) => op(reader, counted(w)),
        Sink::File { tmp, target, file } => {
            let r = op(
                reader,
                counted(Box::new(
                    file.try_clone()
                        .map_err(|e| Failure::usage(e.to_string()))?,
                )),
            )
            .and_then(|_| file.sync_all().map_err(StreamError::Io))
            .and_then(|_| std::fs::rename(&tmp, &target).map_err(StreamError::Io));
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        }
    };
    finished.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    result.map_err(|e| match e {
        StreamError::Io(io) => Failure::usage(format!("I/O error: {io}")),
        other => Failure::rejected(other.to_string()).hint(
            "nothing was written under the output's name; check the key and the file's integrity",
        ),
    })
}
