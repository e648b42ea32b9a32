//! What an attacker and a new operator tried, through the real binary: changes racing
//! with use under load (one node, and a two-node cluster), durations that would wrap,
//! a second node on a data dir in use, a node that cannot listen, loose permissions.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Env;
use teekms_attest::Policy;
use teekms_client::NodeUrl;
use teekms_testkit::PgServer;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An owner, key `k` deployed through `url`, and an access key (its token file) that
/// the key policy lets encrypt. Returns (policy path, token path, granting policy path).
fn key_with_access(
    env: &Env,
    url: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let policy = env.sim_policy();
    let p = s(&policy).to_owned();
    env.ok(&["owner", "init"]);
    let dek = env.path("k.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    env.ok(&[
        "key",
        "deploy",
        "--node",
        url,
        "--policy",
        &p,
        "--key-id",
        "k",
        "--dek",
        s(&dek),
    ]);
    let token = env.path("token");
    let id = env.ok(&[
        "access",
        "create",
        "--keys",
        "k",
        "--operations",
        "encrypt",
        "-o",
        s(&token),
        "--node",
        url,
        "--policy",
        &p,
    ]);
    let grant = env.path("grant.json");
    std::fs::write(
        &grant,
        format!(
            r#"{{"rules":[{{"principals":[{{"access_key":"{}"}}],"operations":["encrypt"]}}]}}"#,
            id.trim()
        ),
    )
    .unwrap();
    env.ok(&[
        "key",
        "policy",
        "set",
        "k",
        "--file",
        s(&grant),
        "--node",
        url,
        "--policy",
        &p,
    ]);
    (policy, token, grant)
}

/// Each client's requests: when each started, and whether it was served.
type Log = Arc<Mutex<Vec<(Instant, bool)>>>;

/// `n` clients encrypting with the access key through `url`, each on its own
/// connection, until `stop`.
fn clients(
    url: &str,
    policy: &Path,
    token: &Path,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> (Vec<Log>, Vec<std::thread::JoinHandle<()>>) {
    let policy = Policy::from_toml(&std::fs::read_to_string(policy).unwrap()).unwrap();
    let token = std::fs::read_to_string(token).unwrap();
    let url = NodeUrl::parse(url).unwrap();
    let mut logs = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..n {
        let log: Log = Arc::default();
        logs.push(log.clone());
        let (policy, token, url, stop) = (policy.clone(), token.clone(), url.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = teekms_client::connect_verified(&url, &policy, None, now())
                    .await
                    .unwrap();
                c.use_access_key(&token);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let served = c.encrypt("k", None, b"a line of log", None).await.is_ok();
                    log.lock().unwrap().push((started, served));
                }
            });
        }));
    }
    (logs, threads)
}

