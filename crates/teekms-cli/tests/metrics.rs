//! `serve --metrics-listen` (issue 19 §1): a live scrape passes Debian's `promtool check
//! metrics` (taken out of the prometheus package by ./test, `TEEKMS_TEST_PROMTOOL`),
//! counters move as requests are made, and no caller-chosen string (key id, owner,
//! token) appears in a label.

mod common;

use common::{Env, s};

fn scrape(port: u16) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn a_live_scrape_passes_promtool_and_counters_move() {
    let promtool = std::env::var("TEEKMS_TEST_PROMTOOL").expect(
        "TEEKMS_TEST_PROMTOOL is not set: run the suite with ./test, which takes promtool out of Debian's prometheus package",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    let metrics = format!("127.0.0.1:{port}");
    let node = env.serve_tee(
        "sim",
        &env.path("node"),
        &["--metrics-listen", &metrics],
        "warn",
    );
    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    let dek = env.path("k.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    let secret_name = "payroll-secret-key";
    env.ok(&[
        "key",
        "deploy",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        secret_name,
        "--dek",
        s(&dek),
    ]);
    let input = env.path("in");
    std::fs::write(&input, b"x").unwrap();
    let encrypt = || {
        env.ok(&[
            "envelope",
            "encrypt",
            "--node",
            &node.url,
            "--policy",
            p,
            "--key-id",
            secret_name,
            "-i",
            s(&input),
            "-o",
            s(&env.path("ct")),
        ]);
    };
    encrypt();
    let before = scrape(port);
    let series =
        r#"teekms_requests_total{api="native",operation="/v1/envelope/encrypt",outcome="ok"}"#;
    let entries = "teekms_audit_entries_total";
    let (n0, a0) = (value(&before, series), value(&before, entries));
    assert!(n0 >= 1.0, "{before}");
    for _ in 0..3 {
        encrypt();
    }
    let (code, _, _) = env.run(&[
        "envelope",
        "encrypt",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        "no-such-key",
        "-i",
        s(&input),
    ]);
    assert_eq!(code, 1);
    // A stream through the node: its bytes are counted both ways.
    let big = env.path("big");
    std::fs::write(&big, vec![7u8; 200_000]).unwrap();
    env.ok(&[
        "encrypt",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        secret_name,
        "-i",
        s(&big),
        "-o",
        s(&env.path("big.sealed")),
    ]);
    let after = scrape(port);
    assert!(
        value(&after, r#"teekms_stream_bytes_total{direction="in"}"#) >= 200_000.0,
        "{after}"
    );
    assert!(
        value(&after, r#"teekms_stream_bytes_total{direction="out"}"#) >= 200_000.0,
        "{after}"
    );
    assert_eq!(
        value(&after, "teekms_store_reconnects_total"),
        0.0,
        "{after}"
    );
    assert_eq!(value(&after, series), n0 + 3.0, "{after}");
    assert!(value(&after, entries) >= a0 + 3.0, "{after}");
    assert!(
        after.contains(r#"operation="/v1/envelope/encrypt",outcome="client_error""#),
        "{after}"
    );
    assert!(after.contains("teekms_connections_open"), "{after}");
    assert!(after.contains(r#"teekms_build_info{version="#), "{after}");
    // No caller-chosen string in any label.
    for secret in [secret_name, "no-such-key"] {
        assert!(!after.contains(secret), "{secret} leaked into the metrics");
    }
    // promtool on the live scrape (its lint included).
    let check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .as_ref()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Keys by state are counted by the deletion sweep, which runs at start: the node
    // started again on the same data finds the deployed key enabled.
    drop(node);
    let _node = env.serve_tee(
        "sim",
        &env.path("node"),
        &["--metrics-listen", &metrics],
        "warn",
    );
    let mut restarted = scrape(port);
    for _ in 0..50 {
        if restarted.contains("teekms_keys{") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        restarted = scrape(port);
    }
    assert_eq!(
        value(&restarted, r#"teekms_keys{state="enabled"}"#),
        1.0,
        "{restarted}"
    );
    assert_eq!(
        value(&restarted, r#"teekms_keys{state="disabled"}"#),
        0.0,
        "{restarted}"
    );
    assert_eq!(
        value(&restarted, r#"teekms_keys{state="pending_deletion"}"#),
        0.0,
        "{restarted}"
    );
}
