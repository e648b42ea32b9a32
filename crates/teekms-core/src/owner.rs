//! Owner identities: Ed25519 key pairs kept on the owner's machine.

use std::fmt;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::CoreError;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// `-----BEGIN PRIVATE KEY-----` PEM of a PKCS#8 DER key, 64 characters a line.
fn private_key_pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::new());
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// An owner's key pair. The private half never leaves the owner's machine.
pub struct OwnerKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

/// An owner's public key; its fingerprint is the owner's id everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerPublicKey(pub [u8; 32]);

impl OwnerKey {
    /// A fresh key pair.
    pub fn generate() -> OwnerKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("Ed25519 key generation does not fail");
        OwnerKey::from_pkcs8(doc.as_ref()).expect("a freshly generated key parses")
    }

    /// Loads a PKCS#8 DER Ed25519 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<OwnerKey, CoreError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| CoreError::InvalidOwnerKey(format!("not an Ed25519 PKCS#8 key ({e})")))?;
        Ok(OwnerKey {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Loads the PEM file written by [`OwnerKey::to_pem`].
    pub fn from_pem(text: &str) -> Result<OwnerKey, CoreError> {
        let inner = text
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|t| t.strip_suffix(PEM_END))
            .ok_or_else(|| CoreError::InvalidOwnerKey("not a PEM PRIVATE KEY file".into()))?;
        let b64: Zeroizing<String> = Zeroizing::new(inner.split_whitespace().collect());
        let der = Zeroizing::new(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| CoreError::InvalidOwnerKey("PEM body is not base64".into()))?,
        );
        OwnerKey::from_pkcs8(&der)
    }

    /// PEM-encoded PKCS#8, for the owner key file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        private_key_pem(&self.pkcs8)
    }

    /// PEM-encoded PKCS#8 version 1 (RFC 8410's form: the seed, no public key), which
    /// every TLS stack reads; OpenSSL 3.0 does not read version 2, which AWS-LC writes.
    pub fn to_pkcs8_v1_pem(&self) -> Result<Zeroizing<String>, CoreError> {
        const V1: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        const V2: [u8; 16] = [
            0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let der = self.pkcs8.as_slice();
        let seed = match (der.get(..16), der.get(16..48)) {
            (Some(p), Some(seed)) if (p == V1 && der.len() == 48) || p == V2 => seed,
            _ => {
                return Err(CoreError::InvalidOwnerKey(
                    "the key is not in a PKCS#8 form this can convert".into(),
                ));
            }
        };
        let mut v1 = Zeroizing::new(Vec::with_capacity(48));
        v1.extend_from_slice(&V1);
        v1.extend_from_slice(seed);
        Ok(private_key_pem(&v1))
    }

    /// PKCS#8 DER (for the TLS client certificate).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key.
    pub fn public_key(&self) -> OwnerPublicKey {
        OwnerPublicKey(
            self.pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair
            .sign(message)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }
}

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerKey({})", self.public_key().fingerprint())
    }
}

impl OwnerPublicKey {
    /// The owner id: lowercase hex SHA-256 of the public key.
    pub fn fingerprint(&self) -> String {
        teekms_attest::hexbytes::to_hex(&teekms_attest::sha256(&self.0))
    }

    /// Checks an Ed25519 signature by this owner.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        teekms_attest::ed25519_verify(&self.0, message, signature)
    }
}

impl fmt::Debug for OwnerPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerPublicKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_signatures() {
        let k = OwnerKey::generate();
        let back = OwnerKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let sig = back.sign(b"m");
        assert!(k.public_key().verify(b"m", &sig));
        assert!(!k.public_key().verify(b"n", &sig));
        assert!(
            OwnerKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }

    /// The version-1 form holds the same key (48 bytes of DER), and converts again to
    /// itself when loaded back.
    #[test]
    fn pkcs8_v1_is_the_same_key() {
        let k = OwnerKey::generate();
        let v1 = k.to_pkcs8_v1_pem().unwrap();
        let back = OwnerKey::from_pem(&v1).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(back.pkcs8_der().len(), 48);
        assert_eq!(back.to_pkcs8_v1_pem().unwrap(), v1);
    }
}
