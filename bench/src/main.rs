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
//! - `cluster`: the same envelope `encrypt` against 1, 2 and 3 nodes sharing one
//!   PostgreSQL server (a private one started for the run), clients spread evenly.
//! - `release`: attested key releases to sim workloads (a new connection, mutual
//!   attestation in the handshake, fetch, the key sealed to the workload's key):
//!   end-to-end latency, releases/s with 1, 4 and 8 parallel clients, and the node's CPU
//!   time per release (from /proc).
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
    if what == "envelope" || what == "all" {
        rt.block_on(envelope_bench(&teekms));
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
    spawn_node_with(teekms, home, data, &[])
}

/// [`spawn_node`] with more `serve` arguments.
fn spawn_node_with(teekms: &Path, home: &Path, data: &Path, extra: &[&str]) -> Node {
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
        .args(extra)
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

/// Mean time of `f` over enough runs to take about a second.
fn time_per_op(f: impl FnMut()) -> Duration {
    time_per_op_for(f, Duration::from_secs(1))
}

fn time_per_op_for(mut f: impl FnMut(), budget: Duration) -> Duration {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed() / n
}

/// Times `a` and `b` in alternating short rounds and returns the medians of each and of
/// the per-round ratio a/b, so a noisy neighbour slows both sides of a ratio alike.
fn interleaved(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration, f64) {
    let round = Duration::from_millis(200);
    let mut rows: Vec<(Duration, Duration)> = (0..9)
        .map(|_| {
            (
                time_per_op_for(&mut a, round),
                time_per_op_for(&mut b, round),
            )
        })
        .collect();
    let mut ratios: Vec<f64> = rows
        .iter()
        .map(|(x, y)| x.as_secs_f64() / y.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    rows.sort_by_key(|r| r.0);
    let ta = rows[rows.len() / 2].0;
    rows.sort_by_key(|r| r.1);
    let tb = rows[rows.len() / 2].1;
    (ta, tb, ratios[ratios.len() / 2])
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

fn verify_bench() {
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    use teekms_attest::TeeKind;
    use teekms_attest::collateral::{CollateralFiles, KNOWN_FILES};
    let load = |folder: &str| {
        let dir = vectors().join(folder);
        let mut files = CollateralFiles::default();
        for name in KNOWN_FILES {
            if let Ok(b) = std::fs::read(dir.join(name)) {
                files.insert(name, b);
            }
        }
        (dir, files)
    };
    println!("\n## Evidence verification, collateral in memory (mean per verification)");
    // DCAP: the SGX v3 vector. Its verification performs 10 ECDSA P-256 verifications
    // (quote, QE report, PCK leaf and intermediate, TCB info and its signer, QE identity
    // and its signer, root CA CRL, PCK CRL). The reference is 10 x one real P-256 verify
    // of this quote's own signature, on aws-lc-rs.
    let (dir, files) = load("sgx/dcapqvl-sgx-v3-processor-ca");
    let quote = std::fs::read(dir.join("quote.bin")).unwrap();
    let coll = files.dcap().unwrap().prepare().unwrap();
    let now = 1_752_919_277;
    let verify = || teekms_attest::dcap::verify_dcap_prepared(TeeKind::Sgx, &quote, Ok(&coll), now);
    assert!(verify().verified);
    let body_end = 48 + 384;
    let sig = &quote[body_end + 4..body_end + 68];
    let mut key = vec![4u8];
    key.extend_from_slice(&quote[body_end + 68..body_end + 132]);
    let pk = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key);
    pk.verify(&quote[..body_end], sig)
        .expect("the quote's own signature verifies");
    let (dcap, ten, ratio) = interleaved(
        || {
            std::hint::black_box(verify());
        },
        || {
            for _ in 0..10 {
                std::hint::black_box(pk.verify(&quote[..body_end], sig).is_ok());
            }
        },
    );
    let (one, sig_work) = (ten / 10, ten);
    println!(
        "DCAP SGX v3 verify: {:>8.1} us; its signature work (10 x P-256 verify, {:.1} us each): {:>6.1} us; median ratio of 9 interleaved rounds {:.2} (goal <= 1.2)",
        dcap.as_secs_f64() * 1e6,
        one.as_secs_f64() * 1e6,
        sig_work.as_secs_f64() * 1e6,
        ratio
    );
    // SNP: three RSA-4096 PSS verifications and one ECDSA P-384.
    let (dir, files) = load("snp/virtee-milan-vcek");
    let report = std::fs::read(dir.join("report.bin")).unwrap();
    let coll = files.snp().unwrap();
    let now = 1_748_736_000;
    assert!(teekms_attest::snp::verify_snp(&report, &coll, now).verified);
    let snp = time_per_op(|| {
        std::hint::black_box(teekms_attest::snp::verify_snp(&report, &coll, now));
    });
    println!(
        "SNP Milan VCEK verify: {:>6.1} us (goal < 1000 us)",
        snp.as_secs_f64() * 1e6
    );
}

/// Wall time of a command with stdout to /dev/null.
fn time_cmd(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).status().expect("command runs");
    assert!(status.success(), "{cmd:?} failed");
    t.elapsed()
}

/// Best of three runs (the page cache and the machine's noise favour no one this way).
fn best_of_5(mut f: impl FnMut() -> Duration) -> Duration {
    (0..5).map(|_| f()).min().unwrap()
}

fn stream_bench(teekms: &Path) {
    const SIZE: usize = 1 << 30;
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let plain = dir.path().join("plain");
    {
        // Random-looking data, made fast: AES-CTR-like expansion through the AEAD itself.
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).unwrap());
        let mut f = std::fs::File::create(&plain).unwrap();
        let mut buf = vec![0u8; 1 << 24];
        for i in 0..(SIZE / buf.len()) {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let _ = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::empty(),
                &mut buf,
            );
            std::io::Write::write_all(&mut f, &buf).unwrap();
        }
    }
    let dek = dir.path().join("dek");
    let out = Command::new(teekms)
        .args(["key", "generate", "-o"])
        .arg(&dek)
        .output()
        .unwrap();
    assert!(out.status.success());
    let age_key = dir.path().join("age.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&age_key)
        .output()
        .expect("age-keygen (apt-get install age)");
    assert!(out.status.success());
    let recipient = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_owned();
    // Ciphertexts to decrypt (setup, not measured).
    let sealed = dir.path().join("plain.tkms");
    let aged = dir.path().join("plain.age");
    time_cmd(
        Command::new(teekms)
            .args(["encrypt", "--key-id", "bench", "--dek"])
            .arg(&dek)
            .arg("-i")
            .arg(&plain)
            .arg("-o")
            .arg(&sealed),
    );
    time_cmd(
        Command::new("age")
            .args(["-r", &recipient, "-o"])
            .arg(&aged)
            .arg(&plain),
    );

    let gib = |d: Duration| SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    let cat = best_of_5(|| time_cmd(Command::new("cat").arg(&plain)));
    let enc = best_of_5(|| {
        time_cmd(
            Command::new(teekms)
                .args(["encrypt", "--key-id", "bench", "--dek"])
                .arg(&dek)
                .arg("-i")
                .arg(&plain)
                .args(["-o", "/dev/null"]),
        )
    });
    let dec = best_of_5(|| {
        time_cmd(
            Command::new(teekms)
                .args(["decrypt", "--dek"])
                .arg(&dek)
                .arg("-i")
                .arg(&sealed)
                .args(["-o", "/dev/null"]),
        )
    });
    let age_enc = best_of_5(|| {
        time_cmd(
            Command::new("age")
                .args(["-r", &recipient, "-o", "/dev/null"])
                .arg(&plain),
        )
    });
    let age_dec = best_of_5(|| {
        time_cmd(
            Command::new("age")
                .args(["-d", "-i"])
                .arg(&age_key)
                .args(["-o", "/dev/null"])
                .arg(&aged),
        )
    });
    // The AEAD alone, in memory, one core.
    let aead = {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).unwrap());
        let mut buf = vec![0u8; 1 << 18];
        let per = time_per_op(|| {
            let _ = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            );
        });
        buf.len() as f64 / per.as_secs_f64() / (1u64 << 30) as f64
    };
    println!("\n## Streaming encryption, 1 GiB in /dev/shm to /dev/null (best of 5, GiB/s)");
    println!("cat FILE > /dev/null (I/O floor):  {:>6.2}", gib(cat));
    println!("age -r (encrypt):                  {:>6.2}", gib(age_enc));
    println!("age -d (decrypt):                  {:>6.2}", gib(age_dec));
    println!(
        "teekms encrypt:                    {:>6.2}  = {:.2} x age, {:.2} x cat (goals >= 3, >= 0.6)",
        gib(enc),
        gib(enc) / gib(age_enc),
        gib(enc) / gib(cat)
    );
    println!(
        "teekms decrypt:                    {:>6.2}  = {:.2} x age, {:.2} x cat (goals >= 3, >= 0.6)",
        gib(dec),
        gib(dec) / gib(age_dec),
        gib(dec) / gib(cat)
    );
    println!("AES-256-GCM in memory, one core:   {:>6.2}", aead);
}

