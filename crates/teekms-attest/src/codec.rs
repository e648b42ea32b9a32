//! The canonical binary encoding that every signed or hashed teekms structure uses.
//!
//! Fields are written in a fixed order: integers big-endian, byte strings and text with a
//! 4-byte big-endian length prefix. A [`Reader`] rejects short input and, through
//! [`Reader::finish`], trailing bytes, so one value has exactly one encoding.

/// Builds a canonical encoding.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts an encoding with a domain-separation label (written length-prefixed).
    pub fn with_label(label: &[u8]) -> Writer {
        let mut w = Writer::default();
        w.bytes(label);
        w
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("encoded fields are far below 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// Appends an optional byte string: a presence byte, then the bytes if present.
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(b) => self.u8(1).bytes(b),
        }
    }

    /// The encoding so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Why a canonical encoding did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input is truncated")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// A field holds a value outside its allowed range.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// Reads a canonical encoding, strictly.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `input`.
    pub fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { rest: input }
    }

    /// Takes exactly `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::Invalid("length exceeds the field's limit"));
        }
        self.take(len)
    }

    /// Reads a length-prefixed byte string that must be exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        b.try_into()
            .map_err(|_| DecodeError::Invalid("wrong length for a fixed-size field"))
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(max)?).map_err(|_| DecodeError::Invalid("not UTF-8"))
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(a in any::<u64>(), b in proptest::collection::vec(any::<u8>(), 0..300), s in ".{0,40}") {
            let mut w = Writer::with_label(b"label");
            w.u64(a).bytes(&b).str(&s);
            let enc = w.finish();
            let mut r = Reader::new(&enc);
            prop_assert_eq!(r.bytes(16).unwrap(), b"label");
            prop_assert_eq!(r.u64().unwrap(), a);
            prop_assert_eq!(r.bytes(300).unwrap(), &b[..]);
            prop_assert_eq!(r.str(200).unwrap(), s.as_str());
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.bytes(32).and_then(|_| r.u64());
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[0, 0, 0, 0, 9]);
        assert_eq!(r.bytes(4).unwrap(), b"");
        assert_eq!(r.finish(), Err(DecodeError::Trailing(1)));
    }
}
