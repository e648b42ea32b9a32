//! `teekms evidence verify` through the real binary, on the shared captured vectors.

mod common;

use std::path::PathBuf;

use common::Env;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn verify(
    env: &Env,
    tee: &str,
    folder: &str,
    evidence: &str,
    at: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let dir = vectors().join(folder);
    let ev = dir.join(evidence);
    let mut args = vec![
        "evidence",
        "verify",
        "--tee",
        tee,
        "--evidence",
        ev.to_str().unwrap(),
        "--collateral",
        dir.to_str().unwrap(),
        "--at",
        at,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = env.run(&args);
    let json = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out}\n{err}"));
    (code, json, err)
}

#[test]
fn default_policy_outcomes_on_captured_evidence() {
    let env = Env::new();
    // UpToDate TDX: accepted.
    let (code, v, _) = verify(
        &env,
        "tdx",
        "tdx/dcapqvl-tdx-v4-uptodate",
        "quote.bin",
        "2025-07-19T10:00:34Z",
        &[],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        (v["verified"].as_bool(), v["accepted"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(v["tcb_status"], "UpToDate");
    assert_eq!(v["trailing_bytes"], 70);
    for field in [
        "mrtd",
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "mr_config_id",
        "mr_owner",
        "mr_owner_config",
        "td_attributes",
        "report_data",
        "debug",
    ] {
        assert!(!v["claims"][field].is_null(), "claims lack {field}");
    }
    // SGX with ConfigurationAndSWHardeningNeeded: verified, not accepted by default...
    let (code, v, _) = verify(
        &env,
        "sgx",
        "sgx/dcapqvl-sgx-v3-processor-ca",
        "quote.bin",
        "2025-07-19T10:01:17Z",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        (v["verified"].as_bool(), v["accepted"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        v["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    for field in [
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "report_data",
        "debug",
    ] {
        assert!(!v["claims"][field].is_null(), "claims lack {field}");
    }
    // ...but accepted by a policy that names that status and those advisories.
    let policy = env.path("sgx.toml");
    std::fs::write(&policy, "[[accept]]\ntee = \"sgx\"\nmrsigner = \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"\ntcb_status = [\"ConfigurationAndSWHardeningNeeded\"]\nadvisory_ids = [\"INTEL-SA-00289\", \"INTEL-SA-00615\"]\n").unwrap();
    let (code, v, _) = verify(
        &env,
        "sgx",
        "sgx/dcapqvl-sgx-v3-processor-ca",
        "quote.bin",
        "2025-07-19T10:01:17Z",
        &["--policy", policy.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v}");
    // SNP with debug allowed in the guest policy: verified, refused by default.
    let (code, v, _) = verify(
        &env,
        "snp",
        "snp/gosevguest-milan-vcek",
        "report.bin",
        "2025-06-01T00:00:00Z",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        (v["verified"].as_bool(), v["accepted"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(v["tcb_status"].is_null());
    assert_eq!(v["claims"]["debug"], true);
    for field in [
        "measurement",
        "host_data",
        "report_data",
        "policy",
        "vmpl",
        "reported_tcb",
        "chip_id",
    ] {
        assert!(!v["claims"][field].is_null(), "claims lack {field}");
    }
    let (code, v, _) = verify(
        &env,
        "snp",
        "snp/virtee-milan-vcek",
        "report.bin",
        "2025-06-01T00:00:00Z",
        &[],
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn defects_are_rejections_and_bad_usage_exits_2() {
    let env = Env::new();
    // Tampered quote from the shared negatives: rejected, exit 1, still one JSON object.
    let dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let bad = vectors().join("sgx/neg-dcapqvl-sgx-tampered/quote_report_data_bitflip.bin");
    let (code, out, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        bad.to_str().unwrap(),
        "--collateral",
        dir.to_str().unwrap(),
        "--at",
        "2025-07-19T10:01:17Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], false);
    assert!(
        !v["claims"].is_null(),
        "claims are printed whenever the evidence parses"
    );
    // Expired collateral: rejected.
    let (code, v, _) = verify(
        &env,
        "sgx",
        "sgx/dcapqvl-sgx-v3-processor-ca",
        "quote.bin",
        "2025-07-19T10:01:19Z",
        &[],
    );
    assert_eq!((code, v["verified"].as_bool()), (1, Some(false)));
    // Missing revocation data: rejected.
    let partial = env.path("partial");
    std::fs::create_dir(&partial).unwrap();
    for f in [
        "tcb_info.json",
        "qe_identity.json",
        "tcb_info_issuer_chain.pem",
        "qe_identity_issuer_chain.pem",
    ] {
        std::fs::copy(dir.join(f), partial.join(f)).unwrap();
    }
    let quote = dir.join("quote.bin");
    let (code, out, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--collateral",
        partial.to_str().unwrap(),
        "--at",
        "2025-07-19T10:01:17Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("revocation data is missing"), "{out}");
    // The wrong TEE for the evidence: rejected.
    let (code, _, _) = verify(
        &env,
        "tdx",
        "sgx/dcapqvl-sgx-v3-processor-ca",
        "quote.bin",
        "2025-07-19T10:01:17Z",
        &[],
    );
    assert_eq!(code, 1);
    // Usage: a bad time, an unreadable evidence path, a bad policy.
    let (code, _, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--collateral",
        dir.to_str().unwrap(),
        "--at",
        "yesterday",
        "--json",
    ]);
    assert_eq!(code, 2);
    let (code, _, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        "/nonexistent",
        "--collateral",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2);
    let policy = env.path("bad.toml");
    std::fs::write(&policy, "[[accept]]\ntee = \"sgx\"\nmrtd = \"00\"\n").unwrap();
    let (code, _, _) = env.run(&[
        "evidence",
        "verify",
        "--tee",
        "sgx",
        "--evidence",
        quote.to_str().unwrap(),
        "--collateral",
        dir.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2);
}

/// `--tee auto` never falls back to sim; TDX refuses persistent state without a sealing
/// key; an SGX node under an imitated Gramine tree serves captured evidence with its
/// collateral, which verifies as a quote but cannot bind this node's statement.
#[test]
fn real_tee_nodes_start_or_refuse_clearly() {
    let env = Env::new();
    let data = env.path("node");
    let (code, _, err) = env.run(&[
        "serve",
        "--tee",
        "auto",
        "--data-dir",
        data.to_str().unwrap(),
        "--attestation-dir",
        env.path("none").to_str().unwrap(),
        "--tsm-dir",
        env.path("none").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("found no TEE") && err.contains("--tee sim"),
        "{err}"
    );
    let (code, _, err) = env.run(&[
        "serve",
        "--tee",
        "tdx",
        "--data-dir",
        data.to_str().unwrap(),
        "--tsm-dir",
        env.path("tsm").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("TDX has no sealing key"), "{err}");

    // An imitated Gramine tree with a captured SGX quote.
    let vec_dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let gramine = env.fake_gramine(&vec_dir.join("quote.bin"));
    let node = env.serve_tee(
        "sgx",
        &data,
        &[
            "--attestation-dir",
            gramine.to_str().unwrap(),
            "--collateral",
            vec_dir.to_str().unwrap(),
        ],
        "warn",
    );
    let url = node.url.clone();

    // Its collateral expired in 2025: it serves, but it is not ready: 503 with the
    // readiness body (no error `code`, which the client reports as "unknown"; the
    // body's shape is the ready answer's, checked in the server's API tests).
    let (status, code) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = teekms_client::NodeUrl::parse(&url).unwrap();
        let mut conn = teekms_client::connect(&url, None).await.unwrap();
        conn.raw_request(teekms_client::Method::GET, "/v1/ready", None)
            .await
    });
    assert_eq!((status, &code[..]), (503, &b"unknown"[..]));

    // As the first node of a PostgreSQL cluster without --cluster-policy, it pins its own
    // MRENCLAVE (read from the captured quote) as the cluster policy.
    let pg = teekms_testkit::PgServer::start();
    let cluster_dir = env.path("cluster-node");
    let mut first = env.serve_tee(
        "sgx",
        &cluster_dir,
        &[
            "--attestation-dir",
            gramine.to_str().unwrap(),
            "--collateral",
            vec_dir.to_str().unwrap(),
            "--store",
            &pg.url("postgres"),
        ],
        "info",
    );
    first.stop();
    let log = first.stderr();
    // SGX quote v3: a 48-byte header, then the report body with MRENCLAVE at 64..96.
    let quote = std::fs::read(vec_dir.join("quote.bin")).unwrap();
    let mrenclave = hex::encode(&quote[48 + 64..48 + 96]);
    assert!(
        log.contains("cluster created") && log.contains(&format!("mrenclave = [\"{mrenclave}\"]")),
        "{log}"
    );

    let doc = env.path("node.json");
    env.ok(&[
        "attest",
        "fetch",
        "--node",
        &url,
        "-o",
        doc.to_str().unwrap(),
    ]);
    drop(node);
    let policy = env.path("sgx.toml");
    std::fs::write(&policy, "[[accept]]\ntee = \"sgx\"\ntcb_status = [\"ConfigurationAndSWHardeningNeeded\"]\nadvisory_ids = [\"INTEL-SA-00289\", \"INTEL-SA-00615\"]\n").unwrap();
    // The document's time is the owner's clock; this collateral expired in 2025, so
    // verification is rejected either for time or for the binding; both are refusals.
    let (code, out, _) = env.run(&[
        "attest",
        "verify",
        doc.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], false);
    assert_eq!(v["tee"], "sgx");
    assert!(
        !v["claims"].is_null(),
        "claims come from the real quote: {out}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    assert!(
        saved["collateral"]["files"]["tcb_info.json"].is_string(),
        "the node ships its collateral"
    );
}

#[test]
fn collateral_show_reports_coverage_expiry_and_warnings() {
    let env = Env::new();
    let dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let d = dir.to_str().unwrap();
    let (code, out, err) = env.run(&[
        "collateral",
        "show",
        d,
        "--at",
        "2025-07-15T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert!(out.contains("FMSPC 00A067110000"), "{out}");
    assert!(
        err.contains("warning: tcb_info.json expires"),
        "warns ahead of expiry: {err}"
    );
    // After the QE identity's nextUpdate: not valid, exit 1.
    let (code, _, err) = env.run(&["collateral", "show", d, "--at", "2025-08-01T00:00:00Z"]);
    assert_eq!(code, 1);
    assert!(err.contains("qe_identity.json"), "{err}");
    let (code, _, _) = env.run(&["collateral", "show", env.dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "an empty directory is a usage error");
}

/// Each positive DCAP vector with its CRL files removed: rejected without the dangerous
/// flag; with it, the same verdict as with the CRLs, and a warning on stderr only.
#[test]
fn dangerous_skip_revocation_gives_the_same_outcome_with_a_warning() {
    let env = Env::new();
    for (tee, folder, at) in [
        ("tdx", "tdx/dcapqvl-tdx-v4-uptodate", "2025-07-19T10:00:34Z"),
        (
            "tdx",
            "tdx/gotdxguest-tdx-v5-uptodate",
            "2026-03-20T10:41:14Z",
        ),
        (
            "sgx",
            "sgx/dcapqvl-sgx-v3-processor-ca",
            "2025-07-19T10:01:17Z",
        ),
    ] {
        let dir = vectors().join(folder);
        let (full_code, full, _) = verify(&env, tee, folder, "quote.bin", at, &[]);
        assert_eq!(full["verified"], true, "{folder}: {full}");

        let no_crl = env.path(&folder.replace('/', "_"));
        std::fs::create_dir(&no_crl).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.contains("crl") {
                std::fs::copy(dir.join(&name), no_crl.join(&name)).unwrap();
            }
        }
        let quote = dir.join("quote.bin");
        let run = |extra: &[&str]| {
            let mut args = vec![
                "evidence",
                "verify",
                "--tee",
                tee,
                "--evidence",
                quote.to_str().unwrap(),
                "--collateral",
                no_crl.to_str().unwrap(),
                "--at",
                at,
                "--json",
            ];
            args.extend_from_slice(extra);
            let (code, out, err) = env.run(&args);
            let v: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out}"));
            (code, v, err)
        };
        let (code, v, err) = run(&[]);
        assert_eq!(
            (code, &v["verified"]),
            (1, &serde_json::json!(false)),
            "{folder}"
        );
        assert!(
            v["reasons"][0]
                .as_str()
                .unwrap()
                .contains("revocation data is missing"),
            "{folder}: {v}"
        );
        assert!(!err.contains("warning"), "{folder}: {err}");

        let (code, v, err) = run(&["--dangerous-skip-revocation"]);
        assert_eq!(code, full_code, "{folder}: {v}");
        for field in [
            "verified",
            "accepted",
            "tcb_status",
            "advisory_ids",
            "claims",
        ] {
            assert_eq!(v[field], full[field], "{folder}: {field}");
        }
        assert!(
            err.contains("warning") && err.contains("revocation is NOT checked"),
            "{folder}: {err}"
        );
    }
}
