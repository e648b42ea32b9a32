//! Durable storage of sealed records.
//!
//! The store sees only ciphertext: every value is a sealed record (spec/sealed-record-v1.md)
//! and the store is untrusted. It gives durability (WAL, fsync on every commit) and
//! atomic batches; authenticity is checked above it when records are opened.
//!
//! Two backends with one interface ([`Store`]): SQLite for one node, PostgreSQL
//! ([`pg::PgStore`]) for records shared by a cluster. One test suite runs on both.

#![deny(missing_docs)]

mod contract;
pub mod pg;
mod sqlite;

pub use contract::{
    AccessKeyRow, Applied, AuditRow, BatchOps, KeyRow, Revisioned, StateRow, Store, StoreError,
    Write,
};
pub use sqlite::{DB_FILE, SqliteStore};
