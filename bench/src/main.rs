//! teekms benchmarks. Each figure is printed beside a baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p teekms-cli && cargo run --release -p teekms-bench -- [deploy|start|all]
//! ```
//!
//! - `deploy`: durable online deployments per second against one `teekms serve` process
//!   (concurrent owners over attested TLS), next to a bare SQLite insert-and-commit loop
//!   with the same durability settings (WAL, synchronous=FULL) on the same filesystem.
//! - `start`: `teekms serve` cold start to the first answered request (new data dir and
//!   restart), and the idle RSS of the serving process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use teekms_attest::Policy;
use teekms_client::NodeUrl;
use teekms_core::{DataKey, KeyId, OwnerKey};

const DEPLOY_SECONDS: u64 = 10;
const CLIENTS: usize = 16;
const STARTS: usize = 15;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let teekms = teekms_binary();
    println!("teekms binary: {}", teekms.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if what == "deploy" || what == "all" {
        rt.block_on(deploy_bench(&teekms));
    }
    if what == "start" || what == "all" {
        rt.block_on(start_bench(&teekms));
    }
}

/// The release `teekms` next to this benchmark binary (or $TEEKMS_BIN).
fn teekms_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TEEKMS_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join("teekms");
    assert!(
        p.exists(),
        "build it first: cargo build --release -p teekms-cli"
    );
    p
}

/// A scratch dir on the disk filesystem (not tmpfs), so fsync costs what it costs.
fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(teekms: &Path, home: &Path, data: &Path) -> Node {
    let mut child = Command::new(teekms)
        .args([
            "serve",
            "--tee",
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("TEEKMS_SIM_ROOT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .expect("URL")
        .to_owned();
    Node { child, url }
}

fn sim_policy(teekms: &Path, home: &Path) -> Policy {
    let out = Command::new(teekms)
        .args(["sim", "root"])
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    let mut root = [0u8; 32];
    hex::decode_to_slice(String::from_utf8(out.stdout).unwrap().trim(), &mut root).unwrap();
    Policy::sim(root, None)
}

fn sqlite_baseline(dir: &Path, seconds: u64) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("baseline.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE data_keys (owner TEXT NOT NULL, key_id TEXT NOT NULL, key_version INTEGER NOT NULL,
         record BLOB NOT NULL, PRIMARY KEY (owner, key_id, key_version)) STRICT",
    )
    .unwrap();
    // Same row shape as a deployment: 64-char owner, short id, ~190-byte sealed record.
    let owner = "ab".repeat(32);
    let record = vec![7u8; 190];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        conn.execute(
            "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES (?1, ?2, 1, ?3)",
            rusqlite::params![owner, format!("k{n}"), record],
        )
        .unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn deploy_bench(teekms: &Path) {
    let dir = scratch();
    let baseline = sqlite_baseline(dir.path(), DEPLOY_SECONDS);
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(DEPLOY_SECONDS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, policy, done) = (url.clone(), policy.clone(), done.clone());
            tokio::spawn(async move {
                let owner = OwnerKey::generate();
                let mut conn = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
                    .await
                    .unwrap();
                let mut n = 0;
                while Instant::now() < deadline {
                    let id = KeyId::new(&format!("c{c}-{n}")).unwrap();
                    conn.deploy(&owner, &id, "{}", &DataKey::generate())
                        .await
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!(
        "\n## Durable online deployments ({CLIENTS} concurrent owners, {DEPLOY_SECONDS} s each)"
    );
    println!("bare SQLite insert+commit loop (WAL, synchronous=FULL): {baseline:>9.0} /s");
    println!("teekms deploy (attested TLS, HPKE, receipt, group commit): {rate:>7.0} /s");
    println!(
        "ratio: {:.2} x the bare SQLite loop (goal >= 0.5)",
        rate / baseline
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn first_answer(url: &NodeUrl) {
    loop {
        if let Ok(mut c) = teekms_client::connect(url, None).await
            && c.attestation(None).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn timed_start(teekms: &Path, home: &Path, data: &Path) -> (Duration, Node) {
    let t = Instant::now();
    let node = spawn_node(teekms, home, data);
    first_answer(&NodeUrl::parse(&node.url).unwrap()).await;
    (t.elapsed(), node)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn start_bench(teekms: &Path) {
    let dir = scratch();
    sim_policy(teekms, dir.path()); // create the sim root outside the timing
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut rss = 0;
    for i in 0..STARTS {
        let data = dir.path().join(format!("node{i}"));
        let (t, node) = timed_start(teekms, dir.path(), &data).await;
        first.push(t);
        drop(node);
        let (t, node) = timed_start(teekms, dir.path(), &data).await;
        again.push(t);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss = rss_kib(node.child.id());
        }
    }
    let (first, again) = (median(first), median(again));
    println!("\n## serve cold start to first answered request (median of {STARTS})");
    println!(
        "new data dir (key generation, sealing, first commit): {:>6.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "existing data dir (unseal):                           {:>6.1} ms",
        again.as_secs_f64() * 1e3
    );
    println!("ratio: {:.2} x the 100 ms goal", first.as_secs_f64() / 0.1);
    println!("\n## idle RSS after one request");
    println!(
        "{:.1} MiB (goal < 30 MiB; ratio {:.2})",
        rss as f64 / 1024.0,
        rss as f64 / 1024.0 / 30.0
    );
}
