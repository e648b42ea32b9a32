//! ARCHITECTURE.md's list of "crate -> the workspace crates it may depend on" is the
//! crate graph, as `cargo metadata` reports it: the document cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn documented(root: &Path) -> Graph {
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```deps\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```deps block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, deps) = line.split_once("->").expect("crate -> deps");
            (
                name.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

fn actual(root: &Path) -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                // Normal dependencies only: tests and builds may use more.
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (doc, real) = (documented(&root), actual(&root));
    for (name, deps) in &real {
        assert_eq!(
            doc.get(name),
            Some(deps),
            "ARCHITECTURE.md says {name} -> {:?}; cargo metadata says {deps:?}",
            doc.get(name)
        );
    }
    let extra: Vec<&String> = doc.keys().filter(|k| !real.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "ARCHITECTURE.md lists crates that do not exist: {extra:?}"
    );
    // The pure crates stay pure of the node's side.
    for pure in ["teekms-attest", "teekms-core"] {
        for forbidden in [
            "teekms-platform",
            "teekms-store",
            "teekms-server",
            "teekms-client",
        ] {
            assert!(
                !real[pure].contains(forbidden),
                "{pure} depends on {forbidden}"
            );
        }
    }
}
