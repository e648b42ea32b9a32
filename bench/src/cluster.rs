//! `cluster`: envelope `encrypt` against 1, 2 and 3 nodes sharing one PostgreSQL server.

use super::*;

pub(crate) const CLUSTER_SECONDS: f64 = 5.0;

pub(crate) async fn cluster_bench(teekms: &Path) {
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
