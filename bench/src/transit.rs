//! `transit`: 1 KiB Vault Transit `encrypt` beside the native `envelope/encrypt` with the
//! same access key (its token), on the same node and connections, interleaved rounds;
//! then batches of 100 items against single items, in items per second.

use super::*;

/// A Transit `encrypt` body of one item, and one of a 100-item batch, made once.
static SINGLE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PLAINTEXT);
    serde_json::to_vec(&serde_json::json!({ "plaintext": b64 })).unwrap()
});
static BATCH: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PLAINTEXT);
    let items: Vec<_> = (0..BATCH_ITEMS)
        .map(|_| serde_json::json!({ "plaintext": b64 }))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "batch_input": items })).unwrap()
});
const BATCH_ITEMS: usize = 100;

async fn transit_post(
    mut c: teekms_client::VerifiedConnection,
    body: &'static [u8],
) -> teekms_client::VerifiedConnection {
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(
            teekms_client::Method::POST,
            "/v1/transit/encrypt/bench",
            &[("content-type", "application/json")],
            body.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    c
}

async fn transit_single(c: teekms_client::VerifiedConnection) -> teekms_client::VerifiedConnection {
    transit_post(c, SINGLE.as_slice()).await
}

async fn transit_batch(c: teekms_client::VerifiedConnection) -> teekms_client::VerifiedConnection {
    transit_post(c, BATCH.as_slice()).await
}

pub(crate) async fn transit_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let owner = Arc::new(OwnerKey::generate());
    deploy_bench_key(&url, &policy, &owner).await;
    // The token goes as `Authorization: Bearer`, which Transit takes as Vault does.
    let (_, mut conns) = bench_access_key(&url, &policy, &owner, false).await;
    let pid = node.child.id();
    let mut rounds = Vec::new();
    for _ in 0..ENVELOPE_ROUNDS {
        let (cpu0, t0) = (cpu_time(pid), Instant::now());
        let (native, native_lat, back) = closed_loop(conns, ENVELOPE_SECONDS, encrypt_1kib).await;
        let native_cpu =
            (cpu_time(pid) - cpu0).as_secs_f64() / (native * t0.elapsed().as_secs_f64());
        let (cpu0, t0) = (cpu_time(pid), Instant::now());
        let (single, single_lat, back) = closed_loop(back, ENVELOPE_SECONDS, transit_single).await;
        let single_cpu =
            (cpu_time(pid) - cpu0).as_secs_f64() / (single * t0.elapsed().as_secs_f64());
        // Batches: fewer clients, each request 100 items.
        let (mut few, rest): (Vec<_>, Vec<_>) =
            back.into_iter().enumerate().partition(|(i, _)| *i < 16);
        let (batches, _, back_few) = closed_loop(
            few.drain(..).map(|(_, c)| c).collect(),
            ENVELOPE_SECONDS,
            transit_batch,
        )
        .await;
        conns = back_few
            .into_iter()
            .chain(rest.into_iter().map(|(_, c)| c))
            .collect();
        let items = batches * BATCH_ITEMS as f64;
        println!(
            "round: native {native:.0} /s ({:.1} us), transit {single:.0} /s ({:.1} us), batches of {BATCH_ITEMS}: {items:.0} items/s",
            native_cpu * 1e6,
            single_cpu * 1e6
        );
        rounds.push((native, native_lat, single, single_lat, items));
    }
    let mut order: Vec<usize> = (0..rounds.len()).collect();
    order.sort_by(|&a, &b| (rounds[a].2 / rounds[a].0).total_cmp(&(rounds[b].2 / rounds[b].0)));
    let mid = order[order.len() / 2];
    let (native, native_lat, single, single_lat, _) = &rounds[mid];
    let mut batch_ratios: Vec<f64> = rounds.iter().map(|r| r.4 / r.2).collect();
    batch_ratios.sort_by(f64::total_cmp);
    let quarter = order.len() / 4;
    println!(
        "\n## Vault Transit encrypt, 1 KiB, beside native envelope encrypt, same access key, {ENVELOPE_CLIENTS} keep-alive connections ({ENVELOPE_ROUNDS} interleaved rounds of {ENVELOPE_SECONDS} s per phase; median round)"
    );
    println!(
        "native POST /v1/envelope/encrypt: {native:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(native_lat, 0.5),
        pct(native_lat, 0.99)
    );
    println!(
        "POST /v1/transit/encrypt/bench:   {single:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(single_lat, 0.5),
        pct(single_lat, 0.99)
    );
    println!(
        "ratio: {:.2} x native (goal >= 0.9); middle half of rounds {:.2}-{:.2}",
        single / native,
        rounds[order[quarter]].2 / rounds[order[quarter]].0,
        rounds[order[order.len() - 1 - quarter]].2 / rounds[order[order.len() - 1 - quarter]].0,
    );
    println!(
        "batches of {BATCH_ITEMS} (16 clients): {:.2} x the single-item rate in items/s (goal >= 3; median of the rounds' ratios, middle half {:.2}-{:.2})",
        batch_ratios[batch_ratios.len() / 2],
        batch_ratios[quarter],
        batch_ratios[batch_ratios.len() - 1 - quarter],
    );
}
