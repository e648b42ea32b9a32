//! Three `teekms serve` processes on loopback sharing one PostgreSQL server (a private
//! one, so that the test can restart it): attested joins, a key deployed through node 1
//! used through nodes 2 and 3, node 2 killed (SIGKILL) mid-traffic with no request lost
//! after client failover, PostgreSQL restarted under traffic with the nodes recovering
//! by themselves, a joiner of another measurement refused, and the cluster restored from
//! 2 of 3 officers' shares after every node and its data dir is gone. And an upgrade: a
//! new build (new measurement) admitted by the cluster admin joins, takes over, and the
//! old build leaves.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Env, NodeProcess};
use teekms_attest::Policy;
use teekms_client::{Failover, NodeUrl, VerifiedConnection, secret_of};
use teekms_core::OwnerKey;
use teekms_testkit::PgServer;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn deploy_key(env: &Env, url: &str, policy: &str, key_id: &str) {
    let dek = env.path(&format!("{key_id}.key"));
    env.ok(&["key", "generate", "-o", s(&dek)]);
    env.ok(&[
        "key",
        "deploy",
        "--node",
        url,
        "--policy",
        policy,
        "--key-id",
        key_id,
        "--dek",
        s(&dek),
    ]);
}

fn envelope_encrypt(env: &Env, url: &str, policy: &str, key_id: &str, input: &Path, output: &Path) {
    env.ok(&[
        "envelope",
        "encrypt",
        "--node",
        url,
        "--policy",
        policy,
        "--key-id",
        key_id,
        "-i",
        s(input),
        "-o",
        s(output),
    ]);
}

fn envelope_decrypt(env: &Env, url: &str, policy: &str, input: &Path, output: &Path) {
    env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        url,
        "--policy",
        policy,
        "-i",
        s(input),
        "-o",
        s(output),
    ]);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the clients saw while they ran.
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

/// `clients` owner clients, each on its own thread, encrypting and decrypting 300 bytes
/// in a loop through a failover over `urls` (each starting at the first), until `stop`.
fn run_traffic(
    urls: Vec<String>,
    policy: Policy,
    owner: OwnerKey,
    clients: usize,
    stop: Arc<AtomicBool>,
    traffic: Arc<Traffic>,
) -> Vec<std::thread::JoinHandle<()>> {
    let urls: Vec<NodeUrl> = urls.iter().map(|u| NodeUrl::parse(u).unwrap()).collect();
    let (policy, owner) = (Arc::new(policy), Arc::new(owner));
    (0..clients)
        .map(|client| {
            let (urls, policy, owner) = (urls.clone(), policy.clone(), owner.clone());
            let (stop, traffic) = (stop.clone(), traffic.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(client_loop(client, urls, &policy, &owner, &stop, &traffic));
            })
        })
        .collect()
}

