//! The node's service: every key operation, for every protocol layer.
//!
//! `Service` owns what the operations share: the node's keyring, the store's readers,
//! the writer (durable, group-committed jobs with their audit entries), the key cache
//! and the anonymous-refusal counts. Protocol layers (the native API in `api.rs` and
//! `stream.rs`) authenticate a request into a `Caller`, call one typed operation
//! (`operation(caller, request, now) -> Result<response, OpError>`) through
//! [`Service::call`] or [`Service::call_data`], and map `OpError` to their wire names in
//! one place. They never reach the store, the cache or the writer themselves.
//!
//! Nothing is acknowledged before its audit entry is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use teekms_attest::policy::{parse_duration, time_after};
use teekms_attest::{Freshness, Policy, TeeKind, verify_document};
use teekms_core::access::{self, AttestedWorkload, Caller, KeyPolicy, Operation};
use teekms_core::api::{
    AccessKeyCreateRequest, AccessKeyCreated, AccessKeyInfo, AccessKeyList, AgeRecipient,
    AgeUnwrapRequest, AgeUnwrapResponse, AuditPruned, AuditTail, AuditVerification, B64,
    CiphertextResponse, DecryptRequest, EXPORT_INFO, EncryptRequest, ExportRequest, ExportResponse,
    FetchRequest, FetchResponse, GenerateDataKeyRequest, KeyDescription, KeyInfo, ReEncryptRequest,
    SEALED_RESPONSE_INFO, SealedSecret, SecretB64, SecretResponse,
};
use teekms_core::audit::AuditDraft;
use teekms_core::context::{EncryptionContext, context_aad};
use teekms_core::envelope::{self, Envelope};
use teekms_core::record::DataKeyRecord;
use teekms_core::state::{AccessKeyRecord, DEFAULT_DELETION_WAIT, KeyState, OwnerState};
use teekms_core::{DataKey, KeyId, OwnerPublicKey, Receipt};
use teekms_platform::Platform;
use teekms_store::{Applied, KeyRow, Write};
use zeroize::Zeroizing;

use crate::budget::StreamBudget;
use crate::freshness::Floor;
use crate::keyring::Keyring;
use crate::readers::Readers;
use crate::writer::{Job, Writer};

mod access_keys;
mod age;
mod anonymous;
mod audit;
mod cache;
mod cluster;
mod confirm;
mod deploy;
mod envelopes;
mod error;
mod gate;
mod health;
mod lifecycle;
mod members;
mod peers;
mod signed;
mod workload;

pub use anonymous::AnonymousRefusals;
pub use audit::{audit_base, verification};
use cache::KeyCache;
use cache::{Loaded, LoadedKey};
use deploy::OwnerRecord;
pub(crate) use deploy::registered_owner;
pub use deploy::{Deployed, Deployer, register_owner};
pub use error::{ErrorCode, OpError};
use gate::{bad, bound_aad, draft, key_draft, key_id, seal_for, with_context};
pub use health::Health;
pub use members::MEMBER_PREFIX;

/// Label of the subkey that hashes access-key secrets.
pub const ACCESS_KEY_HASH_LABEL: &str = "teekms/v1/access-key-hash";

/// The node's key operations and what they share.
pub struct Service {
    keyring: Arc<Keyring>,
    platform: Arc<dyn Platform>,
    readers: Readers,
    writer: Writer,
    cache: KeyCache,
    anonymous: AnonymousRefusals,
    streams: Arc<StreamBudget>,
    health: health::HealthState,
    signing_keys: signed::SigningKeys,
    /// Held while the audit log is pruned (one prune at a time on a node).
    pruning: Mutex<()>,
    settings: Settings,
    /// The node's attestation without a verifier's nonce, made once.
    attestation: std::sync::OnceLock<teekms_attest::AttestationDocument>,
    /// Data-plane confirmation by the members (a shared store), once started.
    confirmer: std::sync::OnceLock<confirm::Confirmer>,
    /// Connections kept to the members, for their epoch questions.
    peers: Arc<peers::Peers>,
}

