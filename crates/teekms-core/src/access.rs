//! Access control, default deny (spec/key-policy-v1.md).
//!
//! A key's owner may do everything with it. Anyone else needs a rule of the key's policy
//! that names them for the operation: an access key, an attested workload (an entry in
//! the verification-policy shape that its evidence must satisfy), or both together.
//! Access keys are scoped themselves too (keys, operations, expiry); both must agree.

use serde::{Deserialize, Serialize};
use teekms_attest::document::AttestationDocument;
use teekms_attest::{Freshness, Policy, verify_document};
use zeroize::Zeroizing;

use crate::{CoreError, KeyId, OwnerPublicKey};

/// Operations that a key policy can grant. Administration (rotation, state, policy,
/// export, access keys) is for the key's owner only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Envelope encrypt, and streaming encryption through the node.
    Encrypt,
    /// Envelope decrypt, and streaming decryption through the node.
    Decrypt,
    /// A fresh data key, returned in plaintext and wrapped under the key.
    GenerateDataKey,
    /// Decrypt under this key and encrypt under another inside the node (the
    /// destination key needs `encrypt`).
    ReEncrypt,
    /// Read the key's metadata (versions, state, KCVs).
    Describe,
    /// Obtain the key's material, sealed to the attested workload that asks (for
    /// programs in other TEEs, such as Gramine applications with encrypted files).
    Fetch,
}

impl Operation {
    /// The name used in policies and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::GenerateDataKey => "generate-data-key",
            Operation::ReEncrypt => "re-encrypt",
            Operation::Describe => "describe",
            Operation::Fetch => "fetch",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyPolicy {
    #[serde(default)]
    exportable: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    principals: Vec<RawPrincipal>,
    operations: Vec<Operation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    access_key: Option<String>,
    workload: Option<serde_json::Value>,
}

/// A parsed key policy.
#[derive(Debug)]
pub struct KeyPolicy {
    /// Whether the owner may export the key's material (HPKE-wrapped, to themselves).
    pub exportable: bool,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    principals: Vec<Principal>,
    operations: Vec<Operation>,
}

/// One principal of a rule; every part given must be satisfied by the same caller.
#[derive(Debug)]
struct Principal {
    access_key: Option<String>,
    /// The entry, and SHA-256 of its JSON (how appraisals of it are cached).
    workload: Option<(Policy, [u8; 32])>,
}

impl KeyPolicy {
    /// Parses key policy text strictly (unknown keys, empty rules, a principal naming
    /// nothing, and malformed workload entries are errors).
    pub fn parse(text: &str) -> Result<KeyPolicy, CoreError> {
        let bad = |reason: String| CoreError::InvalidKeyPolicy {
            max: MAX_KEY_POLICY_LEN,
            reason,
        };
        if text.len() > MAX_KEY_POLICY_LEN {
            return Err(bad(format!(
                "it is {} bytes, more than the {MAX_KEY_POLICY_LEN} a key policy may have",
                text.len()
            )));
        }
        crate::strict_json::reject_duplicate_members(text).map_err(bad)?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !value.is_object() {
            return Err(bad(
                "it must be a JSON object (`{\"rules\": [...]}`, or `{}`)".into(),
            ));
        }
        let raw: RawKeyPolicy = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            if r.principals.is_empty() || r.operations.is_empty() {
                return Err(bad(format!(
                    "rules[{i}] needs at least one principal and one operation"
                )));
            }
            let mut principals = Vec::new();
            for (j, p) in r.principals.into_iter().enumerate() {
                if p.access_key.is_none() && p.workload.is_none() {
                    return Err(bad(format!(
                        "rules[{i}].principals[{j}] names neither an access_key nor a workload"
                    )));
                }
                if let Some(id) = &p.access_key
                    && !is_access_key_id(id)
                {
                    return Err(bad(format!(
                        "rules[{i}].principals[{j}].access_key {id:?} is not an access key id (ak-<16 hex>)"
                    )));
                }
                let workload = p
                    .workload
                    .as_ref()
                    .map(|w| {
                        let id = teekms_attest::sha256(&serde_json::to_vec(w).expect("JSON"));
                        Policy::from_json_entry(w).map(|policy| (policy, id))
                    })
                    .transpose()
                    .map_err(|e| bad(format!("rules[{i}].principals[{j}].workload: {e}")))?;
                principals.push(Principal {
                    access_key: p.access_key,
                    workload,
                });
            }
            rules.push(Rule {
                principals,
                operations: r.operations,
            });
        }
        Ok(KeyPolicy {
            exportable: raw.exportable,
            rules,
        })
    }
}

