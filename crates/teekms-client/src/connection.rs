use std::sync::{Arc, Mutex};
use std::time::Duration;

use der::{Decode, Encode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use teekms_attest::collateral::CollateralFiles;
use teekms_attest::{AttestationDocument, Freshness, Policy, VerifiedNode, verify_document};
use teekms_core::api::{ErrorBody, KeyList};
use teekms_core::{Bundle, DataKey, KeyId, NodeKeys, OwnerKey, Receipt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{ClientError, NodeUrl};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read.
const MAX_RESPONSE: usize = 2 * 1024 * 1024;

/// One TLS connection to a node, not yet verified.
pub struct Connection {
    url: NodeUrl,
    sender: SendRequest<RequestBody>,
    server_spki_sha256: [u8; 32],
    /// An access key sent with every request (set only on a verified connection).
    pub(crate) access_token: Option<zeroize::Zeroizing<String>>,
    /// The newest epoch stamp the node sent (spec/freshness-v1.md), unverified.
    stamps: StampSlot,
}

/// Where a connection leaves the last `teekms-epoch` header it received (shared, so the
/// CLI can check it after a command whichever call made the requests).
#[derive(Clone, Default)]
pub struct StampSlot(Arc<Mutex<Option<hyper::header::HeaderValue>>>);

impl StampSlot {
    fn keep(&self, headers: &hyper::HeaderMap) {
        if let Some(v) = headers.get(teekms_core::freshness::STAMP_HEADER) {
            *self.0.lock().expect("stamp lock") = Some(v.clone());
        }
    }

    fn latest(&self) -> Option<hyper::header::HeaderValue> {
        self.0.lock().expect("stamp lock").clone()
    }
}

/// The epoch stamps a verified node sends, checked against its attested key.
#[derive(Clone)]
pub struct StampWatch {
    node: VerifiedNode,
    slot: StampSlot,
}

impl StampWatch {
    /// The node these stamps come from.
    pub fn node(&self) -> &VerifiedNode {
        &self.node
    }

    /// The newest stamp received, verified (None: no answer carried one).
    pub fn latest(
        &self,
    ) -> Result<Option<teekms_core::freshness::Stamp>, teekms_core::freshness::StampError> {
        use teekms_core::freshness::{Stamp, StampError};
        let Some(value) = self.slot.latest() else {
            return Ok(None);
        };
        let text = value
            .to_str()
            .map_err(|_| StampError::Malformed("not ASCII"))?;
        let stamp = Stamp::from_header(text)?;
        stamp.verify(&self.node)?;
        Ok(Some(stamp))
    }
}

/// Request bodies: whole (JSON) or streamed.
pub(crate) type RequestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A whole request body.
pub(crate) fn full(bytes: Vec<u8>) -> RequestBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// Who a connection authenticates as (by its TLS client certificate).
#[derive(Clone, Copy)]
pub enum Identity<'a> {
    /// No client certificate (access keys, attestation only).
    Anonymous,
    /// An owner: a certificate made from the owner key.
    Owner(&'a OwnerKey),
    /// A workload in a TEE: a certificate on its TLS key, which its attestation
    /// document names ([`VerifiedConnection::attest_workload`]).
    Workload(&'a NodeKeys),
    /// A workload whose certificate is an RA-TLS certificate: its TLS key, and the
    /// evidence extension (spec/ratls-v1.md) that binds it. The node takes it as an
    /// attested workload from the handshake on.
    RaTlsWorkload(&'a NodeKeys, &'a [u8]),
}

/// Connects to a node. With `owner`, the connection authenticates as that owner (TLS
/// client certificate made from the owner key).
pub async fn connect(url: &NodeUrl, owner: Option<&OwnerKey>) -> Result<Connection, ClientError> {
    connect_as(url, owner.map_or(Identity::Anonymous, Identity::Owner)).await
}

/// Connects to a node as `identity`.
pub async fn connect_as(url: &NodeUrl, identity: Identity<'_>) -> Result<Connection, ClientError> {
    connect_checking(url, identity, None).await
}

/// Connects and verifies the node in the TLS handshake, by the evidence its RA-TLS
/// certificate carries (spec/ratls-v1.md): against `policy` at `now_unix`, with
/// `collateral` in place of the certificate's own if given. No request is made before
/// the node is verified, and none is needed for it (compare [`connect_verified_as`],
/// which asks for fresh evidence for a nonce). A node that the policy does not admit
/// fails the handshake ([`ClientError::Rejected`]).
pub async fn connect_attested_as(
    url: &NodeUrl,
    policy: &Policy,
    identity: Identity<'_>,
    now_unix: u64,
    collateral: Option<&CollateralFiles>,
) -> Result<VerifiedConnection, ClientError> {
    let check = Arc::new(HandshakeCheck {
        policy: policy.clone(),
        now_unix,
        collateral: collateral.cloned(),
        outcome: Mutex::new(None),
    });
    let connected = connect_checking(url, identity, Some(check.clone())).await;
    let outcome = check.outcome.lock().expect("lock").take();
    match (connected, outcome) {
        (Ok(conn), Some(Ok(node))) => Ok(VerifiedConnection { conn, node }),
        (_, Some(Err(refusal))) => Err(refusal),
        (Err(e), _) => Err(e),
        (Ok(_), None) => Err(ClientError::Transport(
            "the handshake ended without the node's certificate checked".into(),
        )),
    }
}

/// What a handshake-verified connection checks the node's certificate against, and what
/// came of it.
struct HandshakeCheck {
    policy: Policy,
    now_unix: u64,
    collateral: Option<CollateralFiles>,
    outcome: Mutex<Option<Result<VerifiedNode, ClientError>>>,
}

impl std::fmt::Debug for HandshakeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeCheck")
    }
}

impl HandshakeCheck {
    /// Verifies the RA-TLS evidence of the node's certificate.
    fn check(&self, cert_der: &[u8], spki_sha256: &[u8; 32]) -> Result<VerifiedNode, ClientError> {
        let mut ev = teekms_attest::ratls::extract(cert_der).map_err(|e| {
            ClientError::Response(format!(
                "the node's certificate carries no usable evidence: {e}"
            ))
        })?;
        if let Some(c) = &self.collateral {
            ev.collateral = Some(c.clone());
        }
        let verdict = ev
            .verify(spki_sha256, &self.policy, self.now_unix)
            .map_err(|e| ClientError::Response(format!("the node's RA-TLS certificate: {e}")))?;
        verdict.into_verified_node().map_err(ClientError::Rejected)
    }
}

async fn connect_checking(
    url: &NodeUrl,
    identity: Identity<'_>,
    check: Option<Arc<HandshakeCheck>>,
) -> Result<Connection, ClientError> {
    let connect_err = |reason: String| ClientError::Connect {
        url: url.to_string(),
        reason,
    };
    let seen = Arc::new(Mutex::new(None));
    let config = client_config(identity, seen.clone(), check).map_err(ClientError::Transport)?;
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((url.host(), url.port())),
    )
    .await
    .map_err(|_| connect_err("timed out".into()))?
    .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(url.host().to_owned()).map_err(|e| connect_err(e.to_string()))?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| connect_err("TLS handshake timed out".into()))?
    .map_err(|e| connect_err(format!("TLS handshake failed: {e}")))?;
    let server_spki_sha256 = seen
        .lock()
        .expect("lock")
        .ok_or_else(|| connect_err("the node presented no certificate".into()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Connection {
        url: url.clone(),
        sender,
        server_spki_sha256,
        access_token: None,
        stamps: StampSlot::default(),
    })
}

