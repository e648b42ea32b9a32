//! The operations of the AWS KMS API, each a translation onto [`Service`]'s.

use serde::de::DeserializeOwned;
use teekms_core::access::Caller;
use teekms_core::api::{
    B64, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, ReEncryptRequest, SealedSecret,
    SecretB64, SecretResponse,
};
use teekms_core::arn;
use teekms_core::envelope::Envelope;
use teekms_core::{OwnerPublicKey, recipient};

use super::shapes::*;
use super::{MAX_ENCRYPT_PLAINTEXT, SYMMETRIC_DEFAULT};
use crate::ops::{OpError, Service};

/// Parses a request body; a malformed one is refused and recorded.
fn parse<T: DeserializeOwned>(
    s: &Service,
    c: &Caller,
    op: &str,
    body: &[u8],
    now: u64,
) -> Result<T, OpError> {
    serde_json::from_slice(body).map_err(|e| {
        s.refuse_request(
            c,
            op,
            OpError::BadRequest(format!("the request does not parse: {e}")),
            now,
        )
    })
}

fn invalid(s: &Service, c: &Caller, op: &str, why: impl Into<String>, now: u64) -> OpError {
    s.refuse_request(c, op, OpError::BadRequest(why.into()), now)
}

/// Options AWS has and teekms does not: dry runs, and algorithms other than the
/// symmetric default. (Grant tokens only add permissions, which teekms's key policies
/// give instead: they are accepted and ignored.)
fn check_options(
    s: &Service,
    c: &Caller,
    op: &str,
    algorithms: &[&Option<String>],
    dry_run: Option<bool>,
    now: u64,
) -> Result<(), OpError> {
    if dry_run == Some(true) {
        return Err(invalid(s, c, op, "DryRun is not supported", now));
    }
    for a in algorithms.iter().filter_map(|a| a.as_deref()) {
        if a != SYMMETRIC_DEFAULT {
            return Err(invalid(
                s,
                c,
                op,
                format!("encryption algorithm {a:?} is not supported (only SYMMETRIC_DEFAULT)"),
                now,
            ));
        }
    }
    Ok(())
}

/// The caller's own namespace: its access key's creator (or the owner on the
/// connection).
fn namespace(c: &Caller) -> Option<OwnerPublicKey> {
    c.access_key.as_ref().map(|a| a.owner).or(c.owner)
}

/// A `KeyId` resolved: the key's owner (`None`: the caller's namespace) and id. An ARN
/// of another region or account is not found (ARNs resolve in the caller's namespace).
fn resolve(
    s: &Service,
    c: &Caller,
    op: &str,
    key: &str,
    region: &str,
    now: u64,
) -> Result<String, OpError> {
    let Some(r) = arn::parse_key_ref(key) else {
        return Err(invalid(
            s,
            c,
            op,
            format!("{key:?} is not a key id, alias/<key id> or key ARN"),
            now,
        ));
    };
    let elsewhere = r.region.is_some_and(|reg| reg != region)
        || r.account
            .is_some_and(|acct| namespace(c).is_none_or(|o| arn::account_id(&o) != acct));
    if elsewhere {
        return Err(s.refuse_request(
            c,
            op,
            OpError::NotFound(format!(
                "key {key:?} is not in this node's region ({region}) and the access key's account"
            )),
            now,
        ));
    }
    Ok(r.key_id.to_owned())
}

/// The caller with the request's recipient, if any (see [`Service::with_recipient`]).
fn recipient_caller(
    s: &Service,
    c: &Caller,
    op: &str,
    recipient: Option<&Recipient>,
    now: u64,
) -> Result<Option<Caller>, OpError> {
    let Some(r) = recipient else { return Ok(None) };
    if r.key_encryption_algorithm != recipient::ALGORITHM {
        return Err(invalid(
            s,
            c,
            op,
            format!(
                "KeyEncryptionAlgorithm {:?} is not supported: teekms seals to teekms workloads with {}",
                r.key_encryption_algorithm,
                recipient::ALGORITHM
            ),
            now,
        ));
    }
    s.with_recipient(c, &r.attestation_document.0, now)
        .map(Some)
}

