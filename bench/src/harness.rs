//! What every benchmark shares: the binaries, scratch dirs, nodes, clocks and timers.

use super::*;

/// The release `teekms` next to this benchmark binary (or $TEEKMS_BIN).
pub(crate) fn teekms_binary() -> PathBuf {
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
pub(crate) fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

pub(crate) fn sim_policy(teekms: &Path, home: &Path) -> Policy {
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

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Mean time of `f` over enough runs to take about a second.
pub(crate) fn time_per_op(f: impl FnMut()) -> Duration {
    time_per_op_for(f, Duration::from_secs(1))
}

pub(crate) fn time_per_op_for(mut f: impl FnMut(), budget: Duration) -> Duration {
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
pub(crate) fn interleaved(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration, f64) {
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

/// The machine's CPU time counters (`/proc/stat`, all CPUs): total, idle (with I/O wait),
/// and softirq, which the processes' own times do not include (the loopback TCP path
/// runs there).
#[derive(Clone, Copy)]
pub(crate) struct MachineCpu {
    total: u64,
    idle: u64,
    softirq: u64,
}

impl MachineCpu {
    pub(crate) fn now() -> MachineCpu {
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
    pub(crate) fn since(self, earlier: MachineCpu) -> (f64, f64) {
        let total = (self.total - earlier.total).max(1) as f64;
        (
            100.0 * (1.0 - (self.idle - earlier.idle) as f64 / total),
            100.0 * (self.softirq - earlier.softirq) as f64 / total,
        )
    }
}

/// The node's CPU time so far (user + system), from /proc.
pub(crate) fn cpu_time(pid: u32) -> Duration {
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

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A `teekms serve --tee sim` on port 0 (killed when dropped).
pub(crate) type Node = teekms_testkit::NodeProcess;

pub(crate) fn spawn_node(teekms: &Path, home: &Path, data: &Path) -> Node {
    spawn_node_with(teekms, home, data, &[])
}

/// [`spawn_node`] with more `serve` arguments.
pub(crate) fn spawn_node_with(teekms: &Path, home: &Path, data: &Path, extra: &[&str]) -> Node {
    // Warnings only: at the default level a node logs a line per request, which the
    // harness's stderr drain would keep in memory for the whole run (tens of MB), and
    // which an operator at tens of thousands of requests a second turns off too.
    teekms_testkit::Serve::new(teekms, data)
        .home(home)
        .args(extra)
        .log("warn")
        .spawn()
}
