//! teekms benchmarks. Each figure is printed beside a baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p teekms-cli && cargo run --release -p teekms-bench -- [deploy|start|all]
//! ```
//!
//! - `deploy`: durable online deployments per second against one `teekms serve` process
//!   (concurrent owners over attested TLS), next to a bare SQLite insert-and-commit loop
//!   with the same durability settings (WAL, synchronous=FULL) on the same filesystem.
//! - `verify`: evidence verification with collateral in memory (DCAP and SNP vectors from
//!   ../shared/vectors) next to the signature operations that verification performs.
//! - `stream`: `teekms encrypt` / `decrypt` of a 1 GiB file in /dev/shm to /dev/null,
//!   next to `age` (X25519 recipient) and `cat FILE > /dev/null` on the same file, and
//!   the AEAD's own in-memory rate.
//! - `envelope`: 1 KiB envelope `encrypt` over HTTPS keep-alive with concurrent clients
//!   (each acknowledged only once its audit entry is durable), next to the same node's
//!   throughput on an empty authenticated request (`GET /v1/ping`); p50 and p99 latency.
//! - `aws`: 1 KiB `Encrypt` through the AWS KMS API, each request SigV4-signed by the
//!   client, beside the native envelope `encrypt` with the same access key, interleaved;
//!   node CPU per request of each.
//! - `transit`: 1 KiB Vault Transit `encrypt` beside the native envelope `encrypt` with the
//!   same access key, interleaved; and batches of 100 items against single items.
//! - `freshness`: the latency of state changes (each writes an epoch record,
//!   spec/freshness-v1.md) beside envelope `encrypt` at 1 and 16 clients, and restart to
//!   serving with 10,000 keys beside an empty node.
//! - `cluster`: the same envelope `encrypt` against 1, 2 and 3 nodes sharing one
//!   PostgreSQL server (a private one started for the run), clients spread evenly.
//! - `release`: attested key releases to sim workloads (a new connection, mutual
//!   attestation in the handshake, fetch, the key sealed to the workload's key):
//!   end-to-end latency, releases/s with 1, 4 and 8 parallel clients, and the node's CPU
//!   time per release (from /proc).
//! - `soak [--duration 10m]`: a node under mixed, rate-bounded load for a while (every
//!   kind of operation, streams, access-key and lifecycle churn, audit reads, connection
//!   churn, malformed requests); ends with requests by outcome, RSS and descriptors at the
//!   first report and the end, store bytes per audited operation, the audit chain
//!   verified and every acknowledged key present. Exit 1 on any unexpected error.
//! - `start`: `teekms serve` cold start to the first answered request (new data dir and
//!   restart), and the idle RSS of the serving process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use teekms_attest::Policy;
use teekms_client::NodeUrl;
use teekms_core::{DataKey, KeyId, OwnerKey};

mod aws;
mod cluster;
mod deploy;
mod envelope;
mod freshness;
mod harness;
mod release;
mod soak;
mod start;
mod stream;
mod transit;
mod verify;

use aws::*;
use cluster::*;
use deploy::*;
use envelope::*;
use freshness::*;
use harness::*;
use release::*;
use start::*;
use stream::*;
use transit::*;
use verify::*;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let teekms = teekms_binary();
    println!("teekms binary: {}", teekms.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if what == "soak" {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let duration = match args.as_slice() {
            [] => Duration::from_secs(600),
            [flag, d] if flag == "--duration" => soak::parse_duration(d).unwrap_or_else(|| {
                eprintln!("teekms-bench soak: --duration takes a number of s or m, e.g. 30s, 10m");
                std::process::exit(2)
            }),
            _ => {
                eprintln!("usage: teekms-bench soak [--duration 10m]");
                std::process::exit(2)
            }
        };
        rt.block_on(soak::soak(&teekms, duration));
        return;
    }
    if what == "deploy" || what == "all" {
        rt.block_on(deploy_bench(&teekms));
    }
    if what == "envelope" || what == "all" {
        rt.block_on(envelope_bench(&teekms));
    }
    if what == "aws" || what == "all" {
        rt.block_on(aws_bench(&teekms));
    }
    if what == "transit" || what == "all" {
        rt.block_on(transit_bench(&teekms));
    }
    if what == "freshness" || what == "all" {
        rt.block_on(freshness_bench(&teekms));
    }
    if what == "cluster" || what == "all" {
        rt.block_on(cluster_bench(&teekms));
    }
    if what == "release" || what == "all" {
        rt.block_on(release_bench(&teekms));
    }
    if what == "start" || what == "all" {
        rt.block_on(start_bench(&teekms));
    }
    if what == "verify" || what == "all" {
        verify_bench();
    }
    if what == "stream" || what == "all" {
        stream_bench(&teekms);
    }
}
