//! The owner's verification policy: a TOML file of `[[accept]]` entries.
//!
//! Evidence is accepted if any entry admits it. Unknown keys, malformed values and keys
//! that do not apply to an entry's TEE are errors, so a typo can never widen a policy.

use serde::Deserialize;

use crate::hexbytes::{HexBytes, HexError};
use crate::{PolicyError, TeeKind};

/// Largest policy file this crate parses, in bytes.
pub const MAX_POLICY_LEN: usize = 256 * 1024;

/// A parsed verification policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    entries: Vec<AcceptEntry>,
}

/// One `[[accept]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptEntry {
    /// The simulated TEE: development only.
    Sim {
        /// The sim platform root public key this entry trusts.
        sim_root: [u8; 32],
        /// The executable's SHA-384, when pinned.
        measurement: Option<[u8; 48]>,
    },
    /// Intel SGX enclaves.
    Sgx(Box<SgxEntry>),
    /// Intel TDX trust domains.
    Tdx(Box<TdxEntry>),
    /// AMD SEV-SNP guests.
    Snp(Box<SnpEntry>),
}

/// What every Intel entry shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntelCommon {
    /// Accept debug enclaves / TDs (default false).
    pub allow_debug: bool,
    /// Accepted TCB statuses (default `["UpToDate"]`).
    pub tcb_status: Vec<String>,
    /// Advisories that may apply (default none).
    pub advisory_ids: Vec<String>,
    /// Oldest acceptable collateral (seconds since its issue date), if set.
    pub max_collateral_age: Option<u64>,
}

/// An `[[accept]]` entry for SGX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgxEntry {
    /// Accepted MRENCLAVE values (any, if empty).
    pub mrenclave: Vec<[u8; 32]>,
    /// Required MRSIGNER.
    pub mrsigner: Option<[u8; 32]>,
    /// Required ISVPRODID.
    pub isv_prod_id: Option<u16>,
    /// Lowest accepted ISVSVN.
    pub min_isv_svn: Option<u16>,
    /// Shared Intel fields.
    pub common: IntelCommon,
}

/// An `[[accept]]` entry for TDX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxEntry {
    /// Required MRTD.
    pub mrtd: Option<[u8; 48]>,
    /// Required RTMR0–RTMR3.
    pub rtmr: [Option<[u8; 48]>; 4],
    /// Required MRCONFIGID.
    pub mr_config_id: Option<[u8; 48]>,
    /// Required MROWNER.
    pub mr_owner: Option<[u8; 48]>,
    /// Accept a TD bound to a service TD (default false).
    pub allow_service_td: bool,
    /// Shared Intel fields.
    pub common: IntelCommon,
}

/// A minimum REPORTED_TCB: each given component must be at least this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// FMC SPL (Turin).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: Option<u8>,
    /// TEE SPL.
    pub tee: Option<u8>,
    /// SNP SPL.
    pub snp: Option<u8>,
    /// Microcode SPL.
    pub microcode: Option<u8>,
}

/// An `[[accept]]` entry for SEV-SNP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpEntry {
    /// Required MEASUREMENT.
    pub measurement: Option<[u8; 48]>,
    /// Required HOST_DATA.
    pub host_data: Option<[u8; 32]>,
    /// TCB floor.
    pub min_reported_tcb: Option<MinTcb>,
    /// Required VMPL.
    pub vmpl: Option<u32>,
    /// Accept VLEK-signed reports (default true).
    pub allow_vlek: bool,
    /// Accept guests whose policy allows debugging (default false).
    pub allow_debug: bool,
    /// Oldest acceptable endorsement certificate (seconds since its notBefore), if set.
    pub max_collateral_age: Option<u64>,
}