/// Connects, fetches fresh evidence for a random nonce, verifies it under `policy` at
/// `now_unix`, and checks that this connection's TLS key is the attested one.
pub async fn connect_verified(
    url: &NodeUrl,
    policy: &Policy,
    owner: Option<&OwnerKey>,
    now_unix: u64,
) -> Result<VerifiedConnection, ClientError> {
    connect_verified_with_collateral(url, policy, owner, now_unix, None).await
}

/// [`connect_verified`], verifying real-TEE evidence with the owner's own `collateral`
/// instead of what the node ships (for owners who keep collateral themselves).
pub async fn connect_verified_with_collateral(
    url: &NodeUrl,
    policy: &Policy,
    owner: Option<&OwnerKey>,
    now_unix: u64,
    collateral: Option<&CollateralFiles>,
) -> Result<VerifiedConnection, ClientError> {
    connect_verified_as(
        url,
        policy,
        owner.map_or(Identity::Anonymous, Identity::Owner),
        now_unix,
        collateral,
    )
    .await
}

/// [`connect_verified_with_collateral`] for any [`Identity`].
pub async fn connect_verified_as(
    url: &NodeUrl,
    policy: &Policy,
    identity: Identity<'_>,
    now_unix: u64,
    collateral: Option<&CollateralFiles>,
) -> Result<VerifiedConnection, ClientError> {
    let mut conn = connect_as(url, identity).await?;
    let mut nonce = [0u8; 32];
    teekms_core::random_bytes(&mut nonce);
    let mut doc = conn.attestation(Some(&nonce)).await?;
    if let Some(c) = collateral {
        doc.collateral =
            Some(serde_json::to_value(c).map_err(|e| ClientError::Response(e.to_string()))?);
    }
    let node = verify_document(&doc, policy, Freshness::Nonce(&nonce), now_unix)
        .into_verified_node()
        .map_err(ClientError::Rejected)?;
    if *node.tls_spki_sha256() != conn.server_spki_sha256 {
        return Err(ClientError::ChannelMismatch);
    }
    Ok(VerifiedConnection { conn, node })
}

