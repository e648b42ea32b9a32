//! Whether the node is alive and ready to serve, for load balancers and service
//! managers: unauthenticated, cheap, never audited.

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;

/// One check of readiness.
#[derive(Debug, Serialize)]
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
        let store = match self.reader().audit_last() {
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
        checks.insert("store", store);
        checks.insert("collateral", self.collateral_check(now));
        let status = if checks.values().all(|c| c.ok) {
            "ready"
        } else {
            "not_ready"
        };
        Health { status, checks }
    }

    fn collateral_check(&self, now: u64) -> Check {
        let Some(value) = self.platform.collateral() else {
            return Check {
                ok: true,
                detail: "none: this TEE's evidence carries no collateral".into(),
            };
        };
        let files: teekms_attest::collateral::CollateralFiles = match serde_json::from_value(value)
        {
            Ok(f) => f,
            Err(e) => {
                return Check {
                    ok: false,
                    detail: format!("the node's collateral does not parse: {e}"),
                };
            }
        };
        let Some(until) = files.expires_at() else {
            return Check {
                ok: true,
                detail: "no file states an end of validity".into(),
            };
        };
        let warn = self.settings.collateral_warn_days.saturating_mul(86_400);
        let days_left = until.saturating_sub(now) / 86_400;
        Check {
            ok: until >= now.saturating_add(warn),
            detail: format!(
                "valid until {until} (Unix seconds), {days_left} days from now; --collateral-warn is {} days",
                self.settings.collateral_warn_days
            ),
        }
    }
}
