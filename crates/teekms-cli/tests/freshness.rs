//! A single node on SQLite whose store the host rolls back (spec/freshness-v1.md),
//! through the binary: written back in place from an earlier copy with SQLite's backup
//! API while the node runs; one row put back to an older revision; a second process
//! writing the same store; the node restarted on an old copy, which only the owner's
//! stamps can catch.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, s};
use teekms_testkit::NodeProcess;

/// `GET /v1/ready`: status and body (curl; the node's certificate is not checked here,
/// nothing is sent).
fn ready(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", &format!("{url}/v1/ready")])
        .output()
        .expect("curl runs (./test installs it if absent)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Waits (at most 5 s) for `/v1/ready` to answer `status`.
fn until_ready_is(url: &str, status: u16) -> String {
    let start = Instant::now();
    loop {
        let (got, body) = ready(url);
        if got == status {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "ready stayed {got}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn db(data_dir: &Path) -> PathBuf {
    data_dir.join("teekms.sqlite3")
}

/// An online copy of the live store (SQLite's backup API), as a host takes one.
fn backup(data_dir: &Path, to: &Path) {
    let live = rusqlite::Connection::open(db(data_dir)).unwrap();
    live.backup(
        rusqlite::MAIN_DB,
        to,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .unwrap();
}

/// Writes `from` back over the live store in place (SQLite's backup API) while the node
/// runs: the host's rollback.
fn write_back(from: &Path, data_dir: &Path) {
    let mut live = rusqlite::Connection::open(db(data_dir)).unwrap();
    live.busy_timeout(Duration::from_secs(10)).unwrap();
    live.restore(
        rusqlite::MAIN_DB,
        from,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .unwrap();
}

fn encrypt_with_token(env: &Env, url: &str, policy: &Path, token: &Path) -> (i32, String) {
    let (code, out, err) = env.run(&[
        "envelope",
        "encrypt",
        "--node",
        url,
        "--policy",
        s(policy),
        "--access-key",
        s(token),
        "--key-id",
        "k",
        "-i",
        s(policy),
        "-o",
        s(&env.path("out.env")),
    ]);
    (code, format!("{out}{err}"))
}

fn access_key_id(token: &Path) -> String {
    let t = std::fs::read_to_string(token).unwrap();
    t.trim().split('.').next().unwrap().to_owned()
}

#[test]
fn a_store_written_back_under_a_running_node_is_refused_until_brought_forward() {
    let env = Env::new();
    let data_dir = env.path("node");
    let node = env.serve(&data_dir);
    let url = node.url.clone();
    let (policy, token, _) = env.key_with_access(&url);
    let p = s(&policy).to_owned();
    assert_eq!(encrypt_with_token(&env, &url, &policy, &token).0, 0);
    let before = env.path("before.sqlite3");
    backup(&data_dir, &before);

    // Acknowledged: the access key revoked, the key disabled.
    let id = access_key_id(&token);
    env.ok(&["access", "revoke", &id, "--node", &url, "--policy", &p]);
    env.ok(&["key", "disable", "k", "--node", &url, "--policy", &p]);
    let body = until_ready_is(&url, 200);
    assert!(body.contains("\"freshness\""), "{body}");
    let after = env.path("after.sqlite3");
    backup(&data_dir, &after);

    write_back(&before, &data_dir);
    // The revoked token and the disabled key are never served again from the old copy.
    for i in 0..100 {
        let (code, out) = encrypt_with_token(&env, &url, &policy, &token);
        assert_eq!(code, 1, "try {i}: {out}");
        assert!(out.contains("store_rolled_back"), "try {i}: {out}");
    }
    let (code, out, err) = env.run(&["key", "describe", "k", "--node", &url, "--policy", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("(503 store_rolled_back)"), "{err}");
    let body = until_ready_is(&url, 503);
    assert!(
        body.contains("store_rolled_back") && body.contains("this node: epoch"),
        "{body}"
    );

    // Brought forward (the copy taken after the changes): served again, as it was left.
    write_back(&after, &data_dir);
    until_ready_is(&url, 200);
    let (code, out) = encrypt_with_token(&env, &url, &policy, &token);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("store_rolled_back"), "{out}");
    let described = env.ok(&[
        "key", "describe", "k", "--node", &url, "--policy", &p, "--json",
    ]);
    assert!(described.contains("\"enabled\":false"), "{described}");
    let v = env.ok(&["audit", "verify", "--node", &url, "--policy", &p]);
    assert!(v.contains("verified"), "{v}");
}

#[test]
fn one_row_put_back_to_an_older_revision_trips_its_floor() {
    let env = Env::new();
    let data_dir = env.path("node");
    let node = env.serve(&data_dir);
    let url = node.url.clone();
    let (policy, token, _) = env.key_with_access(&url);
    let p = s(&policy).to_owned();
    let id = access_key_id(&token);
    let old: (i64, Vec<u8>) = {
        let conn = rusqlite::Connection::open(db(&data_dir)).unwrap();
        conn.query_row(
            "SELECT revision, record FROM access_keys WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    env.ok(&["access", "revoke", &id, "--node", &url, "--policy", &p]);
    {
        let conn = rusqlite::Connection::open(db(&data_dir)).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute(
            "UPDATE access_keys SET revision = ?1, record = ?2 WHERE id = ?3",
            rusqlite::params![old.0, old.1, id],
        )
        .unwrap();
    }
    for _ in 0..10 {
        let (code, out) = encrypt_with_token(&env, &url, &policy, &token);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("store_rolled_back") && out.contains("revision 1, but revision 2"),
            "{out}"
        );
    }
}

#[test]
fn a_second_process_writing_the_store_stops_the_first() {
    let env = Env::new();
    let data_dir = env.path("node");
    let first = env.serve(&data_dir);
    let (policy, _, _) = env.key_with_access(&first.url);
    let p = s(&policy).to_owned();
    // A copy of the node (its sealed keys) started on the very same database file.
    let twin = env.path("twin");
    std::fs::create_dir_all(&twin).unwrap();
    for e in std::fs::read_dir(&data_dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file()
            && !name.starts_with("teekms.sqlite3")
            && name != "teekms.lock"
        {
            std::fs::copy(e.path(), twin.join(&name)).unwrap();
        }
    }
    std::os::unix::fs::symlink(db(&data_dir), db(&twin)).unwrap();
    let second = env.serve(&twin);
    env.ok(&["key", "disable", "k", "--node", &second.url, "--policy", &p]);

    let body = until_ready_is(&first.url, 503);
    assert!(
        body.contains("store_rolled_back") && body.contains("another process wrote"),
        "{body}"
    );
    // The owner, shown the twin's newer epoch, is told of it too.
    let (code, _, err) = env.run(&["key", "enable", "k", "--node", &first.url, "--policy", &p]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rolled back"), "{err}");
}

#[test]
fn a_node_restarted_on_an_old_copy_is_caught_by_its_owner() {
    let env = Env::new();
    let data_dir = env.path("node");
    let mut node = env.serve(&data_dir);
    let (policy, _, _) = env.key_with_access(&node.url);
    let p = s(&policy).to_owned();
    let old = env.path("old.sqlite3");
    backup(&data_dir, &old);
    env.ok(&["key", "disable", "k", "--node", &node.url, "--policy", &p]);
    let shown = env.ok(&["freshness", "show", "--json"]);
    assert!(shown.contains("\"epoch\""), "{shown}");
    node.stop();

    // The host puts yesterday's file in place and starts the node on it.
    for extra in ["teekms.sqlite3-wal", "teekms.sqlite3-shm"] {
        let _ = std::fs::remove_file(data_dir.join(extra));
    }
    std::fs::copy(&old, db(&data_dir)).unwrap();
    let node = env.serve(&data_dir);
    let (code, out, err) = env.run(&["key", "describe", "k", "--node", &node.url, "--policy", &p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("is at epoch")
            && err.contains("acknowledged epoch")
            && err.contains("its store was rolled back"),
        "{err}"
    );
    // Another owner, who was never shown the newer epoch, is not warned: one node alone
    // cannot tell (SECURITY.md).
    let stranger = Env::new();
    stranger.ok(&["owner", "init"]);
    let (code, _, err) = stranger.run(&["key", "list", "--node", &node.url, "--policy", &p]);
    assert_eq!(code, 0, "{err}");
}

/// The epoch `/v1/ready` reports ("epoch N, hash H").
fn epoch_of(url: &str) -> Option<u64> {
    let (_, body) = ready(url);
    let at = body.find("epoch ")? + "epoch ".len();
    body[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Waits (at most 5 s) until every node reports the same epoch; returns it.
fn same_epoch(urls: &[&str]) -> u64 {
    let start = Instant::now();
    loop {
        let seen: Vec<Option<u64>> = urls.iter().map(|u| epoch_of(u)).collect();
        if seen[0].is_some() && seen.iter().all(|e| *e == seen[0]) {
            return seen[0].unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sim nodes on `store`, one per entry of `envs` (its environment): the first makes the
/// cluster, with `first` options more, and the others join it. Returns them and their
/// data dirs.
fn start_members(
    env: &Env,
    store: &str,
    first: &[&str],
    envs: &[&[(&str, &str)]],
) -> (Vec<NodeProcess>, Vec<PathBuf>) {
    let dirs: Vec<PathBuf> = (1..=envs.len())
        .map(|i| env.path(&format!("node-{i}")))
        .collect();
    let mut args = vec!["--store", store];
    args.extend_from_slice(first);
    let mut nodes = vec![env.serve_with_env(envs[0], "sim", &dirs[0], &args, "warn")];
    let first_url = nodes[0].url.clone();
    let join = ["--store", store, "--join", first_url.as_str()];
    for (i, vars) in envs.iter().enumerate().skip(1) {
        nodes.push(env.serve_with_env(vars, "sim", &dirs[i], &join, "warn"));
    }
    (nodes, dirs)
}

fn three(nodes: Vec<NodeProcess>) -> [NodeProcess; 3] {
    nodes.try_into().ok().expect("three nodes")
}

/// `teekms cluster status` once `n` members answer (they record themselves at start).
fn until_members(env: &Env, url: &str, policy: &str, n: usize) -> String {
    let start = Instant::now();
    loop {
        let out = env.ok(&["cluster", "status", "--node", url, "--policy", policy]);
        if out.lines().filter(|l| l.contains(" epoch ")).count() == n {
            return out;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nodes on one PostgreSQL database; the host dumps it, the owner revokes an
/// access key and disables a key (acknowledged), and the host restores the dump with
/// `pg_restore --clean` under the running nodes: every node refuses the revoked token
/// and the disabled key, 100 of 100 tries, and says why; a dump taken after the changes,
/// restored, brings the database forward and the nodes serve it as it was left.
#[test]
fn a_database_restored_under_a_running_cluster_is_refused_on_every_node() {
    let env = Env::new();
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let (nodes, _) = start_members(&env, &store, &[], &[&[], &[], &[]]);
    let [n1, n2, n3] = three(nodes);
    let urls = [n1.url.as_str(), n2.url.as_str(), n3.url.as_str()];
    let (policy, token, _) = env.key_with_access(urls[0]);
    let p = s(&policy).to_owned();
    for url in urls {
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 0, "{out}");
    }
    let before_changes = same_epoch(&urls);
    // Each node recorded itself as a member; each answers for its own epoch.
    let status = until_members(&env, urls[1], &p, 3);
    assert_eq!(
        status.matches(&format!("epoch {before_changes} ")).count(),
        3,
        "{status}"
    );
    let before = pg.dump("postgres", "before.dump");

    let id = access_key_id(&token);
    env.ok(&["access", "revoke", &id, "--node", urls[0], "--policy", &p]);
    env.ok(&["key", "disable", "k", "--node", urls[1], "--policy", &p]);
    assert!(same_epoch(&urls) > before_changes);
    let after = pg.dump("postgres", "after.dump");

    pg.restore_clean("postgres", &before);
    for url in urls {
        let body = until_ready_is(url, 503);
        assert!(body.contains("store_rolled_back"), "{body}");
    }
    for i in 0..100 {
        let url = urls[i % 3];
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 1, "try {i} on {url}: {out}");
        assert!(out.contains("store_rolled_back"), "try {i} on {url}: {out}");
    }
    for url in urls {
        let (code, _, err) = env.run(&["key", "describe", "k", "--node", url, "--policy", &p]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("store_rolled_back"), "{err}");
    }
    // The operator's view while every node refuses: each member names its alarm.
    let status = env.ok(&["cluster", "status", "--node", urls[2], "--policy", &p]);
    assert_eq!(
        status.matches("ALARM store_rolled_back").count(),
        3,
        "{status}"
    );

    pg.restore_clean("postgres", &after);
    for url in urls {
        until_ready_is(url, 200);
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 1, "{out}");
        assert!(!out.contains("store_rolled_back"), "{out}");
        let described = env.ok(&[
            "key", "describe", "k", "--node", url, "--policy", &p, "--json",
        ]);
        assert!(described.contains("\"enabled\":false"), "{described}");
    }
}

/// Acknowledgement by a majority (spec/freshness-v1.md, "Cluster rules", 1): with one
/// of three nodes SIGKILLed a revocation is still acknowledged; with two, it answers 503
/// `freshness_unconfirmed` within about 2 s (the CLI exits 1 naming it), a retry says the
/// same, and the surviving node refuses the revoked token all the same; data-plane
/// answers (rule 3) go on with one member down and stop with two.
#[test]
fn revocations_need_a_majority_of_the_members() {
    let env = Env::new();
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let (nodes, _) = start_members(&env, &store, &[], &[&[], &[], &[]]);
    let [n1, mut n2, mut n3] = three(nodes);
    let (policy, token, _) = env.key_with_access(&n1.url);
    let p = s(&policy).to_owned();
    until_members(&env, &n1.url, &p, 3);
    let token_of = |name: &str| {
        let path = env.path(name);
        env.ok(&[
            "access",
            "create",
            "--keys",
            "k",
            "--operations",
            "encrypt",
            "-o",
            s(&path),
            "--node",
            &n1.url,
            "--policy",
            &p,
        ]);
        path
    };
    let second = token_of("second.token");
    let owner_encrypts = || {
        let (code, out, err) = env.run(&[
            "envelope",
            "encrypt",
            "--node",
            &n1.url,
            "--policy",
            &p,
            "--key-id",
            "k",
            "-i",
            &p,
            "-o",
            s(&env.path("owner.env")),
        ]);
        (code, format!("{out}{err}"))
    };

    n3.kill();
    // Data-plane answers need one other member's confirmation (rule 3): one is left.
    let (code, out) = owner_encrypts();
    assert_eq!(code, 0, "{out}");
    // A stream (`teekms encrypt` through the node) is confirmed once, before its first byte.
    let owner_streams = || {
        let (code, out, err) = env.run(&[
            "encrypt",
            "--node",
            &n1.url,
            "--policy",
            &p,
            "--key-id",
            "k",
            "-i",
            &p,
            "-o",
            s(&env.path("owner.stream")),
        ]);
        (code, format!("{out}{err}"))
    };
    let (code, out) = owner_streams();
    assert_eq!(code, 0, "{out}");
    env.ok(&[
        "access",
        "revoke",
        &access_key_id(&token),
        "--node",
        &n1.url,
        "--policy",
        &p,
    ]);

    n2.kill();
    let id = access_key_id(&second);
    for attempt in 0..2 {
        let started = Instant::now();
        let (code, out, err) =
            env.run(&["access", "revoke", &id, "--node", &n1.url, "--policy", &p]);
        let took = started.elapsed();
        assert_eq!(code, 1, "attempt {attempt}: {out}{err}");
        assert!(
            err.contains("freshness_unconfirmed")
                && err.contains("only 1 of the cluster's 3 members"),
            "attempt {attempt}: {err}"
        );
        assert!(took < Duration::from_secs(4), "attempt {attempt}: {took:?}");
    }
    // Committed and enforced on the node that is left.
    let (code, out) = encrypt_with_token(&env, &n1.url, &policy, &second);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("revoked"), "{out}");
    // Alone, it answers no data-plane request: nobody confirms that it is not behind.
    let started = Instant::now();
    let (code, out) = owner_encrypts();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("freshness_unconfirmed") && out.contains("could not confirm with a majority"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let (code, out) = owner_streams();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("freshness_unconfirmed"), "{out}");
}

/// The owner's record of the highest epoch shown (`teekms freshness show --json`): E, H.
fn owners_epoch(env: &Env) -> (u64, String) {
    let line = env.ok(&["freshness", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    (
        v["epoch"].as_u64().unwrap(),
        v["hash"].as_str().unwrap().to_owned(),
    )
}

/// Restarts (spec/freshness-v1.md, "Cluster rules", 2 and 5), on one PostgreSQL
/// database that the host restores from a dump taken before a revocation and a disable:
/// - one node restarted learns the epoch from its two peers and refuses the store it
///   would otherwise have served from scratch; brought forward, the store is served;
/// - all three restarted at once: nothing is served (`freshness_unconfirmed`) until the
///   cluster admin runs `teekms cluster resume` with the epoch the owner holds; resumed
///   on the old store, every node refuses it; brought forward, they serve.
#[test]
fn restarted_members_recover_the_epoch_from_their_peers_or_wait_for_resume() {
    let env = Env::new();
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let admin = env
        .ok(&["owner", "init"])
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .trim()
        .to_owned();
    let (mut nodes, dirs) =
        start_members(&env, &store, &["--cluster-admin", &admin], &[&[], &[], &[]]);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let first = ["--store", store.as_str(), "--cluster-admin", admin.as_str()];
    let join = ["--store", store.as_str(), "--join", urls[0].as_str()];
    let (policy, token, _) = env.key_with_access(&urls[0]);
    let p = s(&policy).to_owned();
    until_members(&env, &urls[0], &p, 3);
    let before = pg.dump("postgres", "before.dump");
    let id = access_key_id(&token);
    env.ok(&["access", "revoke", &id, "--node", &urls[0], "--policy", &p]);
    env.ok(&["key", "disable", "k", "--node", &urls[1], "--policy", &p]);
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let acknowledged = same_epoch(&refs);
    let after = pg.dump("postgres", "after.dump");
    let serves_the_newest = |url: &str| {
        until_ready_is(url, 200);
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("revoked"), "{out}");
    };

    // One node restarts on the restored store: its peers hold the epoch it lost.
    pg.restore_clean("postgres", &before);
    nodes[2].kill();
    nodes[2] = env.serve_again(&urls[2], &dirs[2], &join);
    let body = until_ready_is(&urls[2], 503);
    assert!(body.contains("store_rolled_back"), "{body}");
    assert!(
        body.contains(&format!("acknowledged epoch {acknowledged}/")),
        "{body}"
    );
    for _ in 0..10 {
        let (code, out) = encrypt_with_token(&env, &urls[2], &policy, &token);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("store_rolled_back"), "{out}");
    }
    pg.restore_clean("postgres", &after);
    serves_the_newest(&urls[2]);

    // All three restart on the restored store: nobody is left who holds the epoch.
    pg.restore_clean("postgres", &before);
    for n in nodes.iter_mut() {
        n.kill();
    }
    let extras = [&first[..], &join[..], &join[..]];
    for (i, n) in nodes.iter_mut().enumerate() {
        *n = env.serve_again(&urls[i], &dirs[i], extras[i]);
    }
    for url in &urls {
        let body = until_ready_is(url, 503);
        assert!(body.contains("has not yet learned"), "{body}");
        // Refused; and the stamp, the store's epoch, tells the owner it is behind.
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("its store was rolled back"), "{out}");
    }
    let (code, status, err) = env.run(&["cluster", "status", "--node", &urls[1], "--policy", &p]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(status.matches("RECOVERING").count(), 3, "{status}");

    // The admin accepts the epoch the owner was shown: the old store is refused.
    let (epoch, hash) = owners_epoch(&env);
    assert_eq!(epoch, acknowledged);
    let e = epoch.to_string();
    let resume = [
        "cluster", "resume", "--epoch", &e, "--hash", &hash, "--node", &urls[0], "--policy", &p,
    ];
    let (code, out, err) = env.run(&resume);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("ALARM store_rolled_back").count(), 3, "{out}");
    for url in &urls {
        let body = until_ready_is(url, 503);
        assert!(body.contains("store_rolled_back"), "{body}");
    }
    pg.restore_clean("postgres", &after);
    for url in &urls {
        serves_the_newest(url);
    }
    // Nobody waits any more; a second resume says so.
    let (code, _, err) = env.run(&resume);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no member waits"), "{err}");
}

/// A fork (spec/freshness-v1.md): the writer of a revocation is killed between the
/// PostgreSQL commit and the acknowledgements (a fault hook of debug builds); a member
/// learns the lost epoch when it is asked; the host restores the database from before
/// it, and another change is made through a member that never saw it. That change
/// writes another hash at the same epoch: the member that holds the first one refuses
/// to confirm it and raises the alarm, and the change answers 503
/// `freshness_unconfirmed`. (The members' watch is off, so that who saw what is exact.)
#[test]
fn a_lost_change_replaced_by_another_is_a_fork_that_the_members_detect() {
    let env = Env::new();
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let trigger = env.path("exit-after-commit");
    let hook = [("TEEKMS_TEST_EXIT_AFTER_COMMIT", s(&trigger))];
    let quiet = [("TEEKMS_TEST_NO_WATCH", "1")];
    let (nodes, _) = start_members(&env, &store, &[], &[&hook, &quiet, &quiet]);
    let [n1, n2, n3] = three(nodes);
    let (policy, token, _) = env.key_with_access(&n1.url);
    let p = s(&policy).to_owned();
    until_members(&env, &n1.url, &p, 3);
    let acknowledged = same_epoch(&[&n1.url, &n2.url, &n3.url]);
    let before = pg.dump("postgres", "before.dump");

    // The revocation commits at the next epoch; its writer dies before telling anyone.
    std::fs::write(&trigger, b"").unwrap();
    let id = access_key_id(&token);
    let (code, _, err) = env.run(&["access", "revoke", &id, "--node", &n1.url, "--policy", &p]);
    assert_ne!(code, 0, "the writer died before it answered: {err}");
    // Node 2 learns the lost epoch when node 3 asks it (it reads the store first); node 3
    // answers its own line from memory.
    let lost = acknowledged + 1;
    let status = env.ok(&["cluster", "status", "--node", &n3.url, "--policy", &p]);
    assert!(
        status.contains(&format!("epoch {lost} "))
            && status.contains(&format!("epoch {acknowledged} ")),
        "{status}"
    );

    pg.restore_clean("postgres", &before);
    let (code, _, err) = env.run(&["key", "disable", "k", "--node", &n3.url, "--policy", &p]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("freshness_unconfirmed"), "{err}");
    let body = until_ready_is(&n2.url, 503);
    assert!(
        body.contains(&format!("epoch {lost}/")) && body.contains("(a fork)"),
        "{body}"
    );
    // Node 2 refuses; and the owner, shown the other hash by node 3's refusal, is told
    // of the fork by the CLI too.
    let (code, out) = encrypt_with_token(&env, &n2.url, &policy, &token);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(a fork)"), "{out}");
    let (code, _, err) = env.run(&["key", "describe", "k", "--node", &n2.url, "--policy", &p]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("(a fork)"), "{err}");
}

/// Waits (at most `limit`) for `/v1/ready` to answer `status`; returns the body.
fn ready_within(url: &str, status: u16, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = ready(url);
        if code == status {
            return body;
        }
        assert!(start.elapsed() < limit, "{code}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster made without a cluster admin has nobody to resume it (spec/freshness-v1.md,
/// "Cluster rules", 5): its two members restarted together wait 5 s for each other, then
/// serve the database as it is. The sealed record that says the cluster has no admin is
/// what allows it: once the host deletes that row, restarted members wait.
#[test]
fn without_an_admin_members_serve_after_a_wait_unless_the_record_saying_so_is_gone() {
    let env = Env::new();
    let pg = teekms_testkit::PgServer::start();
    let store = pg.url("postgres");
    let (mut nodes, dirs) = start_members(&env, &store, &[], &[&[], &[]]);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let join = ["--store", store.as_str(), "--join", urls[0].as_str()];
    let (policy, token, _) = env.key_with_access(&urls[0]);
    until_members(&env, &urls[0], s(&policy), 2);
    let restart_both = |nodes: &mut Vec<NodeProcess>| {
        for n in nodes.iter_mut() {
            n.kill();
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            *n = env.serve_again(&urls[i], &dirs[i], &join);
        }
    };

    restart_both(&mut nodes);
    let started = Instant::now();
    let body = ready_within(&urls[0], 503, Duration::from_secs(5));
    assert!(body.contains("has not yet learned"), "{body}");
    for url in &urls {
        ready_within(url, 200, Duration::from_secs(15));
    }
    // Both serve, each confirmed by the other.
    for url in &urls {
        let (code, out) = encrypt_with_token(&env, url, &policy, &token);
        assert_eq!(code, 0, "{out}");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    pg.sql("postgres", "DELETE FROM meta WHERE name = 'cluster-admin'");
    restart_both(&mut nodes);
    std::thread::sleep(Duration::from_secs(8));
    for url in &urls {
        let body = ready_within(url, 503, Duration::from_secs(1));
        assert!(body.contains("has not yet learned"), "{body}");
    }
}
