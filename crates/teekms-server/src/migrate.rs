//! The one-time migration to store format 2: every key has a bound state record and
//! every owner a record of its own.
//!
//! Before format 2 a key's state was stored only once it first changed, so a missing
//! state row meant "as deployed" — and a host that deleted the row of a disabled,
//! rotated or restricted key brought it back enabled, at version 1, with its bundle's
//! policy. From format 2 on the state is written with the key and its absence is
//! damage. A store written before gets, once, the initial state of every key that has
//! none (its version 1 record, never changed: the state it was in) and an empty record
//! for every owner, in one durable job with its audit entry; then the node's own sealed
//! record is marked (see `node::NODE_KEYS_CURRENT`) so that the migration never runs
//! again for it, whatever rows are removed later.

use std::collections::BTreeSet;

use teekms_core::audit::AuditDraft;
use teekms_core::record::DataKeyRecord;
use teekms_core::state::{KeyState, OwnerState};
use teekms_core::{KeyId, SealingKey};
use teekms_store::{Applied, Store, Write};

use crate::ServerError;
use crate::keyring::Keyring;
use crate::node::StoreFormat;
use crate::writer::{Job, Writer};

/// Meta record that marks a store as format 2 (sealed under the cluster key, empty), so
/// that a node new to a shared store knows whether it was migrated.
const STORE_FORMAT: &str = "store-format";
const STORE_FORMAT_KIND: &str = "store-format";
const STORE_FORMAT_REVISION: u64 = 2;

fn format_mark(cluster: &SealingKey) -> Vec<u8> {
    cluster.seal(STORE_FORMAT_KIND, STORE_FORMAT, STORE_FORMAT_REVISION, b"")
}

/// Brings the store to format 2 if the node's record says it may need it. Returns
/// whether the node's record should now be marked current.
pub fn migrate_if_needed(
    keyring: &Keyring,
    store: &mut dyn Store,
    writer: &Writer,
    format: StoreFormat,
    now: u64,
) -> Result<bool, ServerError> {
    // A mark that does not open (altered, or another cluster's) is no mark.
    let marked = match store.get_meta(STORE_FORMAT)? {
        Some(mark) => {
            let opens = keyring
                .cluster()
                .open(
                    STORE_FORMAT_KIND,
                    STORE_FORMAT,
                    STORE_FORMAT_REVISION,
                    &mark,
                )
                .is_ok();
            if !opens {
                tracing::error!("the store's format record does not open; it counts as absent");
            }
            opens
        }
        None => false,
    };
    match format {
        StoreFormat::Current => {
            if !marked {
                tracing::error!(
                    "the store's format record is missing (removed by the host?): keys without a state record are reported damaged, never migrated again"
                );
            }
            return Ok(false);
        }
        // Another node (or this one, before a crash) migrated the store already: running
        // again would give the initial state to keys whose state rows went missing since.
        StoreFormat::Unknown | StoreFormat::Legacy if marked => return Ok(true),
        StoreFormat::Unknown | StoreFormat::Legacy => {}
    }
    let (writes, keys, owners) = missing_records(keyring, store)?;
    let mut all = writes;
    all.push(Write::PutMeta {
        name: STORE_FORMAT.into(),
        record: format_mark(keyring.cluster()),
    });
    let applied = writer
        .submit(Job {
            writes: all,
            audit: AuditDraft {
                time: now,
                operation: "migrate".into(),
                owner: None,
                key_id: None,
                key_version: None,
                outcome: format!(
                    "ok (store format 2: initial state written for {keys} keys, records for {owners} owners)"
                ),
                caller: "node".into(),
            },
            on_conflict: "error: a concurrent change; tried again at the next start",
        })
        .map_err(|_| ServerError::Inconsistent("the store migration was not committed".into()))?;
    if applied == Applied::Conflict {
        tracing::warn!(
            "the store migration met a concurrent change; it runs again at the next start"
        );
        return Ok(false);
    }
    if keys + owners > 0 {
        tracing::info!(keys, owners, "store migrated to format 2");
    }
    Ok(true)
}

/// The writes that give every key without a state its initial state and every owner
/// without a record an empty one; and how many of each.
fn missing_records(
    keyring: &Keyring,
    store: &mut dyn Store,
) -> Result<(Vec<Write>, usize, usize), ServerError> {
    let cluster = keyring.cluster();
    let mut writes = Vec::new();
    let (mut keys, mut owners) = (0, 0);
    for fp in store.all_owners()? {
        let Some(owner) = crate::ops::registered_owner(store, &fp)? else {
            tracing::warn!(owner = %fp, "rows of an owner that is not registered: left as they are (damaged)");
            continue;
        };
        if store.get_owner_state(&fp)?.is_none() {
            writes.push(Write::InsertOwnerState {
                owner: fp.clone(),
                record: OwnerState::initial().seal(cluster, &owner),
            });
            owners += 1;
        }
        let with_state: BTreeSet<String> = store
            .list_states(&fp)?
            .into_iter()
            .map(|row| row.key_id)
            .collect();
        let rows = store.list_keys(&fp)?;
        let ids: BTreeSet<&str> = rows.iter().map(|r| r.key_id.as_str()).collect();
        for id in ids.into_iter().filter(|id| !with_state.contains(*id)) {
            let versions: Vec<_> = rows.iter().filter(|r| r.key_id == id).collect();
            // A key that never changed has exactly its version 1 (a rotation always
            // stored a state).
            let [row] = versions.as_slice() else {
                tracing::warn!(owner = %fp, key = %id, "key with several versions but no state: left damaged");
                continue;
            };
            let opened = KeyId::new(id).and_then(|key_id| {
                DataKeyRecord::open(cluster, &owner, &key_id, row.key_version, &row.record)
                    .map(|rec| (key_id, rec))
            });
            let (key_id, rec) = match opened {
                Ok(x) if x.1.key_version == 1 => x,
                _ => {
                    tracing::warn!(owner = %fp, key = %id, "key record does not open: left damaged");
                    continue;
                }
            };
            let state = KeyState::initial(rec.key_policy.clone());
            writes.push(Write::PutState {
                owner: fp.clone(),
                key_id: id.to_owned(),
                revision: state.revision,
                expected: 0,
                record: state.seal(cluster, &owner, &key_id),
            });
            keys += 1;
        }
    }
    Ok((writes, keys, owners))
}
