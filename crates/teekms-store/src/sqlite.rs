//! The SQLite backend: one file in the node's data dir, WAL, every commit fsynced.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    AccessKeyRow, Applied, AuditRow, BatchOps, KeyRow, Revisioned, StateRow, Store, StoreError,
    Write,
};

/// File name of the SQLite database inside a node's data dir.
pub const DB_FILE: &str = "teekms.sqlite3";

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE meta (name TEXT PRIMARY KEY, record BLOB NOT NULL) STRICT;
     CREATE TABLE data_keys (
        owner TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (owner, key_id, key_version)
     ) STRICT;",
    // Lifecycle state, access keys, the audit log, and owners' public keys (public: a
    // fingerprint is the SHA-256 of its key, so a row checks itself).
    "CREATE TABLE owners (fingerprint TEXT PRIMARY KEY, public_key BLOB NOT NULL) STRICT;
     CREATE TABLE key_state (
        owner TEXT NOT NULL,
        key_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (owner, key_id)
     ) STRICT;
     CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        revision INTEGER NOT NULL,
        record BLOB NOT NULL
     ) STRICT;
     CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL) STRICT;",
    // Each owner's sealed record: the key ids it deleted (deletion is final), and the
    // proof that the owner exists (its absence beside other rows of the owner is damage).
    "CREATE TABLE owner_state (
        owner TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        record BLOB NOT NULL
     ) STRICT;",
];

/// A SQLite store (one connection).
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_file(&data_dir.join(DB_FILE))
    }

    /// Opens a database file.
    pub fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL with synchronous=FULL: every commit is fsynced before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Starts a write transaction.
    fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            tx: self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        })
    }
}

