//! Whether the node is alive and ready to serve, for load balancers and service
//! managers: unauthenticated, cheap, never audited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::*;

/// How long a store check's answer is reused: anyone may ask for readiness, so asking
/// often must not cost more than one store read a second (on PostgreSQL, one of a few
/// reader connections that key operations need).
const STORE_CHECK_REUSE: Duration = Duration::from_secs(1);

/// What readiness keeps between requests: the last store check, and the collateral's
/// end of validity (the collateral a node serves is fixed when it starts: read once).
#[derive(Default)]
pub struct HealthState {
    store: Mutex<Option<(Instant, Check)>>,
    collateral: std::sync::OnceLock<CollateralEnd>,
}

/// The end of validity of the collateral a node serves.
enum CollateralEnd {
    /// The TEE's evidence carries none (sim, or no collateral configured).
    NoCollateral,
    /// None of its files states an end.
    Unstated,
    /// Its first file stops being valid then (Unix seconds).
    At(u64),
    /// It does not parse.
    Unreadable(String),
}

/// One check of readiness.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The answer of `GET /v1/health` and `GET /v1/ready`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` / `ready`, or `not_ready`.
    pub status: &'static str,
    /// Each check by name.
    pub checks: BTreeMap<&'static str, Check>,
}

impl Health {
    /// Alive: the process answers (nothing else is looked at).
    pub fn alive() -> Health {
        Health {
            status: "ok",
            checks: BTreeMap::new(),
        }
    }

    /// Whether every check passed.
    pub fn ready(&self) -> bool {
        self.checks.values().all(|c| c.ok)
    }
}

impl Service {
    /// Readiness: the sealed state is open (it is, or this service would not exist), the
    /// store answers a read (a round trip on PostgreSQL), and the TEE's collateral, if
    /// it has any, stays valid for `--collateral-warn` more days. Blocks (the store).
    pub fn readiness(&self, now: u64) -> Health {
        let mut checks = BTreeMap::new();
        checks.insert(
            "sealed_state",
            Check {
                ok: true,
                detail: "open".into(),
            },
        );
        let store = self.store_check();
        checks.insert("store", store);
        checks.insert("collateral", self.collateral_check(now));
        checks.insert("freshness", self.freshness_check());
        let status = if checks.values().all(|c| c.ok) {
            "ready"
        } else {
            "not_ready"
        };
        Health { status, checks }
    }

    /// A store read, or the answer of one made in the last second.
    fn store_check(&self) -> Check {
        let mut last = self.health.store.lock().expect("health lock");
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < STORE_CHECK_REUSE
        {
            return check.clone();
        }
        let check = match self.reader().audit_last() {
            Ok(_) => Check {
                ok: true,
                detail: "reachable".into(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "readiness: the store did not answer");
                Check {
                    ok: false,
                    detail: "the store did not answer a read".into(),
                }
            }
        };
        *last = Some((Instant::now(), check.clone()));
        check
    }

    /// Whether the store is at or after what the node acknowledged (spec/freshness-v1.md),
    /// with the node's (E, H).
    fn freshness_check(&self) -> Check {
        let (epoch, alarm) = self.freshness().status();
        let at = format!("epoch {}, hash {}", epoch.number, hex::encode(epoch.hash));
        match alarm.or_else(|| self.freshness().recovering()) {
            None => Check {
                ok: true,
                detail: at,
            },
            Some(alarm) => Check {
                ok: false,
                detail: format!("{alarm} (this node: {at})"),
            },
        }
    }

    /// When the collateral the node serves stops being valid (Unix seconds), if it has
    /// any and states it.
    pub fn collateral_expires_at(&self) -> Option<u64> {
        match self.collateral_end() {
            CollateralEnd::At(t) => Some(*t),
            _ => None,
        }
    }

    /// The end of validity of the collateral the node serves, read and parsed once.
    fn collateral_end(&self) -> &CollateralEnd {
        self.health.collateral.get_or_init(|| {
            let Some(value) = self.platform.collateral() else {
                return CollateralEnd::NoCollateral;
            };
            match serde_json::from_value::<teekms_attest::collateral::CollateralFiles>(value) {
                Ok(files) => files
                    .expires_at()
                    .map_or(CollateralEnd::Unstated, CollateralEnd::At),
                Err(e) => {
                    CollateralEnd::Unreadable(format!("the node's collateral does not parse: {e}"))
                }
            }
        })
    }

    fn collateral_check(&self, now: u64) -> Check {
        let fixed = |ok: bool, detail: &str| Check {
            ok,
            detail: detail.into(),
        };
        let until = match self.collateral_end() {
            CollateralEnd::At(until) => *until,
            CollateralEnd::NoCollateral => {
                return fixed(true, "none: this TEE's evidence carries no collateral");
            }
            CollateralEnd::Unstated => return fixed(true, "no file states an end of validity"),
            CollateralEnd::Unreadable(why) => return fixed(false, why),
        };
        let warn = self.settings.collateral_warn_days.saturating_mul(86_400);
        let days_left = until.saturating_sub(now) / 86_400;
        Check {
            ok: until >= now.saturating_add(warn),
            detail: format!(
                "valid until {} ({days_left} days from now); --collateral-warn is {} days",
                teekms_attest::format_rfc3339(until),
                self.settings.collateral_warn_days
            ),
        }
    }
}