/// A verified access key presented with a request.
#[derive(Clone, Debug)]
pub struct AccessGrant {
    /// Its id.
    pub id: String,
    /// The owner who created it (the namespace of the keys it can reach).
    pub owner: OwnerPublicKey,
    /// Key ids it is scoped to (`*`: all of the owner's keys).
    pub keys: Vec<String>,
    /// Operations it is scoped to.
    pub operations: Vec<Operation>,
    /// When it expires, if it does (Unix seconds).
    pub expires_at: Option<u64>,
}

/// An attested workload on this connection: its document, whose statement names the
/// connection's TLS client key (checked when it was presented).
#[derive(Clone, Debug)]
pub struct AttestedWorkload {
    /// The workload's attestation document.
    pub document: AttestationDocument,
    /// The report data its evidence binds, when not the statement's hash (a document
    /// taken from an RA-TLS certificate binds the certificate's claims).
    pub report_data: Option<[u8; 64]>,
    /// SHA-256 of its verified claims (how audit entries name it).
    pub claims_digest: String,
    /// Appraisals already made on this connection: workload entry id → (admitted, until).
    /// Real-TEE evidence costs hundreds of microseconds to verify; a verdict is reused
    /// for [`APPRAISAL_TTL`] seconds, then made again (collateral can expire).
    pub appraisals: Appraisals,
    /// Sim evidence already verified when the workload was admitted to the connection:
    /// appraisals then compare claims without checking the signature again.
    pub verified_sim: Option<teekms_attest::VerifiedSim>,
}

/// Appraisals made on a connection: workload entry id → (admitted, until).
pub type Appraisals =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], (bool, u64)>>>;

/// Largest key policy, in bytes.
pub const MAX_KEY_POLICY_LEN: usize = 16 * 1024;

/// How long an appraisal of a workload's evidence is reused on its connection (seconds).
pub const APPRAISAL_TTL: u64 = 60;

impl AttestedWorkload {
    /// A workload with no appraisal made yet.
    pub fn new(
        document: AttestationDocument,
        report_data: Option<[u8; 64]>,
        claims_digest: String,
    ) -> AttestedWorkload {
        AttestedWorkload {
            document,
            report_data,
            claims_digest,
            appraisals: Default::default(),
            verified_sim: None,
        }
    }

    /// A sim workload whose evidence `verified` was checked (signature and binding).
    pub fn sim(
        document: AttestationDocument,
        report_data: Option<[u8; 64]>,
        verified: teekms_attest::VerifiedSim,
    ) -> AttestedWorkload {
        let claims = serde_json::to_vec(&verified.claims()).expect("claims serialize");
        let digest = hex::encode(teekms_attest::sha256(&claims));
        AttestedWorkload {
            verified_sim: Some(verified),
            ..AttestedWorkload::new(document, report_data, digest)
        }
    }

    /// Whether its evidence satisfies `entry` at `now` (cached per entry id).
    fn admitted_by(&self, entry: &Policy, id: &[u8; 32], now: u64) -> bool {
        if let Some(&(ok, until)) = self.appraisals.lock().expect("appraisals lock").get(id)
            && now < until
        {
            return ok;
        }
        let ok = match (&self.verified_sim, self.report_data) {
            (Some(sim), _) => return sim.admitted_by(entry),
            (None, None) => {
                verify_document(&self.document, entry, Freshness::Offline, now).accepted
            }
            (None, Some(rd)) => {
                teekms_attest::ratls::verify_document_bound(&self.document, rd, entry, now).accepted
            }
        };
        let mut cache = self.appraisals.lock().expect("appraisals lock");
        if cache.len() >= 256 {
            cache.clear();
        }
        // The host sets the clock: a time near the end of u64 must not wrap to "long ago".
        cache.insert(*id, (ok, now.saturating_add(APPRAISAL_TTL)));
        ok
    }
}

/// Who is calling, as proven on this request.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The owner of the connection's TLS client certificate.
    pub owner: Option<OwnerPublicKey>,
    /// A valid access key sent with the request.
    pub access_key: Option<AccessGrant>,
    /// An attested workload on this connection.
    pub workload: Option<AttestedWorkload>,
    /// The network address the request came from: never an identity, only where
    /// refusals of anonymous callers are counted.
    pub source: Option<std::net::IpAddr>,
}

impl Caller {
    /// True if the request proved no identity at all.
    pub fn is_anonymous(&self) -> bool {
        self.owner.is_none() && self.access_key.is_none() && self.workload.is_none()
    }

    /// How audit entries name this caller.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.owner {
            parts.push(format!("owner:{}", o.fingerprint()));
        }
        if let Some(a) = &self.access_key {
            parts.push(format!("access-key:{}", a.id));
        }
        if let Some(w) = &self.workload {
            parts.push(format!("workload:{}", w.claims_digest));
        }
        if parts.is_empty() {
            "anonymous".into()
        } else {
            parts.join("+")
        }
    }

    /// The workload's HPKE public key, to which secrets in responses are sealed.
    pub fn workload_hpke_key(&self) -> Option<[u8; 32]> {
        self.workload
            .as_ref()
            .map(|w| w.document.statement.hpke_public_key.0)
    }
}