/// Intel's TCB status strings.
pub const TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    accept: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    tee: String,
    sim_root: Option<String>,
    measurement: Option<String>,
    mrenclave: Option<OneOrMany>,
    mrsigner: Option<String>,
    isv_prod_id: Option<u16>,
    min_isv_svn: Option<u16>,
    mrtd: Option<String>,
    rtmr0: Option<String>,
    rtmr1: Option<String>,
    rtmr2: Option<String>,
    rtmr3: Option<String>,
    mr_config_id: Option<String>,
    mr_owner: Option<String>,
    allow_service_td: Option<bool>,
    host_data: Option<String>,
    min_reported_tcb: Option<MinTcb>,
    vmpl: Option<u32>,
    allow_vlek: Option<bool>,
    allow_debug: Option<bool>,
    tcb_status: Option<Vec<String>>,
    advisory_ids: Option<Vec<String>>,
    max_collateral_age: Option<String>,
}

impl RawEntry {
    /// Names of the keys this entry sets (besides `tee`).
    fn keys_set(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! set {
            ($($f:ident),*) => { $( if self.$f.is_some() { v.push(stringify!($f)); } )* };
        }
        set!(
            sim_root,
            measurement,
            mrenclave,
            mrsigner,
            isv_prod_id,
            min_isv_svn,
            mrtd,
            rtmr0,
            rtmr1,
            rtmr2,
            rtmr3,
            mr_config_id,
            mr_owner,
            allow_service_td,
            host_data,
            min_reported_tcb,
            vmpl,
            allow_vlek,
            allow_debug,
            tcb_status,
            advisory_ids,
            max_collateral_age
        );
        v
    }
}

/// Which keys apply to which TEE.
fn allowed_keys(tee: TeeKind) -> &'static [&'static str] {
    const INTEL: [&str; 4] = [
        "allow_debug",
        "tcb_status",
        "advisory_ids",
        "max_collateral_age",
    ];
    match tee {
        TeeKind::Sim => &["sim_root", "measurement"],
        TeeKind::Sgx => &[
            "mrenclave",
            "mrsigner",
            "isv_prod_id",
            "min_isv_svn",
            INTEL[0],
            INTEL[1],
            INTEL[2],
            INTEL[3],
        ],
        TeeKind::Tdx => &[
            "mrtd",
            "rtmr0",
            "rtmr1",
            "rtmr2",
            "rtmr3",
            "mr_config_id",
            "mr_owner",
            "allow_service_td",
            INTEL[0],
            INTEL[1],
            INTEL[2],
            INTEL[3],
        ],
        TeeKind::Snp => &[
            "measurement",
            "host_data",
            "min_reported_tcb",
            "vmpl",
            "allow_vlek",
            "allow_debug",
            "max_collateral_age",
        ],
    }
}

/// The longest duration teekms accepts anywhere (100 years of 365 days, in seconds):
/// far beyond any waiting period or expiry a key service needs, and far below the point
/// where adding it to a Unix time could wrap.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Why a duration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not digits followed by a unit.
    #[error("{0:?} is not a duration like \"30d\"")]
    Malformed(String),
    /// A unit other than s, m, h or d.
    #[error("{0:?}: the unit must be s, m, h or d")]
    Unit(String),
    /// Longer than [`MAX_DURATION_SECS`] (as written).
    #[error("{0:?} is longer than the limit of 100 years ({MAX_DURATION_SECS}s)")]
    TooLong(String),
    /// Longer than [`MAX_DURATION_SECS`] (in seconds).
    #[error("a duration of {0}s is longer than the limit of 100 years ({MAX_DURATION_SECS}s)")]
    TooLongSecs(u64),
    /// The sum does not fit a Unix time in seconds.
    #[error("{duration}s after {now} is past the end of time teekms can count")]
    PastTheEnd {
        /// The time added to.
        now: u64,
        /// The duration added.
        duration: u64,
    },
}

/// Parses a duration such as `30d`, `12h`, `90m` or `3600s` into seconds, at most
/// [`MAX_DURATION_SECS`].
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let too_long = || DurationError::TooLong(s.to_owned());
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(DurationError::Unit(s.to_owned())),
    };
    if num.is_empty() {
        return Err(DurationError::Malformed(s.to_owned()));
    }
    // Digits that do not fit a u64 are too long, not malformed.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    n.checked_mul(mul)
        .filter(|&secs| secs <= MAX_DURATION_SECS)
        .ok_or_else(too_long)
}

