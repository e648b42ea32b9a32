//! age keys of key versions (spec/age-plugin-v1.md): each version of a key has an X25519
//! key pair derived from its material, so that files can be encrypted to it with no node
//! (`age1teekms1…` recipients) and opened only inside a node, under the key's policy.
//! The node certifies the public key with its attested signing key; `teekms age
//! recipient` checks that signature against the node it verified.

use teekms_attest::VerifiedNode;
use teekms_attest::codec::Writer;

use crate::hpke::HpkePrivateKey;
use crate::{CoreError, DataKey, KeyId, OwnerPublicKey};

/// HPKE `info` of file keys sealed to a key version's age key.
pub const HPKE_INFO: &[u8] = b"teekms/v1/age";
const DERIVE_LABEL: &[u8] = b"teekms/v1/age-key";
const CERT_LABEL: &[u8] = b"teekms/v1/age-recipient";

/// Names a key version: its owner, id and version, canonically encoded under `label`.
fn name(label: &[u8], owner: &OwnerPublicKey, key_id: &KeyId, version: u64) -> Writer {
    let mut w = Writer::with_label(label);
    w.bytes(&owner.0).str(key_id.as_str()).u64(version);
    w
}

/// The age key pair of version `version` of `owner`'s key `key_id`, whose material is
/// `dek`: X25519 from HKDF-SHA256(salt = the label, IKM = the material, info = the name).
pub fn key_pair(
    dek: &DataKey,
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    version: u64,
) -> HpkePrivateKey {
    let info = name(DERIVE_LABEL, owner, key_id, version).finish();
    let secret = crate::hkdf32(DERIVE_LABEL, dek.expose(), &[&info]);
    HpkePrivateKey::from_bytes(secret.as_ref()).expect("any 32 bytes are an X25519 private key")
}

/// The associated data a file key is sealed with: the key version it is for.
pub fn seal_aad(owner: &OwnerPublicKey, key_id: &KeyId, version: u64) -> Vec<u8> {
    name(HPKE_INFO, owner, key_id, version).finish()
}

/// What the node signs to certify a key version's age public key.
pub fn certificate_message(
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    version: u64,
    public_key: &[u8; 32],
) -> Vec<u8> {
    let mut w = name(CERT_LABEL, owner, key_id, version);
    w.bytes(public_key);
    w.finish()
}

/// Checks that the verified node certified `public_key` for the key version.
pub fn verify_certificate(
    node: &VerifiedNode,
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    version: u64,
    public_key: &[u8; 32],
    signature: &[u8],
) -> Result<(), CoreError> {
    let message = certificate_message(owner, key_id, version, public_key);
    let signature: [u8; 64] = signature.try_into().map_err(|_| {
        CoreError::ReceiptInvalid("the age key's certificate is not 64 bytes".into())
    })?;
    if teekms_attest::ed25519_verify(node.signing_public_key(), &message, &signature) {
        Ok(())
    } else {
        Err(CoreError::ReceiptInvalid(
            "the node's signature on the age key does not verify (altered, or from another node)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_has_its_own_key_and_a_sealed_file_key_opens_with_it_only() {
        let owner = OwnerPublicKey([1; 32]);
        let id = KeyId::new("db").unwrap();
        let dek = DataKey::from_bytes(&[5; 32]).unwrap();
        let v1 = key_pair(&dek, &owner, &id, 1);
        assert_eq!(v1.public_key(), key_pair(&dek, &owner, &id, 1).public_key());
        assert_ne!(v1.public_key(), key_pair(&dek, &owner, &id, 2).public_key());
        let other = DataKey::from_bytes(&[6; 32]).unwrap();
        assert_ne!(
            v1.public_key(),
            key_pair(&other, &owner, &id, 1).public_key()
        );
        let aad = seal_aad(&owner, &id, 1);
        let (enc, ct) = crate::hpke::seal(v1.public_key(), HPKE_INFO, &aad, &[3; 16]).unwrap();
        assert_eq!(
            crate::hpke::open(&v1, &enc, HPKE_INFO, &aad, &ct)
                .unwrap()
                .as_slice(),
            &[3; 16]
        );
        assert!(crate::hpke::open(&v1, &enc, HPKE_INFO, &seal_aad(&owner, &id, 2), &ct).is_err());
    }
}