/// How a node's operations are set up (`teekms serve`'s options).
pub struct Settings {
    /// Shortest waiting period of a scheduled deletion (seconds).
    pub min_deletion_wait: u64,
    /// Whether this node shares its store with a cluster (whose policy, in the store,
    /// says who may join). Keys are then not kept opened: other nodes change them.
    pub shared_store: bool,
    /// The memory that streams through the node may hold at once (bytes).
    pub stream_memory: u64,
    /// How long a stream may go without request bytes coming in, or response bytes
    /// taken out, before it is ended.
    pub stream_idle_timeout: std::time::Duration,
    /// The node is not ready (`GET /v1/ready`) once its TEE's collateral expires within
    /// this many days.
    pub collateral_warn_days: u64,
    /// The AWS region of the AWS KMS API (SigV4 credential scopes and ARNs).
    pub aws_region: String,
    /// The mount of the Vault Transit API.
    pub transit_mount: String,
    /// On a shared store, whether data-plane answers wait for the members' confirmation
    /// (spec/freshness-v1.md, "Cluster rules", 3).
    pub confirm_data_plane: bool,
}

impl Settings {
    /// For an operation on a stopped node (an offline import): its own store, no streams.
    pub fn offline() -> Settings {
        Settings {
            min_deletion_wait: teekms_core::state::DEFAULT_DELETION_WAIT,
            shared_store: false,
            stream_memory: 0,
            stream_idle_timeout: std::time::Duration::ZERO,
            collateral_warn_days: 0,
            aws_region: crate::start::DEFAULT_AWS_REGION.into(),
            transit_mount: crate::transit::DEFAULT_MOUNT.into(),
            confirm_data_plane: false,
        }
    }
}

impl Service {
    /// The service over an opened node's keyring and store.
    pub fn new(
        keyring: Arc<Keyring>,
        platform: Arc<dyn Platform>,
        readers: Readers,
        writer: Writer,
        settings: Settings,
    ) -> Service {
        Service {
            keyring,
            platform,
            readers,
            writer,
            cache: KeyCache::new(!settings.shared_store),
            anonymous: AnonymousRefusals::default(),
            streams: StreamBudget::new(settings.stream_memory),
            health: health::HealthState::default(),
            signing_keys: signed::SigningKeys::default(),
            pruning: Mutex::new(()),
            settings,
            attestation: std::sync::OnceLock::new(),
            confirmer: std::sync::OnceLock::new(),
            peers: Arc::default(),
        }
    }

    /// Waits for a data-plane confirmation round that began now (spec/freshness-v1.md,
    /// "Cluster rules", 3); at once where there is none (a single node, or turned off).
    pub async fn confirm_data_plane(&self) -> Result<(), OpError> {
        match self.confirmer.get() {
            Some(c) => c.confirm().await,
            None => Ok(()),
        }
    }

    /// Starts the data-plane confirmation rounds (a shared store, unless turned off).
    pub fn start_confirmation(self: &Arc<Self>) {
        if self.settings.shared_store && self.settings.confirm_data_plane {
            let _ = self.confirmer.set(confirm::Confirmer::start(
                Arc::downgrade(self),
                self.peers.clone(),
            ));
        }
    }

    /// The node's attestation document: for a verifier's `nonce`, or (none) the one made
    /// at start.
    pub fn attestation(
        &self,
        nonce: Option<&[u8]>,
    ) -> Result<teekms_attest::AttestationDocument, teekms_platform::PlatformError> {
        if nonce.is_some() {
            return self.keyring.attestation(self.platform.as_ref(), nonce);
        }
        if let Some(doc) = self.attestation.get() {
            return Ok(doc.clone());
        }
        let doc = self.keyring.attestation(self.platform.as_ref(), None)?;
        Ok(self.attestation.get_or_init(|| doc).clone())
    }

