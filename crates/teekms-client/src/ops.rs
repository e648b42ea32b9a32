//! Using keys on a verified node: envelope operations, lifecycle, access keys, audit,
//! and workload attestation (spec/api-v1.md). Every call goes over a connection whose
//! node was verified; access keys are sent on no other.

use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use teekms_attest::AttestationDocument;
use teekms_core::access::Operation;
use teekms_core::api::{
    AccessKeyCreateRequest, AccessKeyCreated, AccessKeyInfo, AccessKeyList, AuditTail,
    AuditVerification, B64, CiphertextResponse, ClusterPolicy, DecryptRequest, EXPORT_INFO,
    EncryptRequest, ExportRequest, ExportResponse, FetchRequest, FetchResponse,
    GenerateDataKeyRequest, KeyDescription, MinDecryptionVersionRequest, ReEncryptRequest,
    SEALED_RESPONSE_INFO, ScheduleDeletionRequest, SealedSecret, SecretB64, SecretResponse,
};
use teekms_core::hpke::HpkePrivateKey;
use teekms_core::{DataKey, NodeKeys};
use zeroize::Zeroizing;

use crate::{ClientError, VerifiedConnection};

fn path_segment(s: &str) -> String {
    // Key ids are restricted to URL-safe characters (spec/api-v1.md); encode the rest
    // anyway so that a bad id reaches the node as itself and is refused there.
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl VerifiedConnection {
    /// Sends every later request with this access key (`Authorization: Bearer`). Only a
    /// verified connection takes one: the secret goes to attested nodes only.
    pub fn use_access_key(&mut self, token: &str) {
        self.conn.access_token = Some(Zeroizing::new(token.trim().to_owned()));
    }

    async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("requests serialize"));
        let (_, bytes) = self.conn.request(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Response(e.to_string()))
    }

    /// Envelope `encrypt` of at most 64 KiB.
    pub async fn encrypt(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
        plaintext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<CiphertextResponse, ClientError> {
        let req = EncryptRequest {
            key_id: key_id.into(),
            owner: owner.map(Into::into),
            plaintext: SecretB64(Zeroizing::new(plaintext.to_vec())),
            aad: aad.map(|a| B64(a.to_vec())),
            context: None,
        };
        self.encrypt_request(&req).await
    }

    /// Envelope `encrypt` of a whole request (an encryption context, another owner).
    pub async fn encrypt_request(
        &mut self,
        req: &EncryptRequest,
    ) -> Result<CiphertextResponse, ClientError> {
        self.call(Method::POST, "/v1/envelope/encrypt", Some(req))
            .await
    }

    /// Envelope `decrypt` (the ciphertext names its key).
    pub async fn decrypt(
        &mut self,
        ciphertext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<SecretResponse, ClientError> {
        let req = DecryptRequest {
            ciphertext: B64(ciphertext.to_vec()),
            aad: aad.map(|a| B64(a.to_vec())),
            context: None,
        };
        self.decrypt_request(&req).await
    }

    /// Envelope `decrypt` of a whole request (an encryption context).
    pub async fn decrypt_request(
        &mut self,
        req: &DecryptRequest,
    ) -> Result<SecretResponse, ClientError> {
        self.call(Method::POST, "/v1/envelope/decrypt", Some(req))
            .await
    }

    /// `generate-data-key`: a fresh key, in plaintext (or sealed, for a workload) and
    /// wrapped under `key_id`.
    pub async fn generate_data_key(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
        aad: Option<&[u8]>,
    ) -> Result<SecretResponse, ClientError> {
        let req = GenerateDataKeyRequest {
            key_id: key_id.into(),
            owner: owner.map(Into::into),
            aad: aad.map(|a| B64(a.to_vec())),
            context: None,
            number_of_bytes: None,
        };
        self.generate_data_key_request(&req).await
    }

    /// `generate-data-key` of a whole request (an encryption context, a length).
    pub async fn generate_data_key_request(
        &mut self,
        req: &GenerateDataKeyRequest,
    ) -> Result<SecretResponse, ClientError> {
        self.call(Method::POST, "/v1/envelope/generate-data-key", Some(req))
            .await
    }

    /// `re-encrypt` inside the node.
    pub async fn re_encrypt(
        &mut self,
        req: &ReEncryptRequest,
    ) -> Result<CiphertextResponse, ClientError> {
        self.call(Method::POST, "/v1/envelope/re-encrypt", Some(req))
            .await
    }

    /// The age recipient of a key's current version (spec/age-plugin-v1.md): its
    /// public key and the node's signature on it, for the caller to check.
    pub async fn age_recipient(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
    ) -> Result<teekms_core::api::AgeRecipient, ClientError> {
        let mut path = format!("/v1/keys/{}/age-recipient", path_segment(key_id));
        if let Some(o) = owner {
            path.push_str(&format!("?owner={}", path_segment(o)));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// A key's metadata.
    pub async fn describe(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
    ) -> Result<KeyDescription, ClientError> {
        let mut path = format!("/v1/keys/{}", path_segment(key_id));
        if let Some(o) = owner {
            path.push_str(&format!("?owner={}", path_segment(o)));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    async fn key_action(
        &mut self,
        key_id: &str,
        action: &str,
        body: Option<&impl Serialize>,
    ) -> Result<KeyDescription, ClientError> {
        let path = format!("/v1/keys/{}/{action}", path_segment(key_id));
        let method = if action == "min-decryption-version" {
            Method::PUT
        } else {
            Method::POST
        };
        self.call(method, &path, body).await
    }

    /// New version for new encryptions (old versions still decrypt).
    pub async fn rotate(&mut self, key_id: &str) -> Result<KeyDescription, ClientError> {
        self.key_action(key_id, "rotate", None::<&()>).await
    }

    /// Enables or disables a key.
    pub async fn set_enabled(
        &mut self,
        key_id: &str,
        enabled: bool,
    ) -> Result<KeyDescription, ClientError> {
        let action = if enabled { "enable" } else { "disable" };
        self.key_action(key_id, action, None::<&()>).await
    }

    /// Schedules deletion after `wait` (e.g. `"7d"`; default 7 days).
    pub async fn schedule_deletion(
        &mut self,
        key_id: &str,
        wait: Option<&str>,
    ) -> Result<KeyDescription, ClientError> {
        let req = ScheduleDeletionRequest {
            wait: wait.map(Into::into),
        };
        self.key_action(key_id, "schedule-deletion", Some(&req))
            .await
    }

    /// Cancels a scheduled deletion.
    pub async fn cancel_deletion(&mut self, key_id: &str) -> Result<KeyDescription, ClientError> {
        self.key_action(key_id, "cancel-deletion", None::<&()>)
            .await
    }

    /// Versions below `version` stop decrypting.
    pub async fn set_min_decryption_version(
        &mut self,
        key_id: &str,
        version: u64,
    ) -> Result<KeyDescription, ClientError> {
        self.key_action(
            key_id,
            "min-decryption-version",
            Some(&MinDecryptionVersionRequest { version }),
        )
        .await
    }

    /// The key policy (JSON).
    pub async fn get_policy(&mut self, key_id: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/keys/{}/policy", path_segment(key_id));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Replaces the key policy (validated by the node).
    pub async fn set_policy(
        &mut self,
        key_id: &str,
        policy: &serde_json::Value,
    ) -> Result<KeyDescription, ClientError> {
        let path = format!("/v1/keys/{}/policy", path_segment(key_id));
        self.call(Method::PUT, &path, Some(policy)).await
    }

    /// The cluster policy (TOML) that joining nodes must satisfy (the cluster admin only).
    pub async fn cluster_policy(&mut self) -> Result<ClusterPolicy, ClientError> {
        self.call(Method::GET, "/v1/cluster/policy", None::<&()>)
            .await
    }

    /// Every member's store epoch, as each answers now (spec/freshness-v1.md, "Members").
    pub async fn cluster_status(&mut self) -> Result<teekms_core::api::ClusterStatus, ClientError> {
        self.call(Method::GET, "/v1/cluster/status", None::<&()>)
            .await
    }

    /// Accepts epoch (E, H) for a node that waits to recover (the cluster admin only);
    /// answers what the node then holds, and its alarm if its store is behind that.
    pub async fn cluster_resume(
        &mut self,
        epoch: u64,
        hash: [u8; 32],
    ) -> Result<teekms_core::api::MemberStatus, ClientError> {
        let req = teekms_core::api::ClusterResume {
            epoch,
            hash: teekms_attest::hexbytes::HexBytes(hash),
        };
        self.call(Method::POST, "/v1/cluster/resume", Some(&req))
            .await
    }

    /// Removes a member for good (the cluster admin only).
    pub async fn remove_member(&mut self, node_id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/v1/cluster/members/{node_id}"),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    /// Replaces the cluster policy (the cluster admin only; checked by the node).
    pub async fn set_cluster_policy(&mut self, toml: &str) -> Result<ClusterPolicy, ClientError> {
        let req = ClusterPolicy {
            policy: toml.to_owned(),
            admin: None,
        };
        self.call(Method::PUT, "/v1/cluster/policy", Some(&req))
            .await
    }

    /// Exports one version's material, HPKE-wrapped to a fresh key made here, unwraps it
    /// and checks its key check value. Only for keys whose policy says `exportable`.
    pub async fn export(
        &mut self,
        key_id: &str,
        version: Option<u64>,
    ) -> Result<(u64, DataKey), ClientError> {
        let recipient = HpkePrivateKey::generate();
        let req = ExportRequest {
            recipient: B64(recipient.public_key().to_vec()),
            version,
        };
        let path = format!("/v1/keys/{}/export", path_segment(key_id));
        let resp: ExportResponse = self.call(Method::POST, &path, Some(&req)).await?;
        let desc = self.describe(key_id, None).await?;
        let aad = format!("{}/{}/{}", desc.owner, resp.key_id, resp.key_version);
        let material = teekms_core::hpke::open(
            &recipient,
            &resp.wrapped.enc.0,
            EXPORT_INFO,
            aad.as_bytes(),
            &resp.wrapped.ciphertext.0,
        )
        .map_err(|_| ClientError::Response("the exported key did not unwrap".into()))?;
        let dek = DataKey::from_bytes(&material)
            .ok_or_else(|| ClientError::Response("the exported key is not 32 bytes".into()))?;
        if dek.kcv() != resp.kcv {
            return Err(ClientError::Response(
                "the exported key's check value does not match".into(),
            ));
        }
        Ok((resp.key_version, dek))
    }

    /// Creates an access key; the token in the answer is shown this once.
    pub async fn create_access_key(
        &mut self,
        keys: Vec<String>,
        operations: Vec<Operation>,
        expires_in: Option<&str>,
        description: &str,
    ) -> Result<AccessKeyCreated, ClientError> {
        let req = AccessKeyCreateRequest {
            keys,
            operations,
            expires_in: expires_in.map(Into::into),
            description: description.into(),
            aws: false,
        };
        self.create_access_key_request(&req).await
    }

    /// Creates an access key from a whole request (`aws`: also its AWS secret).
    pub async fn create_access_key_request(
        &mut self,
        req: &AccessKeyCreateRequest,
    ) -> Result<AccessKeyCreated, ClientError> {
        self.call(Method::POST, "/v1/access-keys", Some(req)).await
    }

    /// The owner's access keys.
    pub async fn list_access_keys(&mut self) -> Result<AccessKeyList, ClientError> {
        self.call(Method::GET, "/v1/access-keys", None::<&()>).await
    }

    /// Revokes an access key (final).
    pub async fn revoke_access_key(&mut self, id: &str) -> Result<AccessKeyInfo, ClientError> {
        let path = format!("/v1/access-keys/{}", path_segment(id));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// The last `n` audit entries about the owner's keys or by the owner.
    pub async fn audit_tail(&mut self, n: usize) -> Result<AuditTail, ClientError> {
        self.call(Method::GET, &format!("/v1/audit?n={n}"), None::<&()>)
            .await
    }

    /// The node checks its whole audit chain.
    pub async fn audit_verify(&mut self) -> Result<AuditVerification, ClientError> {
        self.call(Method::GET, "/v1/audit/verify", None::<&()>)
            .await
    }

    /// Exports entries `from` to `to` of the node's log (spec/audit-export-v1.md): the
    /// JSON lines as the node sent them, to be checked with
    /// [`teekms_core::audit::export::verify_export`] against this node.
    pub async fn audit_export(
        &mut self,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<String, ClientError> {
        let mut path = "/v1/audit/export".to_owned();
        let params: Vec<String> = [("from", from), ("to", to)]
            .iter()
            .filter_map(|(name, v)| v.map(|v| format!("{name}={v}")))
            .collect();
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        let (_, bytes) = self.conn.request(Method::GET, &path, None).await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ClientError::Response("the export is not UTF-8".into()))
    }

    /// Removes the log's entries before `before` (see `POST /v1/audit/prune`).
    pub async fn audit_prune(
        &mut self,
        before: u64,
        force: bool,
    ) -> Result<teekms_core::api::AuditPruned, ClientError> {
        let req = teekms_core::api::AuditPruneRequest { before, force };
        self.call(Method::POST, "/v1/audit/prune", Some(&req)).await
    }

    /// Encrypts `input` to `output` in the stream-v1 format through the node, under the
    /// key it holds (the key never leaves the node).
    pub async fn stream_encrypt(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
        chunk_log2: Option<u8>,
        input: Box<dyn std::io::Read + Send>,
        output: Box<dyn std::io::Write + Send>,
    ) -> Result<(), ClientError> {
        let mut path = format!("/v1/stream/encrypt?key_id={}", path_segment(key_id));
        if let Some(o) = owner {
            path.push_str(&format!("&owner={}", path_segment(o)));
        }
        if let Some(c) = chunk_log2 {
            path.push_str(&format!("&chunk_log2={c}"));
        }
        self.conn.stream(&path, input, output).await
    }

    /// Decrypts a stream-v1 `input` through the node (the header names the key).
    pub async fn stream_decrypt(
        &mut self,
        owner: Option<&str>,
        input: Box<dyn std::io::Read + Send>,
        output: Box<dyn std::io::Write + Send>,
    ) -> Result<(), ClientError> {
        let path = match owner {
            Some(o) => format!("/v1/stream/decrypt?owner={}", path_segment(o)),
            None => "/v1/stream/decrypt".into(),
        };
        self.conn.stream(&path, input, output).await
    }

    /// A workload fetches a key version's material (after [`Self::attest_workload`]):
    /// sealed to its attested key by the node, opened here with `keys`, checked by KCV.
    pub async fn fetch_key(
        &mut self,
        key_id: &str,
        owner: Option<&str>,
        version: Option<u64>,
        keys: &NodeKeys,
    ) -> Result<(u64, DataKey), ClientError> {
        let req = FetchRequest {
            owner: owner.map(Into::into),
            version,
        };
        let path = format!("/v1/keys/{}/fetch", path_segment(key_id));
        let resp: FetchResponse = self.call(Method::POST, &path, Some(&req)).await?;
        let material = keys
            .open_sealed(
                SEALED_RESPONSE_INFO,
                b"fetch",
                &resp.sealed.enc.0,
                &resp.sealed.ciphertext.0,
            )
            .map_err(|_| ClientError::Response("the fetched key did not open".into()))?;
        let dek = DataKey::from_bytes(&material)
            .ok_or_else(|| ClientError::Response("the fetched key is not 32 bytes".into()))?;
        if dek.kcv() != resp.kcv {
            return Err(ClientError::Response(
                "the fetched key's check value does not match".into(),
            ));
        }
        Ok((resp.key_version, dek))
    }

    /// A new node asks to join the cluster (over an RA-TLS connection whose evidence the
    /// node checks against the cluster policy); the cluster key is sealed to `keys`.
    pub async fn cluster_join(
        &mut self,
        keys: &NodeKeys,
    ) -> Result<teekms_core::SealingKey, ClientError> {
        let resp: teekms_core::api::JoinResponse = self
            .call(Method::POST, "/v1/cluster/join", None::<&()>)
            .await?;
        let key = keys
            .open_sealed(
                teekms_core::api::CLUSTER_JOIN_INFO,
                &resp.cluster_check.0,
                &resp.sealed.enc.0,
                &resp.sealed.ciphertext.0,
            )
            .map_err(|_| ClientError::Response("the cluster key did not open".into()))?;
        let key: [u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Response("the cluster key is not 32 bytes".into()))?;
        let key = teekms_core::SealingKey::from_bytes(key);
        if teekms_core::recovery::cluster_check(&key).0[..] != resp.cluster_check.0[..] {
            return Err(ClientError::Response(
                "the cluster key does not match its check value".into(),
            ));
        }
        Ok(key)
    }

    /// A workload presents its attestation document (whose statement names the TLS key
    /// this connection was made with, [`crate::Identity::Workload`]).
    pub async fn attest_workload(
        &mut self,
        doc: &AttestationDocument,
    ) -> Result<String, ClientError> {
        let (_, body) = self
            .conn
            .request(
                Method::POST,
                "/v1/workload/attest",
                Some(doc.to_json().into_bytes()),
            )
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Response(e.to_string()))?;
        Ok(v["claims_digest"].as_str().unwrap_or_default().to_owned())
    }
}

/// Opens a secret in a response: sealed to the workload's key, or in plaintext.
pub fn secret_of(
    resp: &SecretResponse,
    operation: &str,
    workload: Option<&NodeKeys>,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    match (&resp.sealed, &resp.plaintext, workload) {
        (Some(SealedSecret { enc, ciphertext }), _, Some(keys)) => keys
            .open_sealed(
                SEALED_RESPONSE_INFO,
                operation.as_bytes(),
                &enc.0,
                &ciphertext.0,
            )
            .map_err(|_| ClientError::Response("the sealed secret did not open".into())),
        (None, Some(p), _) => Ok(p.0.clone()),
        _ => Err(ClientError::Response(
            "the response holds no secret for this caller".into(),
        )),
    }
}