/// `now + duration` (Unix seconds), refused rather than wrapped: the duration must be at
/// most [`MAX_DURATION_SECS`] and the sum must fit.
pub fn time_after(now: u64, duration: u64) -> Result<u64, DurationError> {
    if duration > MAX_DURATION_SECS {
        return Err(DurationError::TooLongSecs(duration));
    }
    now.checked_add(duration)
        .ok_or(DurationError::PastTheEnd { now, duration })
}

/// Why one `[[accept]]` entry of a policy is not valid.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// `tee` names no TEE teekms knows.
    #[error("unknown tee {0:?} (expected sim, sgx, tdx or snp)")]
    UnknownTee(String),
    /// A key that does not apply to the entry's TEE.
    #[error("`{key}` does not apply to tee = \"{tee}\"")]
    NotForTee {
        /// The key.
        key: String,
        /// The entry's TEE.
        tee: TeeKind,
    },
    /// A required value is missing, or a value admits nothing.
    #[error("{0}")]
    Required(&'static str),
    /// A pinned value is not the hex of its size.
    #[error("{field}: {source}")]
    Hex {
        /// The key.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: HexError,
    },
    /// A TCB status Intel does not define.
    #[error("tcb_status: unknown status {0:?} (one of {list})", list = TCB_STATUSES.join(", "))]
    TcbStatus(String),
    /// Not an Intel advisory id.
    #[error("advisory_ids: {0:?} is not an Intel advisory id like \"INTEL-SA-00615\"")]
    Advisory(String),
    /// `max_collateral_age` is not a duration teekms accepts.
    #[error(transparent)]
    Duration(#[from] DurationError),
}

fn hex_field<const N: usize>(
    field: &'static str,
    v: &Option<String>,
) -> Result<Option<[u8; N]>, EntryError> {
    v.as_ref()
        .map(|s| {
            HexBytes::<N>::parse_any_case(s)
                .map(|h| h.0)
                .map_err(|source| EntryError::Hex { field, source })
        })
        .transpose()
}

fn intel_common(e: &RawEntry) -> Result<IntelCommon, EntryError> {
    let tcb_status = e
        .tcb_status
        .clone()
        .unwrap_or_else(|| vec!["UpToDate".into()]);
    for s in &tcb_status {
        if !TCB_STATUSES.contains(&s.as_str()) {
            return Err(EntryError::TcbStatus(s.clone()));
        }
    }
    let advisory_ids = e.advisory_ids.clone().unwrap_or_default();
    for a in &advisory_ids {
        let ok = a
            .strip_prefix("INTEL-SA-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(EntryError::Advisory(a.clone()));
        }
    }
    Ok(IntelCommon {
        allow_debug: e.allow_debug.unwrap_or(false),
        tcb_status,
        advisory_ids,
        max_collateral_age: e
            .max_collateral_age
            .as_deref()
            .map(parse_duration)
            .transpose()?,
    })
}

impl Policy {
    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError::Syntax(format!(
                "policy is larger than {MAX_POLICY_LEN} bytes"
            )));
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            PolicyError::Syntax(match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            })
        })?;
        if raw.accept.is_empty() {
            return Err(PolicyError::Empty);
        }
        let entries = raw
            .accept
            .into_iter()
            .enumerate()
            .map(|(index, e)| resolve(e).map_err(|reason| PolicyError::Entry { index, reason }))
            .collect::<Result<_, _>>()?;
        Ok(Policy { entries })
    }

    /// A policy of one entry given as a JSON object with the keys of an `[[accept]]`
    /// entry (how key policies name the workloads they admit); the same strict checks.
    pub fn from_json_entry(entry: &serde_json::Value) -> Result<Policy, PolicyError> {
        let raw: RawEntry = serde_json::from_value(entry.clone())
            .map_err(|e| PolicyError::Syntax(format!("workload entry: {e}")))?;
        let entry = resolve(raw).map_err(|reason| PolicyError::Entry { index: 0, reason })?;
        Ok(Policy {
            entries: vec![entry],
        })
    }

    /// A policy that accepts exactly one sim root (and optionally one measurement).
    pub fn sim(sim_root: [u8; 32], measurement: Option<[u8; 48]>) -> Policy {
        Policy {
            entries: vec![AcceptEntry::Sim {
                sim_root,
                measurement,
            }],
        }
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[AcceptEntry] {
        &self.entries
    }

    /// The default policy for one real TEE (see [`default_entry`]).
    pub fn default_for(tee: TeeKind) -> Option<Policy> {
        default_entry(tee).map(|e| Policy { entries: vec![e] })
    }

    /// TOML text for the sim entries of this policy (what `Policy::from_toml` reads
    /// back); real-TEE entries are written by hand.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            if let AcceptEntry::Sim {
                sim_root,
                measurement,
            } = e
            {
                out.push_str("[[accept]]\ntee = \"sim\"\n");
                out.push_str(&format!("sim_root = \"{}\"\n", hex::encode(sim_root)));
                if let Some(m) = measurement {
                    out.push_str(&format!("measurement = \"{}\"\n", hex::encode(m)));
                }
            }
        }
        out
    }
}

