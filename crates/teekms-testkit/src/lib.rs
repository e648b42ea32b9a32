//! Helpers for teekms's tests and benchmarks (not part of the product): a `teekms serve`
//! process on port 0, and a private PostgreSQL server.

#![allow(missing_docs)]

mod node;
mod pg;

pub use node::{NodeProcess, Serve, read_url};
pub use pg::PgServer;