async fn client_loop(
    client: usize,
    urls: Vec<NodeUrl>,
    policy: &Policy,
    owner: &OwnerKey,
    stop: &AtomicBool,
    traffic: &Traffic,
) {
    let mut nodes: Failover<VerifiedConnection> = Failover::new(urls);
    let connect = async |url: &NodeUrl| {
        teekms_client::connect_verified(url, policy, Some(owner), now()).await
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let plain = format!("client {client} message {n} ").repeat(12);
        let done = nodes
            .call(&connect, async |c: &mut VerifiedConnection| {
                let ct = c.encrypt("shared", None, plain.as_bytes(), None).await?;
                let pt = c.decrypt(&ct.ciphertext.0, None).await?;
                Ok(secret_of(&pt, "decrypt", None)?.to_vec())
            })
            .await;
        match done {
            Ok(back) => {
                assert_eq!(back, plain.as_bytes(), "decrypted to other bytes");
                traffic.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("client {client}: request failed: {e}");
                traffic.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    traffic
        .retries
        .fetch_add(nodes.retries(), Ordering::Relaxed);
}

/// Runs traffic over `urls` while `during` happens, then for `after` more.
fn traffic_while(
    env: &Env,
    policy: &Path,
    urls: &[&str],
    during: impl FnOnce(&Traffic),
    after: Duration,
) -> Arc<Traffic> {
    let policy = Policy::from_toml(&std::fs::read_to_string(policy).unwrap()).unwrap();
    let owner =
        OwnerKey::from_pem(&std::fs::read_to_string(env.path(".config/teekms/owner.key")).unwrap())
            .unwrap();
    let (stop, traffic) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let load = run_traffic(
        urls.iter().map(|u| u.to_string()).collect(),
        policy,
        owner,
        4,
        stop.clone(),
        Arc::clone(&traffic),
    );
    std::thread::sleep(Duration::from_millis(700));
    during(&traffic);
    std::thread::sleep(after);
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.join().unwrap();
    }
    traffic
}

fn alive(node: &mut NodeProcess) -> bool {
    node.child.try_wait().unwrap().is_none()
}

#[test]
fn three_nodes_on_postgres_survive_a_killed_node_a_database_restart_and_total_loss() {
    let env = Env::new();
    let pg = PgServer::start();
    let store = pg.url("postgres");
    let policy = env.sim_policy();
    let p = s(&policy);
    let mut officers = Vec::new();
    for i in 1..=3 {
        let key = env.path(&format!("officer-{i}.key"));
        env.ok(&["recovery", "officer-init", "-o", s(&key)]);
        officers.push(key);
    }
    let officer_pubs = officers
        .iter()
        .map(|k| format!("{}.pub", k.display()))
        .collect::<Vec<_>>()
        .join(",");

    // Node 1 creates the cluster (default cluster policy: same sim root and measurement)
    // with 2-of-3 recovery; nodes 2 and 3 join by attestation.
    let dirs: Vec<_> = (1..=3).map(|i| env.path(&format!("node-{i}"))).collect();
    let n1 = env.serve_tee(
        "sim",
        &dirs[0],
        &[
            "--store",
            &store,
            "--recovery-officers",
            &officer_pubs,
            "--recovery-threshold",
            "2",
        ],
        "warn",
    );
    let mut n2 = env.serve_tee(
        "sim",
        &dirs[1],
        &["--store", &store, "--join", &n1.url],
        "warn",
    );
    let n3 = env.serve_tee(
        "sim",
        &dirs[2],
        &["--store", &store, "--join", &n2.url],
        "warn",
    );
    let shares: Vec<_> = (1..=3)
        .map(|i| {
            let kept = env.path(&format!("share-{i}.json"));
            std::fs::copy(dirs[0].join(format!("recovery/share-{i}.json")), &kept).unwrap();
            kept
        })
        .collect();

    // A joiner whose measurement differs (the same program with one byte appended, as a
    // new build would be) is refused by the cluster even though it would accept the
    // cluster, and it is left with nothing.
    let (other_bin, _) = env.other_build("other");
    let outsider_dir = env.path("outsider");
    let out = std::process::Command::new(&other_bin)
        .env("HOME", env.dir.path())
        .args(["serve", "--tee", "sim", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", s(&outsider_dir), "--store", &store])
        .args(["--join", &n1.url, "--cluster-policy", p])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not admitted") || err.contains("refused"),
        "{err}"
    );
    assert!(
        !outsider_dir.join("teekms.sqlite3").exists()
            && !outsider_dir.join("sim-sealing.key").exists(),
        "the refused joiner must have stored nothing"
    );

    // A key deployed through node 1 is used through nodes 2 and 3.
    env.ok(&["owner", "init"]);
    deploy_key(&env, &n1.url, p, "shared");
    let (plain, ct, back) = (env.path("plain"), env.path("ct"), env.path("back"));
    std::fs::write(&plain, b"joint data, sealed in the cluster").unwrap();
    envelope_encrypt(&env, &n2.url, p, "shared", &plain, &ct);
    envelope_decrypt(&env, &n3.url, p, &ct, &back);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&plain).unwrap()
    );

    // Node 2 is killed mid-traffic; clients that were on it move on: nothing fails.
    let first_urls = [n2.url.clone(), n3.url.clone(), n1.url.clone()];
    let traffic = traffic_while(
        &env,
        &policy,
        &first_urls.iter().map(String::as_str).collect::<Vec<_>>(),
        |t| {
            assert!(t.ok.load(Ordering::Relaxed) > 0, "traffic is flowing");
            n2.kill();
        },
        Duration::from_millis(1500),
    );
    let (ok, failed, retries) = (
        traffic.ok.load(Ordering::Relaxed),
        traffic.failed.load(Ordering::Relaxed),
        traffic.retries.load(Ordering::Relaxed),
    );
    eprintln!("node 2 killed: {ok} requests answered, {failed} failed, {retries} retried");
    assert_eq!(failed, 0);
    assert!(retries >= 4, "every client was on node 2 when it died");
    assert!(ok > 20);

    // Node 2 comes back from its data dir (no join needed) and serves the key.
    let n2 = env.serve_tee("sim", &dirs[1], &["--store", &store], "warn");
    envelope_decrypt(&env, &n2.url, p, &ct, &back);

    // PostgreSQL restarts under traffic: the nodes are not restarted, clients retry.
    let mut nodes = [n1, n2, n3];
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let traffic = traffic_while(
        &env,
        &policy,
        &urls.iter().map(String::as_str).collect::<Vec<_>>(),
        |_| pg.restart(),
        Duration::from_millis(1500),
    );
    let (ok, failed) = (
        traffic.ok.load(Ordering::Relaxed),
        traffic.failed.load(Ordering::Relaxed),
    );
    eprintln!("PostgreSQL restarted: {ok} requests answered, {failed} failed");
    assert_eq!(failed, 0);
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(alive(node), "node {} kept running", i + 1);
        envelope_decrypt(&env, &node.url, p, &ct, &back);
    }
    let audit = env.ok(&["audit", "verify", "--node", &urls[2], "--policy", p]);
    assert!(audit.contains("audit log verified"), "{audit}");

    // A node without a sealing key (as on TDX) keeps nothing sealed: it refuses to start
    // without --join, and with it receives the cluster key by attestation at every start.
    let no_seal = [("TEEKMS_SIM_NO_SEALING_KEY", "1")];
    let tdx_dir = env.path("node-tdx");
    let out = env
        .cmd()
        .envs(no_seal)
        .args(["serve", "--tee", "sim", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", s(&tdx_dir), "--store", &store])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no sealing key") && err.contains("--join"),
        "{err}"
    );
    for _start in 0..2 {
        let mut tdx_like = env.serve_with_env(
            &no_seal,
            "sim",
            &tdx_dir,
            &["--store", &store, "--join", &urls[0]],
            "warn",
        );
        envelope_decrypt(&env, &tdx_like.url, p, &ct, &back);
        tdx_like.kill();
    }
    let sealed_records: i64 = rusqlite::Connection::open(tdx_dir.join("teekms.sqlite3"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        sealed_records, 0,
        "a node without a sealing key stores no keys"
    );
    assert!(
        !tdx_dir.join("sim-sealing.key").exists(),
        "no hardware key was made"
    );

    // Every node and its data dir is lost. Two officers open their shares; a new node
    // is restored from the database and decrypts what the cluster encrypted.
    for mut node in nodes {
        node.kill();
    }
    for d in &dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
    let opened: Vec<_> = [0, 2]
        .iter()
        .map(|&i| {
            let out = env.path(&format!("opened-{i}"));
            env.ok(&[
                "recovery",
                "open",
                "--share",
                s(&shares[i]),
                "--officer",
                s(&officers[i]),
                "-o",
                s(&out),
            ]);
            out
        })
        .collect();
    let fresh = env.path("restored");
    let restore = |shares: &[&Path]| {
        let mut args = vec![
            "recovery",
            "restore",
            "--data-dir",
            s(&fresh),
            "--tee",
            "sim",
            "--store",
            &store,
        ];
        for share in shares {
            args.extend(["--share", s(share)]);
        }
        env.run(&args)
    };
    let (code, _, err) = restore(&[&opened[0]]);
    assert_ne!(code, 0, "one share is not enough: {err}");
    let (code, _, err) = restore(&[&opened[0], &opened[1]]);
    assert_eq!(code, 0, "{err}");
    let restored = env.serve_tee("sim", &fresh, &["--store", &store], "warn");
    // The officers accepted the database as it is: the restored node is a cluster of
    // one (the lost members' records are gone), and serves at once.
    envelope_decrypt(&env, &restored.url, p, &ct, &back);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&plain).unwrap()
    );
    let audit = env.ok(&["audit", "verify", "--node", &restored.url, "--policy", p]);
    assert!(audit.contains("audit log verified"), "{audit}");
}

