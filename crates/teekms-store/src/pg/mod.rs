//! The PostgreSQL store: the same tables and semantics as the SQLite store, for records
//! shared by several nodes. Schema migrations run under an advisory lock, so nodes
//! starting together migrate once; audit appends take a transaction-scoped advisory lock,
//! so one chain grows however many nodes write.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use crate::{AccessKeyRow, AuditRow, KeyRow, Revisioned, StateRow, StoreError};

/// Advisory lock ids (arbitrary, fixed): migrations, audit appends.
const MIGRATION_LOCK: i64 = 0x7465_656b_6d73_0001;
const AUDIT_LOCK: i64 = 0x7465_656b_6d73_0002;

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE meta (name TEXT PRIMARY KEY, record BYTEA NOT NULL);
     CREATE TABLE data_keys (
        owner TEXT NOT NULL,
        key_id TEXT NOT NULL,
        key_version BIGINT NOT NULL,
        record BYTEA NOT NULL,
        PRIMARY KEY (owner, key_id, key_version)
     );",
    // v2
    "CREATE TABLE owners (fingerprint TEXT PRIMARY KEY, public_key BYTEA NOT NULL);
     CREATE TABLE key_state (
        owner TEXT NOT NULL,
        key_id TEXT NOT NULL,
        revision BIGINT NOT NULL,
        record BYTEA NOT NULL,
        PRIMARY KEY (owner, key_id)
     );
     CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        revision BIGINT NOT NULL,
        record BYTEA NOT NULL
     );
     CREATE TABLE audit (seq BIGINT PRIMARY KEY, entry BYTEA NOT NULL);",
    // v3: each owner's sealed record (deleted key ids).
    "CREATE TABLE owner_state (
        owner TEXT PRIMARY KEY,
        revision BIGINT NOT NULL,
        record BYTEA NOT NULL
     );",
];

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e.to_string())
    }
}

/// A PostgreSQL store (one connection, made again when it was lost: the operation that
/// finds the server gone fails, the next one reconnects).
pub struct PgStore {
    client: Client,
    url: String,
    last_used: Instant,
    /// Statements prepared on this connection (a statement sent as text is prepared
    /// anew on every use: one more round trip).
    statements: HashMap<&'static str, Statement>,
    /// An operation found the connection lost (the client may not know yet).
    lost: bool,
}

/// Whether `e` means the connection is gone: closed, an I/O error, or the server ending
/// the session (SQLSTATE class 57P: shutdown, restart, terminated backend; 08: connection).
fn connection_lost(e: &postgres::Error) -> bool {
    use std::error::Error as _;
    e.is_closed()
        || e.source().is_some_and(|s| s.is::<std::io::Error>())
        || e.code()
            .is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
}

