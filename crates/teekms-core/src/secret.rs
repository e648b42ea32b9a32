//! Data keys: 256-bit secrets, their file format and their key check value.

use std::fmt;

use zeroize::Zeroizing;

use crate::CoreError;

/// Label of the key check value derivation.
pub const KCV_LABEL: &[u8] = b"teekms/v1/key-check-value";

/// A 256-bit data key (DEK). Zeroized on drop; never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::random_bytes(k.as_mut());
        DataKey(k)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(arr)))
    }

    /// The raw key. Handle with care: never log or format it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the data-key file format: 64 lowercase hex characters and one newline.
    pub fn from_file_text(text: &[u8]) -> Result<DataKey, CoreError> {
        let body = text
            .strip_suffix(b"\n")
            .ok_or(CoreError::InvalidDataKeyFile)?;
        if body.len() != 64 || !body.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CoreError::InvalidDataKeyFile);
        }
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(body, k.as_mut()).map_err(|_| CoreError::InvalidDataKeyFile)?;
        Ok(DataKey(k))
    }

    /// The data-key file format.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex::encode(self.0.as_ref()));
        s.push('\n');
        s
    }

    /// The 16-byte key Gramine's encrypted files take (`/dev/attestation/keys/NAME`):
    /// HKDF-SHA256 of this key (salt `teekms/v1/gramine-key`), first 16 bytes.
    pub fn gramine_key(&self) -> Zeroizing<[u8; 16]> {
        let full = crate::hkdf32(b"teekms/v1/gramine-key", self.expose(), &[]);
        let mut out = Zeroizing::new([0u8; 16]);
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The key check value: identifies the key without revealing it.
    pub fn kcv(&self) -> Kcv {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.as_ref());
        let tag = aws_lc_rs::hmac::sign(&key, KCV_LABEL);
        teekms_attest::hexbytes::HexBytes(tag.as_ref()[..8].try_into().expect("8 of 32 bytes"))
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &DataKey) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_ref(), other.0.as_ref()).is_ok()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(kcv={})", self.kcv())
    }
}

/// Key check value: the first 8 bytes of HMAC-SHA256(key, [`KCV_LABEL`]).
pub type Kcv = teekms_attest::hexbytes::HexBytes<8>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn file_format_round_trips(bytes in any::<[u8; 32]>()) {
            let k = DataKey::from_bytes(&bytes).unwrap();
            let back = DataKey::from_file_text(k.to_file_text().as_bytes()).unwrap();
            prop_assert!(back.ct_eq(&k));
        }
    }

    #[test]
    fn file_format_is_strict() {
        let good = format!("{}\n", "ab".repeat(32));
        assert!(DataKey::from_file_text(good.as_bytes()).is_ok());
        for bad in [
            "ab".repeat(32),
            format!("{}\n", "AB".repeat(32)),
            format!("{}\n\n", "ab".repeat(32)),
            format!("{}\n", "ab".repeat(31)),
            format!(" {}\n", "ab".repeat(32)),
        ] {
            assert!(DataKey::from_file_text(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_material() {
        let k = DataKey::from_bytes(&[0xab; 32]).unwrap();
        assert!(!format!("{k:?}").contains("abab"));
    }
}