    /// Runs an operation on the blocking pool (it reads the store, or waits for a
    /// commit) with the request's caller: its connection's identities and the access
    /// key `token`, if any.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        conn: Arc<ConnState>,
        credentials: impl Into<Credentials>,
        op: impl FnOnce(&Service, &Caller, u64) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let service = self.clone();
        let credentials = credentials.into();
        tokio::task::spawn_blocking(move || {
            let now = crate::now_unix();
            let caller = service.caller_with(&conn, &credentials, now)?;
            if service.settings.shared_store && caller.owner.is_some() {
                // Other nodes move the shared store's epoch: an owner's answer carries
                // the epoch the store is at now, not at this node's last look (an
                // owner's CLI would take a lagging stamp for a rollback).
                service.watch_store()?;
            }
            op(&service, &caller, now)
        })
        .await
        .map_err(|e| OpError::Internal(format!("operation task: {e}")))?
    }

    /// Runs a data operation (encrypt, decrypt, ...), which answers with its result and
    /// the audit entry to record. With the key opened in the cache it needs no I/O but
    /// that entry, which is awaited without holding a thread; the result is returned
    /// only once the entry is durable.
    pub async fn call_data<T: Send + 'static>(
        self: &Arc<Self>,
        conn: Arc<ConnState>,
        credentials: impl Into<Credentials>,
        op: impl FnOnce(&Service, &Caller, u64) -> Result<(T, AuditDraft), OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let now = crate::now_unix();
        let credentials = credentials.into();
        let (result, audit) = if self.cache.enabled() {
            let caller = self.caller_with(&conn, &credentials, now)?;
            op(self, &caller, now)?
        } else {
            // A shared (PostgreSQL) store: every operation reads it, with a blocking client.
            self.call(conn, credentials, op).await?
        };
        let commit = self.writer.submit_async(Job {
            writes: Vec::new(),
            audit,
            on_conflict: "error",
        });
        // The members' confirmation runs while the audit entry commits.
        let (committed, confirmed) = tokio::join!(commit, self.confirm_data_plane());
        committed?;
        confirmed?;
        Ok(result)
    }

    /// The node's TEE.
    pub fn tee(&self) -> TeeKind {
        self.platform.tee()
    }

    /// Whether this node shares its store with a cluster.
    pub fn shared_store(&self) -> bool {
        self.settings.shared_store
    }

    /// The mount of the Vault Transit API.
    pub fn transit_mount(&self) -> &str {
        &self.settings.transit_mount
    }

    /// The AWS region of the AWS KMS API.
    pub fn aws_region(&self) -> &str {
        &self.settings.aws_region
    }

    /// The cluster's TLS CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.keyring.ca().cert_pem()
    }

    /// Runs a data operation on each item of a batch (Vault Transit's `batch_input`):
    /// one caller, one operation and one audit entry per item, the entries committed
    /// together, the results returned (each item's own) once all are durable.
    pub async fn call_batch<I: Send + 'static, T: Send + 'static>(
        self: &Arc<Self>,
        conn: Arc<ConnState>,
        credentials: impl Into<Credentials>,
        items: Vec<I>,
        op: impl Fn(&Service, &Caller, I, u64) -> Result<(T, AuditDraft), OpError>
        + Send
        + Sync
        + 'static,
    ) -> Result<Vec<Result<T, OpError>>, OpError> {
        let run = move |service: &Service, caller: &Caller, now: u64| {
            let mut results = Vec::with_capacity(items.len());
            let mut drafts = Vec::new();
            for item in items {
                results.push(op(service, caller, item, now).map(|(t, d)| {
                    drafts.push(d);
                    t
                }));
            }
            Ok((results, drafts))
        };
        let credentials = credentials.into();
        let (results, drafts) = if self.cache.enabled() {
            let now = crate::now_unix();
            let caller = self.caller_with(&conn, &credentials, now)?;
            run(self, &caller, now)?
        } else {
            self.call(conn, credentials, run).await?
        };
        let jobs = drafts
            .into_iter()
            .map(|audit| Job {
                writes: Vec::new(),
                audit,
                on_conflict: "error",
            })
            .collect();
        self.writer.submit_all_async(jobs).await?;
        Ok(results)
    }

    /// How long a stream may stall before it is ended.
    pub fn stream_idle_timeout(&self) -> std::time::Duration {
        self.settings.stream_idle_timeout
    }

    /// Stops taking jobs: the minute's anonymous refusals are logged, and the writer
    /// commits what it holds and ends.
    pub fn shutdown(&self) {
        self.flush_anonymous();
        self.writer.close();
    }
}