/// Refuses the join of `program` to the node at `url`; returns its stderr.
fn join_refused(env: &Env, program: &Path, url: &str, store: &str, expects: &Path) -> String {
    let dir = env.path(&format!("refused-{}", rand_suffix()));
    let out = std::process::Command::new(program)
        .env("HOME", env.dir.path())
        .args(["serve", "--tee", "sim", "--listen", "127.0.0.1:0"])
        .args(["--data-dir", s(&dir), "--store", store])
        .args(["--join", url, "--cluster-policy", s(expects)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("does not admit this node"), "{err}");
    err
}

fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    teekms_core::random_bytes(&mut b);
    hex::encode(b)
}

fn sim_entries(root: &str, measurements: &[&str]) -> String {
    measurements
        .iter()
        .map(|m| {
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{root}\"\nmeasurement = \"{m}\"\n")
        })
        .collect()
}

#[test]
fn a_new_build_admitted_by_the_cluster_admin_joins_takes_over_and_the_old_one_leaves() {
    let env = Env::new();
    let pg = PgServer::start();
    let store = pg.url("postgres");
    let policy = env.sim_policy();
    let p = s(&policy);
    let fingerprint = env
        .ok(&["owner", "init"])
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .trim()
        .to_owned();
    let root = env.ok(&["sim", "root"]).trim().to_owned();
    let v1 = common::bin();
    let m1 = env.ok(&["sim", "measure", s(&v1)]).trim().to_owned();
    let (v2, m2) = env.other_build("v2");
    assert_ne!(m1, m2);

    // The cluster of build 1, made with an admin; its default policy admits build 1 only.
    let old = env.serve_tee(
        "sim",
        &env.path("old"),
        &["--store", &store, "--cluster-admin", &fingerprint],
        "warn",
    );
    deploy_key(&env, &old.url, p, "k");
    let (plain, ct, back) = (env.path("plain"), env.path("ct"), env.path("back"));
    std::fs::write(&plain, b"sealed by build 1").unwrap();
    envelope_encrypt(&env, &old.url, p, "k", &plain, &ct);
    let current = env.ok(&[
        "cluster", "policy", "get", "--node", &old.url, "--policy", p,
    ]);
    assert!(current.contains(&m1) && !current.contains(&m2), "{current}");

    // Build 2 expects a cluster of build 1 or 2, but the cluster does not admit it yet.
    let v2_expects = env.path("v2-expects.toml");
    std::fs::write(&v2_expects, sim_entries(&root, &[&m1, &m2])).unwrap();
    join_refused(&env, &v2, &old.url, &store, &v2_expects);

    // Only the admin may change the cluster policy.
    let both = env.path("both.toml");
    std::fs::write(&both, sim_entries(&root, &[&m1, &m2])).unwrap();
    let stranger = env.path("stranger.key");
    env.ok(&["owner", "init", "--owner", s(&stranger)]);
    let set_policy = |file: &Path, url: &str, owner: &[&str]| {
        let mut args = vec!["cluster", "policy", "set", "--file", s(file)];
        args.extend(["--node", url, "--policy", p]);
        args.extend(owner);
        env.run(&args)
    };
    let (code, _, err) = set_policy(&both, &old.url, &["--owner", s(&stranger)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only the cluster admin"), "{err}");
    let (code, _, err) = set_policy(&both, &old.url, &[]);
    assert_eq!(code, 0, "{err}");

    // Build 2 joins, serves the cluster's keys, and stays alone when build 1 leaves.
    let new = env.serve_program(
        &v2,
        "sim",
        &env.path("new"),
        &[
            "--store",
            &store,
            "--join",
            &old.url,
            "--cluster-policy",
            s(&v2_expects),
        ],
        "warn",
    );
    envelope_decrypt(&env, &new.url, p, &ct, &back);
    assert_eq!(std::fs::read(&back).unwrap(), b"sealed by build 1");
    // Build 1 leaves for good: the admin removes it from the members while it still
    // answers (a membership change is held by majorities of the membership before and
    // after it, spec/freshness-v1.md, "Cluster rules", 4), then it stops; changes are
    // confirmed by the member that remains.
    let status = env.ok(&["cluster", "status", "--node", &new.url, "--policy", p]);
    let leaving = status
        .lines()
        .find(|l| l.contains(&format!(" {} ", old.url)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{status}"))
        .to_owned();
    env.ok(&[
        "cluster", "remove", &leaving, "--node", &new.url, "--policy", p,
    ]);
    drop(old);
    // A member that died is removed all the same, but the removal cannot be
    // acknowledged: the membership before it has no majority left to hold it.
    let mut third = env.serve_program(
        &v2,
        "sim",
        &env.path("third"),
        &[
            "--store",
            &store,
            "--join",
            &new.url,
            "--cluster-policy",
            s(&v2_expects),
        ],
        "warn",
    );
    // It records itself once it has learned the epoch.
    let started = std::time::Instant::now();
    let dead = loop {
        let status = env.ok(&["cluster", "status", "--node", &new.url, "--policy", p]);
        if let Some(id) = status
            .lines()
            .find(|l| l.contains(&format!(" {} ", third.url)))
            .and_then(|l| l.split_whitespace().next())
        {
            break id.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    third.kill();
    let (code, _, err) = env.run(&[
        "cluster", "remove", &dead, "--node", &new.url, "--policy", p,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("freshness_unconfirmed")
            && err.contains("(the membership before this change)"),
        "{err}"
    );
    let only_v2 = env.path("v2-only.toml");
    std::fs::write(&only_v2, sim_entries(&root, &[&m2])).unwrap();
    let (code, _, err) = set_policy(&only_v2, &new.url, &[]);
    assert_eq!(code, 0, "{err}");
    envelope_decrypt(&env, &new.url, p, &ct, &back);
    let audit = env.ok(&["audit", "verify", "--node", &new.url, "--policy", p]);
    assert!(audit.contains("audit log verified"), "{audit}");
    // Build 1 can no longer join the cluster it came from.
    let v1_expects = env.path("v1-expects.toml");
    std::fs::write(&v1_expects, sim_entries(&root, &[&m1, &m2])).unwrap();
    join_refused(&env, &v1, &new.url, &store, &v1_expects);
}