/// Seconds per phase, and phases of each kind: many short interleaved rounds, because this
/// machine's speed drifts by tens of percent within a minute; the median of many ratios,
/// each between phases run back to back, moves far less than the median of a few.
const ENVELOPE_SECONDS: f64 = 2.0;
const ENVELOPE_ROUNDS: usize = 13;
const ENVELOPE_CLIENTS: usize = 128;

type Conns = Vec<teekms_client::VerifiedConnection>;

/// Opens `ENVELOPE_CLIENTS` verified keep-alive connections, spread evenly over `urls`.
async fn connect_clients(urls: &[NodeUrl], policy: &Arc<Policy>, owner: &Arc<OwnerKey>) -> Conns {
    let mut conns = Vec::new();
    for i in 0..ENVELOPE_CLIENTS {
        let url = &urls[i % urls.len()];
        conns.push(
            teekms_client::connect_verified(url, policy, Some(owner), now())
                .await
                .unwrap(),
        );
    }
    conns
}

/// Runs one client on each connection, calling `op` for `seconds`; returns the rate, the
/// sorted latencies, and the connections (kept alive for the next phase).
async fn closed_loop<F, Fut>(conns: Conns, seconds: f64, op: F) -> (f64, Vec<Duration>, Conns)
where
    F: Fn(teekms_client::VerifiedConnection) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = teekms_client::VerifiedConnection> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    conn = op(conn).await;
                    lat.push(t.elapsed());
                }
                (lat, conn)
            })
        })
        .collect();
    let (mut all, mut conns) = (Vec::new(), Vec::new());
    for t in tasks {
        let (lat, conn) = t.await.unwrap();
        all.extend(lat);
        conns.push(conn);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all, conns)
}