/// A secret answered: in plaintext, or (to an attested workload) sealed to its key.
pub type SecretAnswer = (Option<SecretB64>, Option<SealedSecret>);

/// What a request presents besides its connection's identities.
pub enum Credentials {
    /// Nothing.
    None,
    /// An access key's token (`Authorization: Bearer`).
    Token(String),
    /// An AWS SigV4 signature by an access key (the AWS KMS API).
    Signed(Box<SignedRequest>),
}

impl From<Option<String>> for Credentials {
    fn from(token: Option<String>) -> Credentials {
        token.map_or(Credentials::None, Credentials::Token)
    }
}

/// A request as it was signed (SigV4), to check its signature (as received: nothing
/// copied).
pub struct SignedRequest {
    /// `POST`, …
    pub method: axum::http::Method,
    /// The path and query as sent.
    pub uri: axum::http::Uri,
    /// Every header received.
    pub headers: axum::http::HeaderMap,
    /// The body.
    pub body: axum::body::Bytes,
    /// The parsed `Authorization` header.
    pub authorization: teekms_core::sigv4::Authorization,
}

impl Service {
    /// The node's memory of its store (spec/freshness-v1.md).
    pub fn freshness(&self) -> &crate::freshness::Freshness {
        self.writer.freshness()
    }

    /// Checks the store's epoch record and audit head against the node's memory (or,
    /// with the alarm up, whether the store was brought forward). Blocks.
    pub fn watch_store(&self) -> Result<(), OpError> {
        let mut reader = self.reader();
        self.freshness().watch(reader.as_mut())
    }

    /// The caller of a request with `credentials` on `conn`.
    pub fn caller_with(
        &self,
        conn: &ConnState,
        credentials: &Credentials,
        now: u64,
    ) -> Result<Caller, OpError> {
        // Nothing is served from a store older than what the node acknowledged.
        self.freshness().serving()?;
        match credentials {
            Credentials::None => self.caller(conn, None, now),
            Credentials::Token(t) => self.caller(conn, Some(t), now),
            Credentials::Signed(r) => {
                let headers: Vec<(&str, &[u8])> = r
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes()))
                    .collect();
                let req = teekms_core::sigv4::Request {
                    method: r.method.as_str(),
                    path: r.uri.path(),
                    query: r.uri.query().unwrap_or(""),
                    headers: &headers,
                    body: &r.body,
                };
                self.signed_caller(conn, &req, &r.authorization, now)
            }
        }
    }
}

/// What a connection proved about its client.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The client's address (where anonymous refusals are counted).
    pub peer: Option<std::net::IpAddr>,
    /// The owner of an Ed25519 client certificate.
    pub owner: Option<OwnerPublicKey>,
    /// SHA-256 of the client certificate's SPKI, if one was presented.
    pub client_spki: Option<[u8; 32]>,
    /// A workload that attested on this connection.
    pub workload: Mutex<Option<AttestedWorkload>>,
}

/// The current minute since the Unix epoch (anonymous refusals are counted per minute).
fn now_minute() -> u64 {
    crate::now_unix() / 60
}