/// Connections made again after one was lost, by every store of the process (a metric).
static RECONNECTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times a lost connection to PostgreSQL was made again in this process.
pub fn reconnects() -> u64 {
    RECONNECTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A connection idle this long is checked (one round trip) before its next use: a
/// server restart while it sat idle would otherwise fail that use. A connection in
/// steady use learns of a loss from the operation it fails, and the next one reconnects.
const IDLE_CHECK: Duration = Duration::from_secs(1);

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PgStore {
    /// Connects (`postgres://...` or `host=... user=...`) and migrates the schema.
    /// TLS to the database is not used: every value is sealed before it leaves the TEE,
    /// and the database is untrusted like the rest of the host.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut store = Self::open(url)?;
        store.migrate()?;
        Ok(store)
    }

    fn open(url: &str) -> Result<PgStore, StoreError> {
        Ok(PgStore {
            client: Client::connect(url, NoTls)?,
            url: url.to_owned(),
            last_used: Instant::now(),
            statements: HashMap::new(),
            lost: false,
        })
    }

    /// Another connection to the same database, whose schema this one already migrated
    /// (for a pool of readers: no second migration).
    pub fn another(&self) -> Result<PgStore, StoreError> {
        Self::open(&self.url)
    }

    /// The connection, made again if the last one was lost (a server restart, a network
    /// cut, a terminated backend).
    fn live(&mut self) -> Result<&mut Client, StoreError> {
        let idle = self.last_used.elapsed() >= IDLE_CHECK;
        self.last_used = Instant::now();
        if self.lost
            || self.client.is_closed()
            || (idle && self.client.is_valid(IDLE_CHECK).is_err())
        {
            self.statements.clear();
            self.client = Client::connect(&self.url, NoTls)?;
            self.lost = false;
            RECONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(&mut self.client)
    }

    /// Converts an error, noting a lost connection so that the next use reconnects.
    fn note(&mut self, e: postgres::Error) -> StoreError {
        if connection_lost(&e) {
            self.lost = true;
        }
        e.into()
    }

    /// `sql` prepared on the live connection (once per connection). Preparing changes
    /// nothing, so a connection found lost is made again and the statement prepared anew.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let mut retried = false;
        loop {
            self.live()?;
            if let Some(st) = self.statements.get(sql) {
                return Ok(st.clone());
            }
            match self.client.prepare(sql) {
                Ok(st) => {
                    self.statements.insert(sql, st.clone());
                    return Ok(st);
                }
                Err(e) if !retried && connection_lost(&e) => {
                    self.lost = true;
                    retried = true;
                }
                Err(e) => return Err(self.note(e)),
            }
        }
    }

    /// A read (which changes nothing, so it is made once more on a new connection if the
    /// connection was found lost).
    fn query_cached(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let st = self.prepared(sql)?;
        match self.client.query(&st, params) {
            Err(e) if connection_lost(&e) => {
                self.lost = true;
                let st = self.prepared(sql)?;
                self.client.query(&st, params).map_err(|e| self.note(e))
            }
            r => r.map_err(|e| self.note(e)),
        }
    }

    /// [`PgStore::query_cached`] for at most one row.
    fn query_opt_cached(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query_cached(sql, params)?;
        Ok(rows.pop())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut tx = self.live()?.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY)")?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if i64::from(current) > known {
            return Err(StoreError::TooNew {
                found: i64::from(current),
                known,
            });
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(n as i32 + 1)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn revisioned(r: &postgres::Row) -> Revisioned {
    Revisioned {
        revision: u(r.get(0)),
        record: r.get(1),
    }
}

fn audit_row(r: &postgres::Row) -> AuditRow {
    AuditRow {
        seq: u(r.get(0)),
        entry: r.get(1),
    }
}

fn state_row(r: &postgres::Row) -> StateRow {
    StateRow {
        owner: r.get(0),
        key_id: r.get(1),
        revision: u(r.get(2)),
        record: r.get(3),
    }
}

fn row_to_key(r: &postgres::Row) -> KeyRow {
    KeyRow {
        owner: r.get(0),
        key_id: r.get(1),
        key_version: u(r.get(2)),
        record: r.get(3),
    }
}

impl crate::Store for PgStore {
    fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_opt_cached("SELECT record FROM meta WHERE name = $1", &[&name])?
            .map(|r| r.get(0)))
    }

    fn meta_prefixed(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut end = prefix.to_owned();
        end.push(char::MAX);
        Ok(self
            .query_cached(
                "SELECT name, record FROM meta WHERE name >= $1 AND name < $2 ORDER BY name LIMIT 1000",
                &[&prefix, &end],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn init_meta(&mut self, records: &[(&str, &[u8])]) -> Result<bool, StoreError> {
        let mut tx = self.live()?.transaction()?;
        for (name, _) in records {
            if tx
                .query_opt("SELECT 1 FROM meta WHERE name = $1 FOR UPDATE", &[name])?
                .is_some()
            {
                return Ok(false);
            }
        }
        for (name, record) in records {
            let n = tx.execute(
                "INSERT INTO meta (name, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[name, record],
            )?;
            if n != 1 {
                return Ok(false);
            }
        }
        tx.commit()?;
        Ok(true)
    }

    fn replace_meta(&mut self, records: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let mut tx = self.live()?.transaction()?;
        for (name, record) in records {
            tx.execute(
                "INSERT INTO meta (name, record) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                &[name, record],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get_key(&mut self, owner: &str, key_id: &str) -> Result<Option<KeyRow>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT owner, key_id, key_version, record FROM data_keys
                 WHERE owner = $1 AND key_id = $2 ORDER BY key_version DESC LIMIT 1",
                &[&owner, &key_id],
            )?
            .map(|r| row_to_key(&r)))
    }

    fn list_keys(&mut self, owner: &str) -> Result<Vec<KeyRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT owner, key_id, key_version, record FROM data_keys WHERE owner = $1
                 ORDER BY key_id, key_version",
                &[&owner],
            )?
            .iter()
            .map(row_to_key)
            .collect())
    }

    fn get_key_version(
        &mut self,
        owner: &str,
        key_id: &str,
        version: u64,
    ) -> Result<Option<KeyRow>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT owner, key_id, key_version, record FROM data_keys
                 WHERE owner = $1 AND key_id = $2 AND key_version = $3",
                &[&owner, &key_id, &i(version)],
            )?
            .map(|r| row_to_key(&r)))
    }

    fn key_versions(&mut self, owner: &str, key_id: &str) -> Result<Vec<KeyRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT owner, key_id, key_version, record FROM data_keys
                 WHERE owner = $1 AND key_id = $2 ORDER BY key_version",
                &[&owner, &key_id],
            )?
            .iter()
            .map(row_to_key)
            .collect())
    }

    fn get_state(&mut self, owner: &str, key_id: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT revision, record FROM key_state WHERE owner = $1 AND key_id = $2",
                &[&owner, &key_id],
            )?
            .map(|r| revisioned(&r)))
    }

    fn all_states(&mut self) -> Result<Vec<StateRow>, StoreError> {
        Ok(self
            .query_cached("SELECT owner, key_id, revision, record FROM key_state", &[])?
            .iter()
            .map(state_row)
            .collect())
    }

    fn owner_key(&mut self, fingerprint: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT public_key FROM owners WHERE fingerprint = $1",
                &[&fingerprint],
            )?
            .map(|r| r.get(0)))
    }

    fn get_owner_state(&mut self, owner: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT revision, record FROM owner_state WHERE owner = $1",
                &[&owner],
            )?
            .map(|r| revisioned(&r)))
    }

    fn list_states(&mut self, owner: &str) -> Result<Vec<StateRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT owner, key_id, revision, record FROM key_state WHERE owner = $1
                 ORDER BY key_id",
                &[&owner],
            )?
            .iter()
            .map(state_row)
            .collect())
    }

    fn all_owners(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT fingerprint FROM owners UNION SELECT owner FROM data_keys
                 UNION SELECT owner FROM key_state UNION SELECT owner FROM access_keys
                 UNION SELECT owner FROM owner_state ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn get_access_key(&mut self, id: &str) -> Result<Option<Revisioned>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT revision, record FROM access_keys WHERE id = $1",
                &[&id],
            )?
            .map(|r| revisioned(&r)))
    }

    fn list_access_keys(&mut self, owner: &str) -> Result<Vec<AccessKeyRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT id, revision, record FROM access_keys WHERE owner = $1 ORDER BY id",
                &[&owner],
            )?
            .iter()
            .map(|r| AccessKeyRow {
                id: r.get(0),
                revision: u(r.get(1)),
                record: r.get(2),
            })
            .collect())
    }

    fn audit_last(&mut self) -> Result<Option<AuditRow>, StoreError> {
        Ok(self
            .query_opt_cached(
                "SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| audit_row(&r)))
    }

    fn audit_entries(&mut self, from: u64, limit: u64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&i(from), &i(limit)],
            )?
            .iter()
            .map(audit_row)
            .collect())
    }

    fn audit_entries_before(
        &mut self,
        before: u64,
        limit: u64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self
            .query_cached(
                "SELECT seq, entry FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                &[&i(before), &i(limit)],
            )?
            .iter()
            .map(audit_row)
            .collect())
    }

    fn write_batch(&mut self) -> Result<Box<dyn crate::BatchOps + '_>, StoreError> {
        Ok(Box::new(self.batch()?))
    }
}

mod batch;
pub use batch::PgBatch;