/// A secret answer: the plaintext, or (to a recipient) its sealed form.
fn secret_out(
    op: &str,
    plaintext: Option<SecretB64>,
    sealed: Option<SealedSecret>,
) -> (Option<SecretB64>, Option<B64>) {
    match sealed {
        Some(sealed) => (None, Some(B64(recipient::encode(op, &sealed)))),
        None => (plaintext, None),
    }
}

fn key_arn(region: &str, resp_key: &str, owner: &OwnerPublicKey) -> String {
    arn::key_arn(region, owner, resp_key)
}

/// The owner a ciphertext names (the envelope header), or `InvalidCiphertextException`.
fn ciphertext_key(
    s: &Service,
    c: &Caller,
    op: &str,
    blob: &[u8],
    now: u64,
) -> Result<(OwnerPublicKey, String), OpError> {
    Envelope::parse(blob)
        .map(|e| (e.header.owner, e.header.key_id.to_string()))
        .map_err(|e| s.refuse_request(c, op, OpError::Decrypt(e.to_string()), now))
}

pub(super) fn encrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(EncryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "encrypt";
    let req: EncryptIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[&req.encryption_algorithm], req.dry_run, now)?;
    let _ = req.grant_tokens;
    if req.plaintext.0.is_empty() || req.plaintext.0.len() > MAX_ENCRYPT_PLAINTEXT {
        return Err(invalid(
            s,
            c,
            op,
            format!("Plaintext must be 1 to {MAX_ENCRYPT_PLAINTEXT} bytes"),
            now,
        ));
    }
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let (resp, audit) = s.encrypt(
        c,
        EncryptRequest {
            key_id,
            owner: None,
            plaintext: req.plaintext,
            aad: None,
            context: req.encryption_context,
        },
        now,
    )?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    Ok((
        EncryptOut {
            key_id: key_arn(region, &resp.key_id, &owner),
            ciphertext_blob: resp.ciphertext,
            encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

pub(super) fn decrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(DecryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "decrypt";
    let req: DecryptIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[&req.encryption_algorithm], req.dry_run, now)?;
    let _ = req.grant_tokens;
    let (owner, key_id) = ciphertext_key(s, c, op, &req.ciphertext_blob.0, now)?;
    if let Some(given) = &req.key_id {
        let wanted = resolve(s, c, op, given, region, now)?;
        if wanted != key_id || namespace(c) != Some(owner) {
            return Err(s.refuse_request(
                c,
                op,
                OpError::IncorrectKey(format!(
                    "the ciphertext was made with key {key_id:?}, not {given:?}"
                )),
                now,
            ));
        }
    }
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let (resp, audit): (SecretResponse, _) = s.decrypt(
        caller,
        DecryptRequest {
            ciphertext: req.ciphertext_blob,
            aad: None,
            context: req.encryption_context,
        },
        now,
    )?;
    let (plaintext, for_recipient) = secret_out(op, resp.plaintext, resp.sealed);
    Ok((
        DecryptOut {
            key_id: key_arn(region, &resp.key_id, &owner),
            plaintext,
            ciphertext_for_recipient: for_recipient,
            encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

pub(super) fn re_encrypt(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<(ReEncryptOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "re-encrypt";
    let req: ReEncryptIn = parse(s, c, op, body, now)?;
    check_options(
        s,
        c,
        op,
        &[
            &req.source_encryption_algorithm,
            &req.destination_encryption_algorithm,
        ],
        req.dry_run,
        now,
    )?;
    let _ = req.grant_tokens;
    let (src_owner, src_id) = ciphertext_key(s, c, op, &req.ciphertext_blob.0, now)?;
    if let Some(given) = &req.source_key_id {
        let wanted = resolve(s, c, op, given, region, now)?;
        if wanted != src_id || namespace(c) != Some(src_owner) {
            return Err(s.refuse_request(
                c,
                op,
                OpError::IncorrectKey(format!(
                    "the ciphertext was made with key {src_id:?}, not {given:?}"
                )),
                now,
            ));
        }
    }
    let dst_id = resolve(s, c, op, &req.destination_key_id, region, now)?;
    let (resp, audit) = s.re_encrypt(
        c,
        ReEncryptRequest {
            ciphertext: req.ciphertext_blob,
            aad: None,
            context: req.source_encryption_context,
            destination_key_id: Some(dst_id),
            destination_owner: namespace(c).map(|o| o.fingerprint()),
            destination_aad: None,
            // AWS: no destination context is no context, not the source's.
            destination_context: Some(req.destination_encryption_context.unwrap_or_default()),
        },
        now,
    )?;
    let dst_owner = namespace(c).expect("an authorized caller has a namespace");
    Ok((
        ReEncryptOut {
            ciphertext_blob: resp.ciphertext,
            source_key_id: key_arn(region, &src_id, &src_owner),
            key_id: key_arn(region, &resp.key_id, &dst_owner),
            source_encryption_algorithm: SYMMETRIC_DEFAULT,
            destination_encryption_algorithm: SYMMETRIC_DEFAULT,
        },
        audit,
    ))
}

pub(super) fn generate_data_key(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    with_plaintext: bool,
    now: u64,
) -> Result<(GenerateDataKeyOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "generate-data-key";
    let req: GenerateDataKeyIn = parse(s, c, op, body, now)?;
    check_options(s, c, op, &[], req.dry_run, now)?;
    let _ = req.grant_tokens;
    let bytes = match (req.number_of_bytes, req.key_spec.as_deref()) {
        (Some(n), None) => n,
        (None, Some("AES_256")) => 32,
        (None, Some("AES_128")) => 16,
        (None, Some(other)) => {
            return Err(invalid(
                s,
                c,
                op,
                format!("KeySpec {other:?} is not AES_256 or AES_128"),
                now,
            ));
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                s,
                c,
                op,
                "give KeySpec or NumberOfBytes, not both",
                now,
            ));
        }
        (None, None) => {
            return Err(invalid(s, c, op, "give KeySpec or NumberOfBytes", now));
        }
    };
    if !with_plaintext && req.recipient.is_some() {
        return Err(invalid(
            s,
            c,
            op,
            "GenerateDataKeyWithoutPlaintext takes no Recipient",
            now,
        ));
    }
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let (resp, audit) = s.generate_data_key(
        caller,
        GenerateDataKeyRequest {
            key_id,
            owner: None,
            aad: None,
            context: req.encryption_context,
            number_of_bytes: Some(bytes),
        },
        now,
    )?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    let (plaintext, for_recipient) = secret_out(op, resp.plaintext, resp.sealed);
    Ok((
        GenerateDataKeyOut {
            ciphertext_blob: resp.ciphertext.expect("generate-data-key wraps the key"),
            plaintext: plaintext.filter(|_| with_plaintext),
            ciphertext_for_recipient: for_recipient,
            key_id: key_arn(region, &resp.key_id, &owner),
        },
        audit,
    ))
}

pub(super) fn generate_random(
    s: &Service,
    c: &Caller,
    body: &[u8],
    now: u64,
) -> Result<(GenerateRandomOut, teekms_core::audit::AuditDraft), OpError> {
    let op = "generate-random";
    let req: GenerateRandomIn = parse(s, c, op, body, now)?;
    if req.custom_key_store_id.is_some() {
        return Err(s.refuse_request(
            c,
            op,
            OpError::NotFound("teekms has no custom key stores".into()),
            now,
        ));
    }
    let recipient = recipient_caller(s, c, op, req.recipient.as_ref(), now)?;
    let caller = recipient.as_ref().unwrap_or(c);
    let n = req
        .number_of_bytes
        .ok_or_else(|| invalid(s, c, op, "NumberOfBytes is required", now))?;
    let ((plaintext, sealed), audit) = s.generate_random(caller, n, now)?;
    let (plaintext, for_recipient) = secret_out(op, plaintext, sealed);
    Ok((
        GenerateRandomOut {
            plaintext,
            ciphertext_for_recipient: for_recipient,
        },
        audit,
    ))
}

pub(super) fn describe_key(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<DescribeKeyOut, OpError> {
    let op = "describe";
    let req: DescribeKeyIn = parse(s, c, op, body, now)?;
    let _ = req.grant_tokens;
    let key_id = resolve(s, c, op, &req.key_id, region, now)?;
    let d = s.describe(c, &key_id, None, now)?;
    let owner = namespace(c).expect("an authorized caller has a namespace");
    let created = d.versions.iter().map(|v| v.created_at).min().unwrap_or(0);
    let state = match (d.deletion_at, d.enabled) {
        (Some(_), _) => "PendingDeletion",
        (None, true) => "Enabled",
        (None, false) => "Disabled",
    };
    Ok(DescribeKeyOut {
        key_metadata: KeyMetadata {
            aws_account_id: arn::account_id(&owner),
            arn: key_arn(region, &d.key_id, &owner),
            key_id: d.key_id,
            creation_date: created as f64,
            enabled: d.enabled && d.deletion_at.is_none(),
            description: "",
            key_usage: "ENCRYPT_DECRYPT",
            key_state: state,
            deletion_date: d.deletion_at.map(|t| t as f64),
            // The owner made the material and deployed it: imported, in AWS's words.
            origin: "EXTERNAL",
            key_manager: "CUSTOMER",
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: [SYMMETRIC_DEFAULT],
            multi_region: false,
        },
    })
}

/// One page of `ids` (sorted): at most `limit` (1 to 1000, default 100) after `marker`.
fn page(
    s: &Service,
    c: &Caller,
    op: &str,
    ids: Vec<String>,
    req: &ListIn,
    now: u64,
) -> Result<(Vec<String>, Option<String>), OpError> {
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid(s, c, op, "Limit must be 1 to 1000", now));
    }
    let start = match &req.marker {
        Some(m) => ids.partition_point(|id| id.as_str() <= m.as_str()),
        None => 0,
    };
    let rest = &ids[start..];
    let taken: Vec<String> = rest.iter().take(limit as usize).cloned().collect();
    let next = (rest.len() > taken.len())
        .then(|| taken.last().cloned())
        .flatten();
    Ok((taken, next))
}

pub(super) fn list_keys(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<ListKeysOut, OpError> {
    let op = "list-keys";
    let req: ListIn = parse(s, c, op, body, now)?;
    if req.key_id.is_some() {
        return Err(invalid(s, c, op, "ListKeys takes no KeyId", now));
    }
    let owner = namespace(c).ok_or_else(|| OpError::Forbidden("no namespace".into()))?;
    let (ids, next) = page(s, c, op, s.keys_in_scope(c, now)?, &req, now)?;
    Ok(ListKeysOut {
        truncated: next.is_some(),
        next_marker: next,
        keys: ids
            .into_iter()
            .map(|id| KeyListEntry {
                key_arn: key_arn(region, &id, &owner),
                key_id: id,
            })
            .collect(),
    })
}

pub(super) fn list_aliases(
    s: &Service,
    c: &Caller,
    body: &[u8],
    region: &str,
    now: u64,
) -> Result<ListAliasesOut, OpError> {
    let op = "list-aliases";
    let req: ListIn = parse(s, c, op, body, now)?;
    let owner = namespace(c).ok_or_else(|| OpError::Forbidden("no namespace".into()))?;
    let mut ids = s.keys_in_scope(c, now)?;
    if let Some(k) = &req.key_id {
        let wanted = resolve(s, c, op, k, region, now)?;
        ids.retain(|id| *id == wanted);
    }
    let (ids, next) = page(s, c, op, ids, &req, now)?;
    Ok(ListAliasesOut {
        truncated: next.is_some(),
        next_marker: next,
        aliases: ids
            .into_iter()
            .map(|id| AliasListEntry {
                alias_name: format!("alias/{id}"),
                alias_arn: arn::alias_arn(region, &owner, &id),
                target_key_id: id,
            })
            .collect(),
    })
}
