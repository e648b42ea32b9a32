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
const BATCH_CHUNKS: usize = 32;

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

/// A run of whole units read from the input; `eof` marks the final batch.
struct Batch {
    first: u64,
    data: Vec<u8>,
    eof: bool,
}

/// Reads `unit`-sized pieces in batches. Until the input ends, the last unit read is held
/// back, so the batch that contains the final unit always has `eof` set.
fn reader_thread(mut r: impl Read, unit: usize, tx: SyncSender<Result<Batch, std::io::Error>>) {
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0u64;
    loop {
        let mut data = std::mem::take(&mut carry);
        let want = unit * BATCH_CHUNKS + unit;
        let start = data.len();
        data.resize(want, 0);
        let mut filled = start;
        let mut eof = false;
        while filled < want {
            match r.read(&mut data[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        data.truncate(filled);
        if !eof {
            // Hold back the last unit: it may be the final one.
            carry = data.split_off(data.len() - unit);
        }
        let units = data.len().div_ceil(unit) as u64;
        let batch = Batch {
            first: index,
            data,
            eof,
        };
        index += units;
        if tx.send(Ok(batch)).is_err() || eof {
            return;
        }
    }
}

fn writer_thread(mut w: impl Write, rx: Receiver<Vec<u8>>) -> std::io::Result<()> {
    for buf in rx {
        w.write_all(&buf)?;
    }
    w.flush()
}

/// Runs `work` over each batch on all cores, with reading and writing on their own threads.
fn pipeline<R, W, F>(r: R, w: W, unit: usize, work: F) -> Result<(), StreamError>
where
    R: Read + Send,
    W: Write + Send,
    F: Fn(&Batch) -> Result<Vec<u8>, StreamError> + Sync,
{
    let (in_tx, in_rx) = sync_channel(2);
    let (out_tx, out_rx) = sync_channel::<Vec<u8>>(2);
    std::thread::scope(|s| {
        s.spawn(move || reader_thread(r, unit, in_tx));
        let writer = s.spawn(move || writer_thread(w, out_rx));
        let mut result = Ok(());
        for batch in in_rx {
            let out = batch.map_err(StreamError::Io).and_then(|b| work(&b));
            match out {
                Ok(buf) => {
                    if out_tx.send(buf).is_err() {
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

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One chunk of work: its index, its input and where its output goes.
type Job<'i, 'o> = (u64, &'i [u8], &'o mut [u8]);

/// Applies `f(index, chunk_in, chunk_out)` to every chunk of a batch across all cores.
fn par_chunks<F>(
    inputs: Vec<&[u8]>,
    out_sizes: &[usize],
    first: u64,
    f: F,
) -> Result<Vec<u8>, StreamError>
where
    F: Fn(u64, &[u8], &mut [u8]) -> Result<(), StreamError> + Sync,
{
    let total: usize = out_sizes.iter().sum();
    let mut out = vec![0u8; total];
    let mut slices: Vec<&mut [u8]> = Vec::with_capacity(inputs.len());
    let mut rest = out.as_mut_slice();
    for &size in out_sizes {
        let (a, b) = rest.split_at_mut(size);
        slices.push(a);
        rest = b;
    }
    let jobs: Vec<Job<'_, '_>> = inputs
        .into_iter()
        .zip(slices)
        .enumerate()
        .map(|(i, (input, output))| (first + i as u64, input, output))
        .collect();
    let per = jobs.len().div_ceil(workers()).max(1);
    let mut groups: Vec<Vec<Job<'_, '_>>> = Vec::new();
    let mut jobs = jobs;
    while !jobs.is_empty() {
        let tail = jobs.split_off(per.min(jobs.len()));
        groups.push(std::mem::replace(&mut jobs, tail));
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                s.spawn(move || {
                    group
                        .into_iter()
                        .try_for_each(|(i, input, output)| f(i, input, output))
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("worker thread"))
    })?;
    Ok(out)
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
    pipeline(input, output, cs, |b| {
        let mut inputs: Vec<&[u8]> = b.data.chunks(cs).collect();
        if inputs.is_empty() && b.eof && b.first == 0 {
            inputs.push(&[]); // the empty plaintext: one empty last chunk
        }
        let n = inputs.len();
        let sizes: Vec<usize> = inputs.iter().map(|c| c.len() + TAG_LEN).collect();
        par_chunks(inputs, &sizes, b.first, |i, chunk, out| {
            let last = b.eof && i == b.first + n as u64 - 1;
            let (body, tag_out) = out.split_at_mut(chunk.len());
            body.copy_from_slice(chunk);
            let tag = key
                .aead
                .seal_in_place_separate_tag(key.nonce(i, last)?, Aad::from(&key.aad[..]), body)
                .map_err(|_| StreamError::Malformed("sealing failed".into()))?;
            tag_out.copy_from_slice(tag.as_ref());
            Ok(())
        })
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
    let cs = header.chunk_size();
    let unit = cs + TAG_LEN;
    pipeline(input, output, unit, |b| {
        let inputs: Vec<&[u8]> = b.data.chunks(unit).collect();
        let n = inputs.len();
        if n == 0 {
            return Err(StreamError::Malformed(
                "the stream ends without a last chunk (truncated)".into(),
            ));
        }
        for (k, c) in inputs.iter().enumerate() {
            let last = b.eof && k == n - 1;
            if c.len() < TAG_LEN || (!last && c.len() != unit) {
                return Err(StreamError::Malformed(format!(
                    "chunk {} is {} bytes",
                    b.first + k as u64,
                    c.len()
                )));
            }
            if last && c.len() == TAG_LEN && b.first + k as u64 != 0 {
                return Err(StreamError::Malformed(
                    "an empty last chunk after data".into(),
                ));
            }
        }
        let sizes: Vec<usize> = inputs.iter().map(|c| c.len() - TAG_LEN).collect();
        par_chunks(inputs, &sizes, b.first, |i, chunk, out| {
            let last = b.eof && i == b.first + n as u64 - 1;
            let mut buf = chunk.to_vec();
            let plain = key
                .aead
                .open_in_place(key.nonce(i, last)?, Aad::from(&key.aad[..]), &mut buf)
                .map_err(|_| StreamError::Authentication(i))?;
            out.copy_from_slice(plain);
            Ok(())
        })
    })?;
    Ok(header)
}
