//! TLS for the node: a certificate on the attested TLS key, and owner authentication by
//! client certificate.

use std::sync::Arc;

use der::{Decode, Encode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use teekms_core::OwnerPublicKey;

use crate::ServerError;
use crate::ca::LeafCerts;

/// OID of Ed25519 (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

/// The owner a client certificate names: its Ed25519 public key. The TLS handshake
/// proves the client holds the matching private key.
pub fn owner_from_certificate(der: &[u8]) -> Result<OwnerPublicKey, String> {
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| format!("not a DER certificate: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != ED25519_OID {
        return Err("the client certificate's key is not Ed25519 (an owner key)".into());
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .as_bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or("Ed25519 key is not 32 bytes")?;
    Ok(OwnerPublicKey(key))
}

/// SHA-256 of a client certificate's SPKI (how a workload's statement names its key).
pub fn client_spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()?;
    Some(teekms_attest::sha256(&spki))
}

/// The node's server config: TLS 1.3 only, the leaf certificate (on the attested key,
/// issued by the cluster's CA, renewed as it runs) from `leaves`, optional owner client
/// certificates.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    leaves: Arc<LeafCerts>,
) -> Result<ServerConfig, ServerError> {
    ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))
        .map(|b| {
            b.with_client_cert_verifier(Arc::new(OwnerCertVerifier { provider }))
                .with_cert_resolver(leaves)
        })
}

/// Accepts any client certificate whose handshake signature verifies: an Ed25519 key is
/// an owner (whoever holds it, which the handshake proves; no CA, owners are pinned by
/// key); another key is a workload's, trusted only once its attestation names it.
#[derive(Debug)]
struct OwnerCertVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for OwnerCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Unauthenticated callers may fetch attestation (and nothing else).
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // An Ed25519 certificate is an owner; any other (a workload's TLS key) is only a
        // key that its attestation document must name before it counts for anything.
        client_spki_sha256(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(|| rustls::Error::General("client certificate does not parse".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // Owners sign with Ed25519, workloads with their attested P-256 TLS key.
        vec![
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ]
    }
}
