//! The streaming file format (spec/stream-v1.md): a versioned header, a per-file key, and
//! AES-256-GCM chunks in the STREAM construction, read, sealed and opened by a worker per
//! core while the caller's thread writes the results out in order.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};

use crate::{DataKey, KeyId};

/// First bytes of every stream.
pub const MAGIC: &[u8; 8] = b"TKMS-STR";
/// The only version this build writes and reads.
pub const VERSION: u8 = 1;
/// AES-256-GCM chunks with an HKDF-SHA256 per-file key.
pub const ALGORITHM: u8 = 1;
/// Default chunk size: 2^18 = 256 KiB.
pub const DEFAULT_CHUNK_LOG2: u8 = 18;
const TAG_LEN: usize = 16;

/// Why a stream could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The header is not a valid v1 header.
    #[error("not a teekms stream, or an unsupported version: {0}")]
    Header(String),
    /// A chunk did not authenticate.
    #[error(
        "chunk {0} failed authentication: the data was altered, truncated, reordered or spliced, or this is not the key it was encrypted with"
    )]
    Authentication(u64),
    /// The chunk layout is not what the format allows.
    #[error("malformed stream: {0}")]
    Malformed(String),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed stream header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The key id the stream was encrypted under.
    pub key_id: KeyId,
    /// The key version.
    pub key_version: u64,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Per-file salt.
    pub salt: [u8; 32],
}

impl Header {
    /// A fresh header with a random salt.
    pub fn new(key_id: KeyId, key_version: u64, chunk_log2: u8) -> Header {
        let mut salt = [0u8; 32];
        crate::random_bytes(&mut salt);
        Header {
            key_id,
            key_version,
            chunk_log2,
            salt,
        }
    }

    /// The header bytes.
    pub fn encode(&self) -> Vec<u8> {
        let id = self.key_id.as_str().as_bytes();
        let mut h = Vec::with_capacity(12 + id.len() + 40);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&[VERSION, ALGORITHM, self.chunk_log2, id.len() as u8]);
        h.extend_from_slice(id);
        h.extend_from_slice(&self.key_version.to_be_bytes());
        h.extend_from_slice(&self.salt);
        h
    }

    /// Reads a header from the start of a stream.
    pub fn read_from(r: &mut impl Read) -> Result<(Header, Vec<u8>), StreamError> {
        let mut fixed = [0u8; 12];
        read_exact_or(r, &mut fixed, "the input is shorter than a stream header")?;
        if &fixed[..8] != MAGIC {
            return Err(StreamError::Header("wrong magic".into()));
        }
        if fixed[8] != VERSION || fixed[9] != ALGORITHM {
            return Err(StreamError::Header(format!(
                "version {} algorithm {}",
                fixed[8], fixed[9]
            )));
        }
        let chunk_log2 = fixed[10];
        if !(12..=24).contains(&chunk_log2) {
            return Err(StreamError::Header(format!(
                "chunk size 2^{chunk_log2} is out of range"
            )));
        }
        let mut rest = vec![0u8; fixed[11] as usize + 40];
        read_exact_or(r, &mut rest, "the header is truncated")?;
        let id_len = fixed[11] as usize;
        let key_id = std::str::from_utf8(&rest[..id_len])
            .ok()
            .and_then(|s| KeyId::new(s).ok())
            .ok_or_else(|| StreamError::Header("invalid key id".into()))?;
        let key_version = u64::from_be_bytes(rest[id_len..id_len + 8].try_into().expect("8"));
        let salt = rest[id_len + 8..].try_into().expect("32");
        let header = Header {
            key_id,
            key_version,
            chunk_log2,
            salt,
        };
        let bytes = header.encode();
        Ok((header, bytes))
    }

    fn chunk_size(&self) -> usize {
        1 << self.chunk_log2
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], why: &str) -> Result<(), StreamError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StreamError::Header(why.into()),
        _ => StreamError::Io(e),
    })
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The per-file key and nonce prefix.
struct FileKey {
    aead: LessSafeKey,
    prefix: [u8; 7],
    aad: Vec<u8>,
}

