//! Every DCAP vector in ../shared/vectors (manifest.json) gets the outcome the manifest
//! states, including its additional time cases and its derived negative files.

use std::path::{Path, PathBuf};

use serde_json::Value;
use teekms_attest::TeeKind;
use teekms_attest::danger::verify_dcap_ignoring_revocation;
use teekms_attest::dcap::{DcapCollateral, INTEL_SGX_ROOT_CA_DER, verify_dcap};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors().join("manifest.json"))
        .expect("../shared/vectors/manifest.json");
    let m: Value = serde_json::from_str(&text).unwrap();
    m["vectors"].as_array().unwrap().clone()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn text(dir: &Path, name: &str) -> String {
    String::from_utf8(read(dir, name)).unwrap()
}

/// Quote and collateral of a vector: its own folder, or the folder it derives from with
/// the vector's files replacing the base's.
fn inputs(v: &Value, all: &[Value]) -> (TeeKind, Vec<u8>, DcapCollateral) {
    let own = vectors().join(v["folder"].as_str().unwrap());
    let base_entry = match v["derived_from"].as_str() {
        Some(base) => all.iter().find(|e| e["id"] == base).unwrap(),
        None => v,
    };
    let base = vectors().join(base_entry["folder"].as_str().unwrap());
    let file = |key: &str| -> Vec<u8> {
        match v["files"][key].as_str() {
            Some(name) if v["derived_from"].is_string() => read(&own, name),
            _ => read(&base, base_entry["files"][key].as_str().unwrap()),
        }
    };
    let tee = if base_entry["kind"] == "tdx-dcap-quote" {
        TeeKind::Tdx
    } else {
        TeeKind::Sgx
    };
    let collateral = DcapCollateral {
        tcb_info: file("tcb_info"),
        qe_identity: file("qe_identity"),
        tcb_info_issuer_chain: text(&base, "tcb_info_issuer_chain.pem"),
        qe_identity_issuer_chain: text(&base, "qe_identity_issuer_chain.pem"),
        pck_crl: Some(read(&base, "pck_crl.der")),
        pck_crl_issuer_chain: Some(text(&base, "pck_crl_issuer_chain.pem")),
        root_ca_crl: Some(read(&base, "root_ca_crl.der")),
    };
    (tee, file("quote"), collateral)
}

fn dcap_vectors() -> (Vec<Value>, Vec<Value>) {
    let all = manifest();
    let dcap = all
        .iter()
        .filter(|v| {
            matches!(
                v["kind"].as_str(),
                Some("sgx-dcap-quote" | "tdx-dcap-quote" | "sgx-dcap-collateral")
            )
        })
        .cloned()
        .collect();
    (all, dcap)
}

#[test]
fn pinned_root_is_the_manifests_intel_root() {
    assert_eq!(
        INTEL_SGX_ROOT_CA_DER,
        read(&vectors().join("roots"), "intel_sgx_root_ca.der")
    );
}

#[test]
fn every_dcap_vector_gets_its_stated_outcome() {
    let (all, dcap) = dcap_vectors();
    assert!(
        dcap.len() >= 20,
        "expected the shared DCAP vectors, found {}",
        dcap.len()
    );
    for v in &dcap {
        let id = v["id"].as_str().unwrap();
        let (tee, quote, coll) = inputs(v, &all);
        let now = v["verification_time"]["unix"].as_u64().unwrap();
        let r = verify_dcap(tee, &quote, &coll, now);
        let expected = &v["expected"];
        match expected["result"].as_str().unwrap() {
            "accept" | "policy-dependent" => {
                assert!(r.verified, "{id}: expected accept, got {:?}", r.reasons);
                assert_eq!(
                    r.tcb_status.as_deref(),
                    expected["tcb_status"].as_str(),
                    "{id}"
                );
                let advisories: Vec<&str> = expected["advisory_ids"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap()).collect())
                    .unwrap_or_default();
                assert_eq!(r.advisory_ids, advisories, "{id}");
            }
            other => {
                assert!(
                    other.starts_with("reject"),
                    "{id}: unknown expectation {other}"
                );
                assert!(!r.verified, "{id}: expected reject, got {:?}", r.tcb_status);
                assert!(!r.reasons.is_empty(), "{id}: a rejection says why");
            }
        }
        if expected["result"] == "policy-dependent" {
            assert!(
                r.service_td,
                "{id}: the manifest's policy question is the bound service TD"
            );
        }
        if let Some(trailing) = v["format"]["trailing_bytes_after_signature_data"].as_u64() {
            assert_eq!(r.trailing_bytes as u64, trailing, "{id}: trailing bytes");
        }
        if let Some(m) = v["measurements"].as_object() {
            let claims = r.claims.as_ref().unwrap_or_else(|| panic!("{id}: claims"));
            for (ours, theirs) in [
                ("mrenclave", "mr_enclave"),
                ("mrsigner", "mr_signer"),
                ("mrtd", "mr_td"),
                ("rtmr0", "rt_mr0"),
                ("report_data", "report_data"),
            ] {
                if let Some(expected) = m.get(theirs) {
                    assert_eq!(&claims[ours], expected, "{id}: {ours}");
                }
            }
        }
        for case in v["additional_cases"].as_array().into_iter().flatten() {
            let t = case["time_unix"].as_u64().unwrap();
            let r = verify_dcap(tee, &quote, &coll, t);
            match case["expected"].as_str().unwrap() {
                "reject" => assert!(!r.verified, "{id} at {t}: {}", case["reason"]),
                // Signature/chain-only verification is not a mode teekms offers: with the
                // folder's collateral not yet valid at that time, it rejects.
                s if s.starts_with("accept (signature/chain-only") => assert!(!r.verified),
                other => panic!("{id}: unknown additional case {other}"),
            }
        }
    }
}

