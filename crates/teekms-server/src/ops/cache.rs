//! Opened keys: loading a key's records from the store (every one required, opened and
//! checked against the others), and keeping them opened for the next request.

use super::*;

/// A key as loaded for an operation: its state (stored, or the initial one), and the
/// versions opened so far.
pub struct LoadedKey {
    pub(super) owner: OwnerPublicKey,
    /// The owner's fingerprint, made once (every audit entry names it).
    pub(super) fp: String,
    pub(super) key_id: KeyId,
    pub(super) state: KeyState,
    pub(super) policy: KeyPolicy,
    versions: Mutex<HashMap<u64, Arc<DataKeyRecord>>>,
}

pub(super) type Loaded = Arc<LoadedKey>;

/// Most keys kept opened in memory.
const CACHE_MAX: usize = 10_000;

/// Opened keys, so that a data operation on a hot key touches neither the store nor the
/// record decryption. This node's own changes invalidate their entry (a node is the only
/// writer of its store; several nodes sharing one store is the cluster's business).
///
/// A change forgets its key once it has committed; a load that read the store before
/// that commit must not put the old state back. So every forget advances a generation,
/// a load notes the generation before it reads, and its result is cached only if no
/// forget happened meanwhile.
pub struct KeyCache {
    enabled: bool,
    keys: Mutex<CachedKeys>,
}

/// The opened keys by owner fingerprint, then key id (looked up by `&str` without
/// allocating), how many there are, and how many forgets have happened.
#[derive(Default)]
struct CachedKeys {
    by_owner: HashMap<String, HashMap<String, Loaded>>,
    count: usize,
    generation: u64,
}

/// The cache's generation when a load began reading the store.
#[derive(Clone, Copy)]
struct Generation(u64);

impl KeyCache {
    /// A cache, or (`enabled` false: a store shared with other nodes, whose changes this
    /// node would not see) none.
    pub fn new(enabled: bool) -> KeyCache {
        KeyCache {
            enabled,
            keys: Mutex::default(),
        }
    }

    /// Whether keys are kept opened (the store is this node's alone).
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cached key, or the generation to hand to [`KeyCache::put`] after reading it.
    fn get(&self, fp: &str, key_id: &str) -> Result<Loaded, Generation> {
        let keys = self.keys.lock().expect("cache lock");
        let generation = Generation(keys.generation);
        if !self.enabled {
            return Err(generation);
        }
        keys.by_owner
            .get(fp)
            .and_then(|owned| owned.get(key_id))
            .cloned()
            .ok_or(generation)
    }

    /// Caches a key read from the store, unless some key was forgotten since the read
    /// began (it may have read a state that a change has replaced since).
    fn put(&self, read_at: Generation, fp: String, key_id: String, key: Loaded) {
        if !self.enabled {
            return;
        }
        let mut keys = self.keys.lock().expect("cache lock");
        if keys.generation != read_at.0 {
            return;
        }
        if keys.count >= CACHE_MAX {
            let generation = keys.generation;
            *keys = CachedKeys {
                generation,
                ..CachedKeys::default()
            };
        }
        if keys
            .by_owner
            .entry(fp)
            .or_default()
            .insert(key_id, key)
            .is_none()
        {
            keys.count += 1;
        }
    }

    pub(super) fn forget(&self, fp: &str, key_id: &str) {
        let mut keys = self.keys.lock().expect("cache lock");
        keys.generation += 1;
        let Some(owned) = keys.by_owner.get_mut(fp) else {
            return;
        };
        if owned.remove(key_id).is_some() {
            // An owner with no opened key left is dropped too: `count` bounds keys, not
            // owners, so empty maps would otherwise pile up between clears.
            if owned.is_empty() {
                keys.by_owner.remove(fp);
            }
            keys.count -= 1;
        }
    }
}

impl Service {
    pub(super) fn load(&self, owner: &OwnerPublicKey, key_id: &KeyId) -> Result<Loaded, OpError> {
        let fp = owner.fingerprint();
        let read_at = match self.cache.get(&fp, key_id.as_str()) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let (stored, latest) = {
            let mut r = self.reader();
            (
                r.get_state(&fp, key_id.as_str())?,
                r.get_key(&fp, key_id.as_str())?,
            )
        };
        // Both records exist, or the key is damaged: no state is ever inferred from a
        // missing row (a state row removed by the host must not bring back the key as
        // deployed: enabled, version 1, its bundle's policy).
        let (revision, record, latest) = match (stored, latest) {
            (None, None) => {
                self.freshness()
                    .check_floor(Floor::KeyState, &format!("{fp}/{key_id}"), None)?;
                return Err(OpError::NotFound(format!("no key {key_id:?}")));
            }
            (Some(stored), Some(latest)) => (stored.revision, stored.record, latest),
            (None, Some(_)) => {
                return Err(OpError::Damaged(format!(
                    "key {key_id:?}: its state record is missing from the store; restore the store from a backup"
                )));
            }
            (Some(_), None) => {
                return Err(OpError::Damaged(format!(
                    "key {key_id:?}: its key records are missing from the store; restore the store from a backup"
                )));
            }
        };
        let state = KeyState::open(self.keyring.cluster(), owner, key_id, revision, &record)
            .map_err(|e| OpError::Damaged(e.to_string()))?;
        self.freshness()
            .check_floor(Floor::KeyState, &format!("{fp}/{key_id}"), Some(revision))?;
        if latest.key_version != state.current_version {
            return Err(OpError::Damaged(format!(
                "key {key_id:?}: its state names version {} as current, but the newest stored version is {}; restore the store from a backup",
                state.current_version, latest.key_version
            )));
        }
        // A stored policy that no longer parses admits nobody but the owner.
        let policy = KeyPolicy::parse(&state.policy).unwrap_or_else(|e| {
            tracing::warn!(key = %key_id, error = %e, "key policy does not parse; default deny");
            KeyPolicy::parse("{}").expect("the empty policy parses")
        });
        let loaded = Arc::new(LoadedKey {
            owner: *owner,
            fp: fp.clone(),
            key_id: key_id.clone(),
            state,
            policy,
            versions: Mutex::new(HashMap::new()),
        });
        self.cache
            .put(read_at, fp, key_id.to_string(), loaded.clone());
        Ok(loaded)
    }

    pub(super) fn open_row(
        &self,
        owner: &OwnerPublicKey,
        key_id: &KeyId,
        row: &KeyRow,
    ) -> Result<DataKeyRecord, OpError> {
        DataKeyRecord::open(
            self.keyring.cluster(),
            owner,
            key_id,
            row.key_version,
            &row.record,
        )
        .map_err(|e| OpError::Damaged(e.to_string()))
    }

    pub(super) fn version(&self, l: &Loaded, version: u64) -> Result<Arc<DataKeyRecord>, OpError> {
        if let Some(rec) = l.versions.lock().expect("versions lock").get(&version) {
            return Ok(rec.clone());
        }
        let row = self
            .reader()
            .get_key_version(&l.fp, l.key_id.as_str(), version)?
            .ok_or_else(|| {
                if (1..=l.state.current_version).contains(&version) {
                    // Every version up to the current one was stored with the state.
                    OpError::Damaged(format!(
                        "version {version} of key {:?} is missing from the store; restore the store from a backup",
                        l.key_id
                    ))
                } else {
                    OpError::NotFound(format!("key {:?} has no version {version}", l.key_id))
                }
            })?;
        let rec = Arc::new(self.open_row(&l.owner, &l.key_id, &row)?);
        l.versions
            .lock()
            .expect("versions lock")
            .insert(version, rec.clone());
        Ok(rec)
    }
}