/// Runs `trials` trials against clients on `client_url` while the owner changes the key
/// through `owner_url`: each trial takes the access away (disable, or the policy
/// replaced by `{}`), waits 100 ms, checks that every request each client started since
/// then was refused, and gives the access back. Returns how many such requests were
/// served anyway (stale), and how many were checked.
fn race_trials(
    env: &Env,
    owner_url: &str,
    client_url: &str,
    trials: usize,
    policy_only: bool,
) -> (usize, usize) {
    let (policy, token, grant) = key_with_access(env, owner_url);
    let p = s(&policy).to_owned();
    let empty = env.path("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (logs, threads) = clients(client_url, &policy, &token, 6, &stop);
    let (mut stale, mut checked) = (0, 0);
    for trial in 0..trials {
        // Let traffic flow (and the key be opened and cached) before each change.
        std::thread::sleep(Duration::from_millis(150));
        let by_policy = policy_only || trial % 2 == 1;
        if by_policy {
            env.ok(&[
                "key",
                "policy",
                "set",
                "k",
                "--file",
                s(&empty),
                "--node",
                owner_url,
                "--policy",
                &p,
            ]);
        } else {
            env.ok(&["key", "disable", "k", "--node", owner_url, "--policy", &p]);
        }
        let acked = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        let deadline = acked + Duration::from_millis(100);
        // Wait until every client has started and finished one request after the 100 ms.
        let waited = Instant::now();
        loop {
            let all_done = logs
                .iter()
                .all(|l| l.lock().unwrap().iter().any(|(t, _)| *t >= deadline));
            if all_done || waited.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for l in &logs {
            for (started, served) in l.lock().unwrap().iter() {
                if *started >= deadline {
                    checked += 1;
                    if *served {
                        stale += 1;
                    }
                }
            }
            l.lock().unwrap().clear();
        }
        if by_policy {
            env.ok(&[
                "key",
                "policy",
                "set",
                "k",
                "--file",
                s(&grant),
                "--node",
                owner_url,
                "--policy",
                &p,
            ]);
        } else {
            env.ok(&["key", "enable", "k", "--node", owner_url, "--policy", &p]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    (stale, checked)
}

#[test]
fn an_acknowledged_disable_or_policy_change_applies_to_every_later_request() {
    let env = Env::new();
    let node = env.serve(&env.path("node"));
    let (stale, checked) = race_trials(&env, &node.url, &node.url, 50, false);
    assert!(checked >= 50 * 6, "only {checked} requests checked");
    assert_eq!(
        stale, 0,
        "{stale} of {checked} requests after the acknowledgement saw the old state"
    );
}

#[test]
fn a_policy_change_on_one_node_applies_at_once_on_the_other() {
    let env = Env::new();
    let pg = PgServer::start();
    let store = pg.url("postgres");
    let n1 = env.serve_tee("sim", &env.path("node-1"), &["--store", &store], "warn");
    let n2 = env.serve_tee(
        "sim",
        &env.path("node-2"),
        &["--store", &store, "--join", &n1.url],
        "warn",
    );
    let (stale, checked) = race_trials(&env, &n1.url, &n2.url, 20, true);
    assert!(checked >= 20 * 6, "only {checked} requests checked");
    assert_eq!(
        stale, 0,
        "{stale} of {checked} requests on the other node saw the old policy"
    );
}

#[test]
fn durations_that_would_wrap_are_refused_with_the_limit() {
    let env = Env::new();
    let node = env.serve_tee(
        "sim",
        &env.path("node"),
        &["--min-deletion-wait", "0s"],
        "warn",
    );
    let (policy, _, _) = key_with_access(&env, &node.url);
    let p = s(&policy);
    for wait in [
        "18446744073709551615s",
        "36501d",
        "99999999999999999999999999h",
    ] {
        let (code, _, err) = env.run(&[
            "key",
            "schedule-deletion",
            "k",
            "--wait",
            wait,
            "--node",
            &node.url,
            "--policy",
            p,
        ]);
        assert_eq!(code, 2, "--wait {wait}: {err}");
        assert!(err.contains("100 years"), "{err}");
    }
    let (code, _, err) = env.run(&[
        "access",
        "create",
        "--keys",
        "k",
        "--operations",
        "encrypt",
        "--expires-in",
        "18446744073709551615s",
        "-o",
        s(&env.path("t2")),
        "--node",
        &node.url,
        "--policy",
        p,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("100 years"), "{err}");
    // The key is untouched: not pending deletion, still usable.
    let d = env.ok(&[
        "key", "describe", "k", "--node", &node.url, "--policy", p, "--json",
    ]);
    let d: serde_json::Value = serde_json::from_str(&d).unwrap();
    assert!(d["deletion_at"].is_null() && d["enabled"] == true, "{d}");
    // The node refuses the same itself (400), for clients that skip the CLI's check.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let owner = teekms_core::OwnerKey::from_pem(
            &std::fs::read_to_string(env.path(".config/teekms/owner.key")).unwrap(),
        )
        .unwrap();
        let pol = Policy::from_toml(&std::fs::read_to_string(&policy).unwrap()).unwrap();
        let mut c = teekms_client::connect_verified(
            &NodeUrl::parse(&node.url).unwrap(),
            &pol,
            Some(&owner),
            now(),
        )
        .await
        .unwrap();
        match c
            .schedule_deletion("k", Some("18446744073709551615s"))
            .await
        {
            Err(teekms_client::ClientError::Api {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(message.contains("100 years"), "{message}");
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    });
}

#[test]
fn one_node_per_data_dir_and_nothing_created_when_it_cannot_listen() {
    let env = Env::new();
    let data_dir = env.path("node");
    let mut first = env.serve(&data_dir);
    let pid = first.child.id();
    // A second node on the same data dir, another port: refused, exit 2.
    let (code, _, err) = env.run(&[
        "serve",
        "--tee",
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        s(&data_dir),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("is in use by process {pid}")),
        "{err}"
    );
    // The files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for e in std::fs::read_dir(&data_dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }
    // A port in use: exit 2, and no data dir made.
    let addr = first.url.trim_start_matches("https://").to_owned();
    let fresh = env.path("never-made");
    let (code, _, err) = env.run(&[
        "serve",
        "--tee",
        "sim",
        "--listen",
        &addr,
        "--data-dir",
        s(&fresh),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !fresh.exists(),
        "the data dir was created by a node that could not listen"
    );
    assert!(!err.contains("recovery restore"), "{err}");
    // Once the first node is gone, the data dir is free again; a loosened one is
    // tightened at start.
    first.stop();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data_dir.join("teekms.sqlite3");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _again = env.serve(&data_dir);
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&db), 0o600);
}
