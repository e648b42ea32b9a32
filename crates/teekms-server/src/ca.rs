//! The cluster's TLS certificate authority, for clients that verify a chain and a host
//! name rather than evidence (AWS SDKs, curl, Python): its P-256 key is derived from the
//! cluster key, so it exists only inside attested nodes, is the same on every node of a
//! cluster, and survives restarts, joins and node replacement. Every node's statement
//! binds its public key (spec/binding-v1.md), so `teekms ca export` trusts it only after
//! verifying a node's evidence. Leaf certificates, on each node's attested TLS key, are
//! short-lived and renewed by the node while it runs.

use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use teekms_core::{NodeKeys, SealingKey};

use crate::{Keyring, ServerError};

/// Label of the cluster-key subkey that seeds the CA's private key.
pub const CA_KEY_LABEL: &str = "teekms/v1/tls-ca";

/// The CA's validity: from 2026-01-01 for 30 years, the same on every node, so that the
/// CA certificate's contents depend on the cluster key alone.
const CA_NOT_BEFORE: (i32, u8, u8) = (2026, 1, 1);
const CA_NOT_AFTER: (i32, u8, u8) = (2056, 1, 1);

/// The order of the P-256 group, big-endian: a private scalar must be below it.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The cluster's CA: its key and its certificate.
pub struct ClusterCa {
    key: KeyPair,
    params: CertificateParams,
    cert_der: Vec<u8>,
    cert_pem: String,
    spki_sha256: [u8; 32],
}

impl ClusterCa {
    /// The CA of the cluster whose key is `cluster`.
    pub fn derive(cluster: &SealingKey) -> Result<ClusterCa, ServerError> {
        let key = p256_key(cluster)?;
        let spki_sha256 = teekms_attest::sha256(&key.subject_public_key_info());
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "teekms");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("teekms cluster CA {}", hex::encode(&spki_sha256[..8])),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (y, m, d) = CA_NOT_BEFORE;
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = CA_NOT_AFTER;
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let mut serial = spki_sha256[..16].to_vec();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(ClusterCa {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key,
            params,
            spki_sha256,
        })
    }

    /// SHA-256 of the CA's DER SubjectPublicKeyInfo (what statements bind).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM (what `teekms ca export` writes).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf certificate for the node's attested TLS key, valid from a minute before
    /// `now` (clocks differ) for `lifetime` seconds, naming `names` (DNS names and IP
    /// addresses) and carrying the node's RA-TLS evidence.
    fn issue_leaf(
        &self,
        keys: &NodeKeys,
        names: &[String],
        ratls_extension: &[u8],
        now: u64,
        lifetime: u64,
    ) -> Result<Vec<u8>, ServerError> {
        let leaf_key = leaf_key_pair(keys)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(tls_err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("teekms node {}", keys.node_id()),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = at(now.saturating_sub(60))?;
        params.not_after = at(now.saturating_add(lifetime))?;
        let mut serial = [0u8; 16];
        teekms_core::random_bytes(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        // The node's evidence, bound to this key (spec/ratls-v1.md): peers that verify in
        // the handshake (workloads, joining nodes) need no further request.
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                teekms_attest::ratls::TCG_DICE_TAGGED_EVIDENCE_ARCS,
                ratls_extension.to_vec(),
            ));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&leaf_key, &issuer).map_err(tls_err)?;
        Ok(cert.der().to_vec())
    }
}

fn tls_err(e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(e.to_string())
}

fn at(unix: u64) -> Result<time::OffsetDateTime, ServerError> {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or_else(|| ServerError::Tls(format!("time {unix} is out of a certificate's range")))
}

fn leaf_key_pair(keys: &NodeKeys) -> Result<KeyPair, ServerError> {
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(keys.tls_pkcs8_der().to_vec())).map_err(tls_err)
}

/// The CA's P-256 key pair: the first scalar, of HKDF outputs under the cluster key's
/// CA subkey with a counter, that lies in [1, n−1] (the first one, but for a chance of
/// about 2^−32).
fn p256_key(cluster: &SealingKey) -> Result<KeyPair, ServerError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    for counter in 0u8..=255 {
        let scalar = cluster.derive(&format!("{CA_KEY_LABEL}/{counter}"));
        if scalar.iter().all(|&b| b == 0) || scalar[..] >= P256_ORDER[..] {
            continue;
        }
        // RFC 5915 ECPrivateKey { version 1, privateKey, parameters [0] prime256v1 };
        // AWS-LC computes the public key from the private one.
        let mut sec1 = zeroize::Zeroizing::new(vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20]);
        sec1.extend_from_slice(&scalar[..]);
        sec1.extend_from_slice(&[
            0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ]);
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &sec1)
            .map_err(|e| ServerError::Tls(format!("the CA key: {e}")))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|e| ServerError::Tls(format!("the CA key: {e}")))?;
        return KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()))
            .map_err(tls_err);
    }
    Err(ServerError::Tls(
        "no valid P-256 scalar in 256 tries (this does not happen)".into(),
    ))
}

