//! What an attacker and a new operator tried, through the real binary: changes racing
//! with use under load (one node, and a two-node cluster), durations that would wrap,
//! a second node on a data dir in use, a node that cannot listen, loose permissions.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, now, s};
use teekms_attest::Policy;
use teekms_client::NodeUrl;
use teekms_testkit::PgServer;

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
    let (policy, token, grant) = env.key_with_access(owner_url);
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
    let (policy, _, _) = env.key_with_access(&node.url);
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
    assert!(
        !err.contains("recovery restore") && err.contains("another process on that port"),
        "{err}"
    );
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

/// Puts back a stopped node's SQLite file as it was (and drops the write-ahead log that
/// the node left, which belongs to the changed file).
fn restore_db(data_dir: &Path, original: &[u8]) {
    for extra in ["teekms.sqlite3-wal", "teekms.sqlite3-shm"] {
        let _ = std::fs::remove_file(data_dir.join(extra));
    }
    std::fs::write(data_dir.join("teekms.sqlite3"), original).unwrap();
}

/// Runs SQL on a stopped node's SQLite file (the host's powers).
fn sql(data_dir: &Path, statements: &str) {
    let db = rusqlite::Connection::open(data_dir.join("teekms.sqlite3")).unwrap();
    db.execute_batch(statements).unwrap();
}

