//! The owner's verification policy: a TOML file of `[[accept]]` entries.
//!
//! Evidence is accepted if any entry admits it. Unknown keys, malformed values and keys
//! that do not apply to an entry's TEE are errors, so a typo can never widen a policy.

use serde::Deserialize;

use crate::hexbytes::HexBytes;
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    accept: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    tee: String,
    sim_root: Option<String>,
    measurement: Option<String>,
}

impl Policy {
    /// Parses a policy from TOML text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError::Syntax(format!(
                "policy is larger than {MAX_POLICY_LEN} bytes"
            )));
        }
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_owned()))?;
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

    /// TOML text for this policy (what `Policy::from_toml` reads back).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            match e {
                AcceptEntry::Sim {
                    sim_root,
                    measurement,
                } => {
                    out.push_str("[[accept]]\ntee = \"sim\"\n");
                    out.push_str(&format!("sim_root = \"{}\"\n", hex::encode(sim_root)));
                    if let Some(m) = measurement {
                        out.push_str(&format!("measurement = \"{}\"\n", hex::encode(m)));
                    }
                }
            }
        }
        out
    }
}

fn resolve(e: RawEntry) -> Result<AcceptEntry, String> {
    let tee = TeeKind::parse(&e.tee)
        .ok_or_else(|| format!("unknown tee {:?} (expected sim, sgx, tdx or snp)", e.tee))?;
    match tee {
        TeeKind::Sim => {
            let sim_root = e
                .sim_root
                .ok_or("a sim entry must pin `sim_root` (see `teekms sim root`)")?;
            let sim_root =
                HexBytes::<32>::parse_any_case(&sim_root).map_err(|m| format!("sim_root: {m}"))?;
            let measurement = e
                .measurement
                .map(|m| {
                    HexBytes::<48>::parse_any_case(&m).map_err(|m| format!("measurement: {m}"))
                })
                .transpose()?;
            Ok(AcceptEntry::Sim {
                sim_root: sim_root.0,
                measurement: measurement.map(|m| m.0),
            })
        }
        other => {
            if e.sim_root.is_some() {
                return Err(format!("`sim_root` does not apply to tee = \"{other}\""));
            }
            Err(format!(
                "verification of {other} evidence is not supported by this version of teekms"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rejects_unknown_keys_and_bad_values() {
        for bad in [
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{ROOT}\"\nallow_evrything = true\n"),
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{}\"\n", &ROOT[2..]),
            "[[accept]]\ntee = \"sim\"\n".to_string(),
            "[[accept]]\ntee = \"qemu\"\n".to_string(),
            "[[accept]\n".to_string(),
            "".to_string(),
            format!("[other]\nx = 1\n[[accept]]\ntee = \"sim\"\nsim_root = \"{ROOT}\"\n"),
        ] {
            assert!(Policy::from_toml(&bad).is_err(), "accepted: {bad}");
        }
    }
}
