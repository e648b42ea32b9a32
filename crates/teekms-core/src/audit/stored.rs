//! The stored form of audit entries (spec/audit-v1.md, "Stored form"): compact binary,
//! less than half the bytes of the JSON an entry is shown and exported as. The MAC and
//! chain are over the canonical bytes, so the stored form can change without touching
//! them; entries stored as JSON by earlier versions are still read.
//!
//! Layout: `0x01`, `u64 seq`, `u64 time`, packed `operation`, optional packed `owner`,
//! optional packed `key_id`, optional `u64 key_version`, packed `outcome`, packed
//! `caller`, 32 bytes `prev`, 32 bytes `mac` (integers big-endian; an optional field is
//! a byte 0 or 1, then the field). A packed string is a run of segments ended by `0x02`:
//! `0x00, u16 length, UTF-8 text` or `0x01, 32 bytes` — a run of exactly 64 lowercase
//! hex digits (fingerprints, hashes) stored as the bytes it spells.

use teekms_attest::codec::{DecodeError, Reader};
use teekms_attest::hexbytes::HexBytes;

use super::{AuditDraft, AuditEntry};

/// The first byte of the compact form (JSON starts with `{`).
const COMPACT: u8 = 0x01;
const TEXT: u8 = 0x00;
const HEX64: u8 = 0x01;
const END: u8 = 0x02;
/// The longest text segment (a string longer than this is cut into several).
const SEGMENT_MAX: usize = u16::MAX as usize;

/// `entry` in its stored form.
pub fn encode(entry: &AuditEntry) -> Vec<u8> {
    let d = &entry.draft;
    let mut out = Vec::with_capacity(160 + d.outcome.len() + d.caller.len());
    out.push(COMPACT);
    out.extend_from_slice(&entry.seq.to_be_bytes());
    out.extend_from_slice(&d.time.to_be_bytes());
    pack(&mut out, &d.operation);
    for field in [&d.owner, &d.key_id] {
        match field {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                pack(&mut out, s);
            }
        }
    }
    match d.key_version {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    pack(&mut out, &d.outcome);
    pack(&mut out, &d.caller);
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
    let time = r.u64()?;
    let operation = unpack(&mut r)?;
    let owner = optional(&mut r, unpack)?;
    let key_id = optional(&mut r, unpack)?;
    let key_version = optional(&mut r, |r| r.u64())?;
    let outcome = unpack(&mut r)?;
    let caller = unpack(&mut r)?;
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

/// Appends `s` packed: text, with every run of exactly 64 lowercase hex digits as the
/// 32 bytes it spells.
fn pack(out: &mut Vec<u8>, s: &str) {
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
            out.push(HEX64);
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&b[i..run_end], &mut raw).expect("64 hex digits");
            out.extend_from_slice(&raw);
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

fn unpack(r: &mut Reader<'_>) -> Result<String, DecodeError> {
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
