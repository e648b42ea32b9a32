//! Envelope ciphertexts: small payloads encrypted under one version of a held key
//! (spec/envelope-v1.md).
//!
//! ```text
//! "TKMSENV1" | owner public key (32) | u8 key id length | key id | u64 key version (BE)
//!   | salt (16) | AES-256-GCM ciphertext and tag
//! ```
//!
//! The message key is HKDF-SHA256(salt, data key, "teekms/v1/envelope" | header): fresh
//! for every message, so the all-zero nonce is never reused under one key. The header and
//! the caller's associated data are authenticated. The owner can open these with their
//! own copy of the data key, offline.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::keyid::MAX_KEY_ID_LEN;
use crate::{CoreError, DataKey, KeyId, OwnerPublicKey};

/// The magic and format version.
pub const MAGIC: &[u8; 8] = b"TKMSENV1";
/// Largest plaintext an envelope operation takes (64 KiB).
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest associated data (8 KiB).
pub const MAX_AAD: usize = 8 * 1024;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// An envelope in Vault Transit's ciphertext form (spec/vault-transit-v1.md):
/// `vault:v<N>:<standard base64 of the envelope>`, N its key version.
pub fn to_vault_form(key_version: u64, envelope: &[u8]) -> String {
    use base64::Engine;
    let mut text = String::with_capacity(32 + envelope.len().div_ceil(3) * 4);
    text.push_str("vault:v");
    text.push_str(&key_version.to_string());
    text.push(':');
    base64::engine::general_purpose::STANDARD.encode_string(envelope, &mut text);
    text
}

/// Parses `vault:v<N>:<base64>` strictly (untrusted): N in decimal without sign or
/// leading zeros, canonical standard base64. `None` for anything else. The bytes are not
/// yet checked to be an envelope, nor N its version.
pub fn from_vault_form(text: &str) -> Option<(u64, Vec<u8>)> {
    use base64::Engine;
    let rest = text.strip_prefix("vault:v")?;
    let (version, b64) = rest.split_once(':')?;
    if version.is_empty()
        || !version.bytes().all(|b| b.is_ascii_digit())
        || (version.len() > 1 && version.starts_with('0'))
    {
        return None;
    }
    let version = version.parse().ok()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((version, bytes))
}

/// The parsed header of an envelope ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The key's owner.
    pub owner: OwnerPublicKey,
    /// The key id.
    pub key_id: KeyId,
    /// The key version that sealed it.
    pub key_version: u64,
    salt: [u8; SALT_LEN],
}

/// A parsed envelope ciphertext.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    /// Which key version it names.
    pub header: EnvelopeHeader,
    header_bytes: &'a [u8],
    sealed: &'a [u8],
}

fn malformed(why: &str) -> CoreError {
    CoreError::EnvelopeMalformed(why.into())
}

impl EnvelopeHeader {
    fn encode(&self) -> Vec<u8> {
        let id = self.key_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(8 + 32 + 1 + id.len() + 8 + SALT_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.owner.0);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out
    }
}

fn message_key(dek: &DataKey, salt: &[u8], header: &[u8]) -> LessSafeKey {
    let key = crate::hkdf32(salt, dek.expose(), &[b"teekms/v1/envelope", header]);
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("32-byte key"))
}

fn aad(header: &[u8], caller_aad: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + 4 + caller_aad.len());
    a.extend_from_slice(header);
    a.extend_from_slice(&(caller_aad.len() as u32).to_be_bytes());
    a.extend_from_slice(caller_aad);
    a
}

/// Encrypts `plaintext` (at most [`MAX_PLAINTEXT`]) under `dek`, version `key_version`
/// of `owner`'s key `key_id`.
pub fn seal(
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    key_version: u64,
    dek: &DataKey,
    plaintext: &[u8],
    caller_aad: &[u8],
) -> Result<Vec<u8>, CoreError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(malformed("plaintext is larger than 64 KiB"));
    }
    if caller_aad.len() > MAX_AAD {
        return Err(malformed("associated data is larger than 8 KiB"));
    }
    // AWS-LC's generator, not [`crate::random_bytes`]: only long-lived nodes seal
    // envelopes, and they seed that generator at start, so a salt costs no system call.
    let mut salt = [0u8; SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt).expect("AWS-LC's generator does not fail");
    seal_with_salt(owner, key_id, key_version, dek, plaintext, caller_aad, salt)
}

