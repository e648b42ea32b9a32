//! The API contract, spec/openapi.json (issue 19 §4): valid OpenAPI 3.1 by
//! `openapi-spec-validator`, every native route of the server in it and nothing else,
//! served by the node; and `schemathesis` (both pinned, from PyPI, in ./test's virtual
//! environment, `TEEKMS_TEST_AWS_VENV`) driving a live node as an owner with an access
//! key finds no 5xx and no answer outside the document, after which the node still
//! serves and its audit log verifies.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Env, s};

fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var("TEEKMS_TEST_AWS_VENV").expect(
        "TEEKMS_TEST_AWS_VENV is not set: run the suite with ./test, which installs the pinned tools",
    );
    Path::new(&venv).join("bin").join(name)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn document() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("spec/openapi.json")).unwrap())
        .unwrap()
}

/// The native routes the server's source declares (`.route("/v1/...`), the Transit
/// API's (its own spec) aside.
fn routes_in_source() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for file in ["api.rs", "stream.rs"] {
        let text =
            std::fs::read_to_string(root().join("crates/teekms-server/src").join(file)).unwrap();
        for piece in text.split(".route(").skip(1) {
            let Some(path) = piece.trim_start().strip_prefix('"') else {
                continue;
            };
            let path = &path[..path.find('"').unwrap()];
            if path.starts_with("/v1/") {
                routes.insert(path.to_owned());
            }
        }
    }
    routes
}

#[test]
fn the_document_is_valid_complete_and_served() {
    let spec = root().join("spec/openapi.json");
    let out = std::process::Command::new(venv_tool("openapi-spec-validator"))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        documented,
        routes_in_source(),
        "spec/openapi.json and the server's routes differ"
    );

    // Served as is, and every documented method is routed (not the router's 404 or
    // 405), and an undocumented one is not.
    let env = Env::new();
    let node = env.serve(&env.path("node"));
    let port = node.url.rsplit(':').next().unwrap().to_owned();
    let curl = |method: &str, path: &str| -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-X", method, "-o", "-", "-w", "\n%{http_code}"])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    };
    let (code, served) = curl("GET", "/v1/openapi.json");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&served).unwrap(),
        doc
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "some-key");
        for method in ["get", "post", "put", "delete"] {
            let (code, body) = curl(&method.to_uppercase(), &concrete);
            let routed = code != 405 && !body.contains("no such endpoint");
            assert_eq!(
                routed,
                item.get(method).is_some(),
                "{method} {path}: {code} {body}"
            );
        }
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let env = Env::new();
    let node = env.serve(&env.path("node"));
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
    let token = env.path("ak.token");
    env.ok(&[
        "access",
        "create",
        "--keys",
        "*",
        "--operations",
        "encrypt,decrypt,generate-data-key,re-encrypt,describe",
        "-o",
        s(&token),
        "--node",
        &node.url,
        "--policy",
        p,
    ]);
    let (cert, key, ca) = (
        env.path("owner.crt"),
        env.path("owner.pem"),
        env.path("ca.pem"),
    );
    env.ok(&["owner", "tls-cert", "--cert", s(&cert), "--key", s(&key)]);
    env.ok(&[
        "ca",
        "export",
        "--node",
        &node.url,
        "--policy",
        p,
        "-o",
        s(&ca),
    ]);
    let token = std::fs::read_to_string(&token).unwrap();
    let port = node.url.rsplit(':').next().unwrap().to_owned();
    let out = std::process::Command::new(venv_tool("schemathesis"))
        .args(["run", s(&root().join("spec/openapi.json"))])
        .args(["--url", &format!("https://127.0.0.1:{port}")])
        .args(["--request-cert", s(&cert), "--request-cert-key", s(&key)])
        .args(["--tls-verify", s(&ca)])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(env.path(""))
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "schemathesis:\n{report}");
    // Still serving, the chain whole.
    let (code, verified, err) = env.run(&["audit", "verify", "--node", &node.url, "--policy", p]);
    assert_eq!(code, 0, "{verified}{err}\n{report}");
}
