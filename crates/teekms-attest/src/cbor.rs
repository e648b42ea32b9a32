//! The small part of CBOR (RFC 8949) that RA-TLS evidence uses: unsigned integers, byte
//! and text strings, arrays, maps and tags, definite lengths only. Decoding is strict
//! (shortest-form lengths, no trailing bytes, bounded depth and size): it reads untrusted
//! certificate extensions.

/// A decoded item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Major type 0.
    Uint(u64),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Item>),
    /// Major type 5, in encoded order.
    Map(Vec<(Item, Item)>),
    /// Major type 6.
    Tag(u64, Box<Item>),
}

const MAX_DEPTH: usize = 8;
const MAX_ITEMS: u64 = 1024;

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

impl Item {
    /// Encodes in the shortest form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Item::Uint(n) => head(out, 0, *n),
            Item::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Item::Text(t) => {
                head(out, 3, t.len() as u64);
                out.extend_from_slice(t.as_bytes());
            }
            Item::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.encode_into(out);
                }
            }
            Item::Map(pairs) => {
                head(out, 5, pairs.len() as u64);
                for (k, v) in pairs {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Item::Tag(t, inner) => {
                head(out, 6, *t);
                inner.encode_into(out);
            }
        }
    }

    /// Decodes exactly one item filling `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Item, CborError> {
        let mut r = Decoder { bytes, pos: 0 };
        let item = r.item(0)?;
        if r.pos != bytes.len() {
            return Err(CborError::Trailing);
        }
        Ok(item)
    }

    /// The value of text key `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Item> {
        match self {
            Item::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Item::Text(t) if t == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why bytes are not one CBOR item of the subset teekms reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// An item runs past the end of the bytes.
    #[error("CBOR item runs past the end")]
    Truncated,
    /// Bytes follow the item.
    #[error("trailing bytes after the CBOR item")]
    Trailing,
    /// A length or value not in its shortest encoding (one value, one spelling).
    #[error("CBOR length not in shortest form")]
    NotShortest,
    /// An indefinite length, or a reserved one.
    #[error("indefinite or reserved CBOR lengths are not accepted")]
    Indefinite,
    /// Nested deeper than the decoder goes.
    #[error("CBOR nested too deep")]
    TooDeep,
    /// A length or container larger than the decoder takes.
    #[error("CBOR length or container too large")]
    TooLarge,
    /// Text that is not UTF-8.
    #[error("CBOR text is not UTF-8")]
    NotUtf8,
    /// A major type teekms does not read (negative integers, floats, ...).
    #[error("CBOR major type {0} is not accepted here")]
    MajorType(u8),
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(CborError::Truncated)?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let b = self.take(1)?[0];
        let (major, info) = (b >> 5, b & 0x1f);
        let n = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.take(1)?[0]);
                if v < 24 {
                    return Err(CborError::NotShortest);
                }
                v
            }
            25 => {
                let v = u64::from(u16::from_be_bytes(self.take(2)?.try_into().expect("2")));
                if v <= 0xff {
                    return Err(CborError::NotShortest);
                }
                v
            }
            26 => {
                let v = u64::from(u32::from_be_bytes(self.take(4)?.try_into().expect("4")));
                if v <= 0xffff {
                    return Err(CborError::NotShortest);
                }
                v
            }
            27 => {
                let v = u64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                if v <= 0xffff_ffff {
                    return Err(CborError::NotShortest);
                }
                v
            }
            _ => return Err(CborError::Indefinite),
        };
        Ok((major, n))
    }

    fn item(&mut self, depth: usize) -> Result<Item, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let (major, n) = self.head()?;
        let len = |n: u64| usize::try_from(n).map_err(|_| CborError::TooLarge);
        Ok(match major {
            0 => Item::Uint(n),
            2 => Item::Bytes(self.take(len(n)?)?.to_vec()),
            3 => Item::Text(
                String::from_utf8(self.take(len(n)?)?.to_vec()).map_err(|_| CborError::NotUtf8)?,
            ),
            4 | 5 if n > MAX_ITEMS => return Err(CborError::TooLarge),
            4 => Item::Array(
                (0..n)
                    .map(|_| self.item(depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            5 => Item::Map(
                (0..n)
                    .map(|_| Ok((self.item(depth + 1)?, self.item(depth + 1)?)))
                    .collect::<Result<_, CborError>>()?,
            ),
            6 => Item::Tag(n, Box::new(self.item(depth + 1)?)),
            other => return Err(CborError::MajorType(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_strictness() {
        let item = Item::Tag(
            60000,
            Box::new(Item::Array(vec![
                Item::Bytes(vec![1; 300]),
                Item::Map(vec![(Item::Text("k".into()), Item::Uint(70000))]),
            ])),
        );
        let bytes = item.encode();
        assert_eq!(
            &bytes[..4],
            &[0xd9, 0xea, 0x60, 0x82],
            "tag 60000, array of 2"
        );
        assert_eq!(Item::decode(&bytes).unwrap(), item);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Item::decode(&trailing).is_err());
        assert!(Item::decode(&[0x18, 0x01]).is_err(), "non-shortest length");
        assert!(Item::decode(&[0x5f]).is_err(), "indefinite length");
        assert!(
            Item::decode(&[0x5a, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "past the end"
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(item) = Item::decode(&bytes) {
                prop_assert_eq!(item.encode(), bytes);
            }
        }
    }
}