/// Each positive vector with its CRL files removed: rejected without the dangerous flag,
/// the same outcome (verified, status, advisories) with it. One CRL file missing counts
/// as missing revocation data too.
#[test]
fn missing_revocation_data_is_a_rejection_unless_dangerously_skipped() {
    let (all, dcap) = dcap_vectors();
    let positives: Vec<&Value> = dcap
        .iter()
        .filter(|v| {
            matches!(
                v["expected"]["result"].as_str(),
                Some("accept" | "policy-dependent")
            ) && v["derived_from"].is_null()
        })
        .collect();
    assert!(
        positives.len() >= 6,
        "positive DCAP vectors: {}",
        positives.len()
    );
    for v in positives {
        let id = v["id"].as_str().unwrap();
        let now = v["verification_time"]["unix"].as_u64().unwrap();
        let (tee, quote, coll) = inputs(v, &all);
        let with_crls = verify_dcap(tee, &quote, &coll, now);
        assert!(with_crls.verified, "{id}: {:?}", with_crls.reasons);

        let mut partial = coll.clone();
        partial.pck_crl = None;
        let mut none = coll.clone();
        (none.pck_crl, none.pck_crl_issuer_chain, none.root_ca_crl) = (None, None, None);
        for (what, c) in [("no pck_crl.der", &partial), ("no CRL files", &none)] {
            let r = verify_dcap(tee, &quote, c, now);
            assert!(
                !r.verified,
                "{id} with {what}: accepted without revocation data"
            );
            assert!(
                r.reasons[0].contains("revocation data is missing")
                    && r.reasons[0].contains("--dangerous-skip-revocation"),
                "{id}: {:?}",
                r.reasons
            );
            assert!(
                r.claims.is_some(),
                "claims are reported whenever the quote parses"
            );

            let r =
                teekms_attest::danger::verify_dcap_skipping_missing_revocation(tee, &quote, c, now);
            assert!(r.verified, "{id} with {what}, skipped: {:?}", r.reasons);
            assert_eq!(r.tcb_status, with_crls.tcb_status, "{id} with {what}");
            assert_eq!(r.advisory_ids, with_crls.advisory_ids, "{id} with {what}");
            assert_eq!(r.claims, with_crls.claims, "{id} with {what}");
        }
    }
}