fn resolve(e: RawEntry) -> Result<AcceptEntry, EntryError> {
    let tee = TeeKind::parse(&e.tee).ok_or_else(|| EntryError::UnknownTee(e.tee.clone()))?;
    let allowed = allowed_keys(tee);
    if let Some(k) = e.keys_set().into_iter().find(|k| !allowed.contains(k)) {
        return Err(EntryError::NotForTee {
            key: k.to_string(),
            tee,
        });
    }
    match tee {
        TeeKind::Sim => {
            let sim_root = hex_field::<32>("sim_root", &e.sim_root)?.ok_or(
                EntryError::Required("a sim entry must pin `sim_root` (see `teekms sim root`)"),
            )?;
            Ok(AcceptEntry::Sim {
                sim_root,
                measurement: hex_field("measurement", &e.measurement)?,
            })
        }
        TeeKind::Sgx => {
            let mrenclave = match &e.mrenclave {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => vec![s.clone()],
                Some(OneOrMany::Many(v)) if v.is_empty() => {
                    return Err(EntryError::Required(
                        "mrenclave: an empty list admits nothing; leave it out instead",
                    ));
                }
                Some(OneOrMany::Many(v)) => v.clone(),
            }
            .iter()
            .map(|s| {
                HexBytes::<32>::parse_any_case(s)
                    .map(|h| h.0)
                    .map_err(|source| EntryError::Hex {
                        field: "mrenclave",
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
            Ok(AcceptEntry::Sgx(Box::new(SgxEntry {
                mrenclave,
                mrsigner: hex_field("mrsigner", &e.mrsigner)?,
                isv_prod_id: e.isv_prod_id,
                min_isv_svn: e.min_isv_svn,
                common: intel_common(&e)?,
            })))
        }
        TeeKind::Tdx => Ok(AcceptEntry::Tdx(Box::new(TdxEntry {
            mrtd: hex_field("mrtd", &e.mrtd)?,
            rtmr: [
                hex_field("rtmr0", &e.rtmr0)?,
                hex_field("rtmr1", &e.rtmr1)?,
                hex_field("rtmr2", &e.rtmr2)?,
                hex_field("rtmr3", &e.rtmr3)?,
            ],
            mr_config_id: hex_field("mr_config_id", &e.mr_config_id)?,
            mr_owner: hex_field("mr_owner", &e.mr_owner)?,
            allow_service_td: e.allow_service_td.unwrap_or(false),
            common: intel_common(&e)?,
        }))),
        TeeKind::Snp => Ok(AcceptEntry::Snp(Box::new(SnpEntry {
            measurement: hex_field("measurement", &e.measurement)?,
            host_data: hex_field("host_data", &e.host_data)?,
            min_reported_tcb: e.min_reported_tcb,
            vmpl: e.vmpl,
            allow_vlek: e.allow_vlek.unwrap_or(true),
            allow_debug: e.allow_debug.unwrap_or(false),
            max_collateral_age: e
                .max_collateral_age
                .as_deref()
                .map(parse_duration)
                .transpose()?,
        }))),
    }
}

/// The default policy for real TEE evidence without a policy file: genuine hardware,
/// TCB `UpToDate` only, no debug, no measurement pins.
pub fn default_entry(tee: TeeKind) -> Option<AcceptEntry> {
    let raw = RawEntry {
        tee: tee.as_str().into(),
        ..RawEntry::default()
    };
    match tee {
        TeeKind::Sim => None,
        _ => resolve(raw).ok(),
    }
}

/// A policy (TOML) admitting what runs on the same real TEE with the same measurement
/// as the evidence whose `claims` are given: SGX MRENCLAVE; TDX MRTD and RTMR0-2
/// (firmware, kernel, command line and initrd; RTMR3 is extended at run time); SNP
/// MEASUREMENT. Everything else keeps the TEE's defaults (TCB status, debug refused).
/// The default cluster policy of a real-TEE node. None for sim or missing claims.
pub fn same_measurement_toml(tee: TeeKind, claims: &serde_json::Value) -> Option<String> {
    let hex_claim = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut out = format!("[[accept]]\ntee = \"{tee}\"\n");
    match tee {
        TeeKind::Sim => return None,
        TeeKind::Sgx => out.push_str(&format!("mrenclave = [\"{}\"]\n", hex_claim("mrenclave")?)),
        TeeKind::Tdx => {
            for name in ["mrtd", "rtmr0", "rtmr1", "rtmr2"] {
                out.push_str(&format!("{name} = \"{}\"\n", hex_claim(name)?));
            }
        }
        TeeKind::Snp => out.push_str(&format!(
            "measurement = \"{}\"\n",
            hex_claim("measurement")?
        )),
    }
    Policy::from_toml(&out).ok().map(|_| out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Any digits and unit: either refused, or a duration within the limit whose
        // value is exactly digits x unit (no wrap), and adding it to any time either fits
        // or is refused.
        #[test]
        fn durations_never_wrap(digits in "[0-9]{1,30}", unit in "[smhdx]?", now: u64) {
            let text = format!("{digits}{unit}");
            match parse_duration(&text) {
                Ok(secs) => {
                    prop_assert!(secs <= MAX_DURATION_SECS);
                    let mul: u128 = match unit.as_str() { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, _ => unreachable!() };
                    prop_assert_eq!(secs as u128, digits.parse::<u128>().unwrap() * mul);
                    match time_after(now, secs) {
                        Ok(t) => prop_assert_eq!(t as u128, now as u128 + secs as u128),
                        Err(_) => prop_assert!(now as u128 + secs as u128 > u64::MAX as u128),
                    }
                }
                Err(e) => prop_assert!(unit.is_empty() || unit == "x" || e.to_string().contains("100 years"), "{}", e),
            }
        }

        #[test]
        fn time_after_is_checked(now: u64, d: u64) {
            match time_after(now, d) {
                Ok(t) => prop_assert!(d <= MAX_DURATION_SECS && t == now + d),
                Err(_) => prop_assert!(d > MAX_DURATION_SECS || now.checked_add(d).is_none()),
            }
        }
    }

    #[test]
    fn toml_errors_say_where() {
        let e = Policy::from_toml("[[accept]]\ntee = \"sgx\"\nmrenclave = 5x\n").unwrap_err();
        assert!(e.to_string().contains("line 3, column 13"), "{e}");
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("é", 1), (1, 1));
    }

    #[test]
    fn the_duration_limit_is_named() {
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION_SECS);
        for text in [
            "36501d",
            "18446744073709551615s",
            "99999999999999999999999s",
            "3153600001s",
        ] {
            let e = parse_duration(text).unwrap_err().to_string();
            assert!(e.contains("limit of 100 years"), "{text}: {e}");
        }
        assert!(
            parse_duration("s")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5w")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
    }

    #[test]
    fn same_measurement_policies_pin_the_measurement() {
        let m48 = "ab".repeat(48);
        let claims = serde_json::json!({"mrenclave": ROOT, "mrtd": m48, "rtmr0": m48, "rtmr1": m48, "rtmr2": m48, "measurement": m48});
        for tee in [TeeKind::Sgx, TeeKind::Tdx, TeeKind::Snp] {
            let text = same_measurement_toml(tee, &claims).unwrap();
            let p = Policy::from_toml(&text).unwrap();
            assert_eq!(p.entries().len(), 1);
            assert!(text.contains(&format!("tee = \"{tee}\"")), "{text}");
        }
        match &Policy::from_toml(&same_measurement_toml(TeeKind::Sgx, &claims).unwrap())
            .unwrap()
            .entries()[0]
        {
            AcceptEntry::Sgx(e) => assert_eq!(e.mrenclave, vec![[0x11; 32]]),
            other => panic!("{other:?}"),
        }
        assert!(same_measurement_toml(TeeKind::Sim, &claims).is_none());
        assert!(same_measurement_toml(TeeKind::Tdx, &serde_json::json!({"mrtd": m48})).is_none());
    }

    const ROOT: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn parses_a_sim_entry() {
        let p = Policy::from_toml(&format!(
            "[[accept]]\ntee = \"sim\"\nsim_root = \"{ROOT}\"\n"
        ))
        .unwrap();
        assert_eq!(p, Policy::sim([0x11; 32], None));
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }

    #[test]
    fn parses_real_tee_entries_with_defaults() {
        let p = Policy::from_toml(&format!(
            "[[accept]]\ntee = \"sgx\"\nmrenclave = [\"{ROOT}\", \"{ROOT}\"]\nmin_isv_svn = 2\n\
             [[accept]]\ntee = \"tdx\"\nrtmr1 = \"{}\"\nmax_collateral_age = \"30d\"\n\
             [[accept]]\ntee = \"snp\"\nvmpl = 0\nmin_reported_tcb = {{ snp = 8, microcode = 115 }}\n",
            "ab".repeat(48)
        ))
        .unwrap();
        let AcceptEntry::Sgx(sgx) = &p.entries()[0] else {
            panic!()
        };
        assert_eq!(sgx.mrenclave.len(), 2);
        assert_eq!(sgx.common.tcb_status, vec!["UpToDate".to_string()]);
        assert!(!sgx.common.allow_debug);
        let AcceptEntry::Tdx(tdx) = &p.entries()[1] else {
            panic!()
        };
        assert_eq!(tdx.common.max_collateral_age, Some(30 * 86_400));
        assert!(!tdx.allow_service_td);
        let AcceptEntry::Snp(snp) = &p.entries()[2] else {
            panic!()
        };
        assert!(snp.allow_vlek && !snp.allow_debug);
        assert_eq!(snp.min_reported_tcb.unwrap().snp, Some(8));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        for bad in [
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{ROOT}\"\nallow_evrything = true\n"),
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{}\"\n", &ROOT[2..]),
            "[[accept]]\ntee = \"sim\"\n".to_string(),
            "[[accept]]\ntee = \"qemu\"\n".to_string(),
            "[[accept]]\ntee = \"sgx\"\nmrtd = \"00\"\n".to_string(),
            "[[accept]]\ntee = \"sgx\"\ntcb_status = [\"Fine\"]\n".to_string(),
            "[[accept]]\ntee = \"tdx\"\nmax_collateral_age = \"3w\"\n".to_string(),
            "[[accept]]\ntee = \"snp\"\ntcb_status = [\"UpToDate\"]\n".to_string(),
            "[[accept]]\ntee = \"snp\"\nmin_reported_tcb = { snp = 300 }\n".to_string(),
            format!("[[accept]]\ntee = \"sgx\"\nsim_root = \"{ROOT}\"\n"),
            "[[accept]\n".to_string(),
            "".to_string(),
            format!("[other]\nx = 1\n[[accept]]\ntee = \"sim\"\nsim_root = \"{ROOT}\"\n"),
        ] {
            assert!(Policy::from_toml(&bad).is_err(), "accepted: {bad}");
        }
    }
}
