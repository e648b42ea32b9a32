//! The deployment flow through the real binary: commands, files, output and exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Env;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {s}"))
}

#[test]
fn owner_init_is_idempotent_and_follows_xdg() {
    let env = Env::new();
    let first = env.ok(&["owner", "init"]);
    let key = env.path(".config/teekms/owner.key");
    assert!(key.exists(), "{first}");
    assert_eq!(mode(&key), 0o600);
    let second = env.ok(&["owner", "init"]);
    let fp = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("fingerprint"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(fp(&first), fp(&second));

    let out = env
        .cmd()
        .env("XDG_CONFIG_HOME", env.path("xdg"))
        .args(["owner", "init"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(env.path("xdg/teekms/owner.key").exists());
    let out = env
        .cmd()
        .env("TEEKMS_OWNER", env.path("o.key"))
        .args(["owner", "init"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(env.path("o.key").exists());
    env.ok(&[
        "owner",
        "init",
        "--owner",
        env.path("p.key").to_str().unwrap(),
    ]);
    assert!(env.path("p.key").exists());
}

#[test]
fn sim_root_is_created_once_under_xdg_data_home() {
    let env = Env::new();
    let a = env.ok(&["sim", "root"]);
    let b = env.ok(&["sim", "root"]);
    assert_eq!(a, b);
    assert_eq!(a.trim().len(), 64);
    assert!(env.path(".local/share/teekms/sim-root.key").exists());
}

#[test]
fn key_generate_writes_the_data_key_format() {
    let env = Env::new();
    let path = env.path("dek");
    env.ok(&["key", "generate", "-o", path.to_str().unwrap()]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert!(
        text[..64]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    assert_eq!(mode(&path), 0o600);
    let (code, _, err) = env.run(&["key", "generate", "-o", path.to_str().unwrap()]);
    assert_eq!(code, 2, "must refuse to overwrite: {err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn the_whole_flow_online_offline_and_across_restarts() {
    let env = Env::new();
    env.ok(&["owner", "init"]);
    let policy = env.sim_policy();
    let p = policy.to_str().unwrap();
    let data = env.path("node");
    let mut node = env.serve(&data);
    let url = node.url.clone();

    let doc = env.path("node.json");
    env.ok(&[
        "attest",
        "fetch",
        "--node",
        &url,
        "-o",
        doc.to_str().unwrap(),
    ]);
    let saved = json(&std::fs::read_to_string(&doc).unwrap());
    for field in ["tee", "evidence", "statement", "collateral"] {
        assert!(
            saved.get(field).is_some(),
            "attestation document lacks {field}"
        );
    }
    let (code, out, err) = env.run(&[
        "attest",
        "verify",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["verified"], true);
    assert_eq!(v["accepted"], true);
    assert_eq!(v["tee"], "sim");
    assert!(v["claims"]["measurement"].as_str().unwrap().len() == 96);
    assert!(v["statement"]["hpke_public_key"].is_string());
    assert!(v["reasons"].as_array().unwrap().is_empty());
    assert!(err.contains("INSECURE"), "sim must be announced on stderr");

    let (a, b, c) = (env.path("a.key"), env.path("b.key"), env.path("c.key"));
    for k in [&a, &b, &c] {
        env.ok(&["key", "generate", "-o", k.to_str().unwrap()]);
    }
    // Online.
    let out = env.ok(&[
        "key",
        "deploy",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "a",
        "--dek",
        a.to_str().unwrap(),
    ]);
    assert!(out.contains("deployed key a"), "{out}");
    // Offline, imported into the running node.
    let bundle_b = env.path("b.bundle");
    let wrapped = env.ok(&[
        "key",
        "wrap",
        "--evidence",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--key-id",
        "b",
        "--dek",
        b.to_str().unwrap(),
        "-o",
        bundle_b.to_str().unwrap(),
    ]);
    // The hint names the import commands as they work (a node, or a data dir and TEE).
    assert!(
        wrapped.contains(&format!("teekms key import {} --node", bundle_b.display()))
            && wrapped.contains("--data-dir DIR --tee TEE"),
        "{wrapped}"
    );
    env.ok(&["key", "import", bundle_b.to_str().unwrap(), "--node", &url]);
    let receipt_b = env.path("b.bundle.receipt");
    env.ok(&[
        "key",
        "check-receipt",
        receipt_b.to_str().unwrap(),
        "--evidence",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--key-id",
        "b",
        "--dek",
        b.to_str().unwrap(),
    ]);
    // The receipt does not vouch for other material.
    let (code, _, err) = env.run(&[
        "key",
        "check-receipt",
        receipt_b.to_str().unwrap(),
        "--evidence",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--key-id",
        "b",
        "--dek",
        a.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");

    // Offline, imported into the stopped node's data dir.
    assert!(node.stop().success());
    let bundle_c = env.path("c.bundle");
    env.ok(&[
        "key",
        "wrap",
        "--evidence",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--key-id",
        "c",
        "--dek",
        c.to_str().unwrap(),
        "-o",
        bundle_c.to_str().unwrap(),
    ]);
    let receipt_c = env.path("c.receipt");
    env.ok(&[
        "key",
        "import",
        bundle_c.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--tee",
        "sim",
        "--receipt",
        receipt_c.to_str().unwrap(),
    ]);
    env.ok(&[
        "key",
        "check-receipt",
        receipt_c.to_str().unwrap(),
        "--evidence",
        doc.to_str().unwrap(),
        "--policy",
        p,
        "--key-id",
        "c",
        "--dek",
        c.to_str().unwrap(),
    ]);

    // Restart: same node, all three keys, never material.
    let node = env.serve(&data);
    let out = env.ok(&["key", "list", "--node", &node.url, "--policy", p, "--json"]);
    let list = json(&out);
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    for (k, file) in [("a", &a), ("b", &b), ("c", &c)] {
        let hex = std::fs::read_to_string(file).unwrap();
        assert!(
            !out.contains(hex.trim()),
            "list must never show material of {k}"
        );
    }
    let human = env.ok(&["key", "list", "--node", &node.url, "--policy", p]);
    assert_eq!(human.lines().count(), 4, "{human}");

    // A second deployment of "a" with other material is refused, and "a" is unchanged.
    let (code, _, err) = env.run(&[
        "key",
        "deploy",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        "a",
        "--dek",
        b.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        json(&env.ok(&["key", "list", "--node", &node.url, "--policy", p, "--json"])),
        list
    );
}

#[test]
fn bad_evidence_and_policies_are_refused_and_nothing_is_wrapped() {
    let env = Env::new();
    env.ok(&["owner", "init"]);
    let policy = env.sim_policy();
    let p = policy.to_str().unwrap();
    let node = env.serve(&env.path("node"));
    let doc = env.path("node.json");
    env.ok(&[
        "attest",
        "fetch",
        "--node",
        &node.url,
        "-o",
        doc.to_str().unwrap(),
    ]);
    let dek = env.path("dek");
    env.ok(&["key", "generate", "-o", dek.to_str().unwrap()]);
    let original: serde_json::Value = json(&std::fs::read_to_string(&doc).unwrap());

    let check_rejected = |name: &str, document: serde_json::Value, reason: &str| {
        let path = env.path(name);
        std::fs::write(&path, document.to_string()).unwrap();
        let (code, out, _) = env.run(&[
            "attest",
            "verify",
            path.to_str().unwrap(),
            "--policy",
            p,
            "--json",
        ]);
        assert_eq!(code, 1, "{name}: {out}");
        let v = json(&out);
        assert_eq!(v["accepted"], false);
        assert!(v["reasons"].to_string().contains(reason), "{name}: {out}");
        let bundle = env.path(&format!("{name}.bundle"));
        let (code, _, err) = env.run(&[
            "key",
            "wrap",
            "--evidence",
            path.to_str().unwrap(),
            "--policy",
            p,
            "--key-id",
            "k",
            "--dek",
            dek.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(!bundle.exists(), "{name}: nothing may be wrapped");
    };

    // Tampered evidence: one bit of the signed evidence.
    let mut tampered = original.clone();
    let mut ev = base64_decode(tampered["evidence"].as_str().unwrap());
    ev[70] ^= 1;
    tampered["evidence"] = base64_encode(&ev).into();
    check_rejected("tampered.json", tampered, "signature");

    // A statement naming another public key than the one the report data binds.
    let mut swapped = original.clone();
    swapped["statement"]["hpke_public_key"] = "11".repeat(32).into();
    check_rejected("swapped.json", swapped, "report data does not match");

    // A policy with a different sim root: verified, but not accepted.
    let other = env.path("other-policy.toml");
    std::fs::write(
        &other,
        format!(
            "[[accept]]\ntee = \"sim\"\nsim_root = \"{}\"\n",
            "22".repeat(32)
        ),
    )
    .unwrap();
    let (code, out, _) = env.run(&[
        "attest",
        "verify",
        doc.to_str().unwrap(),
        "--policy",
        other.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(
        (v["verified"].as_bool(), v["accepted"].as_bool()),
        (Some(true), Some(false))
    );
    let (code, _, err) = env.run(&[
        "key",
        "deploy",
        "--node",
        &node.url,
        "--policy",
        other.to_str().unwrap(),
        "--key-id",
        "k",
        "--dek",
        dek.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("hint:"), "errors say what to do: {err}");
    let list = json(&env.ok(&["key", "list", "--node", &node.url, "--policy", p, "--json"]));
    assert!(
        list["keys"].as_array().unwrap().is_empty(),
        "nothing was sent"
    );

    // Malformed or over-wide policies are usage errors (exit 2).
    for (name, text) in [
        (
            "unknown-key.toml",
            "[[accept]]\ntee = \"sim\"\nsim_root = \"00\"\nallow_anything = true\n".to_owned(),
        ),
        ("broken.toml", "[[accept]\n".to_owned()),
        ("empty.toml", String::new()),
    ] {
        let path = env.path(name);
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = env.run(&[
            "attest",
            "verify",
            doc.to_str().unwrap(),
            "--policy",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{name}: {err}");
    }
    let (code, _, _) = env.run(&[
        "attest",
        "verify",
        env.path("missing.json").to_str().unwrap(),
        "--policy",
        p,
    ]);
    assert_eq!(code, 2);
    let garbage = env.path("garbage.json");
    std::fs::write(&garbage, "not json").unwrap();
    let (code, out, _) = env.run(&[
        "attest",
        "verify",
        garbage.to_str().unwrap(),
        "--policy",
        p,
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["accepted"], false);
}

#[test]
fn serve_warns_that_sim_is_insecure_on_every_start() {
    let env = Env::new();
    for _ in 0..2 {
        let mut node = env.serve(&env.path("node"));
        node.stop();
        assert!(node.stderr().contains("INSECURE"));
    }
}

#[test]
fn demo_runs_on_embedded_defaults() {
    let env = Env::new();
    let out = env.ok(&["demo"]);
    assert!(out.contains("both keys survived"), "{out}");
    assert!(out.contains("accepted=false"), "{out}");
    assert!(
        !env.path(".config").exists() && !env.path(".local").exists(),
        "the demo touches nothing of the user's"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Key material never reaches logs, error output or the data dir in clear.
#[test]
fn secrets_never_reach_logs_or_disk_in_clear() {
    let env = Env::new();
    env.ok(&["owner", "init"]);
    let policy = env.sim_policy();
    let p = policy.to_str().unwrap();
    let data = env.path("node");
    let mut node = env.serve_with_log(&data, "trace");
    let url = node.url.clone();
    let dek = env.path("dek");
    env.ok(&["key", "generate", "-o", dek.to_str().unwrap()]);
    let (_, out1, err1) = env.run(&[
        "key",
        "deploy",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "k",
        "--dek",
        dek.to_str().unwrap(),
    ]);
    let other = env.path("other");
    env.ok(&["key", "generate", "-o", other.to_str().unwrap()]);
    let (_, out2, err2) = env.run(&[
        "key",
        "deploy",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "k",
        "--dek",
        other.to_str().unwrap(),
    ]);
    node.stop();
    let node_log = node.stderr();
    assert!(
        node_log.contains("TRACE") || node_log.contains("DEBUG"),
        "the node did log at trace level"
    );
    let secrets = [
        std::fs::read_to_string(&dek).unwrap(),
        std::fs::read_to_string(&other).unwrap(),
    ];
    for s in &secrets {
        let hex = s.trim();
        for text in [&node_log, &out1, &err1, &out2, &err2] {
            assert!(!text.contains(hex), "key material in output");
        }
        // Nor the raw bytes in any file of the data dir.
        let raw = hex::decode(hex).unwrap();
        for entry in std::fs::read_dir(&data).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(32).any(|w| w == raw.as_slice()),
                "key material stored in clear"
            );
        }
    }
}

/// `owner tls-cert` writes the owner's certificate and key in PEM that another TLS stack
/// (Python's ssl, on OpenSSL) loads and calls the API with, as the owner.
#[test]
fn owner_tls_cert_lets_another_tls_stack_call_the_api_as_the_owner() {
    let env = Env::new();
    let node = env.serve(&env.path("node"));
    env.key_with_access(&node.url);
    let (cert, key) = (env.path("owner.crt"), env.path("owner.pem"));
    env.ok(&[
        "owner",
        "tls-cert",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Python checks no certificate of the node here: trust in the node comes from its
    // attestation (teekms attest), which this test is not about.
    let script = r#"
import http.client, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if len(sys.argv) > 2:
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
host, port = sys.argv[1].split(":")
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
conn.request("GET", "/v1/keys")
answer = conn.getresponse()
print(answer.status, answer.read().decode())
"#;
    let addr = node.url.trim_start_matches("https://");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(addr)
            .args(args)
            .output()
            .expect("python3 (./test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let as_owner = run(&[cert.to_str().unwrap(), key.to_str().unwrap()]);
    assert!(
        as_owner.starts_with("200 ") && as_owner.contains("\"key_id\":\"k\""),
        "{as_owner}"
    );
    let anonymous = run(&[]);
    assert!(anonymous.starts_with("401 "), "{anonymous}");
    // The key file is never written over.
    let (code, _, err) = env.run(&[
        "owner",
        "tls-cert",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
}