impl FileKey {
    fn derive(dek: &DataKey, header: &Header, header_bytes: &[u8]) -> FileKey {
        let prk = Salt::new(HKDF_SHA256, &header.salt).extract(dek.expose());
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&[b"teekms/v1/stream-key", header_bytes], Len(32))
            .and_then(|okm| okm.fill(key.as_mut()))
            .expect("HKDF output of 32 bytes");
        let mut prefix = [0u8; 7];
        prk.expand(&[b"teekms/v1/stream-nonce", header_bytes], Len(7))
            .and_then(|okm| okm.fill(&mut prefix))
            .expect("HKDF output of 7 bytes");
        FileKey {
            aead: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("32-byte key"),
            ),
            prefix,
            aad: header_bytes.to_vec(),
        }
    }

    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, StreamError> {
        let index = u32::try_from(index)
            .map_err(|_| StreamError::Malformed("more than 2^32 chunks".into()))?;
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// Reads up to `buf.len()` bytes into `buf`; fewer only at end of input.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Chunk buffers each worker cycles through: one it fills and seals while the writer
/// writes out another, and one spare so that it seldom waits for the writer (2 measured
/// about 8 % slower; 3, 4 and 6 alike).
const BUFFERS_PER_WORKER: usize = 3;

/// The chunk buffers that [`encrypt`] or [`decrypt`] hold at most, in bytes, for chunks
/// of `2^chunk_log2` bytes on this machine (three per core): what a node reserves from
/// its stream memory before it starts one.
pub fn working_set_bytes(chunk_log2: u8) -> u64 {
    let workers = std::thread::available_parallelism().map_or(1, |w| w.get()) as u64;
    workers * BUFFERS_PER_WORKER as u64 * ((1u64 << chunk_log2) + TAG_LEN as u64)
}

/// A chunk handed to a worker: its index, and its input length and whether it is the
/// final chunk, or why it could not be read.
type Taken = (u64, Result<(usize, bool), StreamError>);

/// A chunk a worker is done with: its index, the worker (to give the buffer back to), the
/// buffer, and its output length and finality, or why it failed.
type Done = (u64, usize, Vec<u8>, Result<(usize, bool), StreamError>);

/// Runs `work(index, slot, input_len, last) -> output_len` on every chunk, in place, on
/// all cores, and writes the results to `output` in order, on this thread.
///
/// Each worker calls `take` to read the next chunk into one of its own few `slot`-byte
/// buffers, and seals or opens it there while the data is still in its core's cache; this
/// thread writes the chunks out in order and hands each buffer back to its worker. A small
/// working set, reused at once, keeps the read's copy near `cat`'s speed (batches in big
/// shared buffers missed the cache on every read, and cost a second pass over memory), and
/// bounds the memory a stream holds to a few chunks per core.
fn pipeline<W, T, F>(slot: usize, mut output: W, take: T, work: F) -> Result<(), StreamError>
where
    W: Write,
    T: Fn(&mut [u8]) -> Option<Taken> + Sync,
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    let workers = std::thread::available_parallelism().map_or(1, |w| w.get());
    // Room for every buffer, so a worker never waits to report a chunk.
    let (done_tx, done_rx) = sync_channel::<Done>(workers * BUFFERS_PER_WORKER);
    std::thread::scope(|s| {
        let mut give_back = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (back_tx, back_rx) = sync_channel::<Vec<u8>>(BUFFERS_PER_WORKER);
            for _ in 0..BUFFERS_PER_WORKER {
                back_tx
                    .send(vec![0u8; slot])
                    .expect("room for every buffer");
            }
            give_back.push(back_tx);
            let (done_tx, take, work) = (done_tx.clone(), &take, &work);
            // A buffer in hand before a chunk is taken: every chunk taken gets done, so the
            // writer, waiting for the lowest index, always gets it.
            handles.push(s.spawn(move || {
                for mut buf in back_rx {
                    let Some((i, taken)) = take(&mut buf) else {
                        break;
                    };
                    let r = taken.and_then(|(len, last)| {
                        work(i, &mut buf, len, last).map(|out| (out, last))
                    });
                    if done_tx.send((i, w, buf, r)).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(done_tx);
        let written = write_in_order(&done_rx, &give_back, &mut output);
        // No buffer comes back any more: the workers end. Each is joined, so that it has
        // exited entirely, thread-local destructors included, before the stream returns.
        drop(give_back);
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        written
    })
}

/// Writes the chunks the workers report in order of index, and gives each buffer back.
fn write_in_order(
    done: &Receiver<Done>,
    give_back: &[SyncSender<Vec<u8>>],
    output: &mut impl Write,
) -> Result<(), StreamError> {
    // Chunks done ahead of the one to write next wait here (at most all the buffers).
    let mut ahead = std::collections::BTreeMap::new();
    let mut want = 0u64;
    for (i, w, buf, r) in done.iter() {
        ahead.insert(i, (w, buf, r));
        while let Some((w, buf, r)) = ahead.remove(&want) {
            // The first chunk in order that failed is the one reported; nothing after it
            // is written.
            let (n, last) = r?;
            output.write_all(&buf[..n])?;
            if last {
                output.flush()?;
                return Ok(());
            }
            let _ = give_back[w].send(buf);
            want += 1;
        }
    }
    // The workers stop taking chunks only after the final one, or after a failure, which
    // is reported above; only a worker's panic gets here, and it is re-raised on join.
    Err(StreamError::Io(std::io::Error::other(
        "a stream worker stopped before the last chunk",
    )))
}

/// Hands out a reader's chunks in order, one `unit`-byte chunk at a time (fewer only at
/// the end). One byte is read ahead, to know whether a chunk is the final one.
struct Sequential<R> {
    input: R,
    unit: usize,
    next: u64,
    ahead: Option<u8>,
    ended: bool,
}

impl<R: Read> Sequential<R> {
    fn new(input: R, unit: usize) -> Self {
        Sequential {
            input,
            unit,
            next: 0,
            ahead: None,
            ended: false,
        }
    }

    fn take(&mut self, buf: &mut [u8]) -> Option<Taken> {
        if self.ended {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let read = self.read_chunk(&mut buf[..self.unit]);
        // After the final chunk, or a failure, nothing more is handed out.
        self.ended = !matches!(read, Ok((_, false)));
        Some((i, read))
    }

    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<(usize, bool), StreamError> {
        let mut n = 0;
        if let Some(b) = self.ahead.take() {
            buf[0] = b;
            n = 1;
        }
        n += fill(&mut self.input, &mut buf[n..])?;
        if n < buf.len() {
            return Ok((n, true));
        }
        let mut one = [0u8; 1];
        let more = fill(&mut self.input, &mut one)?;
        self.ahead = (more == 1).then_some(one[0]);
        Ok((n, more == 0))
    }
}

/// Runs `work` over `input` read sequentially (pipes, sockets, request bodies).
fn sequential_pipeline<R, W, F>(
    input: R,
    output: W,
    unit: usize,
    slot: usize,
    work: F,
) -> Result<(), StreamError>
where
    R: Read + Send,
    W: Write,
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    let reader = std::sync::Mutex::new(Sequential::new(input, unit));
    // The read runs under the lock (a stream has one position); the crypto does not.
    let take = |buf: &mut [u8]| reader.lock().expect("reader lock").take(buf);
    pipeline(slot, output, take, work)
}

/// Encrypts `input` to `output` under `dek`, writing the header first.
pub fn encrypt<R: Read + Send, W: Write + Send>(
    dek: &DataKey,
    header: &Header,
    input: R,
    mut output: W,
) -> Result<(), StreamError> {
    let header_bytes = header.encode();
    output.write_all(&header_bytes)?;
    let key = FileKey::derive(dek, header, &header_bytes);
    let cs = header.chunk_size();
    // Each slot holds a chunk's plaintext and room for its tag: sealed in place.
    sequential_pipeline(input, output, cs, cs + TAG_LEN, |i, slot, len, last| {
        seal_chunk(&key, i, slot, len, last)
    })
}

/// Reads the header, then decrypts the rest of `input` to `output`. Each chunk is written
/// only after it authenticated; the first failure stops the stream with an error.
pub fn decrypt<R: Read + Send, W: Write + Send>(
    dek: &DataKey,
    mut input: R,
    output: W,
) -> Result<Header, StreamError> {
    let (header, header_bytes) = Header::read_from(&mut input)?;
    let key = FileKey::derive(dek, &header, &header_bytes);
    let unit = header.chunk_size() + TAG_LEN;
    sequential_pipeline(input, output, unit, unit, |i, slot, len, last| {
        open_chunk(&key, i, slot, len, last)
    })?;
    Ok(header)
}

/// Positional reads of a regular file, done by the workers themselves, without a lock:
/// the kernel copy runs on every core at once (it costs as much as the AEAD).
fn file_pipeline<W, F>(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    unit: usize,
    slot: usize,
    output: W,
    work: F,
) -> Result<(), StreamError>
where
    W: Write,
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let chunks = len.div_ceil(unit as u64).max(1);
    let next = AtomicU64::new(0);
    let take = |buf: &mut [u8]| -> Option<Taken> {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= chunks {
            return None;
        }
        let start = i * unit as u64;
        let in_len = (len - start.min(len)).min(unit as u64) as usize;
        let read = file
            .read_exact_at(&mut buf[..in_len], offset + start)
            .map(|()| (in_len, i + 1 == chunks))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    StreamError::Malformed("the input file shrank while it was read".into())
                }
                _ => StreamError::Io(e),
            });
        Some((i, read))
    };
    pipeline(slot, output, take, work)
}

