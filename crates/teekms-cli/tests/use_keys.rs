//! Using keys through the real binary against a real `teekms serve`: streaming through
//! the node (and across to the owner's copy), envelope verbs, lifecycle, key policies,
//! access keys, and the audit log (verified through the node and offline, tampered).

mod common;

use common::Env;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn streaming_envelopes_lifecycle_access_and_audit_through_the_binary() {
    let env = Env::new();
    let data_dir = env.path("node");
    let node = env.serve_tee("sim", &data_dir, &["--min-deletion-wait", "0s"], "warn");
    let url = node.url.clone();
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

    // Streaming through the node; the result decrypts with the owner's copy, and the
    // other way round.
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let plain = env.path("plain");
    std::fs::write(&plain, &data).unwrap();
    let (via_node, local_back) = (env.path("via-node.tkms"), env.path("local-back"));
    env.ok(&[
        "encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "-i",
        s(&plain),
        "-o",
        s(&via_node),
    ]);
    env.ok(&[
        "decrypt",
        "--dek",
        s(&dek),
        "-i",
        s(&via_node),
        "-o",
        s(&local_back),
    ]);
    assert_eq!(std::fs::read(&local_back).unwrap(), data);
    let (local, node_back) = (env.path("local.tkms"), env.path("node-back"));
    env.ok(&[
        "encrypt",
        "--dek",
        s(&dek),
        "--key-id",
        "db",
        "-i",
        s(&plain),
        "-o",
        s(&local),
    ]);
    env.ok(&[
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "-i",
        s(&local),
        "-o",
        s(&node_back),
    ]);
    assert_eq!(std::fs::read(&node_back).unwrap(), data);
    // A tampered stream: the node cuts the response, the CLI exits non-zero and leaves
    // no output file.
    let mut bad = std::fs::read(&local).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let tampered = env.path("tampered.tkms");
    std::fs::write(&tampered, &bad).unwrap();
    let out = env.path("never");
    let (code, _, err) = env.run(&[
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "-i",
        s(&tampered),
        "-o",
        s(&out),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(!out.exists(), "no partial plaintext under the output name");
    // Streamed to stdout as well.
    let (code, stdout_bytes) = {
        let o = env
            .cmd()
            .args(["decrypt", "--node", &url, "--policy", p, "-i", s(&via_node)])
            .output()
            .unwrap();
        (o.status.code().unwrap(), o.stdout)
    };
    assert_eq!((code, stdout_bytes.len()), (0, data.len()));

    // Envelope verbs.
    let small = env.path("small");
    std::fs::write(&small, b"4111 1111 1111 1111").unwrap();
    let env_ct = env.path("small.env");
    env.ok(&[
        "envelope",
        "encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "--aad",
        "row=7",
        "-i",
        s(&small),
        "-o",
        s(&env_ct),
    ]);
    let env_pt = env.path("small.back");
    env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--aad",
        "row=7",
        "-i",
        s(&env_ct),
        "-o",
        s(&env_pt),
    ]);
    assert_eq!(std::fs::read(&env_pt).unwrap(), b"4111 1111 1111 1111");
    let (code, _, err) = env.run(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--aad",
        "row=8",
        "-i",
        s(&env_ct),
    ]);
    assert_eq!(code, 1, "{err}");
    // An encryption context: bound by its canonical encoding, so pairs in any order
    // open it, through the node or offline with the owner's copy; another context or
    // none does not.
    let ctx_ct = env.path("small.ctx");
    env.ok(&[
        "envelope",
        "encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "--context",
        "tenant=acme",
        "--context",
        "purpose=a=b",
        "-i",
        s(&small),
        "-o",
        s(&ctx_ct),
    ]);
    let through_node = env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--context",
        "purpose=a=b",
        "--context",
        "tenant=acme",
        "-i",
        s(&ctx_ct),
    ]);
    assert_eq!(through_node, "4111 1111 1111 1111");
    let offline = env.ok(&[
        "envelope",
        "decrypt",
        "--dek",
        s(&dek),
        "--context",
        "tenant=acme",
        "--context",
        "purpose=a=b",
        "-i",
        s(&ctx_ct),
    ]);
    assert_eq!(offline, "4111 1111 1111 1111");
    for wrong in [
        &["--context", "tenant=other", "--context", "purpose=a=b"][..],
        &[],
    ] {
        let mut args = vec!["envelope", "decrypt", "--dek", s(&dek), "-i", s(&ctx_ct)];
        args.extend_from_slice(wrong);
        let (code, _, err) = env.run(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("--context"), "{err}");
    }
    let (code, _, err) = env.run(&[
        "envelope",
        "decrypt",
        "--dek",
        s(&dek),
        "--aad",
        "x",
        "--context",
        "a=b",
        "-i",
        s(&ctx_ct),
    ]);
    assert_eq!(code, 2, "--aad and --context are exclusive: {err}");
    let (gdk, wrapped) = (env.path("gdk.key"), env.path("gdk.wrapped"));
    env.ok(&[
        "envelope",
        "generate-data-key",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "-o",
        s(&gdk),
        "--wrapped",
        s(&wrapped),
    ]);
    let unwrapped = env.path("gdk.unwrapped");
    env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "-i",
        s(&wrapped),
        "-o",
        s(&unwrapped),
    ]);
    let gdk_text = std::fs::read_to_string(&gdk).unwrap();
    assert_eq!(
        hex::encode(std::fs::read(&unwrapped).unwrap()) + "\n",
        gdk_text
    );

    // Lifecycle.
    let out = env.ok(&[
        "key", "rotate", "db", "--node", &url, "--policy", p, "--json",
    ]);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["current_version"], 2);
    let moved = env.path("small.env2");
    env.ok(&[
        "envelope",
        "re-encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--aad",
        "row=7",
        "-i",
        s(&env_ct),
        "-o",
        s(&moved),
    ]);
    env.ok(&[
        "key",
        "min-decryption-version",
        "db",
        "2",
        "--node",
        &url,
        "--policy",
        p,
    ]);
    let (code, _, _) = env.run(&[
        "envelope",
        "decrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--aad",
        "row=7",
        "-i",
        s(&env_ct),
    ]);
    assert_eq!(code, 1, "version 1 no longer decrypts");
    assert_eq!(
        env.ok(&[
            "envelope",
            "decrypt",
            "--node",
            &url,
            "--policy",
            p,
            "--aad",
            "row=7",
            "-i",
            s(&moved)
        ]),
        "4111 1111 1111 1111"
    );
    env.ok(&["key", "disable", "db", "--node", &url, "--policy", p]);
    let (code, _, err) = env.run(&[
        "envelope",
        "encrypt",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "db",
        "-i",
        s(&small),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("disabled"), "{err}");
    env.ok(&["key", "enable", "db", "--node", &url, "--policy", p]);
    let described = env.ok(&["key", "describe", "db", "--node", &url, "--policy", p]);
    assert!(
        described.contains("version   2") && described.contains("enabled"),
        "{described}"
    );
    let (code, _, _) = env.run(&[
        "key",
        "export",
        "db",
        "--node",
        &url,
        "--policy",
        p,
        "-o",
        s(&env.path("x.key")),
    ]);
    assert_eq!(code, 1, "not exportable");
    env.ok(&[
        "key",
        "schedule-deletion",
        "db",
        "--wait",
        "30d",
        "--node",
        &url,
        "--policy",
        p,
    ]);
    env.ok(&[
        "key",
        "cancel-deletion",
        "db",
        "--node",
        &url,
        "--policy",
        p,
    ]);

    // Key policy and access keys.
    let token = env.path("shipper.token");
    let id = env.ok(&[
        "access",
        "create",
        "--keys",
        "db",
        "--operations",
        "encrypt",
        "--expires-in",
        "1d",
        "--description",
        "log shipper",
        "-o",
        s(&token),
        "--node",
        &url,
        "--policy",
        p,
    ]);
    let id = id.trim().to_owned();
    assert!(id.starts_with("ak-"));
    let listed = env.ok(&["access", "list", "--node", &url, "--policy", p]);
    assert!(
        listed.contains(&id) && listed.contains("log shipper"),
        "{listed}"
    );
    let as_key = |extra: &[&str]| {
        let mut args = vec![
            "envelope",
            "encrypt",
            "--node",
            &url,
            "--policy",
            p,
            "--key-id",
            "db",
            "--access-key",
            s(&token),
            "-i",
            s(&small),
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let (code, _, err) = as_key(&[]);
    assert_eq!(code, 1, "default deny until the key policy names it: {err}");
    let kp = env.path("policy.json");
    std::fs::write(
        &kp,
        format!(
            r#"{{"rules":[{{"principals":[{{"access_key":"{id}"}}],"operations":["encrypt"]}}]}}"#
        ),
    )
    .unwrap();
    env.ok(&[
        "key",
        "policy",
        "set",
        "db",
        "--file",
        s(&kp),
        "--node",
        &url,
        "--policy",
        p,
    ]);
    let got = env.ok(&["key", "policy", "get", "db", "--node", &url, "--policy", p]);
    assert!(got.contains(&id));
    let (code, _, err) = as_key(&[]);
    assert_eq!(code, 0, "{err}");
    env.ok(&["access", "revoke", &id, "--node", &url, "--policy", p]);
    let (code, _, _) = as_key(&[]);
    assert_eq!(code, 1, "revoked");

    // The audit log, through the node.
    let tail = env.ok(&[
        "audit", "tail", "-n", "500", "--json", "--node", &url, "--policy", p,
    ]);
    for op in [
        "\"stream-encrypt\"",
        "\"stream-decrypt\"",
        "\"rotate\"",
        "\"access-create\"",
        "\"policy-set\"",
    ] {
        assert!(tail.contains(op), "audit lacks {op}");
    }
    assert!(
        tail.lines()
            .any(|l| l.contains(&format!("access-key:{id}")) && l.contains("\"denied"))
    );
    let v = env.ok(&["audit", "verify", "--node", &url, "--policy", p, "--json"]);
    assert!(v.contains("\"ok\":true"), "{v}");

    // Offline, inside the (sim) TEE, on the stopped node; then tampered.
    let mut node = node;
    node.stop();
    let out = env.ok(&[
        "audit",
        "verify",
        "--data-dir",
        s(&data_dir),
        "--tee",
        "sim",
    ]);
    assert!(out.contains("audit log verified"), "{out}");
    let offline_tail = env.ok(&[
        "audit",
        "tail",
        "-n",
        "3",
        "--json",
        "--data-dir",
        s(&data_dir),
        "--tee",
        "sim",
    ]);
    assert_eq!(offline_tail.lines().count(), 3);
    // By default, a table a person reads: a header, then one row per entry with every
    // field in full and the time in RFC 3339.
    let table = env.ok(&[
        "audit",
        "tail",
        "-n",
        "3",
        "--data-dir",
        s(&data_dir),
        "--tee",
        "sim",
    ]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("SEQ") && rows[0].contains("OUTCOME"),
        "{table}"
    );
    let last: teekms_core::audit::AuditEntry =
        serde_json::from_str(offline_tail.lines().last().unwrap()).unwrap();
    assert!(
        rows[3].starts_with(&last.seq.to_string())
            && rows[3].contains(&teekms_attest::format_rfc3339(last.draft.time))
            && rows[3].contains(&last.draft.caller)
            && rows[3].ends_with(&last.draft.outcome),
        "{table}"
    );
    let db = data_dir.join("teekms.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM audit WHERE seq = 5", []).unwrap();
    drop(conn);
    let (code, out, _) = env.run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&data_dir),
        "--tee",
        "sim",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("BROKEN at entry 6"), "{out}");
}

