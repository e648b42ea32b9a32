//! Pure verification of TEE evidence for teekms.
//!
//! This crate parses and verifies evidence (Intel DCAP quotes for SGX and TDX, AMD
//! SEV-SNP reports, and the simulated `sim` TEE), checks that the
//! evidence's report data binds a node statement, and appraises the result against an
//! owner's verification policy. It does no I/O and reads no clock: bytes, policy and
//! `now` come in, typed verdicts and the [`VerifiedNode`] proof type come out.
//!
//! It does not produce evidence (that is `teekms-platform`, inside the TEE) and it does
//! not hold secrets.

#![deny(missing_docs)]

/// Not public API: the CBOR subset that RA-TLS evidence uses, reachable only so that
/// tests and fuzz targets can build and read it.
#[doc(hidden)]
pub mod cbor;
pub mod codec;
pub mod collateral;
pub mod danger;
pub mod dcap;
mod dcap_collateral;
mod dcap_unrevoked;
pub mod document;
mod error;
pub mod evidence;
pub mod hexbytes;
mod pem;
pub mod policy;
pub mod ratls;
pub mod sim;
pub mod snp;
pub mod statement;
mod verify;

pub use document::AttestationDocument;
pub use error::{EvidenceError, PolicyError};
pub use policy::Policy;
pub use statement::NodeStatement;
pub use verify::{Freshness, Verdict, VerifiedNode, VerifiedSim, verify_document};

/// The TEE kinds teekms knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// teekms' own simulated TEE: development only, never trusted silently.
    Sim,
    /// Intel SGX (DCAP quote v3).
    Sgx,
    /// Intel TDX (DCAP quote v4/v5).
    Tdx,
    /// AMD SEV-SNP attestation report.
    Snp,
}

impl TeeKind {
    /// The lowercase name used in policies, statements and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::Sim => "sim",
            TeeKind::Sgx => "sgx",
            TeeKind::Tdx => "tdx",
            TeeKind::Snp => "snp",
        }
    }

    /// Parses a TEE name as written in policies and statements.
    pub fn parse(name: &str) -> Option<TeeKind> {
        match name {
            "sim" => Some(TeeKind::Sim),
            "sgx" => Some(TeeKind::Sgx),
            "tdx" => Some(TeeKind::Tdx),
            "snp" => Some(TeeKind::Snp),
            _ => None,
        }
    }
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> [u8; 64] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, data);
    d.as_ref().try_into().expect("SHA-512 is 64 bytes")
}

/// Verifies an Ed25519 signature; `true` only for a valid signature by `public_key`.
pub fn ed25519_verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Parses an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (as Intel collateral
/// writes it) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let rest = match rest.strip_prefix('.') {
        Some(f) => f.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if rest != "Z" {
        return None;
    }
    unix_from_civil([y, mo, d, h, mi, se])
}

/// Unix seconds of a UTC civil time `[year, month, day, hour, minute, second]`; `None`
/// for a field out of range or a time before 1970.
pub fn unix_from_civil([y, mo, d, h, mi, se]: [i64; 6]) -> Option<u64> {
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&se)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// Unix seconds as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`, for times a person reads in
/// messages (the inverse of [`parse_rfc3339`]).
pub fn format_rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // The civil date from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn formatted_times_parse_back() {
        for t in [
            0,
            1_369_353_600,
            1_798_780_372,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(format_rfc3339(1_369_353_600), "2013-05-24T00:00:00Z");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(super::parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::parse_rfc3339("2025-07-19T10:01:17Z"),
            Some(1_752_919_277)
        );
        assert_eq!(
            super::parse_rfc3339("2025-06-19T10:56:11.123Z"),
            Some(1_750_330_571)
        );
        assert_eq!(super::parse_rfc3339("2025-06-19 10:56:11Z"), None);
        assert_eq!(super::parse_rfc3339("2025-06-19T10:56:11+01:00"), None);
    }
}