fn seal_chunk(
    key: &FileKey,
    i: u64,
    slot: &mut [u8],
    len: usize,
    last: bool,
) -> Result<usize, StreamError> {
    let (body, rest) = slot.split_at_mut(len);
    let tag = key
        .aead
        .seal_in_place_separate_tag(key.nonce(i, last)?, Aad::from(&key.aad[..]), body)
        .map_err(|_| StreamError::Malformed("sealing failed".into()))?;
    rest[..TAG_LEN].copy_from_slice(tag.as_ref());
    Ok(len + TAG_LEN)
}

fn open_chunk(
    key: &FileKey,
    i: u64,
    slot: &mut [u8],
    len: usize,
    last: bool,
) -> Result<usize, StreamError> {
    if len < TAG_LEN {
        return Err(StreamError::Malformed(if i == 0 && len == 0 {
            "the stream ends without a last chunk (truncated)".into()
        } else {
            format!("chunk {i} is {len} bytes, shorter than a tag")
        }));
    }
    if last && len == TAG_LEN && i != 0 {
        return Err(StreamError::Malformed(
            "an empty last chunk after data".into(),
        ));
    }
    let plain = key
        .aead
        .open_in_place(
            key.nonce(i, last)?,
            Aad::from(&key.aad[..]),
            &mut slot[..len],
        )
        .map_err(|_| StreamError::Authentication(i))?;
    Ok(plain.len())
}

