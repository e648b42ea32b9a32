//! The stored form of audit entries (spec/audit-v1.md, "Stored form"): compact binary,
//! about 40 % of the bytes of the JSON an entry is shown and exported as. The MAC and
//! chain are over the canonical bytes, so the stored form can change without touching
//! them; entries stored as JSON by earlier versions are still read.
//!
//! Layout: `0x01`, `u64 seq` (big-endian), varint `time`, packed `operation`, optional
//! packed `owner`, optional packed `key_id`, optional varint `key_version`, packed
//! `outcome`, packed `caller`, 32 bytes `prev`, 32 bytes `mac`. An optional field is a
//! byte 0 or 1, then the field; a varint is LEB128, shortest form only. A packed string
//! is a run of segments ended by `0x02`: `0x00, u16 length, UTF-8 text`; `0x01, 32
//! bytes` — a run of exactly 64 lowercase hex digits (fingerprints, hashes) stored as
//! the bytes it spells; or, after the owner field, `0x03` — a run equal to the owner
//! (an owner's own requests name it twice).

use teekms_attest::codec::{DecodeError, Reader};
use teekms_attest::hexbytes::HexBytes;

use super::{AuditDraft, AuditEntry};

/// The first byte of the compact form (JSON starts with `{`).
const COMPACT: u8 = 0x01;
const TEXT: u8 = 0x00;
const HEX64: u8 = 0x01;
const END: u8 = 0x02;
const OWNER: u8 = 0x03;
/// The longest text segment (a string longer than this is cut into several).
const SEGMENT_MAX: usize = u16::MAX as usize;

/// `entry` in its stored form.
pub fn encode(entry: &AuditEntry) -> Vec<u8> {
    let d = &entry.draft;
    let mut out = Vec::with_capacity(160 + d.outcome.len() + d.caller.len());
    out.push(COMPACT);
    out.extend_from_slice(&entry.seq.to_be_bytes());
    varint(&mut out, d.time);
    pack(&mut out, &d.operation, None);
    let owner = d.owner.as_deref();
    for field in [owner, d.key_id.as_deref()] {
        match field {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                pack(&mut out, s, None);
            }
        }
    }
    match d.key_version {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            varint(&mut out, v);
        }
    }
    let owner = owner.filter(|o| is_hex64(o.as_bytes()));
    pack(&mut out, &d.outcome, owner);
    pack(&mut out, &d.caller, owner);
    out.extend_from_slice(&entry.prev.0);
    out.extend_from_slice(&entry.mac.0);
    out
}

/// An entry as stored: the compact form, or the JSON of earlier versions.
pub fn decode(bytes: &[u8]) -> Result<AuditEntry, String> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Some(&COMPACT) => decode_compact(&bytes[1..]).map_err(|e| e.to_string()),
        _ => Err("neither the compact form nor JSON".into()),
    }
}

fn decode_compact(bytes: &[u8]) -> Result<AuditEntry, DecodeError> {
    let mut r = Reader::new(bytes);
    let seq = r.u64()?;
    let time = read_varint(&mut r)?;
    let operation = unpack(&mut r, None)?;
    let owner = optional(&mut r, |r| unpack(r, None))?;
    let key_id = optional(&mut r, |r| unpack(r, None))?;
    let key_version = optional(&mut r, read_varint)?;
    let hex_owner = owner.as_deref().filter(|o| is_hex64(o.as_bytes()));
    let outcome = unpack(&mut r, hex_owner)?;
    let caller = unpack(&mut r, hex_owner)?;
    let prev = HexBytes(r.array()?);
    let mac = HexBytes(r.array()?);
    r.finish()?;
    Ok(AuditEntry {
        seq,
        draft: AuditDraft {
            time,
            operation,
            owner,
            key_id,
            key_version,
            outcome,
            caller,
        },
        prev,
        mac,
    })
}

fn optional<T>(
    r: &mut Reader<'_>,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => read(r).map(Some),
        _ => Err(DecodeError::Invalid(
            "an optional field's marker is not 0 or 1",
        )),
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_hex64(b: &[u8]) -> bool {
    b.len() == 64 && b.iter().all(|c| is_lower_hex(*c))
}

/// Appends `v` as LEB128.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 `u64` in its shortest form (one value, one encoding).
fn read_varint(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = r.u8()?;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(DecodeError::Invalid("a varint overflows 64 bits"));
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(DecodeError::Invalid("a varint is not in its shortest form"));
            }
            return Ok(v);
        }
    }
    Err(DecodeError::Invalid("a varint overflows 64 bits"))
}

