//! Deployment bundles: a data key HPKE-sealed to an attested node (spec/bundle-v1.md).
//!
//! The same bundle travels online (`POST /v1/keys`) and offline (a file on a USB stick).

use crate::{CoreError, DataKey, KeyId, NodeKeys, OwnerKey, OwnerPublicKey};
use serde::{Deserialize, Serialize};
use teekms_attest::codec::Writer;
use teekms_attest::hexbytes::{HexBytes, base64_bytes};
use teekms_attest::{NodeStatement, VerifiedNode};

/// The `format` field of every bundle.
pub const BUNDLE_FORMAT: &str = "teekms-bundle";
/// The only bundle version this build knows.
pub const BUNDLE_VERSION: u32 = 1;
/// Largest bundle accepted, in bytes of JSON.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024;
pub use crate::access::MAX_KEY_POLICY_LEN;
/// HPKE `info` of a deployment.
pub const HPKE_INFO: &[u8] = b"teekms/v1/deploy";
const AAD_LABEL: &[u8] = b"teekms/v1/bundle-aad";
const SIGNATURE_LABEL: &[u8] = b"teekms/v1/bundle-signature";
/// The key policy used when the owner gives none.
pub const DEFAULT_KEY_POLICY: &str = "{}";

/// A data key wrapped to one node, signed by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`].
    pub version: u32,
    /// The key's id in the owner's namespace.
    pub key_id: String,
    /// The owner's Ed25519 public key.
    pub owner_public_key: HexBytes<32>,
    /// The key policy (a JSON object, as text; bound byte for byte).
    pub key_policy: String,
    /// The statement of the node this bundle was wrapped to.
    pub statement: NodeStatement,
    /// HPKE encapsulated key.
    #[serde(with = "base64_bytes")]
    pub enc: Vec<u8>,
    /// HPKE ciphertext of the 32-byte data key.
    #[serde(with = "base64_bytes")]
    pub ciphertext: Vec<u8>,
    /// Owner's Ed25519 signature over the bundle (see the spec).
    #[serde(with = "base64_bytes")]
    pub owner_signature: Vec<u8>,
}

/// What a node learns from a bundle it opened.
#[derive(Debug)]
pub struct OpenedBundle {
    /// The owner the key belongs to.
    pub owner: OwnerPublicKey,
    /// The key's id.
    pub key_id: KeyId,
    /// The key policy text.
    pub key_policy: String,
    /// The data key.
    pub dek: DataKey,
    /// Hash of the statement the owner wrapped to.
    pub statement_hash: [u8; 64],
}

/// Checks that a key policy is valid (spec/key-policy-v1.md): a JSON object within the
/// size limit, strictly of the key-policy shape.
pub fn validate_key_policy(text: &str) -> Result<(), CoreError> {
    crate::access::KeyPolicy::parse(text).map(|_| ())
}

fn aad(key_id: &str, owner: &[u8; 32], key_policy: &str, statement_hash: &[u8; 64]) -> Vec<u8> {
    let mut w = Writer::with_label(AAD_LABEL);
    w.str(key_id)
        .bytes(owner)
        .str(key_policy)
        .bytes(statement_hash);
    w.finish()
}

fn signed_message(aad: &[u8], enc: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_label(SIGNATURE_LABEL);
    w.bytes(aad).bytes(enc).bytes(ciphertext);
    w.finish()
}

impl Bundle {
    /// Wraps `dek` to a verified node. The `VerifiedNode` argument is the proof that the
    /// node's evidence was checked; there is no other way to name a recipient.
    pub fn wrap(
        node: &VerifiedNode,
        owner: &OwnerKey,
        key_id: &KeyId,
        key_policy: &str,
        dek: &DataKey,
    ) -> Result<Bundle, CoreError> {
        validate_key_policy(key_policy)?;
        let owner_pk = owner.public_key();
        let aad = aad(
            key_id.as_str(),
            &owner_pk.0,
            key_policy,
            node.statement_hash(),
        );
        let (enc, ciphertext) =
            crate::hpke::seal(node.hpke_public_key(), HPKE_INFO, &aad, dek.expose()).map_err(
                |_| CoreError::bundle("the attested HPKE public key is not a usable X25519 key"),
            )?;
        let enc = enc.to_vec();
        let signature = owner.sign(&signed_message(&aad, &enc, &ciphertext));
        Ok(Bundle {
            format: BUNDLE_FORMAT.into(),
            version: BUNDLE_VERSION,
            key_id: key_id.as_str().into(),
            owner_public_key: HexBytes(owner_pk.0),
            key_policy: key_policy.into(),
            statement: node.statement().clone(),
            enc,
            ciphertext,
            owner_signature: signature.to_vec(),
        })
    }

    /// Parses a bundle strictly: size limit, unknown fields, format and version.
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, CoreError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(CoreError::bundle(format!(
                "larger than {MAX_BUNDLE_LEN} bytes"
            )));
        }
        let b: Bundle = serde_json::from_slice(bytes).map_err(CoreError::bundle)?;
        if b.format != BUNDLE_FORMAT {
            return Err(CoreError::bundle(format!(
                "format is {:?}, not {BUNDLE_FORMAT:?}",
                b.format
            )));
        }
        if b.version != BUNDLE_VERSION {
            return Err(CoreError::bundle(format!(
                "unknown version {} (this build knows {BUNDLE_VERSION})",
                b.version
            )));
        }
        Ok(b)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundles always serialize")
    }

    /// The owner named in the bundle (not yet authenticated).
    pub fn claimed_owner(&self) -> OwnerPublicKey {
        OwnerPublicKey(self.owner_public_key.0)
    }

    /// Opens the bundle with the node's keys, after checking it was wrapped to this
    /// node and signed by its owner.
    pub fn open(&self, keys: &NodeKeys) -> Result<OpenedBundle, CoreError> {
        let key_id = KeyId::new(&self.key_id)?;
        validate_key_policy(&self.key_policy)?;
        self.statement
            .validate()
            .map_err(|e| CoreError::bundle(e.to_string()))?;
        if !keys.is_own_statement(self.statement.tee, &self.statement) {
            return Err(CoreError::BundleWrongNode {
                bundle_node: self.statement.node_id.to_hex(),
                this_node: keys.node_id().to_hex(),
            });
        }
        let statement_hash = self.statement.hash();
        let aad = aad(
            &self.key_id,
            &self.owner_public_key.0,
            &self.key_policy,
            &statement_hash,
        );
        let owner = self.claimed_owner();
        if !owner.verify(
            &signed_message(&aad, &self.enc, &self.ciphertext),
            &self.owner_signature,
        ) {
            return Err(CoreError::BundleSignature);
        }
        let plain = crate::hpke::open(
            keys.hpke_private(),
            &self.enc,
            HPKE_INFO,
            &aad,
            &self.ciphertext,
        )
        .map_err(|_| CoreError::BundleDecrypt)?;
        let dek = DataKey::from_bytes(&plain)
            .ok_or_else(|| CoreError::bundle("wrapped key is not 32 bytes"))?;
        Ok(OpenedBundle {
            owner,
            key_id,
            key_policy: self.key_policy.clone(),
            dek,
            statement_hash,
        })
    }
}