fn describe(env: &Env, url: &str, p: &str, key: &str) -> (i32, String) {
    let (code, out, err) = env.run(&[
        "key", "describe", key, "--node", url, "--policy", p, "--json",
    ]);
    // The JSON alone when it succeeded; both streams (the error) when it did not.
    if code == 0 {
        (code, out)
    } else {
        (code, format!("{out}{err}"))
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A data dir written by teekms before bound state records (commit 2cadaff, the `sim`
/// TEE; tests/fixtures/format1): keys `plain` (never changed: no state row), `off`
/// (disabled), `rot` (rotated, min-decryption-version 2), `gone`.
#[test]
fn a_data_dir_made_before_bound_states_is_migrated_once_then_a_missing_state_is_damage() {
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
    copy_tree(&fixture, env.dir.path());
    let data_dir = env.path("node");
    let p = env.path("policy.toml");
    let p = s(&p);
    let mut node = env.serve(&data_dir);
    let url = node.url.clone();
    let state = |url: &str, key: &str| -> serde_json::Value {
        let (code, out) = describe(&env, url, p, key);
        assert_eq!(code, 0, "{key}: {out}");
        serde_json::from_str(&out).unwrap()
    };
    // Each key in the state it had: the migration wrote the never-changed ones' initial
    // state and touched no other.
    let plain = state(&url, "plain");
    assert_eq!(
        (
            plain["enabled"].as_bool(),
            plain["current_version"].as_u64()
        ),
        (Some(true), Some(1))
    );
    assert_eq!(state(&url, "off")["enabled"], false);
    let rot = state(&url, "rot");
    assert_eq!(
        (
            rot["current_version"].as_u64(),
            rot["min_decryption_version"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let back = env.path("msg.back");
    env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "-i",
        s(&env.path("plain.env")),
        "-o",
        s(&back),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), b"hi\n");
    node.stop();
    // The migration wrote the missing states (and the store's format mark) in one job,
    // with its audit entry (the node's, in no owner's log).
    let db = rusqlite::Connection::open(data_dir.join("teekms.sqlite3")).unwrap();
    let states: Vec<String> = db
        .prepare("SELECT key_id FROM key_state ORDER BY key_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states, ["gone", "off", "plain", "rot"]);
    let entries: Vec<String> = db
        .prepare("SELECT entry FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|e| {
            let entry = teekms_core::audit::stored::decode(&e.unwrap()).unwrap();
            serde_json::to_string(&entry).unwrap()
        })
        .collect();
    let migrations: Vec<&String> = entries
        .iter()
        .filter(|e| e.contains("\"migrate\""))
        .collect();
    assert_eq!(migrations.len(), 1, "{entries:#?}");
    assert!(
        migrations[0].contains("initial state written for 2 keys, records for 1 owners"),
        "{}",
        migrations[0]
    );
    drop(db);

    // Now a state row removed by the host is damage, at every later start: the
    // migration does not run again and nothing is reset.
    sql(
        &data_dir,
        "DELETE FROM key_state WHERE key_id IN ('plain', 'off'); DELETE FROM meta WHERE name = 'store-format';",
    );
    let node = env.serve(&data_dir);
    let url = node.url.clone();
    for key in ["plain", "off"] {
        let (code, out) = describe(&env, &url, p, key);
        assert_eq!(code, 1, "{key}: {out}");
        assert!(out.contains("state record is missing"), "{key}: {out}");
    }
    let (code, out, _) = env.run(&[
        "envelope",
        "encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "off",
        "-i",
        s(&env.path("plain.key")),
        "-o",
        s(&env.path("x")),
    ]);
    assert_eq!(
        code, 1,
        "a disabled key whose state was removed must not encrypt: {out}"
    );
    // The node serves every other key, and lists the damaged ones as such.
    assert_eq!(state(&url, "rot")["current_version"], 2);
    // Damaged keys make `key list` exit 1, with the whole list on stdout.
    let (code, list, _) = env.run(&["key", "list", "--node", &url, "--policy", p, "--json"]);
    assert_eq!(code, 1);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let damaged: Vec<&str> = list["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key_id"].as_str().unwrap())
        .collect();
    assert!(
        damaged.contains(&"plain") && damaged.contains(&"off"),
        "{list}"
    );
    let listed: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key_id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"rot") && !listed.contains(&"off"),
        "{list}"
    );
}

/// The owner's row of each record kind, removed or swapped with another key's (or
/// owner's) through a stopped node's SQLite file: the key is refused as damaged, never
/// served in another state. And a deleted key id stays deleted.
#[test]
fn removed_or_swapped_records_are_damage_and_deletion_is_final() {
    let env = Env::new();
    let data_dir = env.path("node");
    let mut node = env.serve_tee("sim", &data_dir, &["--min-deletion-wait", "0s"], "warn");
    let (policy, token, _) = env.key_with_access(&node.url);
    let p = s(&policy).to_owned();
    let url = node.url.clone();
    let deploy = |env: &Env, url: &str, key: &str| -> (i32, String) {
        let dek = env.path(&format!("{key}.key"));
        if !dek.exists() {
            env.ok(&["key", "generate", "-o", s(&dek)]);
        }
        let (code, out, err) = env.run(&[
            "key",
            "deploy",
            "--node",
            url,
            "--policy",
            &p,
            "--key-id",
            key,
            "--dek",
            s(&dek),
        ]);
        (code, format!("{out}{err}"))
    };
    for key in ["a", "b", "c"] {
        assert_eq!(deploy(&env, &url, key).0, 0);
    }
    env.ok(&["key", "disable", "a", "--node", &url, "--policy", &p]);
    // A second owner on the same node.
    let other = Env::new();
    other.ok(&["owner", "init"]);
    assert_eq!(deploy(&other, &url, "z").0, 0);

    // Deletion is final: `c`, deleted, cannot be deployed again from its key file.
    env.ok(&[
        "key",
        "schedule-deletion",
        "c",
        "--wait",
        "1s",
        "--node",
        &url,
        "--policy",
        &p,
    ]);
    std::thread::sleep(Duration::from_millis(2100));
    // A use after the waiting period carries the deletion out (as the sweep would).
    let (code, _, err) = env.run(&[
        "envelope",
        "encrypt",
        "--node",
        &url,
        "--policy",
        &p,
        "--key-id",
        "c",
        "-i",
        s(&policy),
        "-o",
        s(&env.path("c.env")),
    ]);
    assert_eq!(code, 1, "{err}");
    let (code, out) = describe(&env, &url, &p, "c");
    assert_eq!(code, 1, "{out}");
    let (code, out) = deploy(&env, &url, "c");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("410")
            && out.contains("was deleted at")
            && out.contains("deploy under another id"),
        "{out}"
    );
    let tail = env.ok(&[
        "audit", "tail", "-n", "20", "--json", "--node", &url, "--policy", &p,
    ]);
    assert!(
        tail.contains("denied: key \\\"c\\\" of this owner was deleted"),
        "{tail}"
    );
    node.stop();
    // ... also after a restart.
    node = env.serve_tee("sim", &data_dir, &["--min-deletion-wait", "0s"], "warn");
    let url = node.url.clone();
    let (code, out) = deploy(&env, &url, "c");
    assert!(code == 1 && out.contains("was deleted at"), "{out}");
    node.stop();

    let cases: &[(&str, &str, &str)] = &[
        // (what, SQL, the key that must be refused)
        (
            "state removed",
            "DELETE FROM key_state WHERE key_id = 'a'",
            "a",
        ),
        (
            "state swapped with b's",
            "UPDATE key_state SET (revision, record) = (SELECT revision, record FROM key_state WHERE key_id = 'b') WHERE key_id = 'a'",
            "a",
        ),
        (
            "state (and policy) moved to another key id",
            "DELETE FROM key_state WHERE key_id = 'b'; UPDATE key_state SET key_id = 'b' WHERE key_id = 'a'",
            "b",
        ),
        (
            "key record removed",
            "DELETE FROM data_keys WHERE key_id = 'a'",
            "a",
        ),
        (
            "key record swapped with b's",
            "UPDATE data_keys SET record = (SELECT record FROM data_keys WHERE key_id = 'b') WHERE key_id = 'a'",
            "a",
        ),
    ];
    let original = std::fs::read(data_dir.join("teekms.sqlite3")).unwrap();
    let restore = || restore_db(&data_dir, &original);
    for (what, statements, key) in cases {
        sql(&data_dir, statements);
        let mut node = env.serve(&data_dir);
        let (code, out) = describe(&env, &node.url, &p, key);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.contains("409") && out.contains("record_damaged"),
            "{what}: {out}"
        );
        node.stop();
        restore();
    }

    // The deletion marker (the owner's record) removed, or replaced by the other
    // owner's: `c` is not deployable again; the refusal says the record is damaged.
    for (what, statements) in [
        (
            "owner record removed",
            "DELETE FROM owner_state WHERE owner IN (SELECT owner FROM data_keys WHERE key_id = 'a')",
        ),
        (
            "owner record swapped with another owner's",
            "UPDATE owner_state SET (revision, record) = (SELECT revision, record FROM owner_state WHERE owner = (SELECT owner FROM data_keys WHERE key_id = 'z')) WHERE owner IN (SELECT owner FROM data_keys WHERE key_id = 'a')",
        ),
    ] {
        sql(&data_dir, statements);
        let mut node = env.serve(&data_dir);
        let (code, out) = deploy(&env, &node.url, "c");
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.contains("record_damaged") || out.contains("409"),
            "{what}: {out}"
        );
        assert!(!out.contains("deployed key"), "{what}: {out}");
        node.stop();
        restore();
    }

    // An access key removed: its token is refused; swapped with another one's record:
    // refused as damaged. Never served with another grant.
    let as_key = |url: &str| {
        env.run(&[
            "envelope",
            "encrypt",
            "--node",
            url,
            "--policy",
            &p,
            "--key-id",
            "k",
            "--access-key",
            s(&token),
            "-i",
            s(&token),
            "-o",
            s(&env.path("y")),
        ])
    };
    let mut node = env.serve(&data_dir);
    assert_eq!(as_key(&node.url).0, 0);
    let second = env.path("token-2");
    env.ok(&[
        "access",
        "create",
        "--keys",
        "b",
        "--operations",
        "encrypt",
        "-o",
        s(&second),
        "--node",
        &node.url,
        "--policy",
        &p,
    ]);
    node.stop();
    let original = std::fs::read(data_dir.join("teekms.sqlite3")).unwrap();
    let restore = || restore_db(&data_dir, &original);
    let first_id = std::fs::read_to_string(&token)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    for (what, statements) in [
        (
            "access key removed",
            format!("DELETE FROM access_keys WHERE id = '{first_id}'"),
        ),
        (
            "access key swapped",
            format!(
                "UPDATE access_keys SET record = (SELECT record FROM access_keys WHERE id <> '{first_id}') WHERE id = '{first_id}'"
            ),
        ),
    ] {
        sql(&data_dir, &statements);
        let mut node = env.serve(&data_dir);
        let (code, out, err) = as_key(&node.url);
        assert_eq!(code, 1, "{what}: {out}{err}");
        node.stop();
        restore();
    }
    // Restored, everything is as it was: `a` disabled, the first token works.
    let node = env.serve(&data_dir);
    let (code, out) = describe(&env, &node.url, &p, "a");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"enabled\":false"), "{out}");
    assert_eq!(as_key(&node.url).0, 0);
}

/// Refusals say what is wrong in a person's terms: the node's minimum waiting period in
/// days, and a key policy's actual fault (not a blanket size limit).
#[test]
fn refusals_name_the_minimum_in_days_and_the_policys_fault() {
    let env = Env::new();
    let node = env.serve(&env.path("node"));
    let (policy, _, _) = env.key_with_access(&node.url);
    let p = s(&policy);
    let (code, _, err) = env.run(&[
        "key",
        "schedule-deletion",
        "k",
        "--wait",
        "1h",
        "--node",
        &node.url,
        "--policy",
        p,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("at least 7 days on this node") && err.contains("400"),
        "{err}"
    );
    let bad = env.path("bad-policy.json");
    std::fs::write(&bad, "[1, 2]").unwrap();
    let (code, _, err) = env.run(&[
        "key",
        "policy",
        "set",
        "k",
        "--file",
        s(&bad),
        "--node",
        &node.url,
        "--policy",
        p,
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("must be a JSON object") && !err.contains("at most 16384 bytes"),
        "{err}"
    );
}
