//! The Vault Transit API with the real client (issue 18 §1): hvac, pinned and installed
//! by ./test into the temp virtual environment (`TEEKMS_TEST_AWS_VENV`), drives a node
//! through `tests/vault/hvac_checks.py`; the audit log verifies afterwards, with one
//! entry per batch item.

mod common;

use common::{Env, s};

#[test]
fn hvac_uses_the_transit_api_unchanged() {
    let venv = std::env::var("TEEKMS_TEST_AWS_VENV").expect(
        "TEEKMS_TEST_AWS_VENV is not set: run the suite with ./test, which installs the pinned clients",
    );
    let python = std::path::PathBuf::from(venv).join("bin/python3");
    let env = Env::new();
    let node = env.serve_tee("sim", &env.path("node"), &[], "warn");
    let url = node.url.clone();
    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    for id in ["db", "off"] {
        let dek = env.path(&format!("{id}.key"));
        env.ok(&["key", "generate", "-o", s(&dek)]);
        env.ok(&[
            "key",
            "deploy",
            "--node",
            &url,
            "--policy",
            p,
            "--key-id",
            id,
            "--dek",
            s(&dek),
        ]);
    }
    let token = env.path("app.token");
    let ak = env
        .ok(&[
            "access",
            "create",
            "--keys",
            "*",
            "--operations",
            "encrypt,decrypt,generate-data-key,re-encrypt,describe",
            "-o",
            s(&token),
            "--node",
            &url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    let grant = env.path("grant.json");
    std::fs::write(
        &grant,
        format!(
            r#"{{"rules":[{{"principals":[{{"access_key":"{ak}"}}],"operations":["encrypt","decrypt","generate-data-key","re-encrypt","describe"]}}]}}"#
        ),
    )
    .unwrap();
    for id in ["db", "off"] {
        env.ok(&[
            "key",
            "policy",
            "set",
            id,
            "--file",
            s(&grant),
            "--node",
            &url,
            "--policy",
            p,
        ]);
    }
    env.ok(&["key", "disable", "off", "--node", &url, "--policy", p]);
    let ca = env.path("ca.pem");
    env.ok(&["ca", "export", "--node", &url, "--policy", p, "-o", s(&ca)]);
    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vault/hvac_checks.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .env("HOME", env.dir.path())
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env("NODE", &url)
        .env("CA", &ca)
        .env("TEEKMS", common::bin())
        .env("POLICY", p)
        .env("TOKEN_FILE", &token)
        .env("TOKEN_ID", &ak)
        .env("KEY_IDS", "db,off")
        .env("WORK", &work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all hvac checks passed"),
        "hvac checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["audit", "verify", "--node", &url, "--policy", p]);
    let tail = env.ok(&[
        "audit", "tail", "--json", "-n", "2000", "--node", &url, "--policy", p,
    ]);
    let encrypts = tail
        .lines()
        .filter(|l| {
            l.contains(&format!("access-key:{ak}")) && l.contains("\"operation\":\"encrypt\"")
        })
        .count();
    assert!(
        encrypts >= 100,
        "one audit entry per batch item: {encrypts} encrypt entries"
    );
}
