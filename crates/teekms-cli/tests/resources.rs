//! What a node's memory and file descriptors do under clients that hold them and send
//! nothing, through the real binary: 24 stalled 16 MiB-chunk streams within the stream
//! memory budget, and 1,100 idle sockets against a soft file limit of 1024 and against
//! `--max-connections 200`.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, now, s};
use teekms_attest::Policy;
use teekms_client::{ClientError, NodeUrl};
use teekms_core::OwnerKey;

/// A `teekms serve` started through `sh` with `ulimit -Sn soft` (a service manager's
/// soft limit), and its URL.
fn serve_with_soft_limit(env: &Env, soft: u64, data_dir: &Path, extra: &[&str]) -> (Child, String) {
    let mut c = Command::new("sh");
    c.env("HOME", env.dir.path())
        .env("TEEKMS_LOG", "warn")
        .arg("-c")
        .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
        .arg(common::bin())
        .args([
            "serve",
            "--tee",
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            s(data_dir),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("TEEKMS_TEST_NODE_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        });
    if let Some(level) = std::env::var_os("TEEKMS_TEST_NODE_LEVEL") {
        c.env("TEEKMS_LOG", level);
    }
    let mut child = c.spawn().unwrap();
    let url = common::read_url(&mut child);
    (child, url)
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Resident memory of `pid` now and at its peak, MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    (
        status_field(pid, "VmRSS:") >> 10,
        status_field(pid, "VmHWM:") >> 10,
    )
}

/// CPU seconds `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn owner(env: &Env) -> OwnerKey {
    OwnerKey::from_pem(&std::fs::read_to_string(env.path(".config/teekms/owner.key")).unwrap())
        .unwrap()
}

fn policy(path: &Path) -> Policy {
    Policy::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Gives `len` bytes, then sends nothing until `stop` (a client that stalls mid-body).
struct StallingReader {
    left: usize,
    stop: Arc<AtomicBool>,
}

impl Read for StallingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            while !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Err(std::io::Error::other("stopped"));
        }
        let n = out.len().min(self.left);
        out[..n].fill(7);
        self.left -= n;
        Ok(n)
    }
}

/// Pings through a connection made beforehand; the latency of each, ms.
async fn ping(c: &mut teekms_client::VerifiedConnection) -> f64 {
    let t = Instant::now();
    let (status, _) = c
        .connection()
        .raw_request(teekms_client::Method::GET, "/v1/ping", None)
        .await;
    assert_eq!(status, 200);
    t.elapsed().as_secs_f64() * 1000.0
}

