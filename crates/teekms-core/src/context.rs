//! Encryption contexts: string maps bound to a ciphertext as its associated data
//! (spec/envelope-v1.md, "Encryption context").
//!
//! AWS KMS binds an `EncryptionContext` map to a ciphertext; teekms binds one canonical
//! encoding of the same map as the envelope's associated data, so a ciphertext made
//! through the AWS API opens through the native API and the CLI (`--context k=v`), and
//! offline with the owner's copy of the key, and the other way round.

use std::collections::BTreeMap;

use teekms_attest::codec::Writer;

use crate::CoreError;

/// Domain-separation label of the encoding.
pub const CONTEXT_LABEL: &[u8] = b"teekms/v1/encryption-context";

/// An encryption context. A `BTreeMap` orders its keys by their UTF-8 bytes, which is
/// the order the encoding takes.
pub type EncryptionContext = BTreeMap<String, String>;

/// The associated data an encryption context stands for: nothing at all for an absent
/// or empty map (so such a ciphertext is the same as one made with no associated data),
/// else the label, the number of pairs, and each key and value length-prefixed, in the
/// byte order of the keys.
pub fn context_aad(context: &EncryptionContext) -> Result<Vec<u8>, CoreError> {
    if context.is_empty() {
        return Ok(Vec::new());
    }
    if context.keys().any(String::is_empty) {
        return Err(CoreError::InvalidContext(
            "an encryption context key is empty".into(),
        ));
    }
    let count = u32::try_from(context.len())
        .map_err(|_| CoreError::InvalidContext("too many pairs".into()))?;
    let mut w = Writer::with_label(CONTEXT_LABEL);
    w.u32(count);
    for (k, v) in context {
        w.str(k).str(v);
    }
    let out = w.finish();
    if out.len() > crate::envelope::MAX_AAD {
        return Err(CoreError::InvalidContext(format!(
            "its encoding is {} bytes, more than the {} bytes of associated data an envelope takes",
            out.len(),
            crate::envelope::MAX_AAD
        )));
    }
    Ok(out)
}

/// Parses `key=value` (the CLI's `--context`); the value may contain `=`.
pub fn parse_pair(text: &str) -> Result<(String, String), CoreError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(CoreError::InvalidContext(format!(
            "{text:?} is not key=value (a non-empty key, then `=`)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_context_is_no_associated_data() {
        assert!(context_aad(&ctx(&[])).unwrap().is_empty());
    }

    #[test]
    fn order_of_insertion_does_not_matter_and_pairs_cannot_be_shifted() {
        let a = context_aad(&ctx(&[("b", "2"), ("a", "1")])).unwrap();
        let b = context_aad(&ctx(&[("a", "1"), ("b", "2")])).unwrap();
        assert_eq!(a, b);
        // Length prefixes keep "a"="bc" apart from "ab"="c".
        assert_ne!(
            context_aad(&ctx(&[("a", "bc")])).unwrap(),
            context_aad(&ctx(&[("ab", "c")])).unwrap()
        );
        let mut expected = Vec::new();
        expected.extend_from_slice(&(CONTEXT_LABEL.len() as u32).to_be_bytes());
        expected.extend_from_slice(CONTEXT_LABEL);
        expected.extend_from_slice(&2u32.to_be_bytes());
        for s in ["a", "1", "b", "2"] {
            expected.extend_from_slice(&1u32.to_be_bytes());
            expected.extend_from_slice(s.as_bytes());
        }
        assert_eq!(a, expected);
        // The example of spec/envelope-v1.md.
        assert_eq!(
            hex::encode(&a),
            "0000001c7465656b6d732f76312f656e6372797074696f6e2d636f6e74657874000000020000000161000000013100000001620000000132"
        );
    }

    #[test]
    fn empty_keys_and_oversized_contexts_are_refused() {
        assert!(context_aad(&ctx(&[("", "x")])).is_err());
        let big = "v".repeat(9000);
        assert!(context_aad(&ctx(&[("k", &big)])).is_err());
        assert_eq!(
            parse_pair("purpose=a=b").unwrap(),
            ("purpose".into(), "a=b".into())
        );
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("novalue").is_err());
    }
}
