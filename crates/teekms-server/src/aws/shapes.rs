//! The AWS KMS API's requests and answers, in AWS's shapes (PascalCase JSON; unknown
//! fields refused).

use serde::{Deserialize, Serialize};
use teekms_core::api::{B64, SecretB64};
use teekms_core::context::EncryptionContext;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct Recipient {
    pub(super) key_encryption_algorithm: String,
    pub(super) attestation_document: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct EncryptIn {
    pub(super) key_id: String,
    pub(super) plaintext: SecretB64,
    #[serde(default)]
    pub(super) encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    pub(super) encryption_algorithm: Option<String>,
    #[serde(default)]
    pub(super) grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    pub(super) dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct EncryptOut {
    pub(super) ciphertext_blob: B64,
    pub(super) key_id: String,
    pub(super) encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DecryptIn {
    pub(super) ciphertext_blob: B64,
    #[serde(default)]
    pub(super) encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    pub(super) key_id: Option<String>,
    #[serde(default)]
    pub(super) encryption_algorithm: Option<String>,
    #[serde(default)]
    pub(super) recipient: Option<Recipient>,
    #[serde(default)]
    pub(super) grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    pub(super) dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DecryptOut {
    pub(super) key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ciphertext_for_recipient: Option<B64>,
    pub(super) encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct ReEncryptIn {
    pub(super) ciphertext_blob: B64,
    pub(super) destination_key_id: String,
    #[serde(default)]
    pub(super) source_encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    pub(super) source_key_id: Option<String>,
    #[serde(default)]
    pub(super) destination_encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    pub(super) source_encryption_algorithm: Option<String>,
    #[serde(default)]
    pub(super) destination_encryption_algorithm: Option<String>,
    #[serde(default)]
    pub(super) grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    pub(super) dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ReEncryptOut {
    pub(super) ciphertext_blob: B64,
    pub(super) source_key_id: String,
    pub(super) key_id: String,
    pub(super) source_encryption_algorithm: &'static str,
    pub(super) destination_encryption_algorithm: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct GenerateDataKeyIn {
    pub(super) key_id: String,
    #[serde(default)]
    pub(super) encryption_context: Option<EncryptionContext>,
    #[serde(default)]
    pub(super) number_of_bytes: Option<u32>,
    #[serde(default)]
    pub(super) key_spec: Option<String>,
    #[serde(default)]
    pub(super) recipient: Option<Recipient>,
    #[serde(default)]
    pub(super) grant_tokens: Option<Vec<String>>,
    #[serde(default)]
    pub(super) dry_run: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GenerateDataKeyOut {
    pub(super) ciphertext_blob: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ciphertext_for_recipient: Option<B64>,
    pub(super) key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct GenerateRandomIn {
    #[serde(default)]
    pub(super) number_of_bytes: Option<u32>,
    #[serde(default)]
    pub(super) custom_key_store_id: Option<String>,
    #[serde(default)]
    pub(super) recipient: Option<Recipient>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GenerateRandomOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plaintext: Option<SecretB64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ciphertext_for_recipient: Option<B64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DescribeKeyIn {
    pub(super) key_id: String,
    #[serde(default)]
    pub(super) grant_tokens: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeKeyOut {
    pub(super) key_metadata: KeyMetadata,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub(super) aws_account_id: String,
    pub(super) key_id: String,
    pub(super) arn: String,
    pub(super) creation_date: f64,
    pub(super) enabled: bool,
    pub(super) description: &'static str,
    pub(super) key_usage: &'static str,
    pub(super) key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) deletion_date: Option<f64>,
    pub(super) origin: &'static str,
    pub(super) key_manager: &'static str,
    pub(super) customer_master_key_spec: &'static str,
    pub(super) key_spec: &'static str,
    pub(super) encryption_algorithms: [&'static str; 1],
    pub(super) multi_region: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct ListIn {
    #[serde(default)]
    pub(super) limit: Option<u32>,
    #[serde(default)]
    pub(super) marker: Option<String>,
    /// ListAliases only.
    #[serde(default)]
    pub(super) key_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KeyListEntry {
    pub(super) key_id: String,
    pub(super) key_arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListKeysOut {
    pub(super) keys: Vec<KeyListEntry>,
    pub(super) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) next_marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AliasListEntry {
    pub(super) alias_name: String,
    pub(super) alias_arn: String,
    pub(super) target_key_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListAliasesOut {
    pub(super) aliases: Vec<AliasListEntry>,
    pub(super) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) next_marker: Option<String>,
}
