//! Every SNP vector in ../shared/vectors gets the outcome the manifest states; mutations
//! of the positive ones are rejected; the AMD roots are pinned.

use std::path::{Path, PathBuf};

use serde_json::Value;
use teekms_attest::snp::{Product, SnpCollateral, verify_snp};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors().join("manifest.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["vectors"]
        .as_array()
        .unwrap()
        .clone()
}

fn inputs(v: &Value, all: &[Value]) -> (Vec<u8>, SnpCollateral) {
    let own = vectors().join(v["folder"].as_str().unwrap());
    let base_entry = match v["derived_from"].as_str() {
        Some(b) => all.iter().find(|e| e["id"] == b).unwrap(),
        None => v,
    };
    let base = vectors().join(base_entry["folder"].as_str().unwrap());
    let file = |key: &str| -> Vec<u8> {
        match v["files"][key].as_str() {
            Some(name) if v["derived_from"].is_string() => std::fs::read(own.join(name)).unwrap(),
            _ => std::fs::read(base.join(base_entry["files"][key].as_str().unwrap())).unwrap(),
        }
    };
    let coll = SnpCollateral {
        vek: file("vcek"),
        is_vlek: false,
        ask: file("ask"),
        ark: Some(file("ark")),
        crl: None,
    };
    (file("report"), coll)
}

fn snp_vectors() -> (Vec<Value>, Vec<Value>) {
    let all = manifest();
    let snp = all
        .iter()
        .filter(|v| matches!(v["kind"].as_str(), Some("snp-report" | "snp-vek-cert")))
        .cloned()
        .collect();
    (all, snp)
}

#[test]
fn every_snp_vector_gets_its_stated_outcome() {
    let (all, snp) = snp_vectors();
    assert!(snp.len() >= 4);
    for v in &snp {
        let id = v["id"].as_str().unwrap();
        let (report, coll) = inputs(v, &all);
        let now = v["verification_time"]["unix"].as_u64().unwrap();
        let r = verify_snp(&report, &coll, now);
        if v["expected"]["result"] == "accept" {
            assert!(r.verified, "{id}: {:?}", r.reasons);
            let product = match v["format"]["product"].as_str() {
                Some("Genoa") => Product::Genoa,
                Some("Turin") => Product::Turin,
                _ => Product::Milan,
            };
            assert_eq!(r.product, Some(product), "{id}");
            let claims = r.claims.unwrap();
            let m = &v["measurements"];
            for key in [
                "measurement",
                "host_data",
                "report_data",
                "chip_id",
                "reported_tcb",
            ] {
                assert_eq!(claims[key], m[key], "{id}: {key}");
            }
            assert_eq!(claims["vmpl"], m["vmpl"], "{id}");
            assert_eq!(
                claims["debug"],
                m["policy"].as_str().unwrap() == "0xb0000",
                "{id}: debug bit"
            );
        } else {
            assert!(!r.verified, "{id}: expected reject");
            assert!(!r.reasons.is_empty());
        }
    }
}

#[test]
fn mutations_times_and_roots_are_rejected() {
    let (all, snp) = snp_vectors();
    for v in snp.iter().filter(|v| v["expected"]["result"] == "accept") {
        let id = v["id"].as_str().unwrap();
        let (report, coll) = inputs(v, &all);
        let now = v["verification_time"]["unix"].as_u64().unwrap();
        for off in (0..report.len())
            .step_by(37)
            .chain([0x50, 0x90, 0x180, 0x1A0, 0x2A0, 0x2E8])
        {
            let mut bad = report.clone();
            bad[off] ^= 0x01;
            assert!(
                !verify_snp(&bad, &coll, now).verified,
                "{id}: report byte {off:#x}"
            );
        }
        for off in (0..coll.vek.len()).step_by(53) {
            let mut c = coll.clone();
            c.vek[off] ^= 0x01;
            assert!(
                !verify_snp(&report, &c, now).verified,
                "{id}: VCEK byte {off:#x}"
            );
        }
        // Far future: certificates expired. Far past: not valid yet.
        assert!(
            !verify_snp(&report, &coll, 4_102_444_800).verified,
            "{id}: 2100"
        );
        assert!(
            !verify_snp(&report, &coll, 1_500_000_000).verified,
            "{id}: 2017"
        );
        // An ark.pem that is not the vector's product's pinned one fails.
        let other = if v["format"]["product"] == "Genoa" {
            "milan"
        } else {
            "genoa"
        };
        let mut c = coll.clone();
        c.ark = Some(std::fs::read(vectors().join(format!("roots/amd/{other}_ark.pem"))).unwrap());
        let r = verify_snp(&report, &c, now);
        assert!(
            !r.verified && r.reasons[0].contains("ark.pem"),
            "{id}: {:?}",
            r.reasons
        );
        // Another product's ASK did not sign this VCEK.
        let mut c = coll.clone();
        c.ask = std::fs::read(vectors().join(format!("roots/amd/{other}_ask.pem"))).unwrap();
        assert!(!verify_snp(&report, &c, now).verified, "{id}: wrong ASK");
        // Given as a VLEK, a VCEK-signed report is refused.
        let mut c = coll.clone();
        c.is_vlek = true;
        assert!(!verify_snp(&report, &c, now).verified, "{id}: key type");
    }
}

/// Turin has no captured report; its chain is tested through its certificates: the
/// shipped Turin ASK and ASVK are signed by the pinned Turin ARK.
#[test]
fn turin_chain_through_its_certificates() {
    use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};
    use der::Decode;
    let pem = |name: &str| std::fs::read_to_string(vectors().join("roots/amd").join(name)).unwrap();
    let der = |text: String| {
        use base64::Engine;
        let body: String = text
            .split("-----")
            .nth(2)
            .unwrap()
            .split_whitespace()
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let ark_der = der(pem("turin_ark.pem"));
    let ark = x509_cert::Certificate::from_der(&ark_der).unwrap();
    let key = ark
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec();
    for name in ["turin_ask.pem", "turin_asvk.pem"] {
        let cert_der = der(pem(name));
        let cert = x509_cert::Certificate::from_der(&cert_der).unwrap();
        let tbs = der::Encode::to_der(cert.tbs_certificate()).unwrap();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, &key)
            .verify(&tbs, cert.signature().raw_bytes())
            .unwrap_or_else(|_| panic!("{name} is not signed by the Turin ARK"));
    }
}
