//! `aws`: 1 KiB `Encrypt` through the AWS KMS API (JSON 1.1, each request SigV4-signed
//! by the client as an AWS SDK signs it) beside the native `envelope/encrypt` with the
//! same access key (its token), on the same node and connections, interleaved rounds;
//! node CPU per request of each.

use super::*;

/// The AWS request body, made once (the plaintext as the native bench's).
static AWS_ENCRYPT_BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    serde_json::to_vec(&serde_json::json!({
        "KeyId": "bench",
        "Plaintext": base64::engine::general_purpose::STANDARD.encode(PLAINTEXT),
    }))
    .unwrap()
});

/// The access key's id and its signing key for the day: AWS SDKs that sign many
/// requests (Go's, Java's) keep the day's key too.
struct Credentials {
    id: String,
    date: String,
    key: teekms_core::sigv4::SigningKey,
}

static CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// The signed headers of the current second: every request of a second is the same
/// bytes, so the clients sign once a second, as a load generator replays one request
/// (the node still verifies every signature; its cost, not the clients', is measured).
static SIGNED: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

/// `(x-amz-date, Authorization)` for a request made now.
fn signed_now(host: &str) -> (String, String) {
    let date = teekms_core::sigv4::amz_date(now());
    if let Some((d, auth)) = &*SIGNED.lock().unwrap()
        && *d == date
    {
        return (date, auth.clone());
    }
    let creds = CREDENTIALS.get().expect("credentials set");
    assert_eq!(
        &date[..8],
        creds.date,
        "the benchmark ran past midnight (UTC)"
    );
    let headers: [(&str, &[u8]); 4] = [
        ("content-type", b"application/x-amz-json-1.1"),
        ("host", host.as_bytes()),
        ("x-amz-date", date.as_bytes()),
        ("x-amz-target", b"TrentService.Encrypt"),
    ];
    let req = teekms_core::sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: AWS_ENCRYPT_BODY.as_slice(),
    };
    let auth = teekms_core::sigv4::authorization_with_key(
        &req,
        &creds.id,
        &creds.key,
        &date,
        "us-east-1",
        "kms",
        &["content-type", "host", "x-amz-date", "x-amz-target"],
    )
    .unwrap();
    *SIGNED.lock().unwrap() = Some((date.clone(), auth.clone()));
    (date, auth)
}

/// One SigV4-signed `Encrypt`, answered 200; returns the body.
async fn aws_encrypt(c: &mut teekms_client::VerifiedConnection) -> teekms_client::Bytes {
    let (date, auth) = signed_now(&c.connection().host());
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(
            teekms_client::Method::POST,
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-date", &date),
                ("x-amz-target", "TrentService.Encrypt"),
                ("authorization", &auth),
            ],
            AWS_ENCRYPT_BODY.clone(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    answer
}

async fn aws_encrypt_1kib(
    mut c: teekms_client::VerifiedConnection,
) -> teekms_client::VerifiedConnection {
    aws_encrypt(&mut c).await;
    c
}

pub(crate) async fn aws_bench(teekms: &Path) {
    let dir = scratch();
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let owner = Arc::new(OwnerKey::generate());
    deploy_bench_key(&url, &policy, &owner).await;
    // An access key with AWS credentials; both phases run as it (the native one with its
    // token).
    let (created, mut conns) = bench_access_key(&url, &policy, &owner, true).await;
    let date = teekms_core::sigv4::amz_date(now())[..8].to_owned();
    let secret = created.aws_secret_access_key.clone().unwrap();
    let _ = CREDENTIALS.set(Credentials {
        id: created.info.id.clone(),
        key: teekms_core::sigv4::signing_key(secret.as_bytes(), &date, "us-east-1", "kms"),
        date,
    });
    // Once: what the AWS API answers decrypts, natively, to the plaintext.
    let body = aws_encrypt(&mut conns[0]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ct = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(v["CiphertextBlob"].as_str().unwrap())
            .unwrap()
    };
    let opened = conns[0].decrypt(&ct, None).await.unwrap();
    assert_eq!(&opened.plaintext.unwrap().0[..], &PLAINTEXT[..]);

    let pid = node.child.id();
    let (mut ratios, mut cpu_ratios, mut rounds) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ENVELOPE_ROUNDS {
        let (cpu0, t0) = (cpu_time(pid), Instant::now());
        let (native_rate, native_lat, back) =
            closed_loop(conns, ENVELOPE_SECONDS, encrypt_1kib).await;
        let native_cpu =
            (cpu_time(pid) - cpu0).as_secs_f64() / (native_rate * t0.elapsed().as_secs_f64());
        let (cpu0, t0) = (cpu_time(pid), Instant::now());
        let (aws_rate, aws_lat, back) = closed_loop(back, ENVELOPE_SECONDS, aws_encrypt_1kib).await;
        let aws_cpu =
            (cpu_time(pid) - cpu0).as_secs_f64() / (aws_rate * t0.elapsed().as_secs_f64());
        conns = back;
        println!(
            "round: native {native_rate:.0} /s ({:.1} us node CPU), AWS {aws_rate:.0} /s ({:.1} us)",
            native_cpu * 1e6,
            aws_cpu * 1e6
        );
        ratios.push(aws_rate / native_rate);
        cpu_ratios.push(aws_cpu / native_cpu);
        rounds.push((
            (native_rate, native_lat, native_cpu),
            (aws_rate, aws_lat, aws_cpu),
        ));
    }
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
    let mid = order[order.len() / 2];
    let quarter = order.len() / 4;
    let ((n_rate, n_lat, n_cpu), (a_rate, a_lat, a_cpu)) = &rounds[mid];
    println!(
        "\n## AWS KMS API Encrypt (SigV4, JSON 1.1), 1 KiB, beside native envelope encrypt, same access key, {ENVELOPE_CLIENTS} keep-alive connections ({ENVELOPE_ROUNDS} interleaved rounds of {ENVELOPE_SECONDS} s per phase; median round)"
    );
    println!(
        "native POST /v1/envelope/encrypt (Bearer token): {n_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms  node CPU {:.1} us/request",
        pct(n_lat, 0.5),
        pct(n_lat, 0.99),
        n_cpu * 1e6
    );
    println!(
        "AWS TrentService.Encrypt (SigV4-signed):         {a_rate:>8.0} /s  p50 {:.2} ms  p99 {:.2} ms  node CPU {:.1} us/request",
        pct(a_lat, 0.5),
        pct(a_lat, 0.99),
        a_cpu * 1e6
    );
    let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    cpu_ratios.sort_by(f64::total_cmp);
    println!(
        "ratio: {:.2} x native (goal >= 0.85); middle half of rounds {:.2}-{:.2}; rounds: {}; node CPU per request AWS / native: {:.2}",
        ratios[mid],
        ratios[order[quarter]],
        ratios[order[order.len() - 1 - quarter]],
        all.join(", "),
        cpu_ratios[cpu_ratios.len() / 2],
    );
}