impl Connection {
    /// SHA-256 of the SPKI of the certificate the node presented on this connection.
    pub fn server_spki_sha256(&self) -> &[u8; 32] {
        &self.server_spki_sha256
    }

    /// `GET /v1/attestation` (unauthenticated).
    pub async fn attestation(
        &mut self,
        nonce: Option<&[u8]>,
    ) -> Result<AttestationDocument, ClientError> {
        let path = match nonce {
            Some(n) => format!("/v1/attestation?nonce={}", hex::encode(n)),
            None => "/v1/attestation".into(),
        };
        let (_, body) = self.request(Method::GET, &path, None).await?;
        Ok(AttestationDocument::from_json(&body)?)
    }

    /// Sends a bundle (`POST /v1/keys`) after checking this connection ends at the TLS
    /// key named in the statement the bundle was wrapped to. Used where the caller holds
    /// a bundle but no policy (import on the node side): the owner verified that
    /// statement when wrapping, and only the attested key can open the bundle anyway.
    pub async fn import(&mut self, bundle: &Bundle) -> Result<(Receipt, bool), ClientError> {
        if bundle.statement.tls_spki_sha256.0 != self.server_spki_sha256 {
            return Err(ClientError::ChannelMismatch);
        }
        self.post_bundle(bundle).await
    }

    async fn post_bundle(&mut self, bundle: &Bundle) -> Result<(Receipt, bool), ClientError> {
        let (status, body) = self
            .request(
                Method::POST,
                "/v1/keys",
                Some(bundle.to_json().into_bytes()),
            )
            .await?;
        let receipt = Receipt::from_json(&body)?;
        Ok((receipt, status == StatusCode::CREATED))
    }

    /// Sends any request on this connection and returns status and body, without
    /// interpreting them. For diagnostics and tests of the API's limits.
    pub async fn raw_request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Bytes) {
        match self.request(method, path, body).await {
            Ok((status, body)) => (status.as_u16(), body),
            Err(ClientError::Api { status, code, .. }) => (status, Bytes::from(code)),
            Err(e) => (0, Bytes::from(e.to_string())),
        }
    }

    /// Sends a request with `headers` besides `Host` (a `Content-Type` among them
    /// replaces the JSON default), and returns status and body uninterpreted: for
    /// protocols other than API v1 (the AWS KMS API, whose requests the caller signs
    /// over these very headers and [`Connection::host`]).
    pub async fn raw_request_with_headers(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        match self.request_with(method, path, headers, Some(body)).await {
            Ok((status, body)) => (status.as_u16(), body),
            Err(e) => (0, Bytes::from(e.to_string())),
        }
    }

    /// The `Host` header this connection sends.
    pub fn host(&self) -> String {
        self.url.authority()
    }

    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, body) = self.request_with(method, path, &[], body).await?;
        if status.is_success() {
            return Ok((status, body));
        }
        Err(api_error(status, &body))
    }

    /// A request and its answer, whatever its status.
    async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.url.authority());
        let typed = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !typed {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = &self.access_token {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.as_str()),
            );
        }
        let req = req
            .body(full(body.unwrap_or_default()))
            .map_err(|e| transport(&e))?;
        let fut = async {
            self.sender.ready().await.map_err(|e| transport(&e))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| transport(&e))?;
            let status = resp.status();
            self.stamps.keep(resp.headers());
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Transport("the node did not answer in time".into()))?
    }
}

/// A connection whose far end proved, by evidence, to be an admitted node: fresh for a
/// nonce ([`connect_verified_as`]) or carried by its RA-TLS certificate
/// ([`connect_attested_as`]).
pub struct VerifiedConnection {
    pub(crate) conn: Connection,
    node: VerifiedNode,
}

impl VerifiedConnection {
    /// The proof of verification.
    pub fn node(&self) -> &VerifiedNode {
        &self.node
    }