/// `teekms workload fetch` as a (sim) workload: admitted by the key policy's workload
/// entry, the key arrives sealed to this process's attested key; written as a data key
/// file or as a Gramine provisioned key.
#[test]
fn workload_fetch_writes_the_key_or_a_gramine_key() {
    let env = Env::new();
    let data_dir = env.path("node");
    let node = env.serve_tee("sim", &data_dir, &[], "warn");
    let url = node.url.clone();
    let policy = env.sim_policy();
    let p = s(&policy);
    let out = env.ok(&["owner", "init"]);
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .to_owned();
    let sim_root = env.ok(&["sim", "root"]).trim().to_owned();
    let kp = env.path("kp.json");
    std::fs::write(&kp, format!(r#"{{"rules":[{{"principals":[{{"workload":{{"tee":"sim","sim_root":"{sim_root}"}}}}],"operations":["fetch"]}}]}}"#)).unwrap();
    let dek = env.path("model.key");
    env.ok(&["key", "generate", "-o", s(&dek)]);
    env.ok(&[
        "key",
        "deploy",
        "--node",
        &url,
        "--policy",
        p,
        "--key-id",
        "model",
        "--dek",
        s(&dek),
        "--key-policy",
        s(&kp),
    ]);

    let fetched = env.path("fetched.key");
    env.ok(&[
        "workload",
        "fetch",
        "--node",
        &url,
        "--policy",
        p,
        "--tee",
        "sim",
        "--key-id",
        "model",
        "--key-owner",
        &fp,
        "-o",
        s(&fetched),
    ]);
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&dek).unwrap()
    );
    let keys_dir = env.path("attestation-keys");
    std::fs::create_dir(&keys_dir).unwrap();
    env.ok(&[
        "workload",
        "fetch",
        "--node",
        &url,
        "--policy",
        p,
        "--tee",
        "sim",
        "--key-id",
        "model",
        "--key-owner",
        &fp,
        "--gramine-key",
        "model",
        "--gramine-keys-dir",
        s(&keys_dir),
    ]);
    let gramine = std::fs::read(keys_dir.join("model")).unwrap();
    let dek_bytes = hex::decode(std::fs::read_to_string(&dek).unwrap().trim()).unwrap();
    assert_eq!(gramine.len(), 16);
    assert_ne!(
        gramine[..],
        dek_bytes[..16],
        "derived, not a prefix of the data key"
    );
    // Not admitted for another key, and never for a second fetch over an existing file.
    let (code, _, err) = env.run(&[
        "workload",
        "fetch",
        "--node",
        &url,
        "--policy",
        p,
        "--tee",
        "sim",
        "--key-id",
        "other",
        "--key-owner",
        &fp,
        "-o",
        s(&env.path("x.key")),
    ]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = env.run(&[
        "workload",
        "fetch",
        "--node",
        &url,
        "--policy",
        p,
        "--tee",
        "sim",
        "--key-id",
        "model",
        "--key-owner",
        &fp,
        "-o",
        s(&fetched),
    ]);
    assert_eq!(code, 2);
}
