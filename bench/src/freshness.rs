//! `freshness`: what the epoch chain (spec/freshness-v1.md) costs on one node: the
//! latency of state changes (disable/enable, access-key revocation), which each write
//! an epoch record, beside envelope `encrypt` (an audit entry only) on the same node and
//! connections, at 1 and 16 clients; and restart-to-serving with 10,000 keys beside an
//! empty node. Then the cluster quorum's share (spec/freshness-v1.md, "Cluster rules"):
//! the same state changes on three nodes sharing PostgreSQL, each acknowledged once a
//! majority holds its epoch, beside one node on PostgreSQL; and envelope `encrypt` over
//! three nodes with the data-plane confirmation beside three without it.

use super::*;

const KEYS: usize = 10_000;
const ROUNDS: usize = 5;
const PER_ROUND: Duration = Duration::from_secs(2);

/// Latencies of `op` run back to back by `clients` connections for `PER_ROUND`.
async fn latencies<F, Fut>(clients: usize, make: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(make(c))).collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

/// What a client of [`timed`] does, back to back.
#[derive(Clone, Copy)]
enum Op {
    /// Disables or enables its own key (`k1`…`k16`).
    Change,
    /// Makes an access key, then revokes it (only the revocation is timed).
    Revoke,
    /// Envelope `encrypt` of 1 KiB with `k0`.
    Encrypt,
}

/// Latencies of `op` by `clients` owner connections to `url` for `PER_ROUND`.
async fn timed(
    url: &NodeUrl,
    policy: &Arc<Policy>,
    owner: &Arc<OwnerKey>,
    clients: usize,
    op: Op,
) -> Vec<Duration> {
    latencies(clients, |c: usize| {
        let (url, policy, owner) = (url.clone(), policy.clone(), owner.clone());
        async move {
            let mut conn = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
                .await
                .unwrap();
            let key = format!("k{}", c + 1);
            let mut out = Vec::new();
            let end = Instant::now() + PER_ROUND;
            let mut enabled = true;
            while Instant::now() < end {
                match op {
                    Op::Change => {
                        enabled = !enabled;
                        let t = Instant::now();
                        conn.set_enabled(&key, enabled).await.unwrap();
                        out.push(t.elapsed());
                    }
                    Op::Revoke => {
                        let made = conn
                            .create_access_key(
                                vec![key.clone()],
                                vec![teekms_core::access::Operation::Encrypt],
                                None,
                                "bench",
                            )
                            .await
                            .unwrap();
                        let t = Instant::now();
                        conn.revoke_access_key(&made.info.id).await.unwrap();
                        out.push(t.elapsed());
                    }
                    Op::Encrypt => {
                        let t = Instant::now();
                        conn.encrypt("k0", None, &[7u8; 1024], None).await.unwrap();
                        out.push(t.elapsed());
                    }
                }
            }
            if !enabled {
                conn.set_enabled(&key, true).await.unwrap();
            }
            out
        }
    })
    .await
}

/// Deploys `k0`…`k16` through `url` (one key per client for lifecycle changes, one for
/// encryption).
async fn deploy_keys(url: &NodeUrl, policy: &Policy, owner: &OwnerKey) {
    let mut c = teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap();
    for i in 0..=16 {
        let id = KeyId::new(&format!("k{i}")).unwrap();
        c.deploy(owner, &id, "{}", &DataKey::generate())
            .await
            .unwrap();
    }
}

fn line(what: &str, clients: usize, sorted: &[Duration]) -> String {
    format!(
        "{what:<44} {clients:>2} clients: p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests)",
        pct(sorted, 0.50),
        pct(sorted, 0.99),
        sorted.len()
    )
}