/// The appraisal without revocation data is ours (dcap-qvl has none), so it is
/// cross-checked against dcap-qvl on every DCAP vector and time case: where dcap-qvl
/// verifies, ours verifies with the same status and advisories; where dcap-qvl rejects,
/// ours rejects too, except where the rejection is about a CRL (a CRL not yet valid at
/// an additional time case): that is the one place the two must differ.
#[test]
fn appraisal_without_revocation_agrees_with_dcap_qvl() {
    let (all, dcap) = dcap_vectors();
    let mut compared = 0;
    for v in &dcap {
        let id = v["id"].as_str().unwrap();
        let (tee, quote, coll) = inputs(v, &all);
        let mut times = vec![v["verification_time"]["unix"].as_u64().unwrap()];
        times.extend(
            v["additional_cases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["time_unix"].as_u64().unwrap()),
        );
        for t in times {
            let theirs = verify_dcap(tee, &quote, &coll, t);
            let ours = verify_dcap_ignoring_revocation(tee, &quote, &coll, t);
            if theirs
                .reasons
                .iter()
                .any(|r| r.to_lowercase().contains("crl"))
            {
                continue;
            }
            assert_eq!(
                ours.verified, theirs.verified,
                "{id} at {t}: ours {:?} / dcap-qvl {:?}",
                ours.reasons, theirs.reasons
            );
            assert_eq!(ours.tcb_status, theirs.tcb_status, "{id} at {t}");
            assert_eq!(ours.advisory_ids, theirs.advisory_ids, "{id} at {t}");
            compared += 1;
        }
    }
    assert!(compared >= 20, "compared {compared}");
}

/// Flip one byte in each region of each positive quote and collateral file: rejected.
#[test]
fn mutations_of_positive_vectors_are_rejected() {
    let (all, dcap) = dcap_vectors();
    for v in dcap
        .iter()
        .filter(|v| v["expected"]["result"] == "accept" && v["derived_from"].is_null())
    {
        let id = v["id"].as_str().unwrap();
        let (tee, quote, coll) = inputs(v, &all);
        let now = v["verification_time"]["unix"].as_u64().unwrap();
        let end = teekms_attest::dcap::quote_extent(&quote).unwrap();
        let body_end = if tee == TeeKind::Sgx {
            48 + 384
        } else {
            end.min(48 + 584)
        };
        // Header, body, signature, QE report, and across the certification data.
        let mut offsets = vec![10, 100, body_end + 10, body_end + 70, body_end + 200];
        offsets.extend((body_end + 600..end).step_by(97));
        // PEM line breaks inside the certification data are framing, not certificate
        // content (no signature covers them); every other byte must matter.
        for off in offsets
            .into_iter()
            .filter(|&o| o < end && !quote[o].is_ascii_whitespace())
        {
            let mut bad = quote.clone();
            bad[off] ^= 0x01;
            let r = verify_dcap(tee, &bad, &coll, now);
            assert!(!r.verified, "{id}: byte {off:#x} flipped was accepted");
            let r = verify_dcap_ignoring_revocation(tee, &bad, &coll, now);
            assert!(
                !r.verified,
                "{id}: byte {off:#x} flipped was accepted without revocation data"
            );
        }
        // The signed bodies of the collateral.
        for (name, field) in [("tcb_info", 0), ("qe_identity", 1)] {
            let mut c = coll.clone();
            let target = if field == 0 {
                &mut c.tcb_info
            } else {
                &mut c.qe_identity
            };
            let pos = target.iter().position(|&b| b == b'"').unwrap() + 3;
            target[pos] ^= 0x01;
            assert!(
                !verify_dcap(tee, &quote, &c, now).verified,
                "{id}: {name} altered was accepted"
            );
            assert!(
                !verify_dcap_ignoring_revocation(tee, &quote, &c, now).verified,
                "{id}: {name} altered was accepted without revocation data"
            );
        }
        let mut c = coll.clone();
        let crl = c.pck_crl.as_mut().unwrap();
        let n = crl.len();
        crl[n - 10] ^= 0x01;
        assert!(
            !verify_dcap(tee, &quote, &c, now).verified,
            "{id}: PCK CRL altered was accepted"
        );
    }
}

/// Real evidence inside an attestation document: verified with the document's collateral,
/// then bound to the statement. Captured quotes cannot bind a statement made here, so the
/// binding fails, and says so, after the quote itself verified (claims and status shown).
#[test]
fn real_evidence_in_a_document_must_bind_the_statement() {
    use teekms_attest::collateral::CollateralFiles;
    use teekms_attest::{AttestationDocument, Freshness, NodeStatement, Policy, verify_document};
    let dir = vectors().join("tdx/dcapqvl-tdx-v4-uptodate");
    let mut files = CollateralFiles::default();
    for name in teekms_attest::collateral::KNOWN_FILES {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            files.insert(name, b);
        }
    }
    let sign = [5u8; 32];
    let statement = NodeStatement {
        version: 1,
        tee: TeeKind::Tdx,
        node_id: NodeStatement::node_id_for(&sign),
        hpke_suite: teekms_attest::statement::HPKE_SUITE.into(),
        hpke_public_key: teekms_attest::hexbytes::HexBytes([1; 32]),
        signing_public_key: teekms_attest::hexbytes::HexBytes(sign),
        tls_spki_sha256: teekms_attest::hexbytes::HexBytes([2; 32]),
        ca_spki_sha256: None,
        nonce: None,
    };
    let doc = AttestationDocument {
        version: 1,
        tee: TeeKind::Tdx,
        evidence: read(&dir, "quote.bin"),
        statement,
        collateral: Some(serde_json::to_value(&files).unwrap()),
    };
    // The document survives its JSON form, collateral included.
    let doc = AttestationDocument::from_json(doc.to_json().as_bytes()).unwrap();
    let policy = Policy::default_for(TeeKind::Tdx).unwrap();
    let v = verify_document(&doc, &policy, Freshness::Offline, 1_752_919_234);
    assert!(!v.verified && !v.accepted);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    assert!(v.claims.is_some());
    assert!(
        v.reasons[0].contains("report data does not match"),
        "{:?}",
        v.reasons
    );
}

