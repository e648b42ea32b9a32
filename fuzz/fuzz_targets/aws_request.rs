#![no_main]
//! What an AWS KMS API caller controls before any key is touched: the `KeyId` (bare id,
//! alias, ARN) and the encryption context's encoding. Parsing never panics; a parsed
//! reference names a plain key id; contexts encode within the associated-data limit or
//! are refused.
use libfuzzer_sys::fuzz_target;
use teekms_core::arn::parse_key_ref;
use teekms_core::context::{EncryptionContext, context_aad};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = parse_key_ref(text) {
        assert!(!r.key_id.is_empty() && !r.key_id.contains('/'));
    }
    if let Ok(context) = serde_json::from_str::<EncryptionContext>(text)
        && let Ok(aad) = context_aad(&context)
    {
        assert!(aad.len() <= teekms_core::envelope::MAX_AAD);
        assert_eq!(aad.is_empty(), context.is_empty());
    }
});