/// The node's current leaf certificate, renewed while the node runs: rustls asks for it
/// at every handshake, so a renewal needs no restart and connections made before it
/// keep going.
pub struct LeafCerts {
    keyring: Arc<Keyring>,
    names: Vec<String>,
    ratls_extension: Vec<u8>,
    lifetime: u64,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    current: RwLock<(Arc<CertifiedKey>, u64)>,
}

impl std::fmt::Debug for LeafCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCerts")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl LeafCerts {
    /// Issues the first leaf, valid for `lifetime` seconds from `now`.
    pub fn new(
        keyring: Arc<Keyring>,
        names: Vec<String>,
        ratls_extension: Vec<u8>,
        lifetime: u64,
        provider: &CryptoProvider,
        now: u64,
    ) -> Result<LeafCerts, ServerError> {
        let (ca, keys) = (keyring.ca(), keyring.keys());
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(keys.tls_pkcs8_der().to_vec()));
        let signing_key = provider
            .key_provider
            .load_private_key(der)
            .map_err(tls_err)?;
        let leaf = ca.issue_leaf(keys, &names, &ratls_extension, now, lifetime)?;
        let chain = vec![
            CertificateDer::from(leaf),
            CertificateDer::from(ca.cert_der().to_vec()),
        ];
        let current = CertifiedKey::new(chain, signing_key.clone());
        // The statement names the key by its SPKI hash: a certificate on another key
        // would make clients (rightly) refuse every connection.
        current.keys_match().map_err(tls_err)?;
        Ok(LeafCerts {
            keyring,
            names,
            ratls_extension,
            lifetime,
            signing_key,
            current: RwLock::new((Arc::new(current), now.saturating_add(lifetime))),
        })
    }

    /// When the current leaf should be replaced: once two thirds of its life are over.
    pub fn renew_at(&self) -> u64 {
        let not_after = self.current.read().expect("leaf lock").1;
        not_after.saturating_sub(self.lifetime / 3)
    }

    /// How often the renewal task looks (a sixth of a leaf's life, at most an hour).
    pub fn check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.lifetime / 6).clamp(1, 3600))
    }

    /// Issues a new leaf if the current one is due (see [`LeafCerts::renew_at`]).
    pub fn renew_if_due(&self, now: u64) -> Result<bool, ServerError> {
        if now < self.renew_at() {
            return Ok(false);
        }
        let ca = self.keyring.ca();
        let leaf = ca.issue_leaf(
            self.keyring.keys(),
            &self.names,
            &self.ratls_extension,
            now,
            self.lifetime,
        )?;
        let chain = vec![
            CertificateDer::from(leaf),
            CertificateDer::from(ca.cert_der().to_vec()),
        ];
        let next = Arc::new(CertifiedKey::new(chain, self.signing_key.clone()));
        *self.current.write().expect("leaf lock") = (next, now.saturating_add(self.lifetime));
        Ok(true)
    }

    /// The leaf certificate now served, DER.
    #[cfg(test)]
    pub fn current_der(&self) -> Vec<u8> {
        self.current.read().expect("leaf lock").0.cert[0].to_vec()
    }
}

impl ResolvesServerCert for LeafCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("leaf lock").0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_depends_on_the_cluster_key_alone() {
        let cluster = SealingKey::generate();
        let a = ClusterCa::derive(&cluster).unwrap();
        let b = ClusterCa::derive(&cluster).unwrap();
        assert_eq!(a.spki_sha256(), b.spki_sha256());
        let other = ClusterCa::derive(&SealingKey::generate()).unwrap();
        assert_ne!(a.spki_sha256(), other.spki_sha256());
        // The certificate is a CA for end entities only, for thirty years.
        let cert = x509_cert::Certificate::from_der(a.cert_der()).unwrap();
        use der::{Decode, Encode};
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        assert_eq!(teekms_attest::sha256(&spki), a.spki_sha256());
        assert!(a.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn leaves_are_renewed_once_two_thirds_of_their_life_are_over() {
        let keyring = Arc::new(
            Keyring::new(
                teekms_attest::TeeKind::Sim,
                NodeKeys::generate(),
                SealingKey::generate(),
            )
            .unwrap(),
        );
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaves = LeafCerts::new(
            keyring,
            names,
            b"ext".to_vec(),
            3000,
            &provider,
            1_800_000_000,
        )
        .unwrap();
        let first = leaves.current_der();
        assert!(!leaves.renew_if_due(1_800_001_999).unwrap());
        assert_eq!(leaves.current_der(), first);
        assert!(leaves.renew_if_due(1_800_002_000).unwrap());
        assert_ne!(leaves.current_der(), first);
        assert_eq!(leaves.renew_at(), 1_800_002_000 + 2000);
    }
}
