//! The node statement: what a node claims about itself, bound into its evidence.
//!
//! The evidence's 64-byte report data is `SHA-512(canonical encoding)` where the encoding
//! starts with the label [`STATEMENT_LABEL`] (spec/binding-v1.md).

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::hexbytes::HexBytes;
use crate::{EvidenceError, TeeKind};

/// Domain-separation label of the statement encoding.
pub const STATEMENT_LABEL: &[u8] = b"teekms/v1/statement";
/// The statement format version this build makes: 2 binds the cluster's TLS CA.
pub const STATEMENT_VERSION: u32 = 2;
/// The first format, without a CA (still verified: nodes about to join a cluster, and
/// bundles made for older nodes, carry it).
pub const STATEMENT_VERSION_1: u32 = 1;
/// The one HPKE suite a v1 statement can name (RFC 9180 ids 0x0020/0x0001/0x0002).
pub const HPKE_SUITE: &str = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM";
/// Largest nonce a verifier may send, in bytes.
pub const MAX_NONCE_LEN: usize = 64;

/// What a node publishes about itself. Every field is bound by the report data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatement {
    /// Format version; must be [`STATEMENT_VERSION`].
    pub version: u32,
    /// The TEE that produced the evidence.
    pub tee: TeeKind,
    /// First 16 bytes of SHA-256 of the signing public key.
    pub node_id: HexBytes<16>,
    /// The HPKE suite of `hpke_public_key`; must be [`HPKE_SUITE`].
    pub hpke_suite: String,
    /// X25519 public key that owners wrap data keys to.
    pub hpke_public_key: HexBytes<32>,
    /// Ed25519 public key that signs receipts.
    pub signing_public_key: HexBytes<32>,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the node's TLS certificate.
    pub tls_spki_sha256: HexBytes<32>,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the CA that issues the TLS
    /// certificates of the node's cluster (version 2; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_spki_sha256: Option<HexBytes<32>>,
    /// The verifier's nonce (hex), when the evidence was made for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl NodeStatement {
    /// The node id a signing key implies.
    pub fn node_id_for(signing_public_key: &[u8; 32]) -> HexBytes<16> {
        let h = crate::sha256(signing_public_key);
        HexBytes(h[..16].try_into().expect("16 of 32 bytes"))
    }

    /// Checks version, suite, node id and nonce syntax.
    pub fn validate(&self) -> Result<(), EvidenceError> {
        match (self.version, &self.ca_spki_sha256) {
            (STATEMENT_VERSION, Some(_)) | (STATEMENT_VERSION_1, None) => {}
            (STATEMENT_VERSION, None) => {
                return Err(EvidenceError::Statement(
                    "a version 2 statement must name the cluster's CA (ca_spki_sha256)".into(),
                ));
            }
            (STATEMENT_VERSION_1, Some(_)) => {
                return Err(EvidenceError::Statement(
                    "a version 1 statement has no ca_spki_sha256".into(),
                ));
            }
            (v, _) => {
                return Err(EvidenceError::Statement(format!(
                    "unknown statement version {v} (this build knows {STATEMENT_VERSION_1} and {STATEMENT_VERSION})"
                )));
            }
        }
        if self.hpke_suite != HPKE_SUITE {
            return Err(EvidenceError::Statement(format!(
                "unknown HPKE suite {:?}",
                self.hpke_suite
            )));
        }
        if self.node_id != Self::node_id_for(&self.signing_public_key.0) {
            return Err(EvidenceError::Statement(
                "node id is not derived from the signing key".into(),
            ));
        }
        self.nonce_bytes()?;
        Ok(())
    }

    /// The nonce as bytes.
    pub fn nonce_bytes(&self) -> Result<Option<Vec<u8>>, EvidenceError> {
        let Some(n) = &self.nonce else {
            return Ok(None);
        };
        let bytes =
            hex::decode(n).map_err(|_| EvidenceError::Statement("nonce is not hex".into()))?;
        if bytes.is_empty()
            || bytes.len() > MAX_NONCE_LEN
            || n.chars().any(|c| c.is_ascii_uppercase())
        {
            return Err(EvidenceError::Statement(format!(
                "nonce must be 1 to {MAX_NONCE_LEN} bytes of lowercase hex"
            )));
        }
        Ok(Some(bytes))
    }

    /// The canonical encoding (spec/binding-v1.md).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let nonce = self.nonce.as_ref().and_then(|n| hex::decode(n).ok());
        let mut w = Writer::with_label(STATEMENT_LABEL);
        w.u32(self.version)
            .str(self.tee.as_str())
            .bytes(&self.node_id.0)
            .str(&self.hpke_suite)
            .bytes(&self.hpke_public_key.0)
            .bytes(&self.signing_public_key.0)
            .bytes(&self.tls_spki_sha256.0);
        // Version 1 has no CA field: its encoding is unchanged.
        if let Some(ca) = &self.ca_spki_sha256 {
            w.bytes(&ca.0);
        }
        w.opt_bytes(nonce.as_deref());
        w.finish()
    }

    /// The statement hash: SHA-512 of the canonical encoding. This is the report data.
    pub fn hash(&self) -> [u8; 64] {
        crate::sha512(&self.canonical_bytes())
    }

    /// Decodes a canonical encoding (used by the fuzz target and the vectors).
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<NodeStatement, EvidenceError> {
        let mut r = Reader::new(bytes);
        if r.bytes(64)? != STATEMENT_LABEL {
            return Err(EvidenceError::Statement("wrong label".into()));
        }
        let version = r.u32()?;
        let tee = TeeKind::parse(r.str(8)?)
            .ok_or_else(|| EvidenceError::Statement("unknown tee".into()))?;
        let node_id = HexBytes(r.fixed()?);
        let hpke_suite = r.str(128)?.to_owned();
        let hpke_public_key = HexBytes(r.fixed()?);
        let signing_public_key = HexBytes(r.fixed()?);
        let tls_spki_sha256 = HexBytes(r.fixed()?);
        let ca_spki_sha256 = match version {
            STATEMENT_VERSION_1 => None,
            _ => Some(HexBytes(r.fixed()?)),
        };
        let nonce = match r.u8()? {
            0 => None,
            1 => Some(hex::encode(r.bytes(MAX_NONCE_LEN)?)),
            _ => return Err(EvidenceError::Statement("bad nonce flag".into())),
        };
        r.finish()?;
        let s = NodeStatement {
            version,
            tee,
            node_id,
            hpke_suite,
            hpke_public_key,
            signing_public_key,
            tls_spki_sha256,
            ca_spki_sha256,
            nonce,
        };
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn statement(sign: [u8; 32], nonce: Option<Vec<u8>>) -> NodeStatement {
        NodeStatement {
            version: 1,
            tee: TeeKind::Sim,
            node_id: NodeStatement::node_id_for(&sign),
            hpke_suite: HPKE_SUITE.into(),
            hpke_public_key: HexBytes([1; 32]),
            signing_public_key: HexBytes(sign),
            tls_spki_sha256: HexBytes([3; 32]),
            ca_spki_sha256: None,
            nonce: nonce.map(hex::encode),
        }
    }

    fn with_ca(mut s: NodeStatement, ca: [u8; 32]) -> NodeStatement {
        s.version = STATEMENT_VERSION;
        s.ca_spki_sha256 = Some(HexBytes(ca));
        s
    }

    proptest! {
        #[test]
        fn canonical_round_trip(sign in any::<[u8; 32]>(), nonce in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)), ca in proptest::option::of(any::<[u8; 32]>())) {
            let s = statement(sign, nonce);
            let s = match ca {
                Some(ca) => with_ca(s, ca),
                None => s,
            };
            prop_assert!(s.validate().is_ok());
            let back = NodeStatement::from_canonical_bytes(&s.canonical_bytes()).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.hash(), s.hash());
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = statement([2; 32], None);
        let mut other = base.clone();
        other.tls_spki_sha256 = HexBytes([4; 32]);
        assert_ne!(base.hash(), other.hash());
        let mut other = base.clone();
        other.nonce = Some("00".into());
        assert_ne!(base.hash(), other.hash());
        let v2 = with_ca(base.clone(), [7; 32]);
        assert_ne!(base.hash(), v2.hash());
        assert_ne!(v2.hash(), with_ca(base.clone(), [8; 32]).hash());
    }

    #[test]
    fn the_version_decides_whether_a_ca_is_named() {
        let v1 = statement([2; 32], None);
        let v2 = with_ca(v1.clone(), [7; 32]);
        assert!(v1.validate().is_ok() && v2.validate().is_ok());
        let mut no_ca = v2.clone();
        no_ca.ca_spki_sha256 = None;
        assert!(no_ca.validate().is_err());
        let mut v1_with_ca = v2.clone();
        v1_with_ca.version = STATEMENT_VERSION_1;
        assert!(v1_with_ca.validate().is_err());
        // A version 1 encoding does not decode as version 2, nor the other way round.
        let mut bytes = v2.canonical_bytes();
        bytes[4 + STATEMENT_LABEL.len() + 3] = 1;
        assert!(NodeStatement::from_canonical_bytes(&bytes).is_err());
    }

    #[test]
    fn node_id_must_follow_the_signing_key() {
        let mut s = statement([2; 32], None);
        s.node_id = HexBytes([0; 16]);
        assert!(s.validate().is_err());
    }
}
