//! The AWS KMS API with the real AWS clients (issue 17): awscli, boto3 and the AWS
//! Encryption SDK CLI, pinned and installed by ./test into a temp virtual environment
//! (`TEEKMS_TEST_AWS_VENV`), drive a cluster of two sim nodes on a PostgreSQL store
//! through `tests/aws/clients.py`. Then the audit log must verify and name the access
//! key, the operation and the context, and the CA file must outlive a restart.

mod common;

use common::{Env, s};
use teekms_testkit::PgServer;

fn venv_python() -> std::path::PathBuf {
    let venv = std::env::var("TEEKMS_TEST_AWS_VENV").expect(
        "TEEKMS_TEST_AWS_VENV is not set: run the suite with ./test, which installs the pinned AWS clients",
    );
    std::path::PathBuf::from(venv).join("bin/python3")
}

#[test]
fn aws_sdks_cli_and_encryption_sdk_use_teekms_unchanged() {
    let python = venv_python();
    let env = Env::new();
    let pg = PgServer::start();
    let store = pg.url("postgres");
    let n1_dir = env.path("node-1");
    let mut n1 = env.serve_tee("sim", &n1_dir, &["--store", &store], "warn");
    let n2 = env.serve_tee(
        "sim",
        &env.path("node-2"),
        &["--store", &store, "--join", &n1.url],
        "warn",
    );
    let policy = env.sim_policy();
    let p = s(&policy);
    let url = n1.url.clone();
    env.ok(&["owner", "init"]);

    // Keys: db (in use), off (disabled), doomed (pending deletion), wl (for a workload).
    let dek = env.path("db.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    let key_ids = ["db", "doomed", "off", "wl"];
    for id in key_ids {
        let file = if id == "db" {
            dek.clone()
        } else {
            env.path(&format!("{id}.key"))
        };
        if id != "db" {
            env.ok(&["key", "generate", "-o", s(&file)]);
        }
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
            s(&file),
        ]);
    }
    // The application's access key, with AWS credentials; a second one that may only
    // describe, in its own profile.
    let creds = env.path("credentials");
    let ak = env
        .ok(&[
            "access",
            "create",
            "--keys",
            "*",
            "--operations",
            "encrypt,decrypt,generate-data-key,re-encrypt,describe",
            "-o",
            s(&env.path("ak.token")),
            "--aws-credentials",
            s(&creds),
            "--node",
            &url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    let limited_creds = env.path("limited-credentials");
    let limited = env
        .ok(&[
            "access",
            "create",
            "--keys",
            "*",
            "--operations",
            "describe",
            "-o",
            s(&env.path("limited.token")),
            "--aws-credentials",
            s(&limited_creds),
            "--aws-profile",
            "limited",
            "--node",
            &url,
            "--policy",
            p,
        ])
        .trim()
        .to_owned();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the credentials file is private");
    let mut both = std::fs::read_to_string(&creds).unwrap();
    both.push_str(&std::fs::read_to_string(&limited_creds).unwrap());
    std::fs::write(&creds, both).unwrap();

    // Key policies: the application's key may do everything on db, off and doomed, and
    // only encrypt on wl, where decrypting and data keys need it *and* the workload.
    let sim_root = env.ok(&["sim", "root"]).trim().to_owned();
    let all_ops = r#"["encrypt","decrypt","generate-data-key","re-encrypt","describe"]"#;
    let open_policy = format!(
        r#"{{"rules":[{{"principals":[{{"access_key":"{ak}"}},{{"access_key":"{limited}"}}],"operations":{all_ops}}}]}}"#
    );
    let wl_policy = format!(
        r#"{{"rules":[{{"principals":[{{"access_key":"{ak}"}}],"operations":["encrypt","describe"]}},{{"principals":[{{"access_key":"{ak}","workload":{{"tee":"sim","sim_root":"{sim_root}"}}}}],"operations":["decrypt","generate-data-key"]}}]}}"#
    );
    for (id, text) in [
        ("db", &open_policy),
        ("off", &open_policy),
        ("doomed", &open_policy),
        ("wl", &wl_policy),
    ] {
        let file = env.path(&format!("{id}.policy.json"));
        std::fs::write(&file, text).unwrap();
        env.ok(&[
            "key",
            "policy",
            "set",
            id,
            "--file",
            s(&file),
            "--node",
            &url,
            "--policy",
            p,
        ]);
    }
    env.ok(&["key", "disable", "off", "--node", &url, "--policy", p]);
    env.ok(&[
        "key",
        "schedule-deletion",
        "doomed",
        "--wait",
        "30d",
        "--node",
        &url,
        "--policy",
        p,
    ]);

    // The CA, from verified evidence only; the key's ARN as `key describe --json` shows it.
    let ca = env.path("ca.pem");
    env.ok(&["ca", "export", "--node", &url, "--policy", p, "-o", s(&ca)]);
    let described: serde_json::Value = serde_json::from_str(&env.ok(&[
        "key", "describe", "db", "--json", "--node", &url, "--policy", p,
    ]))
    .unwrap();
    let arn = described["arn"].as_str().unwrap().to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:") && arn.ends_with(":key/db"),
        "{arn}"
    );

    // A workload's attestation document (admitted: this sim root), and a stranger's.
    let (wl_key, wl_doc) = (env.path("workload.key"), env.path("workload.json"));
    env.ok(&[
        "workload",
        "attest",
        "--tee",
        "sim",
        "--key-out",
        s(&wl_key),
        "-o",
        s(&wl_doc),
    ]);
    let (st_key, st_doc) = (env.path("stranger.key"), env.path("stranger.json"));
    env.ok(&[
        "workload",
        "attest",
        "--tee",
        "sim",
        "--sim-root",
        s(&env.path("other-root.key")),
        "--key-out",
        s(&st_key),
        "-o",
        s(&st_doc),
    ]);

    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/clients.py");
    let run_clients = |node: &str| {
        std::process::Command::new(&python)
            .arg(&script)
            .env("HOME", env.dir.path())
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_CONFIG_FILE", env.path("no-aws-config"))
            .env("AWS_CA_BUNDLE", &ca)
            .env("AWS_ENDPOINT_URL_KMS", node)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("WORK", &work)
            .env("TEEKMS", common::bin())
            .env("NODE", node)
            .env("NODE2", &n2.url)
            .env("POLICY", p)
            .env("DEK", &dek)
            .env("DB_ARN", &arn)
            .env("KEY_IDS", key_ids.join(","))
            .env("WL_DOC", &wl_doc)
            .env("WL_KEY", &wl_key)
            .env("STRANGER_DOC", &st_doc)
            .output()
            .unwrap()
    };
    let out = run_clients(&url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the AWS clients' checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all AWS client checks passed"), "{stdout}");

    // The audit log verifies, and names the access key, the operation and the context.
    env.ok(&["audit", "verify", "--node", &url, "--policy", p]);
    let tail = env.ok(&[
        "audit", "tail", "--json", "-n", "1000", "--node", &url, "--policy", p,
    ]);
    let with_context = tail.lines().find(|l| {
        l.contains(&format!("access-key:{ak}"))
            && l.contains("\"operation\":\"encrypt\"")
            && l.contains(r#"{\"purpose\":\"test\",\"tenant\":\"acme\"}"#)
    });
    assert!(
        with_context.is_some(),
        "no encrypt entry with its context:\n{tail}"
    );
    assert!(
        tail.contains("aws:DisableKey") && tail.contains("aws:CreateKey"),
        "refusals are audited"
    );

    // After a restart, the CA file the clients trust still does.
    n1.stop();
    let n1 = env.serve_tee("sim", &n1_dir, &["--store", &store], "warn");
    let again = std::process::Command::new(venv_python().parent().unwrap().join("aws"))
        .args(["kms", "describe-key", "--key-id", "db", "--output", "json"])
        .env("HOME", env.dir.path())
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_CONFIG_FILE", env.path("no-aws-config"))
        .env("AWS_CA_BUNDLE", &ca)
        .env("AWS_ENDPOINT_URL_KMS", &n1.url)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "after a restart: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains(&arn));
}
