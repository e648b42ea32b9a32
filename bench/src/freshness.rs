//! `freshness`: what the epoch chain (spec/freshness-v1.md) costs on one node: the
//! latency of state changes (disable/enable, access-key revocation), which each write
//! an epoch record, beside envelope `encrypt` (an audit entry only) on the same node and
//! connections, at 1 and 16 clients; and restart-to-serving with 10,000 keys beside an
//! empty node. The cluster quorum's share of these (3 nodes) comes with the quorum.

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
    // One key per client for lifecycle changes, one for encryption, and access keys to
    // revoke.
    {
        let mut c = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
            .await
            .unwrap();
        for i in 0..=16 {
            let id = KeyId::new(&format!("k{i}")).unwrap();
            c.deploy(&owner, &id, "{}", &DataKey::generate())
                .await
                .unwrap();
        }
    }
    println!(
        "\n## State changes (each writes an epoch record) beside envelope encrypt (audit only), one node, SQLite ({ROUNDS} interleaved rounds of {} s)",
        PER_ROUND.as_secs()
    );
    for clients in [1usize, 16] {
        let mut change = Vec::new();
        let mut revoke = Vec::new();
        let mut encrypt = Vec::new();
        for _ in 0..ROUNDS {
            let run = |kind: u8| {
                let (url, policy, owner) = (url.clone(), policy.clone(), owner.clone());
                move |c: usize| {
                    let (url, policy, owner) = (url.clone(), policy.clone(), owner.clone());
                    async move {
                        let mut conn =
                            teekms_client::connect_verified(&url, &policy, Some(&owner), now())
                                .await
                                .unwrap();
                        let key = format!("k{}", c + 1);
                        let mut out = Vec::new();
                        let end = Instant::now() + PER_ROUND;
                        let mut enabled = true;
                        while Instant::now() < end {
                            match kind {
                                0 => {
                                    enabled = !enabled;
                                    let t = Instant::now();
                                    conn.set_enabled(&key, enabled).await.unwrap();
                                    out.push(t.elapsed());
                                }
                                1 => {
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
                                _ => {
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
                }
            };
            change.extend(latencies(clients, run(0)).await);
            revoke.extend(latencies(clients, run(1)).await);
            encrypt.extend(latencies(clients, run(2)).await);
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