    /// The epoch stamps this node sends, from now on and from its earlier answers.
    pub fn stamps(&self) -> StampWatch {
        StampWatch {
            node: self.node.clone(),
            slot: self.conn.stamps.clone(),
        }
    }

    /// The cluster's TLS CA certificate (PEM), for clients that verify a certificate
    /// chain rather than evidence: taken from the verified node over this connection,
    /// and accepted only if its key is the one the node's verified statement binds.
    pub async fn cluster_ca_pem(&mut self) -> Result<String, ClientError> {
        use der::{Decode, Encode};
        use rustls::pki_types::pem::PemObject;
        let Some(bound) = self.node.statement().ca_spki_sha256 else {
            return Err(ClientError::Response(
                "the node's statement names no TLS CA (a node of an older version); upgrade it"
                    .into(),
            ));
        };
        let (_, body) = self.conn.request(Method::GET, "/v1/ca", None).await?;
        let malformed = |why: &str| ClientError::Response(format!("the CA certificate {why}"));
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&body)
            .collect::<Result<_, _>>()
            .map_err(|_| malformed("is not PEM"))?;
        let [cert] = certs.as_slice() else {
            return Err(malformed("is not exactly one PEM certificate"));
        };
        let spki = x509_cert::Certificate::from_der(cert)
            .ok()
            .and_then(|c| c.tbs_certificate().subject_public_key_info().to_der().ok())
            .ok_or_else(|| malformed("does not parse"))?;
        if teekms_attest::sha256(&spki) != bound.0 {
            return Err(ClientError::Response(
                "the CA certificate's key is not the one the node's attested statement binds"
                    .into(),
            ));
        }
        String::from_utf8(body.to_vec()).map_err(|_| malformed("is not text"))
    }

    /// Wraps `dek` to the verified node, deploys it, and checks the signed receipt.
    /// Returns the receipt and whether the key is new (false: it was already there).
    pub async fn deploy(
        &mut self,
        owner: &OwnerKey,
        key_id: &KeyId,
        key_policy: &str,
        dek: &DataKey,
    ) -> Result<(Receipt, bool), ClientError> {
        let bundle = Bundle::wrap(&self.node, owner, key_id, key_policy, dek)?;
        let (receipt, created) = self.conn.post_bundle(&bundle).await?;
        receipt.verify(&self.node, &owner.public_key(), key_id, &dek.kcv())?;
        Ok((receipt, created))
    }

    /// Sends a bundle that was wrapped earlier (offline) to this verified node, and
    /// checks the receipt's signature and node.
    pub async fn import(&mut self, bundle: &Bundle) -> Result<(Receipt, bool), ClientError> {
        let (receipt, created) = self.conn.import(bundle).await?;
        receipt.verify_signature(&self.node)?;
        Ok((receipt, created))
    }

    /// The underlying connection.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// `GET /v1/keys`: the authenticated owner's keys.
    pub async fn list(&mut self) -> Result<KeyList, ClientError> {
        let (_, body) = self.conn.request(Method::GET, "/v1/keys", None).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Response(e.to_string()))
    }
}

fn client_config(
    identity: Identity<'_>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    check: Option<Arc<HandshakeCheck>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordingVerifier {
            provider,
            seen,
            check,
        }));
    let mut extension = None;
    let (pkcs8, name) = match identity {
        Identity::Anonymous => return Ok(builder.with_no_client_auth()),
        Identity::RaTlsWorkload(keys, ext) => {
            extension = Some(ext.to_vec());
            (
                keys.tls_pkcs8_der().to_vec(),
                format!("teekms workload {}", keys.node_id()),
            )
        }
        Identity::Owner(owner) => (
            owner.pkcs8_der().to_vec(),
            format!("teekms owner {}", owner.public_key().fingerprint()),
        ),
        Identity::Workload(keys) => (
            keys.tls_pkcs8_der().to_vec(),
            format!("teekms workload {}", keys.node_id()),
        ),
    };
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let (cert, _) = client_certificate(&pkcs8, name, extension)?;
    builder
        .with_client_auth_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(|e| e.to_string())
}

/// A self-signed client certificate for `pkcs8`'s key, named `name`, with an RA-TLS
/// evidence `extension` if given; and the key pair in rcgen's form.
fn client_certificate(
    pkcs8: &PrivatePkcs8KeyDer<'_>,
    name: String,
    extension: Option<Vec<u8>>,
) -> Result<(rcgen::Certificate, rcgen::KeyPair), String> {
    let key = rcgen::KeyPair::try_from(pkcs8).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if let Some(value) = extension {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                teekms_attest::ratls::TCG_DICE_TAGGED_EVIDENCE_ARCS,
                value,
            ));
    }
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert, key))
}