/// A write transaction over several jobs: one commit, one fsync.
struct Batch<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl BatchOps for Batch<'_> {
    fn apply(&mut self, writes: &[Write]) -> Result<Applied, StoreError> {
        if writes.is_empty() {
            return Ok(Applied::Done);
        }
        let sp = self.tx.savepoint()?;
        for w in writes {
            let changed = match w {
                Write::InsertKey(row) => sp.execute(
                    "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![row.owner, row.key_id, row.key_version as i64, row.record],
                )?,
                Write::RegisterOwner {
                    fingerprint,
                    public_key,
                } => {
                    sp.execute(
                        "INSERT INTO owners (fingerprint, public_key) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![fingerprint, public_key],
                    )?;
                    1
                }
                Write::PutState {
                    owner,
                    key_id,
                    revision,
                    expected: 0,
                    record,
                } => sp.execute(
                    "INSERT INTO key_state (owner, key_id, revision, record) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![owner, key_id, *revision as i64, record],
                )?,
                Write::PutState {
                    owner,
                    key_id,
                    revision,
                    expected,
                    record,
                } => sp.execute(
                    "UPDATE key_state SET revision = ?3, record = ?4
                     WHERE owner = ?1 AND key_id = ?2 AND revision = ?5",
                    params![owner, key_id, *revision as i64, record, *expected as i64],
                )?,
                Write::PutAccessKey {
                    id,
                    owner,
                    revision,
                    expected: 0,
                    record,
                } => sp.execute(
                    "INSERT INTO access_keys (id, owner, revision, record) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![id, owner, *revision as i64, record],
                )?,
                Write::PutAccessKey {
                    id,
                    revision,
                    expected,
                    record,
                    ..
                } => sp.execute(
                    "UPDATE access_keys SET revision = ?2, record = ?3 WHERE id = ?1 AND revision = ?4",
                    params![id, *revision as i64, record, *expected as i64],
                )?,
                Write::DeleteKey {
                    owner,
                    key_id,
                    revision,
                } => {
                    let state = sp.execute(
                        "DELETE FROM key_state WHERE owner = ?1 AND key_id = ?2 AND revision = ?3",
                        params![owner, key_id, *revision as i64],
                    )?;
                    sp.execute(
                        "DELETE FROM data_keys WHERE owner = ?1 AND key_id = ?2",
                        params![owner, key_id],
                    )?;
                    state
                }
                Write::PutMeta { name, record } => {
                    sp.execute(
                        "INSERT INTO meta (name, record) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                        params![name, record],
                    )?;
                    1
                }
                Write::DeleteMeta { name } => {
                    sp.execute("DELETE FROM meta WHERE name = ?1", params![name])?;
                    1
                }
                Write::PruneAudit { before } => {
                    sp.execute("DELETE FROM audit WHERE seq < ?1", params![i64::try_from(*before).unwrap_or(i64::MAX)])?;
                    1
                }
                Write::InsertOwnerState { owner, record } => {
                    sp.execute(
                        "INSERT INTO owner_state (owner, revision, record) VALUES (?1, 1, ?2)
                         ON CONFLICT DO NOTHING",
                        params![owner, record],
                    )?;
                    1
                }
                Write::CheckOwnerState { owner, revision } => sp
                    .query_row(
                        "SELECT COUNT(*) FROM owner_state WHERE owner = ?1 AND revision = ?2",
                        params![owner, *revision as i64],
                        |r| r.get::<_, i64>(0),
                    )? as usize,
                Write::PutOwnerState {
                    owner,
                    revision,
                    expected,
                    record,
                } => sp.execute(
                    "UPDATE owner_state SET revision = ?2, record = ?3 WHERE owner = ?1 AND revision = ?4",
                    params![owner, *revision as i64, record, *expected as i64],
                )?,
            };
            if changed != 1 {
                // Dropping the savepoint rolls the job back.
                return Ok(Applied::Conflict);
            }
        }
        sp.commit()?;
        Ok(Applied::Done)
    }

    fn audit_head(&mut self) -> Result<Option<AuditRow>, StoreError> {
        // The write transaction (BEGIN IMMEDIATE) already excludes other writers.
        Ok(self
            .tx
            .prepare_cached("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], row_to_audit)
            .optional()?)
    }

    fn meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT record FROM meta WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    fn append_audit(&mut self, seq: u64, entry: &[u8]) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("INSERT INTO audit (seq, entry) VALUES (?1, ?2)")?
            .execute(params![seq as i64, entry])?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

impl Store for SqliteStore {
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT record FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn meta_prefixed(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // A range on the primary key, not LIKE: a prefix holding `%` or `_` means itself.
        let mut end = prefix.to_owned();
        end.push(char::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, record FROM meta WHERE name >= ?1 AND name < ?2 ORDER BY name LIMIT 1000",
        )?;
        let rows = stmt.query_map(params![prefix, end], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn init_meta(&mut self, records: &[(&str, &[u8])]) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (name, _) in records {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM meta WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if exists {
                return Ok(false);
            }
        }
        for (name, record) in records {
            tx.execute(
                "INSERT INTO meta (name, record) VALUES (?1, ?2)",
                params![name, record],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn replace_meta(&mut self, records: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (name, record) in records {
            tx.execute(
                "INSERT INTO meta (name, record) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                params![name, record],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_key(&mut self, owner: &str, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT owner, key_id, key_version, record FROM data_keys
                 WHERE owner = ?1 AND key_id = ?2 ORDER BY key_version DESC LIMIT 1",
                params![owner, key_id],
                row_to_key,
            )
            .optional()?)
    }

    fn list_keys(&mut self, owner: &str) -> Result<Vec<KeyRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT owner, key_id, key_version, record FROM data_keys WHERE owner = ?1
             ORDER BY key_id, key_version",
        )?;
        let rows = stmt.query_map([owner], row_to_key)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get_key_version(
        &mut self,
        owner: &str,
        key_id: &str,
        version: u64,
    ) -> Result<Option<KeyRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT owner, key_id, key_version, record FROM data_keys
                 WHERE owner = ?1 AND key_id = ?2 AND key_version = ?3",
            )?
            .query_row(params![owner, key_id, version as i64], row_to_key)
            .optional()?)
    }

    fn key_versions(&mut self, owner: &str, key_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT owner, key_id, key_version, record FROM data_keys
             WHERE owner = ?1 AND key_id = ?2 ORDER BY key_version",
        )?;
        let rows = stmt.query_map(params![owner, key_id], row_to_key)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get_state(&mut self, owner: &str, key_id: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT revision, record FROM key_state WHERE owner = ?1 AND key_id = ?2",
            )?
            .query_row(params![owner, key_id], row_to_revisioned)
            .optional()?)
    }

    fn all_states(&mut self) -> Result<Vec<StateRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT owner, key_id, revision, record FROM key_state")?;
        let rows = stmt.query_map([], row_to_state)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn owner_key(&mut self, fingerprint: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT public_key FROM owners WHERE fingerprint = ?1")?
            .query_row([fingerprint], |r| r.get(0))
            .optional()?)
    }

    fn get_owner_state(&mut self, owner: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT revision, record FROM owner_state WHERE owner = ?1")?
            .query_row([owner], row_to_revisioned)
            .optional()?)
    }

    fn list_states(&mut self, owner: &str) -> Result<Vec<StateRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT owner, key_id, revision, record FROM key_state WHERE owner = ?1 ORDER BY key_id",
        )?;
        let rows = stmt.query_map([owner], row_to_state)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn all_owners(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT fingerprint FROM owners UNION SELECT owner FROM data_keys
             UNION SELECT owner FROM key_state UNION SELECT owner FROM access_keys
             UNION SELECT owner FROM owner_state ORDER BY 1",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get_access_key(&mut self, id: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT revision, record FROM access_keys WHERE id = ?1")?
            .query_row([id], row_to_revisioned)
            .optional()?)
    }

    fn list_access_keys(&mut self, owner: &str) -> Result<Vec<AccessKeyRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, revision, record FROM access_keys WHERE owner = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([owner], |r| {
            Ok(AccessKeyRow {
                id: r.get(0)?,
                revision: r.get::<_, i64>(1)? as u64,
                record: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_last(&mut self) -> Result<Option<AuditRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                row_to_audit,
            )
            .optional()?)
    }

    fn audit_entries(&mut self, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, entry FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(
            params![from as i64, limit.min(i64::MAX as u64) as i64],
            row_to_audit,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_entries_before(
        &mut self,
        before: u64,
        limit: u64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, entry FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let before = before.min(i64::MAX as u64) as i64;
        let rows = stmt.query_map(
            params![before, limit.min(i64::MAX as u64) as i64],
            row_to_audit,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn write_batch(&mut self) -> Result<Box<dyn BatchOps + '_>, StoreError> {
        Ok(Box::new(self.batch()?))
    }
}

fn row_to_revisioned(r: &rusqlite::Row<'_>) -> rusqlite::Result<Revisioned> {
    Ok(Revisioned {
        revision: r.get::<_, i64>(0)? as u64,
        record: r.get(1)?,
    })
}

fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get::<_, i64>(0)? as u64,
        entry: r.get(1)?,
    })
}

