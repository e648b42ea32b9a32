//! Request and response bodies of API v1 (spec/api-v1.md), shared by node and client.

use serde::{Deserialize, Serialize};

use crate::Kcv;

/// `GET /v1/keys`: the caller's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// Keys whose records opened and authenticated.
    pub keys: Vec<KeyInfo>,
    /// Keys whose stored records failed authentication (tampered storage).
    pub damaged: Vec<DamagedKey>,
}

/// Metadata of one key version. Never material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// The key's id.
    pub key_id: String,
    /// The version.
    pub key_version: u64,
    /// When first stored (Unix seconds).
    pub created_at: u64,
    /// Key check value, recomputed from the unsealed material.
    pub kcv: Kcv,
}

/// A key whose stored record could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamagedKey {
    /// The key id as stored (untrusted).
    pub key_id: String,
    /// The version as stored (untrusted).
    pub key_version: u64,
    /// What failed.
    pub error: String,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// Bytes carried as standard base64 in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        teekms_attest::hexbytes::base64_bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        teekms_attest::hexbytes::base64_bytes::deserialize(d).map(B64)
    }
}

/// Secret bytes (plaintext, data keys) as base64: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretB64(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretB64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretB64(..)")
    }
}

impl Serialize for SecretB64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        teekms_attest::hexbytes::base64_bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for SecretB64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        teekms_attest::hexbytes::base64_bytes::deserialize(d)
            .map(|v| SecretB64(zeroize::Zeroizing::new(v)))
    }
}

/// A secret in a response to an attested workload: HPKE-sealed to the public key bound
/// in its evidence (info `teekms/v1/response`, associated data the operation name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// HPKE encapsulated key.
    pub enc: B64,
    /// HPKE ciphertext.
    pub ciphertext: B64,
}

/// HPKE `info` of secrets sealed to workloads.
pub const SEALED_RESPONSE_INFO: &[u8] = b"teekms/v1/response";

/// `POST /v1/envelope/encrypt`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The key.
    pub key_id: String,
    /// The key's owner (fingerprint); default: the caller's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// At most 64 KiB.
    pub plaintext: SecretB64,
    /// Associated data, needed again to decrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
    /// An encryption context, bound as the associated data by its canonical encoding
    /// (spec/envelope-v1.md); exclusive with `aad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::EncryptionContext>,
}

/// A ciphertext and the key version that made it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiphertextResponse {
    /// The key.
    pub key_id: String,
    /// The version used.
    pub key_version: u64,
    /// Envelope ciphertext (spec/envelope-v1.md).
    pub ciphertext: B64,
}

/// `POST /v1/envelope/decrypt`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// Envelope ciphertext (it names its key).
    pub ciphertext: B64,
    /// The associated data given at encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
    /// An encryption context, bound as the associated data by its canonical encoding
    /// (spec/envelope-v1.md); exclusive with `aad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::EncryptionContext>,
}

/// A secret returned to the caller: in plaintext over the attested channel, or sealed to
/// an attested workload's key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretResponse {
    /// The key.
    pub key_id: String,
    /// The version used.
    pub key_version: u64,
    /// For `generate-data-key`: the new data key wrapped under the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<B64>,
    /// The secret, for callers that are not attested workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretB64>,
    /// The secret, HPKE-sealed to an attested workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedSecret>,
}

/// `POST /v1/envelope/generate-data-key`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateDataKeyRequest {
    /// The wrapping key.
    pub key_id: String,
    /// The key's owner (fingerprint); default: the caller's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Associated data bound to the wrapped copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
    /// An encryption context, bound as the associated data by its canonical encoding
    /// (spec/envelope-v1.md); exclusive with `aad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::EncryptionContext>,
    /// Length of the data key in bytes, 1 to 1024 [default: 32].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
}

/// `POST /v1/envelope/re-encrypt`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReEncryptRequest {
    /// The ciphertext to move.
    pub ciphertext: B64,
    /// Its associated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
    /// An encryption context, bound as the associated data by its canonical encoding
    /// (spec/envelope-v1.md); exclusive with `aad`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::EncryptionContext>,
    /// Destination key [default: the same key, latest version].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_key_id: Option<String>,
    /// Destination key's owner [default: the source key's owner].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_owner: Option<String>,
    /// Associated data of the new ciphertext [default: the same].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_aad: Option<B64>,
    /// Encryption context of the new ciphertext; exclusive with `destination_aad`
    /// [default: the same associated data as the input's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_context: Option<crate::context::EncryptionContext>,
}

