//! Secrets sealed to an attested recipient (AWS KMS's `CiphertextForRecipient`; spec/aws-kms-v1.md):
//! a node answers `Decrypt`, `GenerateDataKey` and `GenerateRandom` for a request that
//! names a teekms workload's attestation document by sealing the secret, with HPKE, to
//! the public key the document's statement binds. Only that workload can open it.
//!
//! ```text
//! "TKMSRCP1" | u8 n | operation name (n bytes) | HPKE enc (32) | HPKE ciphertext and tag
//! ```
//!
//! HPKE as in spec/binding-v1.md (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM),
//! info `teekms/v1/response`, associated data the operation name (`decrypt`,
//! `generate-data-key`, `generate-random`): the same sealing as the native API's
//! `sealed` answers, framed in one blob.

use zeroize::Zeroizing;

use crate::api::{B64, SEALED_RESPONSE_INFO, SealedSecret};
use crate::{CoreError, NodeKeys};

/// The `KeyEncryptionAlgorithm` a request names for a teekms recipient.
pub const ALGORITHM: &str = "TEEKMS_HPKE_X25519_SHA256_AES256GCM";
/// The blob's magic and format version.
pub const MAGIC: &[u8; 8] = b"TKMSRCP1";
const ENC_LEN: usize = 32;

fn malformed(why: &str) -> CoreError {
    CoreError::EnvelopeMalformed(format!("not a CiphertextForRecipient: {why}"))
}

/// Frames a secret sealed for `operation`.
pub fn encode(operation: &str, sealed: &SealedSecret) -> Vec<u8> {
    let op = operation.as_bytes();
    let mut out = Vec::with_capacity(8 + 1 + op.len() + ENC_LEN + sealed.ciphertext.0.len());
    out.extend_from_slice(MAGIC);
    out.push(u8::try_from(op.len()).expect("operation names are short"));
    out.extend_from_slice(op);
    out.extend_from_slice(&sealed.enc.0);
    out.extend_from_slice(&sealed.ciphertext.0);
    out
}

/// Parses a blob strictly: the operation name and the sealed secret.
pub fn decode(bytes: &[u8]) -> Result<(String, SealedSecret), CoreError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| malformed("wrong magic"))?;
    let (&n, rest) = rest.split_first().ok_or_else(|| malformed("truncated"))?;
    let n = usize::from(n);
    if n == 0 || rest.len() < n + ENC_LEN + 16 {
        return Err(malformed("truncated"));
    }
    let op =
        std::str::from_utf8(&rest[..n]).map_err(|_| malformed("operation name is not UTF-8"))?;
    let (enc, ct) = rest[n..].split_at(ENC_LEN);
    Ok((
        op.to_owned(),
        SealedSecret {
            enc: B64(enc.to_vec()),
            ciphertext: B64(ct.to_vec()),
        },
    ))
}

/// Opens a blob with the workload's keys (the HPKE key its attestation document bound).
pub fn open(keys: &NodeKeys, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, CoreError> {
    let (op, sealed) = decode(bytes)?;
    keys.open_sealed(
        SEALED_RESPONSE_INFO,
        op.as_bytes(),
        &sealed.enc.0,
        &sealed.ciphertext.0,
    )
    .map_err(|_| {
        CoreError::EnvelopeMalformed(
            "the CiphertextForRecipient does not open with this key: it was sealed to another recipient, or altered".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_only_and_not_altered() {
        let keys = NodeKeys::generate();
        let (enc, ct) = crate::hpke::seal(
            &keys.hpke_public_key(),
            SEALED_RESPONSE_INFO,
            b"decrypt",
            b"secret",
        )
        .unwrap();
        let sealed = SealedSecret {
            enc: B64(enc.to_vec()),
            ciphertext: B64(ct),
        };
        let blob = encode("decrypt", &sealed);
        assert_eq!(open(&keys, &blob).unwrap().as_slice(), b"secret");
        assert!(open(&NodeKeys::generate(), &blob).is_err());
        // The operation name is authenticated: relabelled, it does not open.
        let relabelled = encode("generate-random", &sealed);
        assert!(open(&keys, &relabelled).is_err());
        for cut in [0, 8, 9, 16, blob.len() - 1] {
            assert!(open(&keys, &blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = blob.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open(&keys, &flipped).is_err());
    }
}
