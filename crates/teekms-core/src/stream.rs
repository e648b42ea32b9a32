//! The streaming file format (spec/stream-v1.md): a versioned header, a per-file key, and
//! AES-256-GCM chunks in the STREAM construction. This module is the format and the
//! per-chunk crypto ([`ChunkCipher`]); `teekms-stream-io` runs it over files and pipes on
//! every core.

use std::io::Read;

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
/// Bytes of the tag after each chunk.
pub const TAG_LEN: usize = 16;

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

    /// Plaintext bytes per chunk (the last may hold fewer).
    pub fn chunk_size(&self) -> usize {
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

/// The per-file key and nonce prefix of one stream: seals and opens its chunks.
pub struct ChunkCipher {
    aead: LessSafeKey,
    prefix: [u8; 7],
    aad: Vec<u8>,
}

impl ChunkCipher {
    /// The cipher of the stream whose header is `header` (encoded as `header_bytes`).
    pub fn derive(dek: &DataKey, header: &Header, header_bytes: &[u8]) -> ChunkCipher {
        let prk = Salt::new(HKDF_SHA256, &header.salt).extract(dek.expose());
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&[b"teekms/v1/stream-key", header_bytes], Len(32))
            .and_then(|okm| okm.fill(key.as_mut()))
            .expect("HKDF output of 32 bytes");
        let mut prefix = [0u8; 7];
        prk.expand(&[b"teekms/v1/stream-nonce", header_bytes], Len(7))
            .and_then(|okm| okm.fill(&mut prefix))
            .expect("HKDF output of 7 bytes");
        ChunkCipher {
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

impl ChunkCipher {
    /// Seals chunk `i` (the `len` bytes at the start of `slot`, whose room must hold its
    /// tag too) in place; returns the sealed length.
    pub fn seal(
        &self,
        i: u64,
        slot: &mut [u8],
        len: usize,
        last: bool,
    ) -> Result<usize, StreamError> {
        let key = self;
        let (body, rest) = slot.split_at_mut(len);
        let tag = key
            .aead
            .seal_in_place_separate_tag(key.nonce(i, last)?, Aad::from(&key.aad[..]), body)
            .map_err(|_| StreamError::Malformed("sealing failed".into()))?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(len + TAG_LEN)
    }

    /// Opens sealed chunk `i` (the `len` bytes at the start of `slot`) in place; returns
    /// the plaintext length. Refuses a truncated stream and an empty last chunk after
    /// data.
    pub fn open(
        &self,
        i: u64,
        slot: &mut [u8],
        len: usize,
        last: bool,
    ) -> Result<usize, StreamError> {
        let key = self;
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
}