/// Appends `s` packed: text, with every run of exactly 64 lowercase hex digits as the
/// 32 bytes it spells, or as a reference to `owner` when it is that run.
fn pack(out: &mut Vec<u8>, s: &str, owner: Option<&str>) {
    let b = s.as_bytes();
    let (mut i, mut text_from) = (0, 0);
    while i < b.len() {
        if !is_lower_hex(b[i]) {
            i += 1;
            continue;
        }
        let run_end = i + b[i..].iter().take_while(|c| is_lower_hex(**c)).count();
        if run_end - i == 64 {
            push_text(out, &s[text_from..i]);
            if owner == Some(&s[i..run_end]) {
                out.push(OWNER);
            } else {
                out.push(HEX64);
                let mut raw = [0u8; 32];
                hex::decode_to_slice(&b[i..run_end], &mut raw).expect("64 hex digits");
                out.extend_from_slice(&raw);
            }
            text_from = run_end;
        }
        i = run_end;
    }
    push_text(out, &s[text_from..]);
    out.push(END);
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(SEGMENT_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(TEXT);
        out.extend_from_slice(&(cut as u16).to_be_bytes());
        out.extend_from_slice(&rest.as_bytes()[..cut]);
        rest = &rest[cut..];
    }
}

fn unpack(r: &mut Reader<'_>, owner: Option<&str>) -> Result<String, DecodeError> {
    let mut s = String::new();
    loop {
        match r.u8()? {
            TEXT => {
                let len = u16::from_be_bytes(r.array()?) as usize;
                let text = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| DecodeError::Invalid("a text segment is not UTF-8"))?;
                s.push_str(text);
            }
            HEX64 => s.push_str(&hex::encode(r.array::<32>()?)),
            OWNER => s.push_str(owner.ok_or(DecodeError::Invalid(
                "a reference to the owner where there is none",
            ))?),
            END => return Ok(s),
            _ => return Err(DecodeError::Invalid("unknown segment of a packed string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(owner: Option<String>, caller: String, outcome: String) -> AuditEntry {
        AuditEntry {
            seq: 7,
            draft: AuditDraft {
                time: 1_796_212_609,
                operation: "encrypt".into(),
                owner,
                key_id: Some("db".into()),
                key_version: Some(3),
                outcome,
                caller,
            },
            prev: HexBytes([1; 32]),
            mac: HexBytes([2; 32]),
        }
    }

    #[test]
    fn a_typical_entry_takes_less_than_half_its_json() {
        let fp = "ab".repeat(32);
        let e = entry(Some(fp.clone()), format!("owner:{fp}"), "ok".into());
        let json = serde_json::to_vec(&e).unwrap();
        let compact = encode(&e);
        assert!(
            compact.len() * 2 <= json.len(),
            "{} vs {}",
            compact.len(),
            json.len()
        );
        assert_eq!(decode(&compact).unwrap(), e);
        assert_eq!(decode(&json).unwrap(), e);
    }

    #[test]
    fn malformed_stored_forms_are_refused() {
        let e = entry(None, "anonymous".into(), "denied: no".into());
        let good = encode(&e);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        assert!(decode(b"\x05").is_err());
    }

    #[test]
    fn varints_have_one_encoding() {
        for v in [0, 1, 127, 128, 1_796_212_609, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(read_varint(&mut Reader::new(&out)).unwrap(), v);
        }
        for bad in [
            &[0x80, 0x00][..],
            &[0xff; 10][..],
            &[0x80; 11][..],
            &[0x80][..],
        ] {
            assert!(read_varint(&mut Reader::new(bad)).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_entry_round_trips(
            owner in proptest::option::of("[0-9a-f]{0,70}"),
            caller in "(owner:|access-key:|workload:|[a-fA-F0-9:+ ]){0,8}[0-9a-f]{0,130}.{0,20}",
            outcome in ".{0,80}",
        ) {
            let e = entry(owner, caller, outcome);
            prop_assert_eq!(decode(&encode(&e)).unwrap(), e);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}