pub(crate) async fn freshness_bench(teekms: &Path) {
    let dir = scratch();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let owner = Arc::new(OwnerKey::generate());
    deploy_keys(&url, &policy, &owner).await;
    println!(
        "\n## State changes (each writes an epoch record) beside envelope encrypt (audit only), one node, SQLite ({ROUNDS} interleaved rounds of {} s)",
        PER_ROUND.as_secs()
    );
    for clients in [1usize, 16] {
        let mut change = Vec::new();
        let mut revoke = Vec::new();
        let mut encrypt = Vec::new();
        for _ in 0..ROUNDS {
            change.extend(timed(&url, &policy, &owner, clients, Op::Change).await);
            revoke.extend(timed(&url, &policy, &owner, clients, Op::Revoke).await);
            encrypt.extend(timed(&url, &policy, &owner, clients, Op::Encrypt).await);
        }
        change.sort();
        revoke.sort();
        encrypt.sort();
        println!("{}", line("key disable/enable", clients, &change));
        println!("{}", line("access key revoke", clients, &revoke));
        println!(
            "{}",
            line("envelope encrypt 1 KiB (baseline)", clients, &encrypt)
        );
        println!(
            "p50 ratio, disable/enable over encrypt: {:.2}; revoke over encrypt: {:.2}",
            pct(&change, 0.5) / pct(&encrypt, 0.5),
            pct(&revoke, 0.5) / pct(&encrypt, 0.5)
        );
    }
    drop(node);

    quorum_bench(teekms, dir.path(), &policy).await;

    // Restart to serving: a node holding KEYS keys, beside an empty node, alternating.
    let full_dir = dir.path().join("full");
    let node = spawn_node(teekms, dir.path(), &full_dir);
    let url = NodeUrl::parse(&node.url).unwrap();
    let made = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let (url, policy) = (url.clone(), policy.clone());
            tokio::spawn(async move {
                let owner = OwnerKey::generate();
                let mut conn = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
                    .await
                    .unwrap();
                for i in (c..KEYS).step_by(16) {
                    let id = KeyId::new(&format!("key{i}")).unwrap();
                    conn.deploy(&owner, &id, "{}", &DataKey::generate())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let deployed_in = made.elapsed();
    drop(node);
    let empty_dir = dir.path().join("empty");
    drop(spawn_node(teekms, dir.path(), &empty_dir));
    let mut full = Vec::new();
    let mut empty = Vec::new();
    for _ in 0..ROUNDS {
        let (t, n) = timed_start(teekms, dir.path(), &full_dir).await;
        full.push(t);
        drop(n);
        let (t, n) = timed_start(teekms, dir.path(), &empty_dir).await;
        empty.push(t);
        drop(n);
    }
    let (full, empty) = (median(full), median(empty));
    println!(
        "\n## Restart to serving (median of {ROUNDS}; {KEYS} keys deployed in {:.1} s)",
        deployed_in.as_secs_f64()
    );
    println!(
        "node with {KEYS} keys: {:>7.1} ms",
        full.as_secs_f64() * 1e3
    );
    println!(
        "empty node:           {:>7.1} ms",
        empty.as_secs_f64() * 1e3
    );
    println!(
        "ratio: {:.2} x the empty node",
        full.as_secs_f64() / empty.as_secs_f64()
    );
}

/// Three nodes sharing database `db` of `pg` (the first makes the cluster, the others
/// join it), each with `extra` options; returns once each has recorded itself a member.
async fn three_nodes(
    teekms: &Path,
    home: &Path,
    pg: &teekms_testkit::PgServer,
    db: &str,
    extra: &[&str],
    policy: &Policy,
    owner: &OwnerKey,
) -> Vec<Node> {
    pg.create_database(db);
    let store = pg.url(db);
    let mut args = vec!["--store", store.as_str()];
    args.extend(extra);
    let first = spawn_node_with(teekms, home, &home.join(format!("{db}-1")), &args);
    let join = first.url.clone();
    args.extend(["--join", join.as_str()]);
    let mut nodes = vec![first];
    for i in 2..=3 {
        nodes.push(spawn_node_with(
            teekms,
            home,
            &home.join(format!("{db}-{i}")),
            &args,
        ));
    }
    let url = NodeUrl::parse(&nodes[0].url).unwrap();
    let started = Instant::now();
    loop {
        let mut c = teekms_client::connect_verified(&url, policy, Some(owner), now())
            .await
            .unwrap();
        let status = c.cluster_status().await.unwrap();
        if status.members.iter().filter(|m| m.epoch.is_some()).count() == 3 {
            return nodes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "members: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The quorum's cost: state changes on three nodes (each acknowledged by a majority)
/// beside one node, both on PostgreSQL; envelope `encrypt` over three nodes with the
/// data-plane confirmation beside three without it.
async fn quorum_bench(teekms: &Path, home: &Path, policy: &Arc<Policy>) {
    let pg = teekms_testkit::PgServer::start();
    let owner = Arc::new(OwnerKey::generate());
    pg.create_database("single");
    let single = spawn_node_with(
        teekms,
        home,
        &home.join("single"),
        &["--store", &pg.url("single")],
    );
    let quorum = three_nodes(teekms, home, &pg, "quorum", &[], policy, &owner).await;
    let off = ["--data-plane-confirmation", "off"];
    let unconfirmed = three_nodes(teekms, home, &pg, "unconfirmed", &off, policy, &owner).await;
    let single_url = NodeUrl::parse(&single.url).unwrap();
    let urls = |nodes: &[Node]| -> Vec<NodeUrl> {
        nodes
            .iter()
            .map(|n| NodeUrl::parse(&n.url).unwrap())
            .collect()
    };
    let (quorum_urls, unconfirmed_urls) = (urls(&quorum), urls(&unconfirmed));
    deploy_keys(&single_url, policy, &owner).await;
    deploy_keys(&quorum_urls[0], policy, &owner).await;

    println!(
        "\n## State changes acknowledged by a majority of 3 nodes beside 1 node, both on one PostgreSQL ({ROUNDS} interleaved rounds of {} s; clients on the first node)",
        PER_ROUND.as_secs()
    );
    for clients in [1usize, 16] {
        let (mut one, mut three) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..ROUNDS {
            for (i, op) in [Op::Change, Op::Revoke].into_iter().enumerate() {
                one[i].extend(timed(&single_url, policy, &owner, clients, op).await);
                three[i].extend(timed(&quorum_urls[0], policy, &owner, clients, op).await);
            }
        }
        for (i, what) in ["key disable/enable", "access key revoke"]
            .iter()
            .enumerate()
        {
            one[i].sort();
            three[i].sort();
            println!("{}", line(&format!("{what}, 1 node"), clients, &one[i]));
            println!(
                "{}",
                line(&format!("{what}, 3 nodes (quorum)"), clients, &three[i])
            );
            println!(
                "p50 ratio, 3 nodes over 1: {:.2}",
                pct(&three[i], 0.5) / pct(&one[i], 0.5)
            );
        }
    }
    drop(single);

    deploy_bench_key(&quorum_urls[0], policy, &owner).await;
    deploy_bench_key(&unconfirmed_urls[0], policy, &owner).await;
    for url in quorum_urls.iter().chain(&unconfirmed_urls) {
        check_encrypt_1kib(url, policy, &owner).await;
    }
    let mut on = connect_clients(&quorum_urls, policy, &owner).await;
    let mut off = connect_clients(&unconfirmed_urls, policy, &owner).await;
    println!(
        "\n## Envelope encrypt, 1 KiB, {ENVELOPE_CLIENTS} clients spread over 3 nodes on one PostgreSQL, with the data-plane confirmation (a majority confirms nobody is newer) beside without ({ROUNDS} interleaved rounds of {ENVELOPE_SECONDS} s; median round)"
    );
    let (mut rates_on, mut rates_off, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lat_on, mut lat_off) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (rate, lat, conns) = closed_loop(on, ENVELOPE_SECONDS, encrypt_1kib).await;
        on = conns;
        rates_on.push(rate);
        lat_on.extend(lat);
        let (rate_off, lat, conns) = closed_loop(off, ENVELOPE_SECONDS, encrypt_1kib).await;
        off = conns;
        rates_off.push(rate_off);
        lat_off.extend(lat);
        ratios.push(rate / rate_off);
    }
    lat_on.sort();
    lat_off.sort();
    let middle = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
    };
    let (lo, ratio, hi) = middle(&ratios);
    println!(
        "with confirmation:    {:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        middle(&rates_on).1,
        pct(&lat_on, 0.5),
        pct(&lat_on, 0.99)
    );
    println!(
        "without confirmation: {:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        middle(&rates_off).1,
        pct(&lat_off, 0.5),
        pct(&lat_off, 0.99)
    );
    println!(
        "ratio: {ratio:.2} x without (goal >= 0.9); middle half of rounds {lo:.2}-{hi:.2}; rounds: {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("(7 nodes, their clients and PostgreSQL share this machine's cores)");
    drop((quorum, unconfirmed));
}