/// Whether `caller` may do `op` on `owner`'s key `key_id` under `policy`, at `now`
/// (workload evidence is appraised against each rule's entry at that time). The error
/// says why not, in words safe to return to the caller.
pub fn authorize(
    policy: &KeyPolicy,
    owner: &OwnerPublicKey,
    key_id: &KeyId,
    caller: &Caller,
    op: Operation,
    now: u64,
) -> Result<(), String> {
    if caller.owner.as_ref() == Some(owner) {
        return Ok(());
    }
    if let Some(grant) = &caller.access_key {
        let in_scope = grant.owner == *owner
            && grant.keys.iter().any(|k| k == "*" || k == key_id.as_str())
            && grant.operations.contains(&op);
        if !in_scope {
            return Err(format!(
                "access key {} is not scoped to {} on key {key_id:?}",
                grant.id,
                op.as_str()
            ));
        }
    }
    let admitted = policy
        .rules
        .iter()
        .filter(|r| r.operations.contains(&op))
        .flat_map(|r| &r.principals)
        .any(|p| principal_matches(p, caller, now));
    if admitted {
        Ok(())
    } else {
        Err(format!(
            "no rule of key {key_id:?}'s policy admits {} for {}",
            caller.describe(),
            op.as_str()
        ))
    }
}

fn principal_matches(p: &Principal, caller: &Caller, now: u64) -> bool {
    let key_ok = match (&p.access_key, &caller.access_key) {
        (None, _) => true,
        (Some(want), Some(have)) => *want == have.id,
        (Some(_), None) => false,
    };
    let workload_ok = match (&p.workload, &caller.workload) {
        (None, _) => true,
        (Some((policy, id)), Some(w)) => w.admitted_by(policy, id, now),
        (Some(_), None) => false,
    };
    key_ok && workload_ok
}

/// Whether `s` looks like an access key id: `ak-` and 16 lowercase hex characters.
pub fn is_access_key_id(s: &str) -> bool {
    s.strip_prefix("ak-")
        .is_some_and(|h| h.len() == 16 && is_lower_hex(h))
}

/// A freshly created access key: its id and the secret half, shown once.
pub struct NewAccessKey {
    /// `ak-<16 hex>`.
    pub id: String,
    /// The token to present: `<id>.<64 hex>` (secret; shown once, never stored).
    pub token: Zeroizing<String>,
    /// What the node stores: HMAC of the secret under a key only TEEs hold.
    pub secret_hash: [u8; 32],
}

/// Label of the cluster subkey that derives access keys' AWS secrets.
pub const AWS_SECRET_LABEL: &str = "teekms/v1/aws-secret";

/// The AWS secret access key of access key `id` (`aws_secret_access_key` of its
/// credentials file): HMAC-SHA256 under `secret_key` (the cluster's
/// [`AWS_SECRET_LABEL`] subkey) of the id, its first 30 bytes in base64 (40
/// characters, as AWS's are). Derived, never stored: every node of the cluster checks
/// it, and a copy of the database reveals nothing.
pub fn aws_secret_access_key(secret_key: &[u8; 32], id: &str) -> Zeroizing<String> {
    use base64::Engine;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret_key);
    let tag = aws_lc_rs::hmac::sign(&key, id.as_bytes());
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&tag.as_ref()[..30]))
}

/// Creates an access key; `hash_key` is the node's access-key hashing subkey.
pub fn new_access_key(hash_key: &[u8; 32]) -> NewAccessKey {
    let mut id = [0u8; 8];
    crate::random_bytes(&mut id);
    let mut secret = Zeroizing::new([0u8; 32]);
    crate::random_bytes(secret.as_mut());
    let id = format!("ak-{}", hex::encode(id));
    let token = Zeroizing::new(format!("{id}.{}", hex::encode(secret.as_ref())));
    NewAccessKey {
        secret_hash: hash_secret(hash_key, secret.as_ref()),
        id,
        token,
    }
}

