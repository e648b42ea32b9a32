//! `release`: attested key releases to sim workloads: latency, throughput and node CPU.

use super::*;

/// One workload's attested key release, as a new workload process would do it: its
/// TLS key and sim evidence made, a new connection in whose handshake each side verifies
/// the other's RA-TLS certificate (mutual attestation), the key fetched (sealed to the
/// workload's key) and opened.
pub(crate) async fn release(
    url: &NodeUrl,
    policy: &Policy,
    root: &teekms_platform::SimRoot,
    owner_fp: &str,
) -> Duration {
    let t = Instant::now();
    let keys = teekms_core::NodeKeys::generate();
    let statement = keys.statement(teekms_attest::TeeKind::Sim, None);
    let claims = teekms_attest::ratls::claims_buffer(
        keys.tls_spki_der(),
        teekms_attest::TeeKind::Sim,
        &statement,
        None,
    );
    let evidence = root.evidence(
        &[0x77; 48],
        &teekms_attest::ratls::report_data_for_claims(&claims),
    );
    let ext = teekms_attest::ratls::evidence_extension(&evidence, &claims);
    let mut conn = teekms_client::connect_attested_as(
        url,
        policy,
        teekms_client::Identity::RaTlsWorkload(&keys, &ext),
        now(),
        None,
    )
    .await
    .unwrap();
    conn.fetch_key("model", Some(owner_fp), None, &keys)
        .await
        .unwrap();
    t.elapsed()
}

pub(crate) const RELEASE_SECONDS: u64 = 5;

pub(crate) const RELEASE_ROUNDS: usize = 3;

/// One round of releases with a number of parallel clients.
#[derive(Clone)]
pub(crate) struct ReleaseRow {
    rate: f64,
    p50: f64,
    p99: f64,
    cpu_ms: f64,
}

pub(crate) async fn release_round(
    url: &NodeUrl,
    policy: &Arc<Policy>,
    root: &Arc<teekms_platform::SimRoot>,
    fp: &Arc<str>,
    clients: usize,
    pid: u32,
) -> ReleaseRow {
    let cpu0 = cpu_time(pid);
    let deadline = Instant::now() + Duration::from_secs(RELEASE_SECONDS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, policy, root, fp) = (url.clone(), policy.clone(), root.clone(), fp.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    lat.push(release(&url, &policy, &root, &fp).await);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    let cpu = cpu_time(pid) - cpu0;
    lat.sort();
    let n = lat.len() as f64;
    ReleaseRow {
        rate: n / wall.as_secs_f64(),
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        cpu_ms: cpu.as_secs_f64() * 1000.0 / n,
    }
}

pub(crate) async fn release_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let root = Arc::new(
        teekms_platform::SimRoot::load_or_create(
            &dir.path().join(".local/share/teekms/sim-root.key"),
        )
        .unwrap(),
    );
    let owner = OwnerKey::generate();
    let fp: Arc<str> = owner.public_key().fingerprint().into();
    let key_policy = format!(
        r#"{{"rules": [{{"principals": [{{"workload": {{"tee": "sim", "sim_root": "{}", "measurement": "{}"}}}}], "operations": ["fetch"]}}]}}"#,
        hex::encode(root.public_key()),
        hex::encode([0x77u8; 48])
    );
    teekms_client::connect_verified(&url, &policy, Some(&owner), now())
        .await
        .unwrap()
        .deploy(
            &owner,
            &KeyId::new("model").unwrap(),
            &key_policy,
            &DataKey::generate(),
        )
        .await
        .unwrap();
    // Warm up (and check that a release works at all).
    for _ in 0..20 {
        release(&url, &policy, &root, &fp).await;
    }
    println!(
        "\n## Attested key release to a sim workload: new connection, mutual RA-TLS (each side's certificate evidence verified in the handshake), fetch sealed to the workload's key ({RELEASE_ROUNDS} interleaved rounds of {RELEASE_SECONDS} s per row; median round)"
    );
    // Rounds interleaved over the client counts: this machine's speed drifts by tens
    // of percent from minute to minute; each row reports its median round.
    let pid = node.child.id();
    let mut rows: Vec<Vec<ReleaseRow>> = vec![Vec::new(); 3];
    for _ in 0..RELEASE_ROUNDS {
        for (row, clients) in [1usize, 4, 8].into_iter().enumerate() {
            rows[row].push(release_round(&url, &policy, &root, &fp, clients, pid).await);
        }
    }
    for (row, clients) in [1usize, 4, 8].into_iter().enumerate() {
        let mut runs = rows[row].clone();
        runs.sort_by(|a, b| a.cpu_ms.total_cmp(&b.cpu_ms));
        let m = &runs[runs.len() / 2];
        let all: Vec<String> = rows[row]
            .iter()
            .map(|r| format!("{:.3}", r.cpu_ms))
            .collect();
        println!(
            "{clients} client(s): {:>6.0} releases/s  end-to-end p50 {:.2} ms  p99 {:.2} ms  node CPU {:.3} ms/release (rounds: {})",
            m.rate,
            m.p50,
            m.p99,
            m.cpu_ms,
            all.join(", ")
        );
    }
    println!(
        "(in-process clients: no client process start to subtract. For scale: Trustee KBS with its sample TEE, ~4 ms server CPU and 12-16 ms end to end per release; goal <= 1 ms node CPU and <= 4 ms end to end)"
    );
}
