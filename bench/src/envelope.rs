//! `envelope`: 1 KiB envelope `encrypt` over HTTPS keep-alive, next to an empty
//! authenticated request; node CPU per request of each.

use super::*;

/// Seconds per phase, and phases of each kind: many short interleaved rounds, because this
/// machine's speed drifts by tens of percent within a minute; the median of many ratios,
/// each between phases run back to back, moves far less than the median of a few.
pub(crate) const ENVELOPE_SECONDS: f64 = 2.0;

pub(crate) const ENVELOPE_ROUNDS: usize = 13;

pub(crate) const ENVELOPE_CLIENTS: usize = 128;

pub(crate) type Conns = Vec<teekms_client::VerifiedConnection>;

/// Opens `ENVELOPE_CLIENTS` verified keep-alive connections, spread evenly over `urls`.
pub(crate) async fn connect_clients(
    urls: &[NodeUrl],
    policy: &Arc<Policy>,
    owner: &Arc<OwnerKey>,
) -> Conns {
    let mut conns = Vec::new();
    for i in 0..ENVELOPE_CLIENTS {
        let url = &urls[i % urls.len()];
        conns.push(
            teekms_client::connect_verified(url, policy, Some(owner), now())
                .await
                .unwrap(),
        );
    }
    conns
}

/// Runs one client on each connection, calling `op` for `seconds`; returns the rate, the
/// sorted latencies, and the connections (kept alive for the next phase).
pub(crate) async fn closed_loop<F, Fut>(
    conns: Conns,
    seconds: f64,
    op: F,
) -> (f64, Vec<Duration>, Conns)
where
    F: Fn(teekms_client::VerifiedConnection) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = teekms_client::VerifiedConnection> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    conn = op(conn).await;
                    lat.push(t.elapsed());
                }
                (lat, conn)
            })
        })
        .collect();
    let (mut all, mut conns) = (Vec::new(), Vec::new());
    for t in tasks {
        let (lat, conn) = t.await.unwrap();
        all.extend(lat);
        conns.push(conn);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all, conns)
}

/// Deploys the key "bench" (default key policy: its owner only) through `url`.
pub(crate) async fn deploy_bench_key(url: &NodeUrl, policy: &Policy, owner: &OwnerKey) {
    teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap()
        .deploy(
            owner,
            &KeyId::new("bench").unwrap(),
            "{}",
            &DataKey::generate(),
        )
        .await
        .unwrap();
}

/// An access key for the key "bench" (with its AWS secret when `aws`), admitted to
/// encrypt and decrypt by the key's policy, and `ENVELOPE_CLIENTS` verified connections
/// that present its token.
pub(crate) async fn bench_access_key(
    url: &NodeUrl,
    policy: &Policy,
    owner: &OwnerKey,
    aws: bool,
) -> (teekms_core::api::AccessKeyCreated, Conns) {
    let mut admin = teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap();
    let created = admin
        .create_access_key_request(&teekms_core::api::AccessKeyCreateRequest {
            keys: vec!["bench".into()],
            operations: vec![
                teekms_core::access::Operation::Encrypt,
                teekms_core::access::Operation::Decrypt,
            ],
            expires_in: None,
            description: "bench".into(),
            aws,
        })
        .await
        .unwrap();
    admin
        .set_policy(
            "bench",
            &serde_json::json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt", "decrypt"]}]}),
        )
        .await
        .unwrap();
    let mut conns = Vec::new();
    for _ in 0..ENVELOPE_CLIENTS {
        let mut c = teekms_client::connect_verified(url, policy, None, now())
            .await
            .unwrap();
        c.use_access_key(&created.token);
        conns.push(c);
    }
    (created, conns)
}

/// The plaintext every benchmarked `encrypt` sends.
pub(crate) const PLAINTEXT: [u8; 1024] = [0x5a; 1024];

/// The `encrypt` request body, made once: the clients send it as a load generator such
/// as wrk does, so that their CPU time, on the cores the node uses too, goes to the
/// exchange itself rather than to building requests and decoding answers.
pub(crate) static ENCRYPT_BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let req = teekms_core::api::EncryptRequest {
        key_id: "bench".into(),
        owner: None,
        plaintext: teekms_core::api::SecretB64(PLAINTEXT.to_vec().into()),
        aad: None,
        context: None,
    };
    serde_json::to_vec(&req).unwrap()
});

