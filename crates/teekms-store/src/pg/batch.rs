//! Write transactions on PostgreSQL: one job's writes in a savepoint each, the audit
//! entries appended together at commit under a transaction-scoped advisory lock (one
//! chain however many nodes write).

use postgres::{Statement, Transaction};

use super::{AUDIT_LOCK, PgStore, audit_row, connection_lost, i};
use crate::{Applied, AuditRow, StoreError, Write};

impl PgStore {
    /// Starts a write transaction.
    pub fn batch(&mut self) -> Result<PgBatch<'_>, StoreError> {
        let statements = BatchStatements {
            lock: self.prepared("SELECT pg_advisory_xact_lock($1)")?,
            head: self.prepared("SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1")?,
            meta: self.prepared("SELECT record FROM meta WHERE name = $1")?,
            append: self.prepared(
                "INSERT INTO audit (seq, entry) SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[])",
            )?,
        };
        let tx = match self.client.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                self.lost |= connection_lost(&e);
                return Err(e.into());
            }
        };
        Ok(PgBatch {
            tx,
            audit: Vec::new(),
            statements,
            failed: &mut self.lost,
        })
    }
}

/// A write transaction on PostgreSQL.
pub struct PgBatch<'a> {
    tx: Transaction<'a>,
    /// Audit entries appended, inserted together at commit (one round trip, not one each).
    audit: Vec<(i64, Vec<u8>)>,
    statements: BatchStatements,
    /// Set when a step fails: the connection is made again before its next use (it may
    /// be lost, and a fresh one costs little next to a failed batch).
    failed: &'a mut bool,
}

impl PgBatch<'_> {
    fn noting<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            *self.failed = true;
        }
        r
    }
}

/// The statements every write transaction runs, prepared on its connection.
struct BatchStatements {
    lock: Statement,
    head: Statement,
    meta: Statement,
    append: Statement,
}

impl PgBatch<'_> {
    /// Applies one job's writes atomically (a savepoint): all or nothing.
    pub fn apply(&mut self, writes: &[Write]) -> Result<Applied, StoreError> {
        if writes.is_empty() {
            return Ok(Applied::Done);
        }
        let mut sp = self.tx.transaction()?;
        for w in writes {
            let changed = match w {
                Write::InsertKey(row) => sp.execute(
                    "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&row.owner, &row.key_id, &i(row.key_version), &row.record],
                )?,
                Write::RegisterOwner {
                    fingerprint,
                    public_key,
                } => {
                    sp.execute(
                        "INSERT INTO owners (fingerprint, public_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[fingerprint, public_key],
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
                    "INSERT INTO key_state (owner, key_id, revision, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[owner, key_id, &i(*revision), record],
                )?,
                Write::PutState {
                    owner,
                    key_id,
                    revision,
                    expected,
                    record,
                } => sp.execute(
                    "UPDATE key_state SET revision = $3, record = $4
                     WHERE owner = $1 AND key_id = $2 AND revision = $5",
                    &[owner, key_id, &i(*revision), record, &i(*expected)],
                )?,
                Write::PutAccessKey {
                    id,
                    owner,
                    revision,
                    expected: 0,
                    record,
                } => sp.execute(
                    "INSERT INTO access_keys (id, owner, revision, record) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[id, owner, &i(*revision), record],
                )?,
                Write::PutAccessKey {
                    id,
                    revision,
                    expected,
                    record,
                    ..
                } => sp.execute(
                    "UPDATE access_keys SET revision = $2, record = $3 WHERE id = $1 AND revision = $4",
                    &[id, &i(*revision), record, &i(*expected)],
                )?,
                Write::DeleteKey {
                    owner,
                    key_id,
                    revision,
                } => {
                    let state = sp.execute(
                        "DELETE FROM key_state WHERE owner = $1 AND key_id = $2 AND revision = $3",
                        &[owner, key_id, &i(*revision)],
                    )?;
                    sp.execute(
                        "DELETE FROM data_keys WHERE owner = $1 AND key_id = $2",
                        &[owner, key_id],
                    )?;
                    state
                }
                Write::PutMeta { name, record } => {
                    sp.execute(
                        "INSERT INTO meta (name, record) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                        &[name, record],
                    )?;
                    1
                }
                Write::DeleteMeta { name } => {
                    sp.execute("DELETE FROM meta WHERE name = $1", &[name])?;
                    1
                }
                Write::PruneAudit { before } => {
                    sp.execute("DELETE FROM audit WHERE seq < $1", &[&i(*before)])?;
                    1
                }
                Write::InsertOwnerState { owner, record } => {
                    sp.execute(
                        "INSERT INTO owner_state (owner, revision, record) VALUES ($1, 1, $2)
                         ON CONFLICT DO NOTHING",
                        &[owner, record],
                    )?;
                    1
                }
                // FOR SHARE: a concurrent change of the record (another node deleting
                // a key of this owner) waits until this job has committed.
                Write::CheckOwnerState { owner, revision } => sp
                    .query(
                        "SELECT 1 FROM owner_state WHERE owner = $1 AND revision = $2 FOR SHARE",
                        &[owner, &i(*revision)],
                    )?
                    .len() as u64,
                Write::PutOwnerState {
                    owner,
                    revision,
                    expected,
                    record,
                } => sp.execute(
                    "UPDATE owner_state SET revision = $2, record = $3 WHERE owner = $1 AND revision = $4",
                    &[owner, &i(*revision), record, &i(*expected)],
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
}

impl crate::BatchOps for PgBatch<'_> {
    fn apply(&mut self, writes: &[Write]) -> Result<Applied, StoreError> {
        let r = PgBatch::apply(self, writes);
        self.noting(r)
    }

    fn audit_head(&mut self) -> Result<Option<AuditRow>, StoreError> {
        // Appends from every node serialize here, so the chain never forks.
        let r = (|| {
            self.tx.execute(&self.statements.lock, &[&AUDIT_LOCK])?;
            Ok(self
                .tx
                .query_opt(&self.statements.head, &[])?
                .map(|r| audit_row(&r)))
        })();
        self.noting(r)
    }

    fn meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = (|| {
            Ok(self
                .tx
                .query_opt(&self.statements.meta, &[&name])?
                .map(|r| r.get(0)))
        })();
        self.noting(r)
    }

    fn append_audit(&mut self, seq: u64, entry: &[u8]) -> Result<(), StoreError> {
        self.audit.push((i(seq), entry.to_vec()));
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let PgBatch {
            tx,
            audit,
            statements,
            failed,
        } = *self;
        let r = (|| {
            let mut tx = tx;
            if !audit.is_empty() {
                let (seqs, entries): (Vec<i64>, Vec<Vec<u8>>) = audit.into_iter().unzip();
                tx.execute(&statements.append, &[&seqs, &entries])?;
            }
            Ok(tx.commit()?)
        })();
        if r.is_err() {
            *failed = true;
        }
        r
    }
}
