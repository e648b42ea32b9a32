//! The contract between the node and its stores: the rows they hold (sealed bytes, and
//! the plain columns that place them), the writes a job is made of, and the [`Store`] /
//! [`BatchOps`] traits that each backend implements.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error.
    #[error("PostgreSQL error: {0}")]
    Postgres(String),
    /// The database was written by a newer teekms.
    #[error("database schema version {found} is newer than this build understands ({known})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

/// One row of `data_keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// Owner fingerprint.
    pub owner: String,
    /// Key id.
    pub key_id: String,
    /// Key version.
    pub key_version: u64,
    /// The sealed record.
    pub record: Vec<u8>,
}

/// One write of a batch job. Writes that would overwrite state someone else changed
/// meanwhile are refused ([`Applied::Conflict`]), and the whole job with them.
#[derive(Clone, Debug)]
pub enum Write {
    /// Insert a key version if its place is free.
    InsertKey(KeyRow),
    /// Record an owner's public key (idempotent).
    RegisterOwner {
        /// SHA-256 of the key, hex.
        fingerprint: String,
        /// The Ed25519 public key.
        public_key: Vec<u8>,
    },
    /// Store a key's state at `revision`, replacing the one at `expected` (0: none yet).
    PutState {
        /// Owner fingerprint.
        owner: String,
        /// Key id.
        key_id: String,
        /// The new revision.
        revision: u64,
        /// The revision it replaces (0: there must be none).
        expected: u64,
        /// The sealed state.
        record: Vec<u8>,
    },
    /// Store an access key at `revision`, replacing the one at `expected` (0: new).
    PutAccessKey {
        /// `ak-...`.
        id: String,
        /// Owner fingerprint.
        owner: String,
        /// The new revision.
        revision: u64,
        /// The revision it replaces (0: there must be none).
        expected: u64,
        /// The sealed record.
        record: Vec<u8>,
    },
    /// Delete every version and the state of a key (scheduled deletion, when due), only
    /// if its state is still at `revision` (the one the deletion was decided on: a
    /// cancellation committed meanwhile wins).
    DeleteKey {
        /// Owner fingerprint.
        owner: String,
        /// Key id.
        key_id: String,
        /// The state revision the deletion was decided on.
        revision: u64,
    },
    /// Store an owner's first record (revision 1), unless it has one already (then
    /// nothing is written, and the job goes on).
    InsertOwnerState {
        /// Owner fingerprint.
        owner: String,
        /// The sealed record at revision 1.
        record: Vec<u8>,
    },
    /// Nothing written; the job conflicts unless the owner's record is at `revision`
    /// (and, on PostgreSQL, the record stays there until the job commits).
    CheckOwnerState {
        /// Owner fingerprint.
        owner: String,
        /// The revision the job was decided on.
        revision: u64,
    },
    /// Replace an owner's record at `expected` by one at `revision`.
    PutOwnerState {
        /// Owner fingerprint.
        owner: String,
        /// The new revision.
        revision: u64,
        /// The revision it replaces.
        expected: u64,
        /// The sealed record.
        record: Vec<u8>,
    },
    /// Put a meta record (a cluster record such as the cluster policy), replacing it.
    PutMeta {
        /// Record name.
        name: String,
        /// The record (sealed by the caller).
        record: Vec<u8>,
    },
    /// Remove a meta record (a cluster member the admin removed).
    DeleteMeta {
        /// Record name.
        name: String,
    },
    /// Remove the audit entries before position `before` (pruning: the caller stores
    /// the checkpoint the rest of the chain verifies from in the same job).
    PruneAudit {
        /// The first position kept.
        before: u64,
    },
}

/// One row of `key_state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRow {
    /// Owner fingerprint.
    pub owner: String,
    /// Key id.
    pub key_id: String,
    /// The state's revision (the sealed record's version).
    pub revision: u64,
    /// The sealed state.
    pub record: Vec<u8>,
}

/// A record stored at a revision, read by its place: a key's state, an owner's record,
/// an access key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revisioned {
    /// The revision (the sealed record's version).
    pub revision: u64,
    /// The sealed record.
    pub record: Vec<u8>,
}