/// Sends the pre-built `encrypt` and returns the answer's body, checked to be a 200.
pub(crate) async fn post_encrypt(
    c: &mut teekms_client::VerifiedConnection,
) -> teekms_client::Bytes {
    let (status, body) = c
        .connection()
        .raw_request(
            teekms_client::Method::POST,
            "/v1/envelope/encrypt",
            Some(ENCRYPT_BODY.clone()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

/// One 1 KiB `encrypt` of the key "bench", answered 200.
pub(crate) async fn encrypt_1kib(
    mut c: teekms_client::VerifiedConnection,
) -> teekms_client::VerifiedConnection {
    post_encrypt(&mut c).await;
    c
}

/// Checks, once, that what [`encrypt_1kib`] is answered decrypts to its plaintext.
pub(crate) async fn check_encrypt_1kib(url: &NodeUrl, policy: &Policy, owner: &OwnerKey) {
    let mut c = teekms_client::connect_verified(url, policy, Some(owner), now())
        .await
        .unwrap();
    let body = post_encrypt(&mut c).await;
    let resp: teekms_core::api::CiphertextResponse = serde_json::from_slice(&body).unwrap();
    let opened = c.decrypt(&resp.ciphertext.0, None).await.unwrap();
    assert_eq!(&opened.plaintext.unwrap().0[..], &PLAINTEXT[..]);
}

pub(crate) async fn envelope_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let owner = Arc::new(OwnerKey::generate());
    deploy_bench_key(&url, &policy, &owner).await;
    check_encrypt_1kib(&url, &policy, &owner).await;
    // Interleaved rounds: this machine's speed drifts by tens of percent over a minute,
    // so each ratio compares phases run back to back, and the median ratio is reported.
    let pid = node.child.id();
    let mut conns = connect_clients(std::slice::from_ref(&url), &policy, &owner).await;
    let mut ratios = Vec::new();
    // Node CPU per encrypt over node CPU per empty request, each round's own.
    let mut cpu_ratios = Vec::new();
    let (mut pings, mut encs) = (Vec::new(), Vec::new());
    for _ in 0..ENVELOPE_ROUNDS {
        let me = std::process::id();
        let (cpu0, t0, my0) = (cpu_time(pid), Instant::now(), cpu_time(me));
        let m0 = MachineCpu::now();
        let (rate, lat, back) = closed_loop(conns, ENVELOPE_SECONDS, |mut c| async move {
            let (status, _) = c
                .connection()
                .raw_request(teekms_client::Method::GET, "/v1/ping", None)
                .await;
            assert_eq!(status, 200);
            c
        })
        .await;
        let ping = (rate, lat);
        let ping_cpu = cpu_time(pid) - cpu0;
        let ping_my = cpu_time(me) - my0;
        let ping_n = ping.0 * t0.elapsed().as_secs_f64();
        let ping_machine = MachineCpu::now().since(m0);
        let (cpu0, t0, my0) = (cpu_time(pid), Instant::now(), cpu_time(me));
        let m0 = MachineCpu::now();
        let (rate, lat, back) = closed_loop(back, ENVELOPE_SECONDS, encrypt_1kib).await;
        let enc = (rate, lat);
        conns = back;
        let enc_cpu = cpu_time(pid) - cpu0;
        let enc_my = cpu_time(me) - my0;
        let enc_n = enc.0 * t0.elapsed().as_secs_f64();
        let enc_machine = MachineCpu::now().since(m0);
        println!(
            "round: CPU per request, node / clients: ping {:.1} / {:.1} us, encrypt {:.1} / {:.1} us; machine busy (softirq): ping {:.0} % ({:.0} %), encrypt {:.0} % ({:.0} %)",
            ping_cpu.as_secs_f64() * 1e6 / ping_n,
            ping_my.as_secs_f64() * 1e6 / ping_n,
            enc_cpu.as_secs_f64() * 1e6 / enc_n,
            enc_my.as_secs_f64() * 1e6 / enc_n,
            ping_machine.0,
            ping_machine.1,
            enc_machine.0,
            enc_machine.1,
        );
        ratios.push(enc.0 / ping.0);
        cpu_ratios.push((enc_cpu.as_secs_f64() / enc_n) / (ping_cpu.as_secs_f64() / ping_n));
        pings.push(ping);
        encs.push(enc);
    }
    // Rounds from the lowest ratio to the highest: the median round, and the middle half.
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
    let mid = order[order.len() / 2];
    let quarter = order.len() / 4;
    let (low, high) = (
        ratios[order[quarter]],
        ratios[order[order.len() - 1 - quarter]],
    );
    let ((ping_rate, ping_lat), (enc_rate, enc_lat)) = (&pings[mid], &encs[mid]);
    println!(
        "\n## Envelope encrypt, 1 KiB, HTTPS keep-alive, {ENVELOPE_CLIENTS} concurrent clients, each on one connection kept for the whole run ({ENVELOPE_ROUNDS} interleaved rounds of {ENVELOPE_SECONDS} s per phase; median round)"
    );
    println!(
        "empty authenticated request (GET /v1/ping): {ping_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(ping_lat, 0.5),
        pct(ping_lat, 0.99)
    );
    println!(
        "encrypt 1 KiB (audit entry durable first):  {enc_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms",
        pct(enc_lat, 0.5),
        pct(enc_lat, 0.99)
    );
    let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio: {:.2} x the empty authenticated request (goal >= 0.5); middle half of rounds {low:.2}-{high:.2}; rounds: {}",
        ratios[mid],
        all.join(", ")
    );
    cpu_ratios.sort_by(f64::total_cmp);
    println!(
        "node CPU per encrypt / per empty request: {:.2} (median of the rounds' ratios; goal <= 2); middle half {:.2}-{:.2}",
        cpu_ratios[cpu_ratios.len() / 2],
        cpu_ratios[quarter],
        cpu_ratios[cpu_ratios.len() - 1 - quarter],
    );
}