/// The owner's TLS client certificate and its private key, both PEM (the certificate
/// this library presents for the owner, for curl, OpenSSL or Python to present instead).
/// The key is the owner's Ed25519 key, as PKCS#8 version 1 (which OpenSSL 3.0 reads):
/// keep the file as private as the owner key.
pub fn owner_tls_certificate(
    owner: &teekms_core::OwnerKey,
) -> Result<(String, zeroize::Zeroizing<String>), String> {
    let pkcs8 = PrivatePkcs8KeyDer::from(owner.pkcs8_der().to_vec());
    let name = format!("teekms owner {}", owner.public_key().fingerprint());
    let (cert, _) = client_certificate(&pkcs8, name, None)?;
    let key = owner.to_pkcs8_v1_pem().map_err(|e| e.to_string())?;
    Ok((cert.pem(), key))
}

/// Records the server's SPKI hash and either accepts the certificate *for now* (trust
/// comes afterwards, when the attested statement names that same key: see
/// [`connect_verified`]) or, with a [`HandshakeCheck`], verifies the evidence of its
/// RA-TLS certificate and fails the handshake if it does not admit the node. The
/// handshake signature is checked either way, so the server provably holds the
/// certificate's private key.
#[derive(Debug)]
struct RecordingVerifier {
    provider: Arc<CryptoProvider>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    check: Option<Arc<HandshakeCheck>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = x509_cert::Certificate::from_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("node certificate does not parse: {e}")))?;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let spki_sha256 = teekms_attest::sha256(&spki);
        *self.seen.lock().expect("lock") = Some(spki_sha256);
        if let Some(check) = &self.check {
            let outcome = check.check(end_entity, &spki_sha256);
            let refused = outcome.is_err();
            *check.outcome.lock().expect("lock") = Some(outcome);
            if refused {
                return Err(rustls::Error::General(
                    "the node's RA-TLS certificate was not admitted".into(),
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
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
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Chunks in flight each way while streaming.
const STREAM_DEPTH: usize = 8;
/// Size of the reads from the input while streaming.
const STREAM_READ: usize = 256 * 1024;

type Chunk = Result<Bytes, std::io::Error>;

/// A request body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Chunk>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(hyper::body::Frame::data)))
    }
}

impl Connection {
    /// Streams `input` to `path` and the response body to `output`, both on their own
    /// threads so that reading, the network and writing overlap. A response that ends
    /// abnormally (the node found a chunk that does not authenticate) is an error.
    pub(crate) async fn stream(
        &mut self,
        path: &str,
        mut input: Box<dyn std::io::Read + Send>,
        mut output: Box<dyn std::io::Write + Send>,
    ) -> Result<(), ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Chunk>(STREAM_DEPTH);
        let reader = std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; STREAM_READ];
                match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if in_tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = in_tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, self.url.authority())
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(token) = &self.access_token {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.as_str()),
            );
        }
        let req = req
            .body(BodyExt::boxed(ChannelBody(in_rx)))
            .map_err(|e| transport(&e))?;
        self.sender.ready().await.map_err(|e| transport(&e))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.sender.send_request(req))
            .await
            .map_err(|_| ClientError::Transport("the node did not answer in time".into()))?
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        self.stamps.keep(resp.headers());
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            // Not joined: the reader may be blocked in `input` (a pipe that sends nothing
            // yet), and joining would block this task's thread. It ends at its next read,
            // when it finds the channel closed.
            drop(reader);
            return Err(api_error(status, &bytes));
        }
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_DEPTH);
        let writer = std::thread::spawn(move || {
            while let Some(b) = out_rx.blocking_recv() {
                output.write_all(&b)?;
            }
            output.flush()
        });
        let mut failure = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data()
                        && out_tx.send(data).await.is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(ClientError::Transport(format!(
                        "the node ended the stream abnormally (a chunk did not authenticate, or the node failed): {e}"
                    )));
                    break;
                }
            }
        }
        drop(out_tx);
        let written = writer.join().expect("writer thread");
        if let Some(f) = failure {
            // The reader may still wait on its input: left to end by itself (see above).
            drop(reader);
            return Err(f);
        }
        let _ = reader.join();
        written.map_err(|e| ClientError::Transport(format!("writing the output: {e}")))
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "unknown".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}