/// Where teekms goes beyond dcap-qvl, cross-checked against dcap-qvl itself: the same
/// inputs that dcap-qvl alone accepts (or rejects for another reason) are rejected by
/// teekms for the reason the manifest states.
#[test]
fn cross_check_against_dcap_qvl_where_we_go_further() {
    let (all, dcap) = dcap_vectors();
    let find = |id: &str| dcap.iter().find(|v| v["id"] == id).unwrap().clone();

    // A PCK CRL not yet issued at the verification time: dcap-qvl does not check
    // thisUpdate and accepts; teekms rejects.
    let v = find("sgx/automata-sgx-v3-platform-ca");
    let (tee, quote, coll) = inputs(&v, &all);
    let t = 1_755_236_485;
    let prepared = coll.prepare().unwrap();
    let dcap_qvl_alone = dcap_qvl::verify::QuoteVerifier::new(INTEL_SGX_ROOT_CA_DER.to_vec())
        .verify(&quote, &dcap_qvl_collateral(&coll), t);
    assert!(
        dcap_qvl_alone.is_ok(),
        "dcap-qvl accepts a CRL before its thisUpdate"
    );
    let ours = teekms_attest::dcap::verify_dcap_prepared(tee, &quote, Ok(&prepared), t);
    assert!(
        !ours.verified && ours.reasons[0].contains("not valid yet"),
        "{:?}",
        ours.reasons
    );

    // The root copy inside the quote altered: dcap-qvl anchors on its own root and fails
    // later (no TCB level); teekms names the real defect.
    let v = find("tdx/neg-gotdxguest-tampered/pck-root-byte");
    let (tee, quote, coll) = inputs(&v, &all);
    let r = verify_dcap(
        tee,
        &quote,
        &coll,
        v["verification_time"]["unix"].as_u64().unwrap(),
    );
    assert!(
        !r.verified && r.reasons[0].contains("root CA copy"),
        "{:?}",
        r.reasons
    );

    // Trailing bytes: dcap-qvl tolerates them silently; teekms never uses them and counts them.
    let v = find("tdx/gotdxguest-tdx-v4-spr");
    let (tee, quote, coll) = inputs(&v, &all);
    let r = verify_dcap(
        tee,
        &quote,
        &coll,
        v["verification_time"]["unix"].as_u64().unwrap(),
    );
    assert_eq!(r.trailing_bytes, 39);
    assert_eq!(
        &quote[quote.len() - 39..],
        b"\nextra bytes(only for testing purpose)\n"
    );
}

fn dcap_qvl_collateral(c: &DcapCollateral) -> dcap_qvl::QuoteCollateralV3 {
    let body = |bytes: &[u8], key: &str| -> (String, Vec<u8>) {
        let text = std::str::from_utf8(bytes).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        // The exact signed bytes: the raw text of the object under `key`.
        let start = text.find(&format!("\"{key}\"")).unwrap();
        let obj_start = start + text[start..].find('{').unwrap();
        let mut depth = 0;
        let mut end = obj_start;
        for (i, ch) in text[obj_start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = obj_start + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        (
            text[obj_start..end].to_owned(),
            hex::decode(v["signature"].as_str().unwrap()).unwrap(),
        )
    };
    let (tcb_info, tcb_info_signature) = body(&c.tcb_info, "tcbInfo");
    let (qe_identity, qe_identity_signature) = body(&c.qe_identity, "enclaveIdentity");
    dcap_qvl::QuoteCollateralV3 {
        pck_crl_issuer_chain: c.pck_crl_issuer_chain.clone().unwrap(),
        root_ca_crl: c.root_ca_crl.clone().unwrap(),
        pck_crl: c.pck_crl.clone().unwrap(),
        tcb_info_issuer_chain: c.tcb_info_issuer_chain.clone(),
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain: c.qe_identity_issuer_chain.clone(),
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    }
}

/// The earliest end of validity among a collateral directory's files is what a node's
/// readiness check counts down to.
#[test]
fn collateral_expires_with_its_first_file() {
    let dir = vectors().join("sgx/dcapqvl-sgx-v3-processor-ca");
    let mut files = teekms_attest::collateral::CollateralFiles::default();
    for name in teekms_attest::collateral::KNOWN_FILES {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            files.insert(name, bytes);
        }
    }
    let described = files.describe();
    let first = files
        .expires_at()
        .expect("the vector's collateral states its end");
    assert!(
        described
            .iter()
            .all(|i| i.expires.is_none_or(|e| e >= first))
    );
    assert!(described.iter().any(|i| i.expires == Some(first)));
    assert_eq!(
        teekms_attest::collateral::CollateralFiles::default().expires_at(),
        None
    );
}