#[test]
fn stalled_large_chunk_streams_stay_within_the_stream_memory() {
    let env = Env::new();
    let data_dir = env.path("node");
    let mut node = env.serve_tee(
        "sim",
        &data_dir,
        &["--stream-memory", "256MiB", "--stream-idle-timeout", "2s"],
        "warn",
    );
    let pid = node.child.id();
    let (p, token, _) = env.key_with_access(&node.url);
    let token = std::fs::read_to_string(&token).unwrap();
    let (policy, owner, url) = (policy(&p), owner(&env), NodeUrl::parse(&node.url).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle = rss_mib(pid).0;
    let stop = Arc::new(AtomicBool::new(false));

    // 24 clients start encrypt streams with 16 MiB chunks, send 20 MiB, and stall.
    let mut attackers = Vec::new();
    for _ in 0..24 {
        let (policy, url, token, stop) = (policy.clone(), url.clone(), token.clone(), stop.clone());
        attackers.push(rt.spawn(async move {
            let mut c = teekms_client::connect_verified(&url, &policy, None, now())
                .await
                .unwrap();
            c.use_access_key(&token);
            let input = StallingReader {
                left: 20 << 20,
                stop,
            };
            c.stream_encrypt(
                "k",
                None,
                Some(24),
                Box::new(input),
                Box::new(std::io::sink()),
            )
            .await
        }));
    }
    // Meanwhile: pings on an owner's connection, and a well-behaved stream that retries
    // while the node says busy.
    let (pings, good) = rt.block_on(async {
        let mut c = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let good = {
            let (policy, url, token) = (policy.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    let mut c = teekms_client::connect_verified(&url, &policy, None, now())
                        .await
                        .unwrap();
                    c.use_access_key(&token);
                    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| i as u8).collect();
                    let r = c
                        .stream_encrypt(
                            "k",
                            None,
                            None,
                            Box::new(std::io::Cursor::new(data)),
                            Box::new(std::io::sink()),
                        )
                        .await;
                    match r {
                        Ok(()) => return started.elapsed(),
                        Err(ClientError::Api {
                            status: 503, code, ..
                        }) if code == "busy" => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => panic!("the well-behaved stream failed: {e}"),
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(90),
                        "the well-behaved stream never got in"
                    );
                }
            })
        };
        let mut pings = Vec::new();
        for _ in 0..20 {
            pings.push(ping(&mut c).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (pings, good.await.unwrap())
    });
    let mut refused = 0;
    for a in attackers {
        match rt.block_on(a).unwrap() {
            Ok(()) => panic!("a stalled stream completed"),
            Err(ClientError::Api { status: 503, .. }) => refused += 1,
            Err(_) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let peak = rss_mib(pid).1;
    let worst = pings.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "idle {idle} MiB, peak {peak} MiB, pings worst {worst:.1} ms, {refused} of 24 stalled streams refused busy, the good stream done after {good:?}"
    );
    assert!(
        peak <= 256 + 64,
        "peak RSS {peak} MiB over the 256 MiB budget + 64"
    );
    assert!(worst <= 50.0, "a ping took {worst:.1} ms: {pings:?}");
    // Memory goes back once the streams are over.
    std::thread::sleep(Duration::from_secs(10));
    let after = rss_mib(pid).0;
    eprintln!("10 s after the last stream: {after} MiB");
    assert!(
        after <= idle + 64,
        "RSS {after} MiB 10 s after the streams, idle was {idle}"
    );
    node.stop();
}

/// 1,100 sockets that connect and send nothing, re-opened as soon as the node closes
/// them, against a node with `extra` arguments; while they run, an owner connects anew
/// and pings every 200 ms for 14 s (the kernel holds silent clients for the first 10 s,
/// then hands them to the node). Returns the ping latencies (ms) and the node's CPU
/// share.
fn idle_socket_attack(soft_limit: u64, extra: &[&str]) -> (Vec<f64>, f64) {
    // The attacker needs more descriptors than the node's limit.
    teekms_platform::sys::raise_open_file_limit().unwrap();
    let env = Env::new();
    let (child, url) = serve_with_soft_limit(&env, soft_limit, &env.path("node"), extra);
    // Killed however the test ends, a panic included.
    let child = KillOnDrop(child);
    let pid = child.0.id();
    let p = env.sim_policy();
    env.ok(&["owner", "init"]);
    let (policy, owner, node) = (policy(&p), owner(&env), NodeUrl::parse(&url).unwrap());
    let addr = url.trim_start_matches("https://").to_owned();
    // The attacker is another program: its own thread and runtime.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut sockets = tokio::task::JoinSet::new();
                for _ in 0..1100 {
                    let (addr, stop) = (addr.clone(), stop.clone());
                    sockets.spawn(async move {
                        use tokio::io::AsyncReadExt;
                        while !stop.load(Ordering::Relaxed) {
                            match tokio::net::TcpStream::connect(&addr).await {
                                Ok(mut sock) => {
                                    let mut b = [0u8; 64];
                                    // Held until the node closes it (or the attack ends).
                                    let wait = Duration::from_secs(30);
                                    let _ = tokio::time::timeout(wait, sock.read(&mut b)).await;
                                }
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    });
                }
                while sockets.join_next().await.is_some() {}
            });
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pings, cpu) = rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let mut pings = Vec::new();
        // 14 s: past the 10 s for which the kernel holds silent clients, so that they
        // reach the accept loop and its cap too.
        for _ in 0..70 {
            let t = Instant::now();
            let connected = tokio::time::timeout(
                Duration::from_secs(5),
                teekms_client::connect_verified(&node, &policy, Some(&owner), now()),
            )
            .await;
            let mut c = match connected {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => panic!("a new owner connection failed during the attack: {e}"),
                Err(_) => panic!("a new owner connection timed out during the attack"),
            };
            ping(&mut c).await;
            pings.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (
            pings,
            (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64(),
        )
    });
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    drop(child);
    (pings, cpu)
}

fn p90(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * 9).div_ceil(10) - 1]
}

#[test]
fn idle_sockets_cannot_starve_a_node_with_a_soft_file_limit_of_1024() {
    let (pings, cpu) = idle_socket_attack(1024, &[]);
    eprintln!(
        "soft limit 1024: {} new owner connections + pings, p90 {:.1} ms, worst {:.1} ms, node CPU {cpu:.2} cores",
        pings.len(),
        p90(pings.clone()),
        pings.iter().cloned().fold(0.0, f64::max)
    );
    assert_eq!(pings.len(), 70);
    assert!(cpu < 0.5, "the node used {cpu:.2} cores");
}

#[test]
fn idle_sockets_cannot_starve_a_node_at_its_connection_cap() {
    let (pings, cpu) = idle_socket_attack(1024, &["--max-connections", "200"]);
    let p90 = p90(pings.clone());
    eprintln!(
        "--max-connections 200: {} new owner connections + pings, p90 {p90:.1} ms, worst {:.1} ms, node CPU {cpu:.2} cores",
        pings.len(),
        pings.iter().cloned().fold(0.0, f64::max)
    );
    assert_eq!(pings.len(), 70);
    assert!(p90 <= 100.0, "p90 {p90:.1} ms");
    assert!(cpu < 0.5, "the node used {cpu:.2} cores");
}
