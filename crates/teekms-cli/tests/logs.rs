//! `serve --log-format json` (issue 19 §3): every line on stdout and stderr is one JSON
//! object — the "listening" line and the sim warning included — with one line per
//! request at the default level (request id, caller kind, operation, outcome, latency),
//! and no secret of the run (token, AWS secret, data key, plaintext) anywhere in them.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::{Env, bin, s};

#[test]
fn json_logs_are_one_object_per_line_with_a_line_per_request_and_no_secrets() {
    let env = Env::new();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--tee",
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(env.path("node"))
        .env("HOME", env.dir.path())
        .env_remove("TEEKMS_LOG")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let listening: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|_| panic!("not JSON: {first}"));
    let message = listening["message"].as_str().unwrap().to_owned();
    let url = message
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_owned();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    let dek = env.path("db.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    env.ok(&[
        "key",
        "deploy",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "--dek",
        s(&dek),
    ]);
    let token = env.path("app.token");
    let creds = env.path("aws.credentials");
    let ak = env
        .ok(&[
            "access",
            "create",
            "--keys",
            "db",
            "--operations",
            "encrypt,decrypt",
            "-o",
            s(&token),
            "--aws-credentials",
            s(&creds),
            "--node",
            &url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    let grant = env.path("grant.json");
    std::fs::write(&grant, format!(r#"{{"rules":[{{"principals":[{{"access_key":"{ak}"}}],"operations":["encrypt","decrypt"]}}]}}"#)).unwrap();
    env.ok(&[
        "key",
        "policy",
        "set",
        "db",
        "--file",
        s(&grant),
        "--node",
        &url,
        "--policy",
        p,
    ]);
    let plaintext = "PLAINTEXT-NEVER-LOGGED-4111111111111111";
    let input = env.path("in");
    std::fs::write(&input, plaintext).unwrap();
    let ct = env.path("ct");
    env.ok(&[
        "envelope",
        "encrypt",
        "--access-key",
        s(&token),
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "-i",
        s(&input),
        "-o",
        s(&ct),
    ]);
    env.ok(&[
        "envelope",
        "decrypt",
        "--access-key",
        s(&token),
        "--node",
        &url,
        "--policy",
        p,
        "-i",
        s(&ct),
    ]);
    let (code, _, _) = env.run(&[
        "envelope",
        "decrypt",
        "--access-key",
        s(&token),
        "--node",
        &url,
        "--policy",
        p,
        "--context",
        "a=b",
        "-i",
        s(&ct),
    ]);
    assert_eq!(code, 1);

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let err = reader.join().unwrap();
    let all: Vec<&str> = std::iter::once(first.trim_end())
        .chain(rest.lines())
        .chain(err.lines())
        .collect();
    let mut requests = Vec::new();
    for line in &all {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a line that is not JSON: {line}"));
        assert!(v.is_object(), "{line}");
        if v["target"] == "teekms::request" {
            requests.push(v);
        }
    }
    assert!(
        all.iter().any(|l| l.contains("INSECURE")),
        "the sim warning, as JSON"
    );
    let encrypt = requests
        .iter()
        .find(|r| {
            r["operation"] == "/v1/envelope/encrypt" && r["caller"] == format!("access-key:{ak}")
        })
        .unwrap_or_else(|| panic!("no request line for the encrypt: {requests:?}"));
    assert_eq!(encrypt["status"], 200);
    assert!(encrypt["latency_ms"].as_f64().is_some() && encrypt["request_id"].as_u64().is_some());
    assert!(
        requests
            .iter()
            .any(|r| r["operation"] == "/v1/envelope/decrypt" && r["status"] == 400)
    );
    assert!(
        requests
            .iter()
            .any(|r| r["caller"].as_str().unwrap_or("").starts_with("owner:"))
    );

    // No secret of the run in any line.
    let token_text = std::fs::read_to_string(&token).unwrap();
    let token_secret = token_text.trim().split('.').nth(1).unwrap().to_owned();
    let creds_text = std::fs::read_to_string(&creds).unwrap();
    let aws_secret = creds_text
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap()
        .to_owned();
    let dek_hex = std::fs::read_to_string(&dek).unwrap().trim().to_owned();
    let joined = all.join("\n");
    for (what, secret) in [
        ("the token's secret", token_secret.as_str()),
        ("the AWS secret", &aws_secret),
        ("the data key", &dek_hex),
        ("the plaintext", plaintext),
    ] {
        assert!(!joined.contains(secret), "{what} is in the logs");
    }
}
