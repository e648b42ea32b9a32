//! Durable storage of sealed records.
//!
//! The store sees only ciphertext: every value is a sealed record (spec/sealed-record-v1.md)
//! and the store is untrusted. It gives durability (WAL, fsync on every commit) and
//! atomic batches; authenticity is checked above it when records are opened.

#![deny(missing_docs)]

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

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
];

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The row is new and committed.
    New,
    /// A row with that key already existed; nothing was written.
    AlreadyExists,
}

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

    /// Reads a meta record.
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT record FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Writes several meta records in one durable transaction, only if none exists yet.
    /// Returns false (writing nothing) if any of them already exists.
    pub fn init_meta(&mut self, records: &[(&str, &[u8])]) -> Result<bool, StoreError> {
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

    /// Inserts rows in one durable transaction (group commit). Each row is inserted only
    /// if its (owner, key id, version) is free; the result says which were.
    pub fn insert_keys(&mut self, rows: &[KeyRow]) -> Result<Vec<Inserted>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
            )?;
            for row in rows {
                let n = stmt.execute(params![
                    row.owner,
                    row.key_id,
                    row.key_version as i64,
                    row.record
                ])?;
                out.push(if n == 1 {
                    Inserted::New
                } else {
                    Inserted::AlreadyExists
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The newest version of one key.
    pub fn get_key(&self, owner: &str, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
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

    /// Every key row of one owner, ordered by key id and version.
    pub fn list_keys(&self, owner: &str) -> Result<Vec<KeyRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT owner, key_id, key_version, record FROM data_keys WHERE owner = ?1
             ORDER BY key_id, key_version",
        )?;
        let rows = stmt.query_map([owner], row_to_key)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
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
        let r = s
            .insert_keys(&[
                row("o", "a", b"1"),
                row("o", "b", b"2"),
                row("o", "a", b"3"),
            ])
            .unwrap();
        assert_eq!(
            r,
            vec![Inserted::New, Inserted::New, Inserted::AlreadyExists]
        );
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
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