/// `GET /v1/keys/{id}`: a key's metadata. Never material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDescription {
    /// The key.
    pub key_id: String,
    /// Owner fingerprint.
    pub owner: String,
    /// Version used for new encryptions.
    pub current_version: u64,
    /// Oldest version that still decrypts.
    pub min_decryption_version: u64,
    /// Disabled keys refuse data operations.
    pub enabled: bool,
    /// Pending deletion at this time (Unix seconds), if scheduled.
    pub deletion_at: Option<u64>,
    /// Whether the key policy allows export to the owner.
    pub exportable: bool,
    /// Every version, with its key check value.
    pub versions: Vec<KeyInfo>,
    /// The key's ARN in the AWS KMS API (spec/aws-kms-v1.md).
    #[serde(default)]
    pub arn: String,
}

/// `POST /v1/keys/{id}/schedule-deletion`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeletionRequest {
    /// Waiting period such as `"7d"` [default: 7 days; the node sets a minimum].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

/// `PUT /v1/keys/{id}/min-decryption-version`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinDecryptionVersionRequest {
    /// Versions below this stop decrypting.
    pub version: u64,
}

/// `POST /v1/keys/{id}/export`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// X25519 public key (32 bytes) the material is HPKE-wrapped to.
    pub recipient: B64,
    /// Which version [default: current].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// HPKE `info` of exported key material; the associated data is
/// `owner fingerprint | "/" | key id | "/" | version` in ASCII.
pub const EXPORT_INFO: &[u8] = b"teekms/v1/export";

/// An exported key version, HPKE-wrapped.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportResponse {
    /// The key.
    pub key_id: String,
    /// The version.
    pub key_version: u64,
    /// Its key check value (check it after unwrapping).
    pub kcv: Kcv,
    /// The wrapped material.
    pub wrapped: SealedSecret,
}

/// `POST /v1/access-keys`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyCreateRequest {
    /// Key ids it reaches (`*`: all of the owner's keys).
    pub keys: Vec<String>,
    /// Operations it may ask for.
    pub operations: Vec<crate::access::Operation>,
    /// Lifetime such as `"90d"` [default: no expiry].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Also return the key's AWS secret access key (for the AWS KMS API's SigV4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aws: bool,
}

/// An access key's public description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyInfo {
    /// `ak-<16 hex>`.
    pub id: String,
    /// Key ids it reaches.
    pub keys: Vec<String>,
    /// Operations.
    pub operations: Vec<crate::access::Operation>,
    /// Free text.
    pub description: String,
    /// Created (Unix seconds).
    pub created_at: u64,
    /// Expiry, if any.
    pub expires_at: Option<u64>,
    /// Revoked at, if revoked.
    pub revoked_at: Option<u64>,
}

/// The answer to a creation: the token is shown this once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyCreated {
    /// The key's description.
    #[serde(flatten)]
    pub info: AccessKeyInfo,
    /// `<id>.<secret>`: present it as `Authorization: Bearer <token>`.
    pub token: String,
    /// With `"aws": true`: the secret that signs AWS KMS API requests (SigV4) with the
    /// id as access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<String>,
}

/// `GET /v1/access-keys`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyList {
    /// The caller's access keys.
    pub access_keys: Vec<AccessKeyInfo>,
}

/// `GET /v1/audit`: recent entries concerning the caller's keys or made by the caller.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTail {
    /// Oldest first.
    pub entries: Vec<crate::audit::AuditEntry>,
}

/// `GET /v1/audit/verify`: the whole chain checked inside the node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerification {
    /// Every entry verified.
    pub ok: bool,
    /// Entries verified.
    pub entries: u64,
    /// The first broken entry, if any.
    pub broken_at: Option<u64>,
    /// What is wrong with it.
    pub reason: Option<String>,
}

/// Request body of `POST /v1/audit/prune`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPruneRequest {
    /// The first position kept: entries before it are removed.
    pub before: u64,
    /// Prune entries that no export covers.
    #[serde(default)]
    pub force: bool,
}

/// Answer of `POST /v1/audit/prune`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPruned {
    /// The log now starts after this position (its checkpoint is kept).
    pub pruned_through: u64,
    /// Entries removed by this request.
    pub removed: u64,
}

/// `POST /v1/keys/{id}/fetch` (attested workloads).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The key's owner (fingerprint); default: the caller's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Which version [default: current].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A key version's material, sealed to the workload that fetched it (associated data
/// `fetch`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchResponse {
    /// The key.
    pub key_id: String,
    /// The version.
    pub key_version: u64,
    /// Its key check value (check it after opening).
    pub kcv: Kcv,
    /// The material, HPKE-sealed to the workload's attested key.
    pub sealed: SealedSecret,
}

