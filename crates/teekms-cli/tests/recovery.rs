//! Recovery through the real binary: a cluster split 2-of-3 among officers at creation,
//! the node's hardware lost, the cluster restored on new (sim) hardware from the store
//! and two opened shares; one share, a wrong share, another officer's key: refused.

mod common;

use common::Env;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn k_of_n_officers_restore_a_lost_node() {
    let env = Env::new();
    let data_dir = env.path("node");
    let officers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| env.path(&format!("officer-{n}.key")))
        .collect();
    for o in &officers {
        env.ok(&["recovery", "officer-init", "-o", s(o)]);
    }
    let pubs = officers
        .iter()
        .map(|o| format!("{}.pub", s(o)))
        .collect::<Vec<_>>()
        .join(",");
    let mut node = env.serve_tee(
        "sim",
        &data_dir,
        &["--recovery-officers", &pubs, "--recovery-threshold", "2"],
        "warn",
    );
    for i in 1..=3 {
        assert!(data_dir.join(format!("recovery/share-{i}.json")).exists());
    }
    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    let dek = env.path("db.key");
    let generated = env.ok(&["key", "generate", "-o", s(&dek)]);
    let kcv0 = generated
        .split("kcv ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_owned();
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
    let small = env.path("small");
    std::fs::write(&small, b"kept across the disaster").unwrap();
    let ct = env.path("small.env");
    env.ok(&[
        "envelope",
        "encrypt",
        "--node",
        &node.url,
        "--policy",
        p,
        "--key-id",
        "db",
        "-i",
        s(&small),
        "-o",
        s(&ct),
    ]);
    node.stop();

    // The hardware is gone: the node's sealed records no longer open.
    std::fs::remove_file(data_dir.join("sim-sealing.key")).unwrap();
    let (code, _, err) = env.run(&[
        "serve",
        "--tee",
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        s(&data_dir),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("teekms recovery restore"), "{err}");

    // Officers open their own shares; nobody else's.
    let share = |i: usize| data_dir.join(format!("recovery/share-{i}.json"));
    let opened: Vec<_> = (1..=3)
        .map(|i| env.path(&format!("open-{i}.json")))
        .collect();
    env.ok(&[
        "recovery",
        "open",
        "--share",
        s(&share(1)),
        "--officer",
        s(&officers[0]),
        "-o",
        s(&opened[0]),
    ]);
    env.ok(&[
        "recovery",
        "open",
        "--share",
        s(&share(2)),
        "--officer",
        s(&officers[1]),
        "-o",
        s(&opened[1]),
    ]);
    let (code, _, _) = env.run(&[
        "recovery",
        "open",
        "--share",
        s(&share(1)),
        "--officer",
        s(&officers[2]),
        "-o",
        s(&opened[2]),
    ]);
    assert_eq!(code, 1, "another officer's key does not open a share");

    let restore = |shares: &[&std::path::Path]| {
        let mut args = vec![
            "recovery",
            "restore",
            "--data-dir",
            s(&data_dir),
            "--tee",
            "sim",
        ];
        for sh in shares {
            args.extend(["--share", s(sh)]);
        }
        env.run(&args)
    };
    let (code, _, err) = restore(&[&opened[0]]);
    assert_eq!(code, 1);
    assert!(err.contains("needs 2 of 3"), "{err}");
    let mut wrong: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&opened[1]).unwrap()).unwrap();
    let y = wrong["share"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if y.starts_with('0') { "1" } else { "0" }, &y[1..]);
    wrong["share"] = serde_json::Value::String(flipped);
    let wrong_path = env.path("wrong.json");
    std::fs::write(&wrong_path, wrong.to_string()).unwrap();
    let (code, _, err) = restore(&[&opened[0], &wrong_path]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong"), "{err}");
    let (code, out, err) = restore(&[&opened[0], &opened[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored"), "{out}");

    // The restored node serves the old keys, state and audit log.
    let node = env.serve_tee("sim", &data_dir, &[], "warn");
    let back = env.ok(&[
        "envelope",
        "decrypt",
        "--node",
        &node.url,
        "--policy",
        p,
        "-i",
        s(&ct),
    ]);
    assert_eq!(back, "kept across the disaster");
    let listed = env.ok(&["key", "list", "--node", &node.url, "--policy", p, "--json"]);
    let kcv = env.ok(&[
        "key", "describe", "db", "--node", &node.url, "--policy", p, "--json",
    ]);
    assert!(listed.contains("\"db\""), "{listed}");
    let d: serde_json::Value = serde_json::from_str(&kcv).unwrap();
    assert_eq!(
        d["versions"][0]["kcv"].as_str().unwrap(),
        kcv0,
        "the same material"
    );
    let v = env.ok(&[
        "audit", "verify", "--node", &node.url, "--policy", p, "--json",
    ]);
    assert!(v.contains("\"ok\":true"), "{v}");
}
