//! The audit log over months: exports checked offline and joined, pruning that keeps
//! the chain verifiable, what an owner may see and remove, tampered exports refused.

mod common;

use common::*;

fn last_seq(env: &Env, node: &str, policy: &str) -> u64 {
    let out = env.ok(&[
        "audit", "tail", "--node", node, "--policy", policy, "-n", "1", "--json",
    ]);
    let entry: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    entry["seq"].as_u64().unwrap()
}

#[test]
fn exports_verify_offline_join_and_let_the_log_be_pruned() {
    let env = Env::new();
    let node = env.serve(&env.path("node"));
    let policy = env.sim_policy();
    let p = s(&policy);
    env.ok(&["owner", "init"]);
    let other = env.path("other.key");
    env.ok(&["owner", "init", "--owner", s(&other)]);
    let input = env.path("in");
    std::fs::write(&input, b"payroll").unwrap();
    for (owner, key) in [(None, "mine"), (Some(&other), "theirs")] {
        let dek = env.path(&format!("{key}.dek"));
        env.ok(&["key", "generate", "-o", s(&dek)]);
        let mut args = vec![
            "key",
            "deploy",
            "--node",
            &node.url,
            "--policy",
            p,
            "--key-id",
            key,
            "--dek",
            s(&dek),
        ];
        if let Some(o) = owner {
            args.extend(["--owner", s(o)]);
        }
        env.ok(&args);
    }
    let sealed = env.path("sealed");
    let encrypt = |owner: Option<&std::path::Path>, key: &str| {
        let mut args = vec![
            "envelope",
            "encrypt",
            "--node",
            &node.url,
            "--policy",
            p,
            "--key-id",
            key,
            "-i",
            s(&input),
            "-o",
            s(&sealed),
        ];
        if let Some(o) = owner {
            args.extend(["--owner", s(o)]);
        }
        env.ok(&args);
    };
    for _ in 0..3 {
        encrypt(None, "mine");
        encrypt(Some(&other), "theirs");
    }
    let evidence = env.path("node.json");
    env.ok(&["attest", "fetch", "--node", &node.url, "-o", s(&evidence)]);

    // Two consecutive exports: each verifies offline, and together they join.
    let middle = last_seq(&env, &node.url, p) / 2;
    let (a, b) = (env.path("a.jsonl"), env.path("b.jsonl"));
    let out = env.ok(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--to",
        &middle.to_string(),
        "-o",
        s(&a),
    ]);
    assert!(out.contains("as links"), "{out}");
    env.ok(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--from",
        &(middle + 1).to_string(),
        "-o",
        s(&b),
    ]);
    let verify = |files: &[&std::path::Path]| {
        let mut args = vec!["audit", "verify", "--evidence", s(&evidence), "--policy", p];
        for f in files {
            args.extend(["--file", s(f)]);
        }
        env.run(&args)
    };
    let (code, out, err) = verify(&[&a, &b]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("one chain"), "{out}");
    // An empty range right after b still joins: its start is the chain hash b reached.
    let b_to = serde_json::from_str::<serde_json::Value>(
        std::fs::read_to_string(&b).unwrap().lines().last().unwrap(),
    )
    .unwrap()["to"]
        .as_u64()
        .unwrap();
    let empty = env.path("empty.jsonl");
    env.ok(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--from",
        &(b_to + 1).to_string(),
        "--to",
        &b_to.to_string(),
        "-o",
        s(&empty),
    ]);
    let (code, out, err) = verify(&[&a, &b, &empty]);
    assert_eq!(code, 0, "{out}{err}");
    // Out of order, they do not join.
    let (code, _, err) = verify(&[&b, &a]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not continue"), "{err}");
    // The other owner's entries are links in my export; its own are in full in its.
    let text = std::fs::read_to_string(&a).unwrap();
    assert!(text.contains(r#""type":"link""#), "{text}");
    assert!(!text.contains(r#""key_id":"theirs""#), "{text}");

    // Tampered: an outcome changed, a line removed, the checkpoint cut off.
    let lines: Vec<&str> = text.lines().collect();
    let tampered = [
        text.replacen(r#""outcome":"ok""#, r#""outcome":"no""#, 1),
        lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect(),
        lines[..lines.len() - 1].join("\n"),
    ];
    for (i, t) in tampered.iter().enumerate() {
        let f = env.path(&format!("tampered-{i}.jsonl"));
        std::fs::write(&f, t).unwrap();
        let (code, out, err) = verify(&[&f]);
        assert_eq!(code, 1, "tampered export {i} verified: {out}{err}\n{t}");
    }

    // Pruning: entries no export covers are refused without --force; the other owner's
    // entries cannot be pruned by me; the admin-less node's log still verifies after.
    let newest = last_seq(&env, &node.url, p);
    let (code, _, err) = env.run(&[
        "audit",
        "prune",
        "--node",
        &node.url,
        "--policy",
        p,
        "--before",
        &newest.to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("never exported") || err.contains("another owner"),
        "{err}"
    );
    // The first entry of the other owner, from its own export (where it is in full).
    let theirs = env.path("theirs.jsonl");
    env.ok(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--owner",
        s(&other),
        "-o",
        s(&theirs),
    ]);
    let theirs = std::fs::read_to_string(&theirs).unwrap();
    let foreign = theirs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "entry")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(foreign > 1, "{text}");
    let (code, _, err) = env.run(&[
        "audit",
        "prune",
        "--node",
        &node.url,
        "--policy",
        p,
        "--before",
        &(foreign + 1).to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another owner"), "{err}");
    let out = env.ok(&[
        "audit",
        "prune",
        "--node",
        &node.url,
        "--policy",
        p,
        "--before",
        &foreign.to_string(),
    ]);
    assert!(
        out.contains(&format!("removed {} entries", foreign - 1)),
        "{out}"
    );
    let (code, out, err) = env.run(&["audit", "verify", "--node", &node.url, "--policy", p]);
    assert_eq!(code, 0, "{out}{err}");
    // Pruned entries cannot be exported again; the rest can, and joins the old export's
    // continuation.
    let (code, _, err) = env.run(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--from",
        &(foreign - 1).to_string(),
        "-o",
        s(&env.path("gone.jsonl")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pruned"), "{err}");
    let rest = env.path("rest.jsonl");
    env.ok(&[
        "audit",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "--from",
        &foreign.to_string(),
        "-o",
        s(&rest),
    ]);
    let (code, out, err) = verify(&[&rest]);
    assert_eq!(code, 0, "{out}{err}");
    // The prune and the exports are in the log.
    let tail = env.ok(&[
        "audit", "tail", "--node", &node.url, "--policy", p, "-n", "50", "--json",
    ]);
    assert!(tail.contains(r#""operation":"audit-prune""#), "{tail}");
    assert!(tail.contains(r#""operation":"audit-export""#), "{tail}");
}
