//! AWS-style names of keys (the AWS KMS API, spec/aws-kms-v1.md): a key is
//! `arn:aws:kms:<region>:<account>:key/<key id>`, its one alias `alias/<key id>`, and the
//! 12-digit account stands for the key's owner.

use crate::OwnerPublicKey;

/// Domain-separation label of the account derivation.
pub const ACCOUNT_LABEL: &[u8] = b"teekms/v1/aws-account";

/// The 12-digit AWS account id that stands for `owner`: the first 8 bytes of
/// SHA-256(label ‖ owner public key), big-endian, modulo 10^12, zero-padded.
pub fn account_id(owner: &OwnerPublicKey) -> String {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(ACCOUNT_LABEL);
    h.update(&owner.0);
    let n = u64::from_be_bytes(h.finish().as_ref()[..8].try_into().expect("8 bytes"));
    format!("{:012}", n % 1_000_000_000_000)
}

/// The ARN of `owner`'s key `key_id` in `region`.
pub fn key_arn(region: &str, owner: &OwnerPublicKey, key_id: &str) -> String {
    resource_arn(region, owner, "key/", key_id)
}

/// The ARN of a key's alias (`alias/<key id>`).
pub fn alias_arn(region: &str, owner: &OwnerPublicKey, key_id: &str) -> String {
    resource_arn(region, owner, "alias/", key_id)
}

/// `arn:aws:kms:<region>:<account>:<kind><key id>`, put together without the
/// formatting machinery (one is in every answer of the AWS KMS API).
fn resource_arn(region: &str, owner: &OwnerPublicKey, kind: &str, key_id: &str) -> String {
    let account = account_id(owner);
    let mut arn = String::with_capacity(32 + region.len() + kind.len() + key_id.len());
    for part in ["arn:aws:kms:", region, ":", &account, ":", kind, key_id] {
        arn.push_str(part);
    }
    arn
}

/// A key reference as AWS clients send it (`KeyId`), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The region an ARN names (`None`: a bare id or alias).
    pub region: Option<&'a str>,
    /// The account an ARN names.
    pub account: Option<&'a str>,
    /// The key id.
    pub key_id: &'a str,
}

/// Parses `<id>`, `alias/<id>`, `arn:aws:kms:<region>:<account>:key/<id>` and
/// `…:alias/<id>`. `None` for anything else (another partition or service, a malformed
/// ARN).
pub fn parse_key_ref(text: &str) -> Option<KeyRef<'_>> {
    let Some(arn) = text.strip_prefix("arn:") else {
        let key_id = text.strip_prefix("alias/").unwrap_or(text);
        return (!key_id.is_empty() && !key_id.contains('/')).then_some(KeyRef {
            region: None,
            account: None,
            key_id,
        });
    };
    let mut parts = arn.splitn(5, ':');
    let (partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if partition != "aws"
        || service != "kms"
        || region.is_empty()
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let key_id = resource
        .strip_prefix("key/")
        .or_else(|| resource.strip_prefix("alias/"))?;
    (!key_id.is_empty() && !key_id.contains('/')).then_some(KeyRef {
        region: Some(region),
        account: Some(account),
        key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_twelve_digits_and_follow_the_owner() {
        let a = OwnerPublicKey([1; 32]);
        let b = OwnerPublicKey([2; 32]);
        assert_eq!(account_id(&a).len(), 12);
        assert!(account_id(&a).bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(account_id(&a), account_id(&a));
        assert_ne!(account_id(&a), account_id(&b));
        let arn = key_arn("us-east-1", &a, "db");
        assert_eq!(
            arn,
            format!("arn:aws:kms:us-east-1:{}:key/db", account_id(&a))
        );
    }

    #[test]
    fn every_form_of_key_reference_parses_and_nothing_else() {
        let a = OwnerPublicKey([1; 32]);
        for text in [
            "db".to_string(),
            "alias/db".to_string(),
            key_arn("eu-west-1", &a, "db"),
            alias_arn("eu-west-1", &a, "db"),
        ] {
            assert_eq!(parse_key_ref(&text).unwrap().key_id, "db", "{text}");
        }
        let arn = key_arn("eu-west-1", &a, "db");
        let r = parse_key_ref(&arn).unwrap();
        assert_eq!(r.region, Some("eu-west-1"));
        assert_eq!(r.account, Some(account_id(&a).as_str()));
        for bad in [
            "",
            "alias/",
            "a/b",
            "arn:aws:s3:us-east-1:123456789012:key/db",
            "arn:aws-cn:kms:us-east-1:123456789012:key/db",
            "arn:aws:kms:us-east-1:12345:key/db",
            "arn:aws:kms:us-east-1:123456789012:grant/db",
            "arn:aws:kms::123456789012:key/db",
            "arn:aws:kms:us-east-1:123456789012:key/",
        ] {
            assert!(parse_key_ref(bad).is_none(), "{bad}");
        }
    }
}
