//! What this owner was shown of each cluster's epoch (spec/freshness-v1.md, "What owners
//! keep"): a node restarted on an old copy of its store can fool itself, not the owners
//! who hold newer stamps.
//!
//! Every verified connection the CLI makes is watched; after the command, the newest
//! stamp of each is verified against the node's attested key and compared with what is
//! kept for its cluster. A newer one is kept; an older epoch, or another hash for the
//! epoch kept, ends the command with exit 1.

use std::path::PathBuf;
use std::sync::Mutex;

use teekms_client::{StampWatch, VerifiedConnection};
use teekms_core::freshness::{Acknowledged, STAMP_HEADER, Stamp, Verdict, compare};

use crate::failure::Failure;
use crate::paths;

/// Largest record file read.
const MAX_RECORD: u64 = 4096;

static WATCHED: Mutex<Vec<StampWatch>> = Mutex::new(Vec::new());

/// Watches the stamps of a verified connection for the end of the command.
pub fn watch(conn: &VerifiedConnection) {
    WATCHED.lock().expect("watch lock").push(conn.stamps());
}

/// What the check after a command found wrong.
pub enum Stale {
    /// A node showed less than was acknowledged before: always reported.
    RolledBack(Failure),
    /// No stamp, or one that does not verify: reported if the command succeeded.
    Unproven(Failure),
}

/// Where the records are: `TEEKMS_FRESHNESS_DIR`, or `$XDG_DATA_HOME/teekms/freshness`.
pub fn dir() -> Result<PathBuf, Failure> {
    match std::env::var_os("TEEKMS_FRESHNESS_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(paths::data_dir()?.join("freshness")),
    }
}

fn record_path(cluster: &[u8; 32]) -> Result<PathBuf, Failure> {
    Ok(dir()?.join(format!("{}.json", hex::encode(cluster))))
}

fn read_record(cluster: &[u8; 32]) -> Result<Option<Acknowledged>, Failure> {
    let path = record_path(cluster)?;
    if !path.exists() {
        return Ok(None);
    }
    let bytes = paths::read(&path, "freshness record", MAX_RECORD)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Failure::usage(format!(
            "the freshness record {} does not parse: {e}",
            path.display()
        ))
        .hint("it is what this owner was shown of the cluster's epoch; restore it from a backup rather than delete it")
    })
}

fn write_record(cluster: &[u8; 32], record: &Acknowledged) -> Result<(), Failure> {
    let path = record_path(cluster)?;
    let dir = dir()?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(record).expect("records serialize") + "\n";
    paths::write_atomic(&path, text.as_bytes(), 0o600)
}

/// Checks every watched connection's newest stamp and keeps the newer ones.
pub fn check_after_command(now: u64) -> Result<(), Stale> {
    let watched = std::mem::take(&mut *WATCHED.lock().expect("watch lock"));
    for w in watched {
        let node = w.node().statement().node_id;
        let stamp = match w.latest() {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Stale::Unproven(Failure::rejected(format!(
                    "node {node} sent no epoch stamp ({STAMP_HEADER} header): it is of an older version, or something between rewrote its answers"
                ))));
            }
            Err(e) => {
                return Err(Stale::Unproven(Failure::rejected(format!(
                    "node {node}: {e}"
                ))));
            }
        };
        check(&stamp, now)?;
    }
    Ok(())
}

fn check(stamp: &Stamp, now: u64) -> Result<(), Stale> {
    let known = read_record(&stamp.cluster).map_err(Stale::Unproven)?;
    let node = hex::encode(stamp.node_id);
    match compare(known.as_ref(), &stamp.epoch) {
        Verdict::Fresh { newer: false } => Ok(()),
        Verdict::Fresh { newer: true } => {
            write_record(&stamp.cluster, &Acknowledged::of(stamp, now)).map_err(Stale::Unproven)
        }
        Verdict::RolledBack => {
            let k = known.expect("a rollback is against a record");
            Err(Stale::RolledBack(
                Failure::rejected(format!(
                    "node {node} is at epoch {}, but {} acknowledged epoch {} to you on {}: its store was rolled back",
                    stamp.epoch.number,
                    who(&k, &node),
                    k.epoch,
                    teekms_attest::format_rfc3339(k.at)
                ))
                .hint(rollback_hint()),
            ))
        }
        Verdict::Forked => {
            let k = known.expect("a fork is against a record");
            Err(Stale::RolledBack(
                Failure::rejected(format!(
                    "node {node} shows epoch {} with hash {}, but {} acknowledged that epoch with hash {} to you on {}: its store was rolled back and changed since (a fork)",
                    stamp.epoch.number,
                    hex::encode(stamp.epoch.hash),
                    who(&k, &node),
                    hex::encode(k.hash.0),
                    teekms_attest::format_rfc3339(k.at)
                ))
                .hint(rollback_hint()),
            ))
        }
    }
}

fn who(k: &Acknowledged, node: &str) -> String {
    let by = hex::encode(k.node_id.0);
    if by == node {
        "it".into()
    } else {
        format!("node {by} of its cluster")
    }
}

fn rollback_hint() -> String {
    format!(
        "do not trust what this node says until its operator restores the newest copy of its store; `teekms freshness show` prints what you were shown (kept in {})",
        dir().map_or_else(|_| "the freshness dir".into(), |d| d.display().to_string())
    )
}

/// `teekms freshness show`: the highest (E, H) this owner recorded, per cluster.
pub fn show(json: bool) -> crate::failure::CmdResult {
    let dir = dir()?;
    let mut rows = Vec::new();
    if dir.exists() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Failure::usage(format!("cannot read {}: {e}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(cluster) = name.strip_suffix(".json") else {
                continue;
            };
            let mut id = [0u8; 32];
            if hex::decode_to_slice(cluster, &mut id).is_err() {
                continue;
            }
            if let Some(k) = read_record(&id)? {
                rows.push((cluster.to_owned(), k));
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if json {
        for (cluster, k) in &rows {
            let line = serde_json::json!({
                "cluster": cluster,
                "epoch": k.epoch,
                "hash": k.hash,
                "node_id": k.node_id,
                "at": teekms_attest::format_rfc3339(k.at),
                "signature": k.signature,
            });
            println!("{line}");
        }
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "no epoch recorded yet in {}: it is kept from the first command that reaches a node",
            dir.display()
        );
        return Ok(());
    }
    for (cluster, k) in &rows {
        println!("cluster  {cluster}");
        println!("epoch    {}", k.epoch);
        println!("hash     {}", hex::encode(k.hash.0));
        println!("node     {}", hex::encode(k.node_id.0));
        println!("shown    {}", teekms_attest::format_rfc3339(k.at));
        println!();
    }
    Ok(())
}