/// One row of `access_keys`, as an owner's list gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyRow {
    /// `ak-...`.
    pub id: String,
    /// 1 active, 2 revoked.
    pub revision: u64,
    /// The sealed record.
    pub record: Vec<u8>,
}

/// One stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Its position in the log, from 1.
    pub seq: u64,
    /// The entry as stored (JSON, spec/audit-v1.md).
    pub entry: Vec<u8>,
}

/// What a job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// All its writes were applied.
    Done,
    /// A write found its place taken or changed; nothing of the job was applied.
    Conflict,
}

/// What the node needs of a store, whichever the backend. Reads take `&mut self` because
/// a database connection is used by one caller at a time.
pub trait Store: Send {
    /// A meta record.
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The meta records whose names start with `prefix`, ordered by name (at most 1,000).
    fn meta_prefixed(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Writes meta records only if none exists yet (false, writing nothing, otherwise).
    fn init_meta(&mut self, records: &[(&str, &[u8])]) -> Result<bool, StoreError>;
    /// Replaces meta records.
    fn replace_meta(&mut self, records: &[(&str, &[u8])]) -> Result<(), StoreError>;
    /// The newest version of a key.
    fn get_key(&mut self, owner: &str, key_id: &str) -> Result<Option<KeyRow>, StoreError>;
    /// An owner's keys, every version.
    fn list_keys(&mut self, owner: &str) -> Result<Vec<KeyRow>, StoreError>;
    /// One version of a key.
    fn get_key_version(
        &mut self,
        owner: &str,
        key_id: &str,
        version: u64,
    ) -> Result<Option<KeyRow>, StoreError>;
    /// Every version of a key, oldest first.
    fn key_versions(&mut self, owner: &str, key_id: &str) -> Result<Vec<KeyRow>, StoreError>;
    /// A key's state.
    fn get_state(&mut self, owner: &str, key_id: &str) -> Result<Option<Revisioned>, StoreError>;
    /// Every key state.
    fn all_states(&mut self) -> Result<Vec<StateRow>, StoreError>;
    /// An owner's public key.
    fn owner_key(&mut self, fingerprint: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// An owner's record: `(revision, sealed record)`.
    fn get_owner_state(&mut self, owner: &str) -> Result<Option<Revisioned>, StoreError>;
    /// An owner's key states, ordered by key id.
    fn list_states(&mut self, owner: &str) -> Result<Vec<StateRow>, StoreError>;
    /// Every owner with a row anywhere, ordered.
    fn all_owners(&mut self) -> Result<Vec<String>, StoreError>;
    /// An access key.
    fn get_access_key(&mut self, id: &str) -> Result<Option<Revisioned>, StoreError>;
    /// An owner's access keys.
    fn list_access_keys(&mut self, owner: &str) -> Result<Vec<AccessKeyRow>, StoreError>;
    /// The newest audit entry.
    fn audit_last(&mut self) -> Result<Option<AuditRow>, StoreError>;
    /// Audit entries from position `from` on.
    fn audit_entries(&mut self, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError>;
    /// Audit entries before position `before`, newest first.
    fn audit_entries_before(
        &mut self,
        before: u64,
        limit: u64,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Starts a write transaction.
    fn write_batch(&mut self) -> Result<Box<dyn BatchOps + '_>, StoreError>;
}

/// A write transaction over several jobs.
pub trait BatchOps {
    /// Applies one job's writes atomically.
    fn apply(&mut self, writes: &[Write]) -> Result<Applied, StoreError>;
    /// The newest audit entry, read inside this transaction after taking the append lock
    /// (so appends from several writers serialize and the chain never forks).
    fn audit_head(&mut self) -> Result<Option<AuditRow>, StoreError>;
    /// A meta record, read inside this transaction (after [`BatchOps::audit_head`], so
    /// under the append lock: the epoch record of spec/freshness-v1.md).
    fn meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Appends an audit entry at `seq`.
    fn append_audit(&mut self, seq: u64, entry: &[u8]) -> Result<(), StoreError>;
    /// Commits everything durably.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