/// Splits a presented token into id and secret hash; `None` if malformed.
pub fn parse_access_token(
    hash_key: &[u8; 32],
    token: &str,
) -> Result<(String, [u8; 32]), CoreError> {
    let (id, secret_hex) = token.split_once('.').ok_or(CoreError::AccessKeyMalformed)?;
    // The spec writes the secret in lowercase hex, and only one spelling of a token is
    // accepted.
    if !is_access_key_id(id) || secret_hex.len() != 64 || !is_lower_hex(secret_hex) {
        return Err(CoreError::AccessKeyMalformed);
    }
    let secret =
        Zeroizing::new(hex::decode(secret_hex).map_err(|_| CoreError::AccessKeyMalformed)?);
    Ok((id.to_owned(), hash_secret(hash_key, &secret)))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hash_secret(hash_key: &[u8; 32], secret: &[u8]) -> [u8; 32] {
    crate::hmac256(hash_key, &[b"teekms/v1/access-key", secret])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(keys: &[&str], ops: &[Operation]) -> AccessGrant {
        AccessGrant {
            id: "ak-0123456789abcdef".into(),
            owner: OwnerPublicKey([1; 32]),
            keys: keys.iter().map(|s| s.to_string()).collect(),
            operations: ops.to_vec(),
            expires_at: None,
        }
    }

    #[test]
    fn default_deny_owner_allowed_rules_and_scopes_both_apply() {
        let owner = OwnerPublicKey([1; 32]);
        let id = KeyId::new("db").unwrap();
        let empty = KeyPolicy::parse("{}").unwrap();
        let by_owner = Caller {
            owner: Some(owner),
            ..Caller::default()
        };
        assert!(authorize(&empty, &owner, &id, &by_owner, Operation::Decrypt, 0).is_ok());
        let stranger = Caller {
            owner: Some(OwnerPublicKey([2; 32])),
            ..Caller::default()
        };
        assert!(authorize(&empty, &owner, &id, &stranger, Operation::Encrypt, 0).is_err());

        let policy = KeyPolicy::parse(
            r#"{"rules":[{"principals":[{"access_key":"ak-0123456789abcdef"}],"operations":["encrypt","decrypt"]}]}"#,
        )
        .unwrap();
        let with_key = |g| Caller {
            access_key: Some(g),
            ..Caller::default()
        };
        let ok = with_key(grant(&["db"], &[Operation::Encrypt]));
        assert!(authorize(&policy, &owner, &id, &ok, Operation::Encrypt, 0).is_ok());
        // The policy allows decrypt, but the access key's own scope does not.
        assert!(authorize(&policy, &owner, &id, &ok, Operation::Decrypt, 0).is_err());
        // Scoped to another key.
        let other = with_key(grant(&["logs"], &[Operation::Encrypt]));
        assert!(authorize(&policy, &owner, &id, &other, Operation::Encrypt, 0).is_err());
        // The policy does not grant generate-data-key, whatever the scope says.
        let wide = with_key(grant(&["*"], &[Operation::GenerateDataKey]));
        assert!(authorize(&policy, &owner, &id, &wide, Operation::GenerateDataKey, 0).is_err());
    }

    #[test]
    fn strict_parsing() {
        for bad in [
            r#"{"rule":[]}"#,
            r#"{"rules":[{"principals":[],"operations":["encrypt"]}]}"#,
            r#"{"rules":[{"principals":[{}],"operations":["encrypt"]}]}"#,
            r#"{"rules":[{"principals":[{"access_key":"nope"}],"operations":["encrypt"]}]}"#,
            r#"{"rules":[{"principals":[{"access_key":"ak-0123456789abcdef"}],"operations":["fly"]}]}"#,
            r#"{"rules":[{"principals":[{"workload":{"tee":"sim"}}],"operations":["decrypt"]}]}"#,
            "[]",
        ] {
            assert!(KeyPolicy::parse(bad).is_err(), "{bad}");
        }
        assert!(
            KeyPolicy::parse(r#"{"exportable":true}"#)
                .unwrap()
                .exportable
        );
    }

    #[test]
    fn tokens_hash_and_parse() {
        let k = [3u8; 32];
        let new = new_access_key(&k);
        let (id, hash) = parse_access_token(&k, &new.token).unwrap();
        assert_eq!((id.as_str(), hash), (new.id.as_str(), new.secret_hash));
        assert_ne!(parse_access_token(&[4; 32], &new.token).unwrap().1, hash);
        assert!(parse_access_token(&k, "ak-0123.zz").is_err());
        // One spelling only: the spec's lowercase hex.
        let (id, secret) = new.token.split_once('.').unwrap();
        let upper_secret = format!("{id}.{}", secret.to_uppercase());
        let upper_id = format!("{}.{secret}", id.to_uppercase().replace("AK-", "ak-"));
        for token in [upper_secret, upper_id] {
            assert!(
                token != *new.token && parse_access_token(&k, &token).is_err(),
                "{token}"
            );
        }
    }

    #[test]
    fn policies_with_a_repeated_member_are_refused() {
        let e = KeyPolicy::parse(r#"{"exportable":false,"exportable":true}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("appears twice"), "{e}");
        assert!(KeyPolicy::parse(r#"{"rules":[],"rules":[]}"#).is_err());
    }
}
