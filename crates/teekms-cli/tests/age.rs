//! `age` with `age-plugin-teekms` (issue 18 §2), with Debian's `age` (./test installs it
//! if absent): a 10 MiB file encrypted with the node stopped, decrypted through it; a
//! teekms recipient beside a native one, each identity alone decrypting; refused after
//! the key is disabled, after its policy drops the access key, after its deletion; a
//! tampered file refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Env, s};

/// `age` with the plugin's directory first on its PATH.
fn age(plugin_dir: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("age")
        .args(args)
        .env("PATH", path)
        .output()
        .expect("age runs (./test installs it if absent)")
}

fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_age-plugin-teekms"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn age_encrypts_offline_and_decrypts_through_the_node_under_its_rules() {
    let env = Env::new();
    let dir = plugin_dir();
    let data = env.path("node");
    let mut node = env.serve_tee("sim", &data, &["--min-deletion-wait", "0s"], "warn");
    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    let dek = env.path("db.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    env.ok(&[
        "key",
        "deploy",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        "db",
        "--dek",
        s(&dek),
    ]);
    let token = env.path("app.token");
    let ak = env
        .ok(&[
            "access",
            "create",
            "--keys",
            "db",
            "--operations",
            "decrypt,describe",
            "-o",
            s(&token),
            "--node",
            &node.url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    let grant = env.path("grant.json");
    let granted = format!(
        r#"{{"rules":[{{"principals":[{{"access_key":"{ak}"}}],"operations":["decrypt","describe"]}}]}}"#
    );
    std::fs::write(&grant, &granted).unwrap();
    env.ok(&[
        "key",
        "policy",
        "set",
        "db",
        "--file",
        s(&grant),
        "--node",
        &node.url,
        "--policy",
        p,
    ]);
    let recipient = env
        .ok(&[
            "age",
            "recipient",
            "--key-id",
            "db",
            "--node",
            &node.url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1teekms1"), "{recipient}");
    let native_key = env.path("native.key");
    let out = Command::new("age-keygen")
        .args(["-o", s(&native_key)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let native = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_owned();

    // Encrypted with the node stopped: the recipient carries what is needed.
    node.stop();
    let plain = env.path("big.bin");
    let bytes: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&plain, &bytes).unwrap();
    let sealed = env.path("big.age");
    let out = age(
        &dir,
        &["-r", &recipient, "-r", &native, "-o", s(&sealed), s(&plain)],
    );
    assert!(
        out.status.success(),
        "age -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Decrypted through the node, restarted.
    let node = env.serve_tee("sim", &data, &["--min-deletion-wait", "0s"], "warn");
    let url = node.url.clone();
    let ca = env.path("ca.pem");
    env.ok(&["ca", "export", "--node", &url, "--policy", p, "-o", s(&ca)]);
    let identity = env.path("identity.txt");
    env.ok(&[
        "age",
        "identity",
        "--node",
        &url,
        "--ca",
        s(&ca),
        "--access-key",
        s(&token),
        "-o",
        s(&identity),
    ]);
    let text = std::fs::read_to_string(&identity).unwrap();
    assert!(text.contains("AGE-PLUGIN-TEEKMS-1"), "{text}");
    assert!(
        !text.contains(std::fs::read_to_string(&token).unwrap().trim()),
        "no secret in the identity"
    );
    let back = env.path("big.back");
    let out = age(
        &dir,
        &["-d", "-i", s(&identity), "-o", s(&back), s(&sealed)],
    );
    assert!(
        out.status.success(),
        "age -d (teekms): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "decrypted through the node, identical"
    );
    let out = age(&dir, &["-d", "-i", s(&native_key), s(&sealed)]);
    assert!(
        out.status.success() && out.stdout == bytes,
        "the native identity alone decrypts"
    );
    let out = age(
        &dir,
        &["-d", "-i", s(&identity), "-i", s(&native_key), s(&sealed)],
    );
    assert!(
        out.status.success() && out.stdout == bytes,
        "both identities in one call"
    );

    let refused = |why: &str, expect: &str| {
        let out = age(&dir, &["-d", "-i", s(&identity), s(&sealed)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}: decrypted");
        assert!(err.contains(expect), "{why}: {err}");
    };
    // A tampered file.
    let mut tampered = std::fs::read(&sealed).unwrap();
    let at = tampered.len() - 100;
    tampered[at] ^= 1;
    let bad = env.path("tampered.age");
    std::fs::write(&bad, &tampered).unwrap();
    let out = age(&dir, &["-d", "-i", s(&identity), s(&bad)]);
    assert!(!out.status.success(), "a tampered file decrypted");
    // The key disabled, then enabled again.
    env.ok(&["key", "disable", "db", "--node", &url, "--policy", p]);
    refused("disabled", "disabled");
    env.ok(&["key", "enable", "db", "--node", &url, "--policy", p]);
    assert!(
        age(&dir, &["-d", "-i", s(&identity), s(&sealed)])
            .status
            .success()
    );
    // The policy no longer names the access key.
    let empty = env.path("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    env.ok(&[
        "key",
        "policy",
        "set",
        "db",
        "--file",
        s(&empty),
        "--node",
        &url,
        "--policy",
        p,
    ]);
    refused("dropped from the policy", "forbidden");
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
    // Deleted: every file made for it is shredded.
    env.ok(&[
        "key",
        "schedule-deletion",
        "db",
        "--wait",
        "0s",
        "--node",
        &url,
        "--policy",
        p,
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    refused("deleted", "deleted");
    // The native identity still opens its own stanza.
    let out = age(&dir, &["-d", "-i", s(&native_key), s(&sealed)]);
    assert!(out.status.success());
    // Every unwrap is in the audit log.
    let tail = env.ok(&[
        "audit", "tail", "--json", "-n", "200", "--node", &url, "--policy", p,
    ]);
    assert!(tail.contains("age-unwrap"), "{tail}");
}