/// [`encrypt`] for a regular file: the same bytes, read with positional reads by all cores.
pub fn encrypt_file<W: Write + Send>(
    dek: &DataKey,
    header: &Header,
    input: &std::fs::File,
    mut output: W,
) -> Result<(), StreamError> {
    let len = input.metadata()?.len();
    let header_bytes = header.encode();
    output.write_all(&header_bytes)?;
    let key = FileKey::derive(dek, header, &header_bytes);
    let cs = header.chunk_size();
    file_pipeline(
        input,
        0,
        len,
        cs,
        cs + TAG_LEN,
        output,
        |i, slot, n, last| seal_chunk(&key, i, slot, n, last),
    )
}

/// [`decrypt`] for a regular file: the same checks, read with positional reads by all cores.
pub fn decrypt_file<W: Write + Send>(
    dek: &DataKey,
    input: &std::fs::File,
    output: W,
) -> Result<Header, StreamError> {
    let len = input.metadata()?.len();
    let mut reader = input;
    let (header, header_bytes) = Header::read_from(&mut reader)?;
    let key = FileKey::derive(dek, &header, &header_bytes);
    let unit = header.chunk_size() + TAG_LEN;
    let offset = header_bytes.len() as u64;
    file_pipeline(
        input,
        offset,
        len.saturating_sub(offset),
        unit,
        unit,
        output,
        |i, slot, n, last| open_chunk(&key, i, slot, n, last),
    )?;
    Ok(header)
}
