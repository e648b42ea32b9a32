//! teekms for `age` (spec/age-plugin-v1.md): recipients `age1teekms1…` that carry a key
//! version's age public key (derived from its material inside the TEE, certified by
//! the node and checked by `teekms age recipient` against the owner's policy), and
//! identities `AGE-PLUGIN-TEEKMS-1…` that name a node, its CA file and an access key's
//! token file (the secret stays in that file). Encryption needs no node; decryption asks
//! the node, under the key's policy, and is audited.

#![deny(missing_docs)]

use teekms_core::OwnerPublicKey;

pub mod node;

/// The plugin's name (`age-plugin-teekms`, `age1teekms1…`, `AGE-PLUGIN-TEEKMS-1…`).
pub const PLUGIN_NAME: &str = "teekms";
/// The stanza tag of files encrypted to a teekms recipient.
pub const STANZA_TAG: &str = "teekms";
/// Format version byte of recipients and identities.
const FORMAT: u8 = 1;

/// What a recipient carries: whose key, which version, and its age public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The key's owner.
    pub owner: OwnerPublicKey,
    /// The key id.
    pub key_id: String,
    /// The key version whose age key this is.
    pub key_version: u64,
    /// The X25519 public key (spec/age-plugin-v1.md).
    pub public_key: [u8; 32],
}

impl Recipient {
    /// The bytes inside `age1teekms1…`: format, owner, version, key id, public key.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.owner.0);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.push(u8::try_from(self.key_id.len()).expect("key ids are at most 128 bytes"));
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.public_key);
        out
    }

    /// Parses [`Recipient::to_bytes`] strictly.
    pub fn from_bytes(b: &[u8]) -> Option<Recipient> {
        let (&format, rest) = b.split_first()?;
        if format != FORMAT || rest.len() < 32 + 8 + 1 {
            return None;
        }
        let owner = OwnerPublicKey(rest[..32].try_into().ok()?);
        let key_version = u64::from_be_bytes(rest[32..40].try_into().ok()?);
        let n = usize::from(rest[40]);
        let rest = &rest[41..];
        if rest.len() != n + 32 {
            return None;
        }
        let key_id = std::str::from_utf8(&rest[..n]).ok()?;
        teekms_core::KeyId::new(key_id).ok()?;
        Some(Recipient {
            owner,
            key_id: key_id.to_owned(),
            key_version,
            public_key: rest[n..].try_into().ok()?,
        })
    }

    /// `age1teekms1…`.
    pub fn encode(&self) -> String {
        bech32_encode(&format!("age1{PLUGIN_NAME}"), &self.to_bytes())
    }
}

/// What an identity names: the node, the CA file to trust it by, and the access key's
/// token file (paths, so the secret stays in that file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `https://HOST:PORT`.
    pub node: String,
    /// The CA file (`teekms ca export`).
    pub ca_file: String,
    /// The access key's token file.
    pub token_file: String,
}

impl Identity {
    /// The bytes inside `AGE-PLUGIN-TEEKMS-1…`: format, then three length-prefixed strings.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        for s in [&self.node, &self.ca_file, &self.token_file] {
            out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Parses [`Identity::to_bytes`] strictly.
    pub fn from_bytes(b: &[u8]) -> Option<Identity> {
        let (&format, mut rest) = b.split_first()?;
        if format != FORMAT {
            return None;
        }
        let mut take = || {
            let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            let s = std::str::from_utf8(rest.get(2..2 + n)?).ok()?.to_owned();
            rest = &rest[2 + n..];
            Some(s)
        };
        let (node, ca_file, token_file) = (take()?, take()?, take()?);
        rest.is_empty().then_some(Identity {
            node,
            ca_file,
            token_file,
        })
    }

    /// `AGE-PLUGIN-TEEKMS-1…`.
    pub fn encode(&self) -> String {
        bech32_encode(&format!("age-plugin-{PLUGIN_NAME}-"), &self.to_bytes()).to_uppercase()
    }
}

/// Bech32 (BIP 173 checksum, no length limit, as age's strings are).
fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    let hrp = bech32::Hrp::parse(hrp).expect("a valid human-readable part");
    bech32::encode::<bech32::Bech32>(hrp, data).expect("bech32 encodes")
}

/// Decodes a bech32 string with the human-readable part `hrp` (either case).
pub fn bech32_decode(hrp: &str, text: &str) -> Option<Vec<u8>> {
    let checked = bech32::primitives::decode::CheckedHrpstring::new::<bech32::Bech32>(text).ok()?;
    if !checked.hrp().as_str().eq_ignore_ascii_case(hrp) {
        return None;
    }
    Some(checked.byte_iter().collect())
}

/// The stanza's arguments: owner fingerprint, key id, key version, HPKE enc (base64).
pub fn stanza_args(r: &Recipient, enc: &[u8]) -> Vec<String> {
    use base64::Engine;
    vec![
        r.owner.fingerprint(),
        r.key_id.clone(),
        r.key_version.to_string(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(enc),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_and_identities_round_trip_and_parse_strictly() {
        let r = Recipient {
            owner: OwnerPublicKey([7; 32]),
            key_id: "db".into(),
            key_version: 3,
            public_key: [9; 32],
        };
        let text = r.encode();
        assert!(text.starts_with("age1teekms1"), "{text}");
        let bytes = bech32_decode("age1teekms", &text).unwrap();
        assert_eq!(Recipient::from_bytes(&bytes), Some(r.clone()));
        let mut cut = bytes.clone();
        cut.pop();
        assert_eq!(Recipient::from_bytes(&cut), None);
        let i = Identity {
            node: "https://127.0.0.1:8443".into(),
            ca_file: "/tmp/ca.pem".into(),
            token_file: "/tmp/app.token".into(),
        };
        let text = i.encode();
        assert!(text.starts_with("AGE-PLUGIN-TEEKMS-1"), "{text}");
        let bytes = bech32_decode("age-plugin-teekms-", &text).unwrap();
        assert_eq!(Identity::from_bytes(&bytes), Some(i));
        assert_eq!(Identity::from_bytes(&bytes[..bytes.len() - 1]), None);
        // A changed character breaks the checksum.
        let mut broken = text.into_bytes();
        let last = broken.len() - 1;
        broken[last] = if broken[last] == b'Q' { b'P' } else { b'Q' };
        assert!(
            bech32_decode("age-plugin-teekms-", std::str::from_utf8(&broken).unwrap()).is_none()
        );
    }
}