/// [`seal`] with a given salt: deterministic, for test vectors only. A salt must never
/// repeat under one data key.
#[doc(hidden)]
pub fn seal_with_salt(
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    key_version: u64,
    dek: &DataKey,
    plaintext: &[u8],
    caller_aad: &[u8],
    salt: [u8; SALT_LEN],
) -> Result<Vec<u8>, CoreError> {
    if plaintext.len() > MAX_PLAINTEXT || caller_aad.len() > MAX_AAD {
        return Err(malformed("plaintext or associated data too large"));
    }
    let header = EnvelopeHeader {
        owner: *owner,
        key_id: key_id.clone(),
        key_version,
        salt,
    }
    .encode();
    let mut out = header.clone();
    out.extend_from_slice(plaintext);
    let tag = message_key(dek, &salt, &header)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(aad(&header, caller_aad)),
            &mut out[header.len()..],
        )
        .map_err(|_| malformed("sealing failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

impl<'a> Envelope<'a> {
    /// Parses a ciphertext strictly (untrusted input).
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, CoreError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| malformed("not a teekms envelope ciphertext (magic TKMSENV1)"))?;
        let (owner, rest) = rest
            .split_first_chunk::<32>()
            .ok_or_else(|| malformed("truncated header"))?;
        let (&id_len, rest) = rest
            .split_first()
            .ok_or_else(|| malformed("truncated header"))?;
        let id_len = id_len as usize;
        if id_len == 0 || id_len > MAX_KEY_ID_LEN || rest.len() < id_len {
            return Err(malformed("bad key id length"));
        }
        let key_id = std::str::from_utf8(&rest[..id_len])
            .map_err(|_| malformed("key id is not UTF-8"))
            .and_then(KeyId::new)?;
        let rest = &rest[id_len..];
        let (version, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| malformed("truncated header"))?;
        let (salt, sealed) = rest
            .split_first_chunk::<SALT_LEN>()
            .ok_or_else(|| malformed("truncated header"))?;
        if sealed.len() < TAG_LEN {
            return Err(malformed("truncated ciphertext"));
        }
        if sealed.len() > MAX_PLAINTEXT + TAG_LEN {
            return Err(malformed("ciphertext is larger than 64 KiB"));
        }
        let header_len = bytes.len() - sealed.len();
        Ok(Envelope {
            header: EnvelopeHeader {
                owner: OwnerPublicKey(*owner),
                key_id,
                key_version: u64::from_be_bytes(*version),
                salt: *salt,
            },
            header_bytes: &bytes[..header_len],
            sealed,
        })
    }

    /// Decrypts with the data key of the version the header names.
    pub fn open(&self, dek: &DataKey, caller_aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        let mut buf = Zeroizing::new(self.sealed.to_vec());
        let len = message_key(dek, &self.header.salt, self.header_bytes)
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(aad(self.header_bytes, caller_aad)),
                buf.as_mut_slice(),
            )
            .map_err(|_| CoreError::EnvelopeDecrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> (OwnerPublicKey, KeyId, DataKey) {
        (
            OwnerPublicKey([7; 32]),
            KeyId::new("db").unwrap(),
            DataKey::from_bytes(&[9; 32]).unwrap(),
        )
    }

    #[test]
    fn round_trip_names_the_key_and_binds_aad() {
        let (o, id, dek) = key();
        let ct = seal(&o, &id, 3, &dek, b"hello", b"ctx").unwrap();
        let env = Envelope::parse(&ct).unwrap();
        assert_eq!((env.header.owner, env.header.key_version), (o, 3));
        assert_eq!(env.header.key_id, id);
        assert_eq!(&env.open(&dek, b"ctx").unwrap()[..], b"hello");
        assert!(env.open(&dek, b"other").is_err());
        let other = DataKey::from_bytes(&[8; 32]).unwrap();
        assert!(env.open(&other, b"ctx").is_err());
    }

    #[test]
    fn every_altered_byte_is_rejected() {
        let (o, id, dek) = key();
        let ct = seal(&o, &id, 1, &dek, b"secret payload", b"").unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x20;
            let opened = Envelope::parse(&bad).and_then(|e| e.open(&dek, b""));
            assert!(opened.is_err(), "byte {i} altered was accepted");
        }
        assert!(seal(&o, &id, 1, &dek, &vec![0; MAX_PLAINTEXT + 1], b"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Envelope::parse(&bytes).map(|e| e.open(&key().2, b""));
        }

        #[test]
        fn round_trips(pt in proptest::collection::vec(any::<u8>(), 0..2000),
                       aad in proptest::collection::vec(any::<u8>(), 0..100)) {
            let (o, id, dek) = key();
            let ct = seal(&o, &id, 2, &dek, &pt, &aad).unwrap();
            prop_assert_eq!(&Envelope::parse(&ct).unwrap().open(&dek, &aad).unwrap()[..], &pt[..]);
        }
    }

    #[test]
    fn the_vault_form_round_trips_and_is_strict() {
        let text = super::to_vault_form(3, b"\x00\x01envelope");
        assert!(text.starts_with("vault:v3:"));
        assert_eq!(
            super::from_vault_form(&text),
            Some((3, b"\x00\x01envelope".to_vec()))
        );
        for bad in [
            "vault:v:AA==",
            "vault:v01:AA==",
            "vault:v-1:AA==",
            "vault:v1",
            "vault:v1:*",
            "v1:AA==",
            "vault:v99999999999999999999:AA==",
        ] {
            assert_eq!(super::from_vault_form(bad), None, "{bad}");
        }
    }
}
