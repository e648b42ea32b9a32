//! Deployment receipts, signed inside the TEE (spec/receipt-v1.md).

use serde::{Deserialize, Serialize};
use teekms_attest::VerifiedNode;
use teekms_attest::codec::Writer;
use teekms_attest::hexbytes::{HexBytes, base64_bytes};

use crate::{CoreError, Kcv, KeyId, NodeKeys, OwnerPublicKey};

/// The `format` field of every receipt.
pub const RECEIPT_FORMAT: &str = "teekms-receipt";
/// The only receipt version this build knows.
pub const RECEIPT_VERSION: u32 = 1;
/// Largest receipt accepted, in bytes of JSON.
pub const MAX_RECEIPT_LEN: usize = 8 * 1024;
const SIGNATURE_LABEL: &[u8] = b"teekms/v1/receipt";

/// A node's signed statement that it holds a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// Always [`RECEIPT_VERSION`].
    pub version: u32,
    /// The node that holds the key.
    pub node_id: HexBytes<16>,
    /// The owner's fingerprint.
    pub owner: HexBytes<32>,
    /// The key's id.
    pub key_id: String,
    /// The key's version (1 for a deployment).
    pub key_version: u64,
    /// Key check value of the stored key.
    pub kcv: Kcv,
    /// When the node first stored the key (Unix seconds, node's clock).
    pub created_at: u64,
    /// Hash of the statement the bundle was wrapped to.
    pub statement_hash: HexBytes<64>,
    /// The node's Ed25519 signature.
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

/// The fields a receipt vouches for.
pub struct ReceiptFields<'a> {
    /// The owner.
    pub owner: &'a OwnerPublicKey,
    /// The key id.
    pub key_id: &'a KeyId,
    /// The key version.
    pub key_version: u64,
    /// The key check value.
    pub kcv: Kcv,
    /// First-stored time.
    pub created_at: u64,
    /// Statement hash from the bundle.
    pub statement_hash: [u8; 64],
}

impl Receipt {
    fn signed_message(&self) -> Vec<u8> {
        let mut w = Writer::with_label(SIGNATURE_LABEL);
        w.bytes(&self.node_id.0)
            .bytes(&self.owner.0)
            .str(&self.key_id)
            .u64(self.key_version)
            .bytes(&self.kcv.0)
            .u64(self.created_at)
            .bytes(&self.statement_hash.0);
        w.finish()
    }

    /// Signs a receipt with the node's key (inside the TEE).
    pub fn sign(keys: &NodeKeys, f: ReceiptFields<'_>) -> Receipt {
        let owner_fp: [u8; 32] = teekms_attest::sha256(&f.owner.0);
        let mut r = Receipt {
            format: RECEIPT_FORMAT.into(),
            version: RECEIPT_VERSION,
            node_id: keys.node_id(),
            owner: HexBytes(owner_fp),
            key_id: f.key_id.as_str().into(),
            key_version: f.key_version,
            kcv: f.kcv,
            created_at: f.created_at,
            statement_hash: HexBytes(f.statement_hash),
            signature: Vec::new(),
        };
        r.signature = keys.sign(&r.signed_message()).to_vec();
        r
    }

    /// Parses a receipt strictly.
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, CoreError> {
        if bytes.len() > MAX_RECEIPT_LEN {
            return Err(CoreError::ReceiptInvalid(format!(
                "larger than {MAX_RECEIPT_LEN} bytes"
            )));
        }
        let r: Receipt =
            serde_json::from_slice(bytes).map_err(|e| CoreError::ReceiptInvalid(e.to_string()))?;
        if r.format != RECEIPT_FORMAT || r.version != RECEIPT_VERSION {
            return Err(CoreError::ReceiptInvalid(format!(
                "unknown format {:?} version {}",
                r.format, r.version
            )));
        }
        Ok(r)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("receipts always serialize")
    }

    /// Checks that the verified node signed this receipt (and names itself in it).
    pub fn verify_signature(&self, node: &VerifiedNode) -> Result<(), CoreError> {
        if !teekms_attest::ed25519_verify(
            node.signing_public_key(),
            &self.signed_message(),
            &self.signature,
        ) {
            return Err(CoreError::ReceiptInvalid(
                "the node's signature does not verify (altered, or from another node)".into(),
            ));
        }
        if self.node_id != node.statement().node_id {
            return Err(CoreError::ReceiptInvalid("it names another node".into()));
        }
        Ok(())
    }

    /// Checks the receipt against the verified node and what the owner deployed.
    pub fn verify(
        &self,
        node: &VerifiedNode,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        kcv: &Kcv,
    ) -> Result<(), CoreError> {
        self.verify_signature(node)?;
        let fail = |m: &str| Err(CoreError::ReceiptInvalid(m.into()));
        if self.owner.0 != teekms_attest::sha256(&owner.0) {
            return fail("it names another owner");
        }
        if self.key_id != key_id.as_str() {
            return fail("it names another key id");
        }
        if self.kcv != *kcv {
            return fail(
                "its key check value differs: the node holds different key material under this id",
            );
        }
        Ok(())
    }
}
