//! Key ids: the owner-chosen names of data keys.

use std::fmt;

use crate::CoreError;

/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 128;

/// A validated key id: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

/// Quoted, as a string would be: messages say `key "db"`, not `key KeyId("db")`.
impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl KeyId {
    /// Validates a key id.
    pub fn new(s: &str) -> Result<KeyId, CoreError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_KEY_ID_LEN
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(CoreError::InvalidKeyId(s.chars().take(160).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in ["a", "db-key.v2_1", &"x".repeat(128)] {
            assert!(KeyId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "ключ", &"x".repeat(129)] {
            assert!(KeyId::new(bad).is_err(), "{bad}");
        }
    }
}
