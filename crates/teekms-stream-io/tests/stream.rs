//! The streaming format: round trips of every size around chunk boundaries, and every
//! kind of tampering the format must detect.

use proptest::prelude::*;
use teekms_core::stream::{Header, StreamError};
use teekms_core::{DataKey, KeyId};
use teekms_stream_io::{decrypt, encrypt};

fn seal(dek: &DataKey, data: &[u8], chunk_log2: u8) -> Vec<u8> {
    let header = Header::new(KeyId::new("k").unwrap(), 1, chunk_log2);
    let mut out = Vec::new();
    encrypt(dek, &header, data, &mut out).unwrap();
    out
}

fn open(dek: &DataKey, data: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    decrypt(dek, data, &mut out).map(|_| out)
}

const HEADER_LEN: usize = 8 + 4 + 1 + 8 + 32;

#[test]
fn sizes_around_chunk_boundaries_round_trip() {
    let dek = DataKey::generate();
    let cs: usize = 1 << 12;
    for len in [
        0,
        1,
        cs - 1,
        cs,
        cs + 1,
        2 * cs,
        33 * cs,
        33 * cs + 7,
        70 * cs,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let sealed = seal(&dek, &data, 12);
        let chunks = len.div_ceil(cs).max(1);
        assert_eq!(sealed.len(), HEADER_LEN + len + 16 * chunks, "len {len}");
        assert_eq!(open(&dek, &sealed).unwrap(), data, "len {len}");
    }
}

#[test]
fn tampering_is_detected() {
    let dek = DataKey::generate();
    let cs = 1 << 12;
    let data = vec![5u8; 3 * cs + 100];
    let sealed = seal(&dek, &data, 12);
    let unit = cs + 16;
    // Any flipped byte, header included.
    for pos in [
        0,
        9,
        12,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + unit + 3,
        sealed.len() - 1,
    ] {
        let mut bad = sealed.clone();
        bad[pos] ^= 1;
        assert!(open(&dek, &bad).is_err(), "byte {pos}");
    }
    // Truncation at a chunk boundary (the new last chunk was sealed as not-last) and inside one.
    assert!(open(&dek, &sealed[..HEADER_LEN + 2 * unit]).is_err());
    assert!(open(&dek, &sealed[..sealed.len() - 1]).is_err());
    assert!(open(&dek, &sealed[..HEADER_LEN]).is_err());
    // Extension.
    let mut longer = sealed.clone();
    longer.extend_from_slice(&[0; 17]);
    assert!(open(&dek, &longer).is_err());
    // Reordering two full chunks.
    let mut swapped = sealed.clone();
    let (a, b) = (HEADER_LEN, HEADER_LEN + unit);
    let first = sealed[a..a + unit].to_vec();
    swapped[a..a + unit].copy_from_slice(&sealed[b..b + unit]);
    swapped[b..b + unit].copy_from_slice(&first);
    assert!(open(&dek, &swapped).is_err());
    // Splicing: a chunk from another file under the same key.
    let other = seal(&dek, &data, 12);
    let mut spliced = sealed.clone();
    spliced[a..a + unit].copy_from_slice(&other[a..a + unit]);
    assert!(open(&dek, &spliced).is_err());
    // The wrong key.
    assert!(matches!(
        open(&DataKey::generate(), &sealed),
        Err(StreamError::Authentication(0))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..20_000), log2 in 12u8..14) {
        let dek = DataKey::generate();
        prop_assert_eq!(open(&dek, &seal(&dek, &data, log2)).unwrap(), data);
    }

    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = open(&DataKey::generate(), &data);
    }
}

/// The positional-read file path produces and accepts exactly what the streaming path does.
#[test]
fn file_path_matches_stream_path() {
    let dek = DataKey::generate();
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 4096, 4097, 40_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let plain = dir.path().join("p");
        std::fs::write(&plain, &data).unwrap();
        let header = Header::new(KeyId::new("k").unwrap(), 3, 12);
        let mut via_file = Vec::new();
        teekms_stream_io::encrypt_file(
            &dek,
            &header,
            &std::fs::File::open(&plain).unwrap(),
            &mut via_file,
        )
        .unwrap();
        let mut via_stream = Vec::new();
        encrypt(&dek, &header, &data[..], &mut via_stream).unwrap();
        assert_eq!(via_file, via_stream, "len {len}");
        let sealed = dir.path().join("c");
        std::fs::write(&sealed, &via_file).unwrap();
        let mut out = Vec::new();
        let h =
            teekms_stream_io::decrypt_file(&dek, &std::fs::File::open(&sealed).unwrap(), &mut out)
                .unwrap();
        assert_eq!((out, h.key_version), (data, 3));
        // Truncated at a chunk boundary: refused by the file path too.
        if len > 4096 {
            std::fs::write(&sealed, &via_file[..via_file.len() - (len - 4096) - 16]).unwrap();
            assert!(
                teekms_stream_io::decrypt_file(
                    &dek,
                    &std::fs::File::open(&sealed).unwrap(),
                    Vec::new()
                )
                .is_err()
            );
        }
    }
}

/// Over many chunks, done by several workers out of order, both paths write exactly the
/// chunks before the first one that fails, in order, and name that one.
#[test]
fn both_paths_stop_at_the_first_failing_chunk() {
    let dek = DataKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200 * 4096).map(|i| (i % 251) as u8).collect();
    let header = Header::new(KeyId::new("k").unwrap(), 1, 12);
    let mut sealed = Vec::new();
    encrypt(&dek, &header, &data[..], &mut sealed).unwrap();
    let header_len = header.encode().len();
    let chunk_at = |i: usize| header_len + i * (4096 + 16);
    for i in [170, 150] {
        sealed[chunk_at(i) + 7] ^= 1;
        let path = dir.path().join("c");
        std::fs::write(&path, &sealed).unwrap();
        let mut from_file = Vec::new();
        let file_err = teekms_stream_io::decrypt_file(
            &dek,
            &std::fs::File::open(&path).unwrap(),
            &mut from_file,
        )
        .unwrap_err();
        let mut streamed = Vec::new();
        let stream_err = decrypt(&dek, &sealed[..], &mut streamed).unwrap_err();
        for (how, err, out) in [
            ("file", file_err, from_file),
            ("stream", stream_err, streamed),
        ] {
            assert!(
                matches!(err, StreamError::Authentication(n) if n == i as u64),
                "{how}: {err}"
            );
            assert_eq!(
                out,
                data[..i * 4096],
                "{how}: the chunks before chunk {i}, and nothing else"
            );
        }
    }
}
