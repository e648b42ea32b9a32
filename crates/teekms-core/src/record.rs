//! Sealed records: AEAD-encrypted storage values bound to their kind, id and version
//! (spec/sealed-record-v1.md).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use teekms_attest::codec::{Reader, Writer};
use zeroize::Zeroizing;

use crate::{CoreError, DataKey, Kcv, KeyId, OwnerPublicKey};

/// First byte of every v1 record.
pub const RECORD_VERSION: u8 = 1;
const AAD_LABEL: &[u8] = b"teekms/v1/record";
const DATA_KEY_LABEL: &[u8] = b"teekms/v1/data-key-record";
const TAG_LEN: usize = 16;

/// A 256-bit AES-GCM key that seals records: a hardware sealing key or the cluster key.
pub struct SealingKey(Zeroizing<[u8; 32]>);

impl SealingKey {
    /// A fresh random key.
    pub fn generate() -> SealingKey {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::random_bytes(k.as_mut());
        SealingKey(k)
    }

    /// From raw bytes (for example a key the TEE derived).
    pub fn from_bytes(bytes: [u8; 32]) -> SealingKey {
        SealingKey(Zeroizing::new(bytes))
    }

    /// The raw key, for sealing it under another key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A subkey for one purpose (`label`), derived with HKDF: the audit MAC key and the
    /// access-key secret hashing key come from the cluster key this way, so they exist
    /// only inside TEEs that hold it.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        crate::hkdf32(b"teekms/v1/subkey", self.0.as_ref(), &[label.as_bytes()])
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte key"))
    }

    /// Seals `plaintext` as record `(kind, id, version)`.
    pub fn seal(&self, kind: &str, id: &str, version: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_aad(kind, id, version)),
                &mut out[start..],
            )
            .expect("sealing a small record does not fail");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens record `(kind, id, version)`; any change to the bytes or to where they are
    /// stored is an error.
    pub fn open(
        &self,
        kind: &'static str,
        id: &str,
        version: u64,
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        if record.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(CoreError::RecordAuthentication {
                kind,
                id: id.into(),
            });
        }
        if record[0] != RECORD_VERSION {
            return Err(CoreError::RecordMalformed {
                kind,
                id: id.into(),
                reason: format!("unknown record version {}", record[0]),
            });
        }
        let nonce: [u8; NONCE_LEN] = record[1..1 + NONCE_LEN].try_into().expect("12 bytes");
        let mut buf = Zeroizing::new(record[1 + NONCE_LEN..].to_vec());
        let len = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_aad(kind, id, version)),
                buf.as_mut_slice(),
            )
            .map_err(|_| CoreError::RecordAuthentication {
                kind,
                id: id.into(),
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn record_aad(kind: &str, id: &str, version: u64) -> Vec<u8> {
    let mut w = Writer::with_label(AAD_LABEL);
    w.str(kind).str(id).u64(version);
    w.finish()
}

/// Record kind of a data key.
pub const DATA_KEY_KIND: &str = "data-key";

/// A data key as stored, sealed under the cluster key.
#[derive(Debug)]
pub struct DataKeyRecord {
    /// The owner.
    pub owner: OwnerPublicKey,
    /// The key id.
    pub key_id: KeyId,
    /// Key version.
    pub key_version: u64,
    /// When first stored (Unix seconds).
    pub created_at: u64,
    /// The key policy text.
    pub key_policy: String,
    /// The key material.
    pub dek: DataKey,
}

impl DataKeyRecord {
    /// The record id: owner fingerprint and key id.
    pub fn record_id(owner: &OwnerPublicKey, key_id: &KeyId) -> String {
        format!("{}/{}", owner.fingerprint(), key_id)
    }

    /// The key check value.
    pub fn kcv(&self) -> Kcv {
        self.dek.kcv()
    }

    /// Seals the record.
    pub fn seal(&self, key: &SealingKey) -> Vec<u8> {
        let mut w = Writer::with_label(DATA_KEY_LABEL);
        w.bytes(&self.owner.0)
            .str(self.key_id.as_str())
            .u64(self.key_version)
            .u64(self.created_at)
            .str(&self.key_policy)
            .bytes(self.dek.expose());
        let plain = Zeroizing::new(w.finish());
        key.seal(
            DATA_KEY_KIND,
            &Self::record_id(&self.owner, &self.key_id),
            self.key_version,
            &plain,
        )
    }

    /// Opens a record stored for `(owner, key_id, version)`.
    pub fn open(
        key: &SealingKey,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        key_version: u64,
        record: &[u8],
    ) -> Result<DataKeyRecord, CoreError> {
        let id = Self::record_id(owner, key_id);
        let plain = key.open(DATA_KEY_KIND, &id, key_version, record)?;
        let bad = |reason: String| CoreError::RecordMalformed {
            kind: DATA_KEY_KIND,
            id: id.clone(),
            reason,
        };
        let mut r = Reader::new(&plain);
        let parsed = (|| {
            if r.bytes(64)? != DATA_KEY_LABEL {
                return Err(teekms_attest::codec::DecodeError::Invalid("label"));
            }
            let o: [u8; 32] = r.fixed()?;
            let k = r.str(128)?.to_owned();
            let v = r.u64()?;
            let c = r.u64()?;
            let p = r.str(crate::access::MAX_KEY_POLICY_LEN)?.to_owned();
            let d: [u8; 32] = r.fixed()?;
            Ok((o, k, v, c, p, DataKey::from_bytes(&d).expect("32 bytes")))
        })();
        let (o, k, v, created_at, key_policy, dek) = parsed.map_err(|e| bad(e.to_string()))?;
        r.finish().map_err(|e| bad(e.to_string()))?;
        // The AAD already binds these; checking again keeps a codec bug from passing.
        if o != owner.0 || k != key_id.as_str() || v != key_version {
            return Err(bad("contents do not match the record's place".into()));
        }
        Ok(DataKeyRecord {
            owner: *owner,
            key_id: key_id.clone(),
            key_version,
            created_at,
            key_policy,
            dek,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let key = SealingKey::generate();
        let rec = key.seal("k", "id", 1, b"hello");
        assert_eq!(key.open("k", "id", 1, &rec).unwrap().as_slice(), b"hello");
        assert!(key.open("k", "id2", 1, &rec).is_err());
        assert!(key.open("k", "id", 2, &rec).is_err());
        assert!(key.open("j", "id", 1, &rec).is_err());
        assert!(key.open("k", "id", 1, &rec[..rec.len() - 1]).is_err());
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 1;
            assert!(key.open("k", "id", 1, &bad).is_err(), "byte {i}");
        }
        assert!(SealingKey::generate().open("k", "id", 1, &rec).is_err());
    }
}
