//! Refusals of anonymous callers, counted instead of logged one by one.
//!
//! A caller with no credentials learns nothing from a key endpoint (one answer, 401,
//! whether or not the key exists) and must not be able to grow an owner's audit log or
//! the store: its refusals are counted per source address and minute, and each minute's
//! counts become one audit entry per source (in no owner's log) when the minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use teekms_core::audit::AuditDraft;

use super::*;

/// Most sources counted in one minute; beyond them, refusals are counted under "other"
/// (a flood from many addresses costs memory bounded by this).
const MAX_SOURCES: usize = 1024;

/// The counts of the current minute.
#[derive(Default)]
pub struct AnonymousRefusals {
    minute: Mutex<(u64, HashMap<Option<IpAddr>, u64>)>,
}

/// One audit entry's worth: a source and how many refusals it had in a minute.
pub(super) struct Tally {
    minute: u64,
    counts: Vec<(Option<IpAddr>, u64)>,
}

impl AnonymousRefusals {
    /// Counts a refusal from `source` in `minute`; returns the previous minute's counts
    /// when this is the first refusal of a later minute.
    pub(super) fn refused(&self, source: Option<IpAddr>, minute: u64) -> Option<Tally> {
        let mut guard = self.minute.lock().expect("anonymous lock");
        let (current, counts) = &mut *guard;
        let done = if *current != minute && !counts.is_empty() {
            let counts = std::mem::take(counts).into_iter().collect();
            Some(Tally {
                minute: *current,
                counts,
            })
        } else {
            None
        };
        *current = minute;
        let key = if counts.len() < MAX_SOURCES || counts.contains_key(&source) {
            source
        } else {
            None
        };
        *counts.entry(key).or_default() += 1;
        done
    }

    /// The counts so far (the node is stopping: they are logged now).
    pub(super) fn take(&self) -> Option<Tally> {
        let mut guard = self.minute.lock().expect("anonymous lock");
        let (minute, counts) = &mut *guard;
        (!counts.is_empty()).then(|| Tally {
            minute: *minute,
            counts: std::mem::take(counts).into_iter().collect(),
        })
    }
}

impl Service {
    /// Counts one refusal of an anonymous caller (logging the previous minute's counts
    /// when a new minute begins).
    pub(super) fn count_anonymous(&self, caller: &Caller) {
        if let Some(done) = self.anonymous.refused(caller.source, super::now_minute()) {
            self.audit_anonymous(done);
        }
    }

    /// Records a minute's anonymous refusals: one entry per source, in no owner's log.
    pub(super) fn audit_anonymous(&self, tally: Tally) {
        for (source, n) in tally.counts {
            let draft = AuditDraft {
                time: tally.minute * 60,
                operation: "anonymous-refused".into(),
                owner: None,
                key_id: None,
                key_version: None,
                outcome: format!(
                    "denied: {n} requests without credentials (or with a token that does not verify) in this minute"
                ),
                caller: match source {
                    Some(ip) => format!("anonymous:{ip}"),
                    None => "anonymous:other".into(),
                },
            };
            // Not awaited: the request being refused may run on a runtime thread.
            let queued = self.writer.submit_detached(Job {
                writes: Vec::new(),
                audit: draft,
                on_conflict: "error",
            });
            if queued.is_err() {
                tracing::warn!(
                    "the anonymous refusals of a minute were not logged: the writer is gone"
                );
            }
        }
    }

    /// Logs the counts of the minute in progress (at shutdown).
    pub(crate) fn flush_anonymous(&self) {
        if let Some(t) = self.anonymous.take() {
            self.audit_anonymous(t);
        }
    }
}