/// HPKE `info` of the cluster key handed to a joining node.
pub const CLUSTER_JOIN_INFO: &[u8] = b"teekms/v1/cluster-join";

/// `GET` / `PUT /v1/cluster/policy` (the cluster admin only): the cluster policy (TOML,
/// as owners' policies) that joining nodes must satisfy. `PUT` takes `{"policy": ...}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPolicy {
    /// The policy, TOML.
    pub policy: String,
    /// The admin's owner fingerprint (in responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// `POST /v1/cluster/epoch` (unauthenticated; members ask each other): a fresh nonce.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEpochRequest {
    /// 32 random bytes, hex: the answer's MAC covers them.
    pub nonce: teekms_attest::hexbytes::HexBytes<32>,
    /// Answer from memory, without reading the store first (a data-plane confirmation
    /// asks what the member holds, not what the store says).
    #[serde(default)]
    pub from_memory: bool,
}

/// A member's answer: its store epoch as it holds it, MAC'd under a subkey of the
/// cluster key (spec/freshness-v1.md, "Members"), so only a member can make one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEpoch {
    /// The answering node.
    pub node_id: teekms_attest::hexbytes::HexBytes<16>,
    /// E.
    pub epoch: u64,
    /// H.
    pub hash: teekms_attest::hexbytes::HexBytes<32>,
    /// The newest audit position it holds.
    pub audit_seq: u64,
    /// Its `store_rolled_back` alarm, if up.
    #[serde(default)]
    pub alarm: Option<String>,
    /// Whether it restarted and has not yet recovered the cluster's epoch (it then
    /// counts for no majority).
    #[serde(default)]
    pub recovering: bool,
    /// HMAC-SHA256 over the nonce and the fields above.
    pub mac: teekms_attest::hexbytes::HexBytes<32>,
}

/// `POST /v1/cluster/resume` (the cluster admin): the epoch a person accepted for a node
/// that waits to recover (spec/freshness-v1.md, "Cluster rules", 5).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterResume {
    /// E.
    pub epoch: u64,
    /// H, hex.
    pub hash: teekms_attest::hexbytes::HexBytes<32>,
}

/// `GET /v1/cluster/status` (an owner): every member of the cluster, as it answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStatus {
    /// The members, this node first.
    pub members: Vec<MemberStatus>,
}

/// One member in [`ClusterStatus`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberStatus {
    /// Its node id.
    pub node_id: String,
    /// Where it answers.
    pub url: String,
    /// Its epoch, if it answered.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Its hash, hex, if it answered.
    #[serde(default)]
    pub hash: Option<String>,
    /// Its audit position, if it answered.
    #[serde(default)]
    pub audit_seq: Option<u64>,
    /// Its alarm, if up.
    #[serde(default)]
    pub alarm: Option<String>,
    /// Whether it restarted and waits to recover the cluster's epoch.
    #[serde(default)]
    pub recovering: bool,
    /// Why it gave no (valid) answer.
    #[serde(default)]
    pub error: Option<String>,
}

/// `POST /v1/cluster/join`: the cluster key, sealed to the joiner's attested key
/// (associated data: the cluster check value).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinResponse {
    /// The cluster key's check value (spec/recovery-v1.md).
    pub cluster_check: B64,
    /// The cluster key, HPKE-sealed to the joiner's statement key.
    pub sealed: SealedSecret,
}

/// `GET /v1/keys/{id}/age-recipient`: a key version's age public key, certified by the
/// node (spec/age-plugin-v1.md).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeRecipient {
    /// The key owner's public key.
    pub owner_public_key: teekms_attest::hexbytes::HexBytes<32>,
    /// The key.
    pub key_id: String,
    /// The version (the current one).
    pub key_version: u64,
    /// Its age (X25519) public key.
    pub public_key: teekms_attest::hexbytes::HexBytes<32>,
    /// The node's Ed25519 signature over `crate::age::certificate_message`.
    pub signature: B64,
}

/// `POST /v1/age/unwrap`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeUnwrapRequest {
    /// The key's owner (fingerprint).
    pub owner: String,
    /// The key.
    pub key_id: String,
    /// The version the file key was sealed to.
    pub key_version: u64,
    /// HPKE encapsulated key (from the stanza).
    pub enc: B64,
    /// HPKE ciphertext of the file key (the stanza's body).
    pub ciphertext: B64,
}

/// The answer to [`AgeUnwrapRequest`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeUnwrapResponse {
    /// The 16-byte file key.
    pub file_key: SecretB64,
}
