//! Streams through teekms's stream format (spec/stream-v1.md) on every core: a worker
//! per core reads, seals or opens chunks while the caller's thread writes the results out
//! in order; a regular file is read with positional reads by all workers. The format and
//! the per-chunk crypto are `teekms_core::stream`'s; this crate adds the threads and the
//! I/O, which the pure core does not do.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use teekms_core::DataKey;
use teekms_core::stream::{ChunkCipher, Header, StreamError, TAG_LEN};

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
    let key = ChunkCipher::derive(dek, header, &header_bytes);
    let cs = header.chunk_size();
    // Each slot holds a chunk's plaintext and room for its tag: sealed in place.
    sequential_pipeline(input, output, cs, cs + TAG_LEN, |i, slot, len, last| {
        key.seal(i, slot, len, last)
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
    let key = ChunkCipher::derive(dek, &header, &header_bytes);
    let unit = header.chunk_size() + TAG_LEN;
    sequential_pipeline(input, output, unit, unit, |i, slot, len, last| {
        key.open(i, slot, len, last)
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
    let key = ChunkCipher::derive(dek, header, &header_bytes);
    let cs = header.chunk_size();
    file_pipeline(
        input,
        0,
        len,
        cs,
        cs + TAG_LEN,
        output,
        |i, slot, n, last| key.seal(i, slot, n, last),
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
    let key = ChunkCipher::derive(dek, &header, &header_bytes);
    let unit = header.chunk_size() + TAG_LEN;
    let offset = header_bytes.len() as u64;
    file_pipeline(
        input,
        offset,
        len.saturating_sub(offset),
        unit,
        unit,
        output,
        |i, slot, n, last| key.open(i, slot, n, last),
    )?;
    Ok(header)
}