/// Deploys the key "bench" (default key policy: its owner only) through `url`.
async fn deploy_bench_key(url: &NodeUrl, policy: &Policy, owner: &OwnerKey) {
    teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap()
        .deploy(
            owner,
            &KeyId::new("bench").unwrap(),
            "{}",
            &DataKey::generate(),
        )
        .await
        .unwrap();
}

/// The plaintext every benchmarked `encrypt` sends.
const PLAINTEXT: [u8; 1024] = [0x5a; 1024];

/// The `encrypt` request body, made once: the clients send it as a load generator such
/// as wrk does, so that their CPU time, on the cores the node uses too, goes to the
/// exchange itself rather than to building requests and decoding answers.
static ENCRYPT_BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let req = teekms_core::api::EncryptRequest {
        key_id: "bench".into(),
        owner: None,
        plaintext: teekms_core::api::SecretB64(PLAINTEXT.to_vec().into()),
        aad: None,
    };
    serde_json::to_vec(&req).unwrap()
});

/// Sends the pre-built `encrypt` and returns the answer's body, checked to be a 200.
async fn post_encrypt(c: &mut teekms_client::VerifiedConnection) -> teekms_client::Bytes {
    let (status, body) = c
        .connection()
        .raw_request(
            teekms_client::Method::POST,
            "/v1/envelope/encrypt",
            Some(ENCRYPT_BODY.clone()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

/// One 1 KiB `encrypt` of the key "bench", answered 200.
async fn encrypt_1kib(
    mut c: teekms_client::VerifiedConnection,
) -> teekms_client::VerifiedConnection {
    post_encrypt(&mut c).await;
    c
}

/// Checks, once, that what [`encrypt_1kib`] is answered decrypts to its plaintext.
async fn check_encrypt_1kib(url: &NodeUrl, policy: &Policy, owner: &OwnerKey) {
    let mut c = teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap();
    let body = post_encrypt(&mut c).await;
    let resp: teekms_core::api::CiphertextResponse = serde_json::from_slice(&body).unwrap();
    let opened = c.decrypt(&resp.ciphertext.0, None).await.unwrap();
    assert_eq!(&opened.plaintext.unwrap().0[..], &PLAINTEXT[..]);
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn envelope_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let owner = Arc::new(OwnerKey::generate());
    deploy_bench_key(&url, &policy, &owner).await;
    check_encrypt_1kib(&url, &policy, &owner).await;
    // Interleaved rounds: this machine's speed drifts by tens of percent over a minute,
    // so each ratio compares phases run back to back, and the median ratio is reported.
    let pid = node.child.id();
    let mut conns = connect_clients(std::slice::from_ref(&url), &policy, &owner).await;
    let mut ratios = Vec::new();
    let (mut pings, mut encs) = (Vec::new(), Vec::new());
    for _ in 0..ENVELOPE_ROUNDS {
        let me = std::process::id();
        let (cpu0, t0, my0) = (cpu_time(pid), Instant::now(), cpu_time(me));
        let m0 = MachineCpu::now();
        let (rate, lat, back) = closed_loop(conns, ENVELOPE_SECONDS, |mut c| async move {
            let (status, _) = c
                .connection()
                .raw_request(teekms_client::Method::GET, "/v1/ping", None)
                .await;
            assert_eq!(status, 200);
            c
        })
        .await;
        let ping = (rate, lat);
        let ping_cpu = cpu_time(pid) - cpu0;
        let ping_my = cpu_time(me) - my0;
        let ping_n = ping.0 * t0.elapsed().as_secs_f64();
        let ping_machine = MachineCpu::now().since(m0);
        let (cpu0, t0, my0) = (cpu_time(pid), Instant::now(), cpu_time(me));
        let m0 = MachineCpu::now();
        let (rate, lat, back) = closed_loop(back, ENVELOPE_SECONDS, encrypt_1kib).await;
        let enc = (rate, lat);
        conns = back;
        let enc_cpu = cpu_time(pid) - cpu0;
        let enc_my = cpu_time(me) - my0;
        let enc_n = enc.0 * t0.elapsed().as_secs_f64();
        let enc_machine = MachineCpu::now().since(m0);
        println!(
            "round: CPU per request, node / clients: ping {:.1} / {:.1} us, encrypt {:.1} / {:.1} us; machine busy (softirq): ping {:.0} % ({:.0} %), encrypt {:.0} % ({:.0} %)",
            ping_cpu.as_secs_f64() * 1e6 / ping_n,
            ping_my.as_secs_f64() * 1e6 / ping_n,
            enc_cpu.as_secs_f64() * 1e6 / enc_n,
            enc_my.as_secs_f64() * 1e6 / enc_n,
            ping_machine.0,
            ping_machine.1,
            enc_machine.0,
            enc_machine.1,
        );
        ratios.push(enc.0 / ping.0);
        pings.push(ping);
        encs.push(enc);
    }
    // Rounds from the lowest ratio to the highest: the median round, and the middle half.
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
    let mid = order[order.len() / 2];
    let quarter = order.len() / 4;
    let (low, high) = (
        ratios[order[quarter]],
        ratios[order[order.len() - 1 - quarter]],
    );
    let ((ping_rate, ping_lat), (enc_rate, enc_lat)) = (&pings[mid], &encs[mid]);
    println!(
        "\n## Envelope encrypt, 1 KiB, HTTPS keep-alive, {ENVELOPE_CLIENTS} concurrent clients, each on one connection kept for the whole run ({ENVELOPE_ROUNDS} interleaved rounds of {ENVELOPE_SECONDS} s per phase; median round)"
    );
    println!(
        "empty authenticated request (GET /v1/ping): {ping_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(ping_lat, 0.5),
        pct(ping_lat, 0.99)
    );
    println!(
        "encrypt 1 KiB (audit entry durable first):  {enc_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(enc_lat, 0.5),
        pct(enc_lat, 0.99)
    );
    let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio: {:.2} x the empty authenticated request (goal >= 0.5); middle half of rounds {low:.2}-{high:.2}; rounds: {}",
        ratios[mid],
        all.join(", ")
    );
}

const CLUSTER_SECONDS: f64 = 5.0;

async fn cluster_bench(teekms: &Path) {
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let dir = scratch();
    let home = dir.path();
    let policy = Arc::new(sim_policy(teekms, home));
    let owner = Arc::new(OwnerKey::generate());
    let mut nodes = vec![spawn_node_with(
        teekms,
        home,
        &home.join("node-1"),
        &["--store", &store],
    )];
    let first = NodeUrl::parse(&nodes[0].url).unwrap();
    deploy_bench_key(&first, &policy, &owner).await;
    println!(
        "\n## Envelope encrypt, 1 KiB, {ENVELOPE_CLIENTS} clients spread over nodes sharing one PostgreSQL ({CLUSTER_SECONDS} s each)"
    );
    let mut one = 0.0;
    for n in 1..=3 {
        while nodes.len() < n {
            let join = nodes[0].url.clone();
            let data = home.join(format!("node-{}", nodes.len() + 1));
            nodes.push(spawn_node_with(
                teekms,
                home,
                &data,
                &["--store", &store, "--join", &join],
            ));
        }
        let urls: Vec<NodeUrl> = nodes
            .iter()
            .map(|n| NodeUrl::parse(&n.url).unwrap())
            .collect();
        check_encrypt_1kib(urls.last().unwrap(), &policy, &owner).await;
        let conns = connect_clients(&urls, &policy, &owner).await;
        let (rate, lat, _) = closed_loop(conns, CLUSTER_SECONDS, encrypt_1kib).await;
        if n == 1 {
            one = rate;
        }
        println!(
            "{n} node(s): {rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms  ({:.2} x one node)",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            rate / one
        );
    }
    println!("(all nodes, their clients and PostgreSQL share this machine's cores)");
}

/// The machine's CPU time counters (`/proc/stat`, all CPUs): total, idle (with I/O wait),
/// and softirq, which the processes' own times do not include (the loopback TCP path
/// runs there).
#[derive(Clone, Copy)]
struct MachineCpu {
    total: u64,
    idle: u64,
    softirq: u64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        MachineCpu {
            total: f.iter().sum(),
            idle: f[3] + f[4],
            softirq: f[6],
        }
    }

    /// Busy and softirq shares of the machine since `earlier`, in percent.
    fn since(self, earlier: MachineCpu) -> (f64, f64) {
        let total = (self.total - earlier.total).max(1) as f64;
        (
            100.0 * (1.0 - (self.idle - earlier.idle) as f64 / total),
            100.0 * (self.softirq - earlier.softirq) as f64 / total,
        )
    }
}

/// The node's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// One workload's attested key release, as a new workload process would do it: its
/// TLS key and sim evidence made, a new connection in whose handshake each side verifies
/// the other's RA-TLS certificate (mutual attestation), the key fetched (sealed to the
/// workload's key) and opened.
async fn release(
    url: &NodeUrl,
    policy: &Policy,
    root: &teekms_platform::SimRoot,
    owner_fp: &str,
) -> Duration {
    let t = Instant::now();
    let keys = teekms_core::NodeKeys::generate();
    let statement = keys.statement(teekms_attest::TeeKind::Sim, None);
    let claims = teekms_attest::ratls::claims_buffer(
        keys.tls_spki_der(),
        teekms_attest::TeeKind::Sim,
        &statement,
        None,
    );
    let evidence = root.evidence(
        &[0x77; 48],
        &teekms_attest::ratls::report_data_for_claims(&claims),
    );
    let ext = teekms_attest::ratls::evidence_extension(&evidence, &claims);
    let mut conn = teekms_client::connect_attested_as(
        url,
        policy,
        teekms_client::Identity::RaTlsWorkload(&keys, &ext),
        now(),
        None,
    )
    .await
    .unwrap();
    conn.fetch_key("model", Some(owner_fp), None, &keys)
        .await
        .unwrap();
    t.elapsed()
}

const RELEASE_SECONDS: u64 = 5;
const RELEASE_ROUNDS: usize = 3;

/// One round of releases with a number of parallel clients.
#[derive(Clone)]
struct ReleaseRow {
    rate: f64,
    p50: f64,
    p99: f64,
    cpu_ms: f64,
}

async fn release_round(
    url: &NodeUrl,
    policy: &Arc<Policy>,
    root: &Arc<teekms_platform::SimRoot>,
    fp: &Arc<str>,
    clients: usize,
    pid: u32,
) -> ReleaseRow {
    let cpu0 = cpu_time(pid);
    let deadline = Instant::now() + Duration::from_secs(RELEASE_SECONDS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, policy, root, fp) = (url.clone(), policy.clone(), root.clone(), fp.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    lat.push(release(&url, &policy, &root, &fp).await);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    let cpu = cpu_time(pid) - cpu0;
    lat.sort();
    let n = lat.len() as f64;
    ReleaseRow {
        rate: n / wall.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        cpu_ms: cpu.as_secs_f64() * 1000.0 / n,
    }
}

async fn release_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let root = Arc::new(
        teekms_platform::SimRoot::load_or_create(
            &dir.path().join(".local/share/teekms/sim-root.key"),
        )
        .unwrap(),
    );
    let owner = OwnerKey::generate();
    let fp: Arc<str> = owner.public_key().fingerprint().into();
    let key_policy = format!(
        r#"{{"rules": [{{"principals": [{{"workload": {{"tee": "sim", "sim_root": "{}", "measurement": "{}"}}}}], "operations": ["fetch"]}}]}}"#,
        hex::encode(root.public_key()),
        hex::encode([0x77u8; 48])
    );
    teekms_client::connect_verified(&url, &policy, Some(&owner), now())
        .await
        .unwrap()
        .deploy(
            &owner,
            &KeyId::new("model").unwrap(),
            &key_policy,
            &DataKey::generate(),
        )
        .await
        .unwrap();
    // Warm up (and check that a release works at all).
    for _ in 0..20 {
        release(&url, &policy, &root, &fp).await;
    }
    println!(
        "\n## Attested key release to a sim workload: new connection, mutual RA-TLS (each side's certificate evidence verified in the handshake), fetch sealed to the workload's key ({RELEASE_ROUNDS} interleaved rounds of {RELEASE_SECONDS} s per row; median round)"
    );
    // Rounds interleaved over the client counts: this machine's speed drifts by tens
    // of percent from minute to minute; each row reports its median round.
    let pid = node.child.id();
    let mut rows: Vec<Vec<ReleaseRow>> = vec![Vec::new(); 3];
    for _ in 0..RELEASE_ROUNDS {
        for (row, clients) in [1usize, 4, 8].into_iter().enumerate() {
            rows[row].push(release_round(&url, &policy, &root, &fp, clients, pid).await);
        }
    }
    for (row, clients) in [1usize, 4, 8].into_iter().enumerate() {
        let mut runs = rows[row].clone();
        runs.sort_by(|a, b| a.cpu_ms.total_cmp(&b.cpu_ms));
        let m = &runs[runs.len() / 2];
        let all: Vec<String> = rows[row]
            .iter()
            .map(|r| format!("{:.3}", r.cpu_ms))
            .collect();
        println!(
            "{clients} client(s): {:>6.0} releases/s  end-to-end p50 {:.2} ms  p99 {:.2} ms  node CPU {:.3} ms/release (rounds: {})",
            m.rate,
            m.p50,
            m.p99,
            m.cpu_ms,
            all.join(", ")
        );
    }
    println!(
        "(in-process clients: no client process start to subtract. For scale: Trustee KBS with its sample TEE, ~4 ms server CPU and 12-16 ms end to end per release; goal <= 1 ms node CPU and <= 4 ms end to end)"
    );
}