fn row_to_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateRow> {
    Ok(StateRow {
        owner: r.get(0)?,
        key_id: r.get(1)?,
        revision: r.get::<_, i64>(2)? as u64,
        record: r.get(3)?,
    })
}

fn row_to_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        owner: r.get(0)?,
        key_id: r.get(1)?,
        key_version: r.get::<_, i64>(2)? as u64,
        record: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owner: &str, id: &str, rec: &[u8]) -> KeyRow {
        KeyRow {
            owner: owner.into(),
            key_id: id.into(),
            key_version: 1,
            record: rec.to_vec(),
        }
    }

    #[test]
    fn insert_is_first_writer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let mut b = s.write_batch().unwrap();
        let r: Vec<Applied> = [
            row("o", "a", b"1"),
            row("o", "b", b"2"),
            row("o", "a", b"3"),
        ]
        .into_iter()
        .map(|r| b.apply(&[Write::InsertKey(r)]).unwrap())
        .collect();
        b.commit().unwrap();
        assert_eq!(r, vec![Applied::Done, Applied::Done, Applied::Conflict]);
        drop(s);
        let mut s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.get_key("o", "a").unwrap().unwrap().record, b"1");
        assert_eq!(s.list_keys("o").unwrap().len(), 2);
        assert!(s.list_keys("other").unwrap().is_empty());
    }

    #[test]
    fn meta_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        assert!(s.init_meta(&[("a", b"1"), ("b", b"2")]).unwrap());
        assert!(!s.init_meta(&[("b", b"3")]).unwrap());
        assert_eq!(s.get_meta("b").unwrap().unwrap(), b"2");
    }
}
