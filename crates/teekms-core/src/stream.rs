//! The streaming file format (spec/stream-v1.md): a versioned header, a per-file key, and
//! AES-256-GCM chunks in the STREAM construction, sealed and opened in parallel while a
//! reader and a writer thread overlap I/O with the crypto.

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
/// Chunks handed to the workers at once.
const BATCH_CHUNKS: usize = 64;

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

/// A batch of chunks in one buffer, one chunk per `slot`-byte slot; `lens[k]` bytes of
/// slot `k` hold input. `eof` marks the batch whose last slot is the final chunk.
struct Batch {
    first: u64,
    buf: Vec<u8>,
    lens: Vec<usize>,
    eof: bool,
}

/// Reads up to `want` bytes into `buf`; fewer only at end of input.
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

/// Reads `unit`-byte chunks into the slots of recycled buffers. A batch is sent once the
/// first chunk of the next one has been read (or the input ended), so the batch holding
/// the final chunk always knows it.
fn reader_thread(
    mut r: impl Read,
    unit: usize,
    slot: usize,
    pool: Receiver<Vec<u8>>,
    tx: SyncSender<Result<Batch, std::io::Error>>,
) {
    // Recycled when the writer has returned one; in flight are at most the channels' few.
    let new_buf = |pool: &Receiver<Vec<u8>>| {
        pool.try_recv()
            .unwrap_or_else(|_| vec![0u8; slot * BATCH_CHUNKS])
    };
    let mut index = 0u64;
    let mut buf = new_buf(&pool);
    let mut lens = Vec::with_capacity(BATCH_CHUNKS);
    // The first chunk of the current batch.
    match fill(&mut r, &mut buf[..unit]) {
        Ok(n) => lens.push(n),
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    }
    loop {
        let mut eof = lens[lens.len() - 1] < unit;
        while !eof && lens.len() < BATCH_CHUNKS {
            let k = lens.len();
            match fill(&mut r, &mut buf[k * slot..k * slot + unit]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    lens.push(n);
                    eof = n < unit;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        // Look one chunk ahead into the next buffer to learn whether this batch is final.
        let mut next = None;
        if !eof {
            let mut nb = new_buf(&pool);
            match fill(&mut r, &mut nb[..unit]) {
                Ok(0) => eof = true,
                Ok(n) => next = Some((nb, n)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let count = lens.len() as u64;
        let batch = Batch {
            first: index,
            buf,
            lens: std::mem::take(&mut lens),
            eof,
        };
        index += count;
        if tx.send(Ok(batch)).is_err() {
            return;
        }
        match next {
            Some((nb, n)) => {
                buf = nb;
                lens.push(n);
            }
            None => return,
        }
    }
}

/// Writes each slot's output and returns the buffer to the reader's pool.
fn writer_thread(
    mut w: impl Write,
    slot: usize,
    rx: Receiver<(Vec<u8>, Vec<usize>)>,
    pool: SyncSender<Vec<u8>>,
) -> std::io::Result<()> {
    for (buf, out_lens) in rx {
        for (k, len) in out_lens.iter().enumerate() {
            w.write_all(&buf[k * slot..k * slot + len])?;
        }
        let _ = pool.try_send(buf);
    }
    w.flush()
}

/// Runs `work(index, slot, input_len, last) -> output_len` on every chunk, in place, on
/// all cores, with reading and writing on their own threads.
fn pipeline<R, W, F>(r: R, w: W, unit: usize, slot: usize, work: F) -> Result<(), StreamError>
where
    R: Read + Send,
    W: Write + Send,
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    let (in_tx, in_rx) = sync_channel(2);
    let (out_tx, out_rx) = sync_channel::<(Vec<u8>, Vec<usize>)>(2);
    // Room for every buffer that can be in flight, so none is dropped and reallocated.
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(16);
    std::thread::scope(|s| {
        s.spawn(move || reader_thread(r, unit, slot, pool_rx, in_tx));
        let writer = s.spawn(move || writer_thread(w, slot, out_rx, pool_tx));
        let mut result = Ok(());
        for batch in in_rx {
            let done = batch
                .map_err(StreamError::Io)
                .and_then(|b| run_batch(b, slot, &work));
            match done {
                Ok(out) => {
                    if out_tx.send(out).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(out_tx);
        let written = writer.join().expect("writer thread");
        result.and(written.map_err(StreamError::Io))
    })
}

fn run_batch<F>(mut b: Batch, slot: usize, work: &F) -> Result<(Vec<u8>, Vec<usize>), StreamError>
where
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    let n = b.lens.len();
    let final_index = b.eof.then(|| b.first + n as u64 - 1);
    let workers = std::thread::available_parallelism()
        .map(|w| w.get())
        .unwrap_or(1)
        .min(n)
        .max(1);
    let per = n.div_ceil(workers);
    let mut out_lens = vec![0usize; n];
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut rest = &mut b.buf[..n * slot];
        let mut lens_rest = &b.lens[..];
        let mut outs_rest = &mut out_lens[..];
        let mut first = b.first;
        while !lens_rest.is_empty() {
            let take = per.min(lens_rest.len());
            let (group, r) = std::mem::take(&mut rest).split_at_mut(take * slot);
            rest = r;
            let (lens, l) = lens_rest.split_at(take);
            lens_rest = l;
            let (outs, o) = std::mem::take(&mut outs_rest).split_at_mut(take);
            outs_rest = o;
            let start = first;
            first += take as u64;
            handles.push(s.spawn(move || {
                for (k, (chunk, out)) in group.chunks_mut(slot).zip(outs.iter_mut()).enumerate() {
                    let i = start + k as u64;
                    *out = work(i, chunk, lens[k], Some(i) == final_index)?;
                }
                Ok::<(), StreamError>(())
            }));
        }
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("worker thread"))
    })?;
    Ok((b.buf, out_lens))
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
    pipeline(input, output, cs, cs + TAG_LEN, |i, slot, len, last| {
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
    pipeline(input, output, unit, unit, |i, slot, len, last| {
        open_chunk(&key, i, slot, len, last)
    })?;
    Ok(header)
}

/// Chunk buffers each file worker cycles through: one it fills and seals while the writer
/// writes out another, and one spare so that it seldom waits for the writer (2 measured
/// about 8 % slower; 3, 4 and 6 alike).
const BUFFERS_PER_WORKER: usize = 3;

/// A chunk a file worker is done with: its index, the worker (to give the buffer back to),
/// the buffer, and the output length or why the chunk failed.
type DoneChunk = (u64, usize, Vec<u8>, Result<usize, StreamError>);

/// Positional reads of a regular file, done by the workers themselves: the kernel copy
/// runs on every core instead of one reader thread (the copy costs as much as the AEAD).
///
/// Each worker takes the next chunk index, reads that chunk into one of its own few
/// buffers and seals or opens it there, while the data is still in its core's cache; this
/// thread writes the chunks out in order and hands each buffer back to its worker. A
/// small working set, reused at once, is what keeps the copy near `cat`'s speed: big
/// batch buffers made every read miss the cache (and cost a second pass over memory).
fn file_pipeline<W, F>(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    unit: usize,
    slot: usize,
    mut output: W,
    work: F,
) -> Result<(), StreamError>
where
    W: Write,
    F: Fn(u64, &mut [u8], usize, bool) -> Result<usize, StreamError> + Sync,
{
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let chunks = len.div_ceil(unit as u64).max(1);
    let workers = std::thread::available_parallelism()
        .map(|w| w.get())
        .unwrap_or(1)
        .min(usize::try_from(chunks).unwrap_or(usize::MAX))
        .max(1);
    let next = AtomicU64::new(0);
    let process = |i: u64, buf: &mut [u8]| -> Result<usize, StreamError> {
        let start = i * unit as u64;
        let in_len = (len - start.min(len)).min(unit as u64) as usize;
        file.read_exact_at(&mut buf[..in_len], offset + start)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    StreamError::Malformed("the input file shrank while it was read".into())
                }
                _ => StreamError::Io(e),
            })?;
        work(i, buf, in_len, i + 1 == chunks)
    };
    // Room for every buffer, so a worker never waits to report a chunk.
    let (done_tx, done_rx) = sync_channel::<DoneChunk>(workers * BUFFERS_PER_WORKER);
    std::thread::scope(|s| {
        let mut give_back = Vec::with_capacity(workers);
        for w in 0..workers {
            let (back_tx, back_rx) = sync_channel::<Vec<u8>>(BUFFERS_PER_WORKER);
            for _ in 0..BUFFERS_PER_WORKER {
                back_tx
                    .send(vec![0u8; slot])
                    .expect("room for every buffer");
            }
            give_back.push(back_tx);
            let (done_tx, next, process) = (done_tx.clone(), &next, &process);
            // A buffer in hand before an index is taken: every taken index gets done, so
            // the writer, waiting for the lowest, always gets it.
            s.spawn(move || {
                for mut buf in back_rx {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks {
                        break;
                    }
                    let r = process(i, &mut buf);
                    if done_tx.send((i, w, buf, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Chunks done ahead of the one to write next wait here (at most all the buffers).
        let mut ahead = std::collections::BTreeMap::new();
        let mut want = 0u64;
        for (i, w, buf, r) in done_rx.iter() {
            ahead.insert(i, (w, buf, r));
            while let Some((w, buf, r)) = ahead.remove(&want) {
                // The first chunk in order that failed is the one reported; nothing after
                // it is written.
                let n = r?;
                output.write_all(&buf[..n])?;
                let _ = give_back[w].send(buf);
                want += 1;
            }
            if want == chunks {
                break;
            }
        }
        if want < chunks {
            // Only a worker's panic ends them early; the scope re-raises it on return.
            return Err(StreamError::Io(std::io::Error::other(
                "a stream worker stopped before the last chunk",
            )));
        }
        // Dropping the channels (on return) stops the workers; the scope joins them.
        drop(give_back);
        output.flush()?;
        Ok(())
    })
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
