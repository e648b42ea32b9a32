//! `teekms collateral fetch` against a real HTTP server on loopback that serves captured
//! collateral the way a PCCS / Intel PCS (API v4) and AMD KDS do; the fetched directory
//! then verifies the evidence exactly as the original collateral does.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::Env;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

type Routes = BTreeMap<String, (Vec<(String, String)>, Vec<u8>)>;

/// A minimal HTTP/1.1 server: one request per connection, routes by exact path+query.
fn serve(routes: Routes) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            log.lock().unwrap().push(path.clone());
            let (status, headers, body) = match routes.get(&path) {
                Some((h, b)) => ("200 OK", h.clone(), b.clone()),
                None => ("404 Not Found", vec![], b"not found".to_vec()),
            };
            let mut head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (url, seen)
}

fn dcap_routes() -> Routes {
    let dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let text = |f: &str| String::from_utf8(read(f)).unwrap();
    let mut routes = Routes::new();
    routes.insert(
        "/sgx/certification/v4/tcb?fmspc=00A067110000".into(),
        (
            vec![(
                "TCB-Info-Issuer-Chain".into(),
                percent_encode(&text("tcb_info_issuer_chain.pem")),
            )],
            read("tcb_info.json"),
        ),
    );
    routes.insert(
        "/sgx/certification/v4/qe/identity".into(),
        (
            vec![(
                "SGX-Enclave-Identity-Issuer-Chain".into(),
                percent_encode(&text("qe_identity_issuer_chain.pem")),
            )],
            read("qe_identity.json"),
        ),
    );
    routes.insert(
        "/sgx/certification/v4/pckcrl?ca=processor&encoding=der".into(),
        (
            vec![(
                "SGX-PCK-CRL-Issuer-Chain".into(),
                percent_encode(&text("pck_crl_issuer_chain.pem")),
            )],
            read("pck_crl.der"),
        ),
    );
    // Some PCCS versions send the root CA CRL hex-encoded.
    routes.insert(
        "/sgx/certification/v4/rootcacrl".into(),
        (vec![], hex::encode(read("root_ca_crl.der")).into_bytes()),
    );
    routes
}

#[test]
fn fetched_dcap_collateral_verifies_like_the_original() {
    let dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (url, seen) = serve(dcap_routes());

    let env = Env::new();
    let out = env.path("fetched");
    let quote = dir.join("quote.bin");
    env.ok(&[
        "collateral",
        "fetch",
        "--tee",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--url",
        &url,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(seen.lock().unwrap().len(), 4, "{:?}", seen.lock().unwrap());
    for f in [
        "tcb_info.json",
        "qe_identity.json",
        "pck_crl.der",
        "root_ca_crl.der",
        "tcb_info_issuer_chain.pem",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            read(f),
            "{f} arrives byte for byte"
        );
    }
    let (code, json, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--collateral",
        out.to_str().unwrap(),
        "--at",
        "2025-07-19T10:01:17Z",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        code, 1,
        "verified but ConfigurationAndSWHardeningNeeded: refused by the default policy"
    );
    assert_eq!(v["verified"], true);
    assert_eq!(v["tcb_status"], "ConfigurationAndSWHardeningNeeded");
}

#[test]
fn fetched_snp_collateral_verifies_and_errors_are_clear() {
    let dir = vectors().join("snp/virtee-milan-vcek");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let chip = "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6";
    let mut routes = Routes::new();
    routes.insert(
        format!("/vcek/v1/Milan/{chip}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"),
        (vec![], read("vcek.der")),
    );
    routes.insert(
        "/vcek/v1/Milan/cert_chain".into(),
        (vec![], [read("ask.pem"), read("ark.pem")].concat()),
    );
    let (url, _) = serve(routes);
    let env = Env::new();
    let out = env.path("fetched");
    let report = dir.join("report.bin");
    env.ok(&[
        "collateral",
        "fetch",
        "--tee",
        "snp",
        "--product",
        "milan",
        "--evidence",
        report.to_str().unwrap(),
        "--url",
        &url,
        "-o",
        out.to_str().unwrap(),
    ]);
    let (code, json, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "snp",
        "--evidence",
        report.to_str().unwrap(),
        "--collateral",
        out.to_str().unwrap(),
        "--at",
        "2025-06-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{json}");
    // The wrong product: the service answers 404, and the command says so.
    let (code, _, err) = env.run(&[
        "collateral",
        "fetch",
        "--tee",
        "snp",
        "--product",
        "genoa",
        "--evidence",
        report.to_str().unwrap(),
        "--url",
        &url,
        "-o",
        env.path("x").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    // No product for SNP: a usage error.
    let (code, _, _) = env.run(&[
        "collateral",
        "fetch",
        "--tee",
        "snp",
        "--evidence",
        report.to_str().unwrap(),
        "--url",
        &url,
        "-o",
        env.path("y").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
}

/// A node fetches the collateral for its own evidence at start (before serving) into its
/// data dir and ships it in its attestation document.
#[test]
fn a_node_fetches_its_collateral_at_start() {
    let (url, seen) = serve(dcap_routes());
    let env = Env::new();
    let vec_dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let gramine = env.fake_gramine(&vec_dir.join("quote.bin"));
    let data = env.path("node");
    let node = env.serve_tee(
        "sgx",
        &data,
        &[
            "--attestation-dir",
            gramine.to_str().unwrap(),
            "--collateral-url",
            &url,
        ],
        "warn",
    );
    let node_url = node.url.clone();
    let doc = env.path("node.json");
    env.ok(&[
        "attest",
        "fetch",
        "--node",
        &node_url,
        "-o",
        doc.to_str().unwrap(),
    ]);
    drop(node);
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert!(
        data.join("collateral/tcb_info.json").exists(),
        "cached in the data dir"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    assert!(saved["collateral"]["files"]["pck_crl.der"].is_string());
}
