//! The node's own key set, born inside the TEE: HPKE deployment key, receipt-signing
//! key and TLS key.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use teekms_attest::codec::{Reader, Writer};
use teekms_attest::hexbytes::HexBytes;
use teekms_attest::statement::{HPKE_SUITE, STATEMENT_VERSION, STATEMENT_VERSION_1};
use teekms_attest::{NodeStatement, TeeKind};
use zeroize::Zeroizing;

use crate::CoreError;
use crate::hpke::HpkePrivateKey;

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ENCODING_LABEL: &[u8] = b"teekms/v1/node-keys";

/// The node's private keys. Never leaves the TEE except sealed.
pub struct NodeKeys {
    hpke_private: HpkePrivateKey,
    signing: Ed25519KeyPair,
    signing_pkcs8: Zeroizing<Vec<u8>>,
    tls_pkcs8: Zeroizing<Vec<u8>>,
    tls_spki: Vec<u8>,
}

impl NodeKeys {
    /// Generates a fresh key set (call this inside the TEE).
    pub fn generate() -> NodeKeys {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let hpke_private = HpkePrivateKey::generate();
        let signing = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        let tls =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("keygen");
        NodeKeys::from_parts(hpke_private.to_bytes(), signing.as_ref(), tls.as_ref())
            .expect("freshly generated keys parse")
    }

    fn from_parts(hpke: &[u8], signing: &[u8], tls: &[u8]) -> Result<NodeKeys, String> {
        let hpke_private =
            HpkePrivateKey::from_bytes(hpke).map_err(|_| "HPKE private key".to_string())?;
        let signing_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(signing).map_err(|_| "signing key")?;
        let tls_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, tls)
            .map_err(|_| "TLS key".to_string())?;
        let mut tls_spki = P256_SPKI_PREFIX.to_vec();
        tls_spki.extend_from_slice(tls_pair.public_key().as_ref());
        Ok(NodeKeys {
            hpke_private,
            signing: signing_pair,
            signing_pkcs8: Zeroizing::new(signing.to_vec()),
            tls_pkcs8: Zeroizing::new(tls.to_vec()),
            tls_spki,
        })
    }

    /// Opens an HPKE message sealed to this key set's public key (responses sealed to an
    /// attested workload; see [`crate::api::SealedSecret`]).
    pub fn open_sealed(
        &self,
        info: &[u8],
        aad: &[u8],
        enc: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, crate::hpke::HpkeError> {
        crate::hpke::open(&self.hpke_private, enc, info, aad, ciphertext)
    }

    /// Serializes the private keys for sealing (spec/sealed-record-v1.md).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_label(ENCODING_LABEL);
        w.bytes(self.hpke_private.to_bytes())
            .bytes(&self.signing_pkcs8)
            .bytes(&self.tls_pkcs8);
        Zeroizing::new(w.finish())
    }

    /// Reads what [`NodeKeys::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<NodeKeys, CoreError> {
        let bad = |reason: String| CoreError::RecordMalformed {
            kind: "node-keys",
            id: "node".into(),
            reason,
        };
        let mut r = Reader::new(bytes);
        if r.bytes(64).map_err(|e| bad(e.to_string()))? != ENCODING_LABEL {
            return Err(bad("wrong label".into()));
        }
        let hpke = r.bytes(64).map_err(|e| bad(e.to_string()))?;
        let signing = r.bytes(256).map_err(|e| bad(e.to_string()))?;
        let tls = r.bytes(512).map_err(|e| bad(e.to_string()))?;
        r.finish().map_err(|e| bad(e.to_string()))?;
        NodeKeys::from_parts(hpke, signing, tls)
            .map_err(|what| bad(format!("{what} does not parse")))
    }

    /// The HPKE private key, for opening bundles.
    pub(crate) fn hpke_private(&self) -> &HpkePrivateKey {
        &self.hpke_private
    }

    /// The HPKE public key.
    pub fn hpke_public_key(&self) -> [u8; 32] {
        *self.hpke_private.public_key()
    }

    /// The receipt-signing public key.
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes")
    }

    /// Signs with the node's signing key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing
            .sign(message)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }

    /// PKCS#8 DER of the TLS key (P-256), for the server's certificate.
    pub fn tls_pkcs8_der(&self) -> &[u8] {
        &self.tls_pkcs8
    }

    /// DER SubjectPublicKeyInfo of the TLS key.
    pub fn tls_spki_der(&self) -> &[u8] {
        &self.tls_spki
    }

    /// The node id.
    pub fn node_id(&self) -> HexBytes<16> {
        NodeStatement::node_id_for(&self.signing_public_key())
    }

    /// The statement naming these keys, optionally for a verifier's nonce.
    /// The statement of a node not yet in a cluster (version 1: no CA), as a node
    /// about to join presents it.
    pub fn statement(&self, tee: TeeKind, nonce: Option<&[u8]>) -> NodeStatement {
        NodeStatement {
            version: STATEMENT_VERSION_1,
            tee,
            node_id: self.node_id(),
            hpke_suite: HPKE_SUITE.into(),
            hpke_public_key: HexBytes(self.hpke_public_key()),
            signing_public_key: HexBytes(self.signing_public_key()),
            tls_spki_sha256: HexBytes(teekms_attest::sha256(&self.tls_spki)),
            ca_spki_sha256: None,
            nonce: nonce.map(hex::encode),
        }
    }

    /// The statement of a node of a cluster whose TLS CA has the SPKI hash
    /// `ca_spki_sha256` (version 2).
    pub fn cluster_statement(
        &self,
        tee: TeeKind,
        nonce: Option<&[u8]>,
        ca_spki_sha256: [u8; 32],
    ) -> NodeStatement {
        NodeStatement {
            version: STATEMENT_VERSION,
            ca_spki_sha256: Some(HexBytes(ca_spki_sha256)),
            ..self.statement(tee, nonce)
        }
    }

    /// True if `statement` names exactly these keys (its nonce, and the CA a version 2
    /// statement names, are not compared: a bundle is for the keys).
    pub fn is_own_statement(&self, tee: TeeKind, statement: &NodeStatement) -> bool {
        let mut own = self.statement(tee, None);
        own.version = statement.version;
        own.ca_spki_sha256 = statement.ca_spki_sha256;
        own.nonce = statement.nonce.clone();
        own == *statement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trips() {
        let k = NodeKeys::generate();
        let back = NodeKeys::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(
            back.statement(TeeKind::Sim, None),
            k.statement(TeeKind::Sim, None)
        );
        let mut bytes = k.to_bytes().to_vec();
        bytes.push(0);
        assert!(NodeKeys::from_bytes(&bytes).is_err());
    }
}
