//! Fixed-size byte strings written as lowercase hex in JSON and TOML.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not the hex of a fixed-size byte string.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// Uppercase digits where one spelling (lowercase) is required.
    #[error("hex must be lowercase")]
    Uppercase,
    /// Another length than `2N` characters.
    #[error("expected {expected} hex characters, found {found}")]
    Length {
        /// `2N`.
        expected: usize,
        /// The string's length.
        found: usize,
    },
    /// A character that is not a hex digit.
    #[error("not hex: {0}")]
    NotHex(#[source] hex::FromHexError),
}

/// `N` bytes that serialize as exactly `2N` lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> HexBytes<N> {
    /// Parses exactly `2N` lowercase hex characters: one value, one spelling, so an
    /// altered byte in a signed document can never decode to the same value.
    pub fn parse(s: &str) -> Result<Self, HexError> {
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(HexError::Uppercase);
        }
        Self::parse_any_case(s)
    }

    /// Parses exactly `2N` hex characters of either case (for hand-written files).
    pub fn parse_any_case(s: &str) -> Result<Self, HexError> {
        if s.len() != 2 * N {
            return Err(HexError::Length {
                expected: 2 * N,
                found: s.len(),
            });
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).map_err(HexError::NotHex)?;
        Ok(HexBytes(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

/// Lowercase hex of `bytes`. Written into one buffer: `hex::encode` builds its string a
/// character at a time, and fingerprints and audit entries are made on every request.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> fmt::Display for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl<const N: usize> Serialize for HexBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("lowercase hex", |s: &str| HexBytes::parse(s)))
    }
}

/// Reads a string in place (no copy of it is made) and converts it with `.1`; `.0` says
/// what is expected.
struct StrVisitor<F>(&'static str, F);

impl<T, M: fmt::Display, F: FnOnce(&str) -> Result<T, M>> serde::de::Visitor<'_> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        (self.1)(s).map_err(E::custom)
    }
}

/// Serde helpers for variable-length byte strings as standard base64.
pub mod base64_bytes {
    use base64::Engine;
    use base64::display::Base64Display;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer};

    use super::StrVisitor;

    /// Writes bytes as standard base64, straight into the output: no base64 copy of
    /// them (often a secret) is left behind in freed memory.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(v, &STANDARD))
    }

    /// Reads standard base64 (padded, no whitespace), decoded from the input in place.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(StrVisitor("standard base64", |s: &str| {
            STANDARD
                .decode(s.as_bytes())
                .map_err(|e| format!("not standard base64: {e}"))
        }))
    }
}
