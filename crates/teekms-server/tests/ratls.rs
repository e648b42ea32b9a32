//! RA-TLS certificates (spec/ratls-v1.md): teekms' own (sim evidence, fully verified) and
//! certificates shaped exactly as Gramine's RA-TLS library makes them for SGX, built here
//! around a real captured quote. A captured quote cannot bind a key made here, so for
//! those the binding check fails (and the test says so) while everything before it — the
//! extension's format, the pubkey-hash claim, the quote and its collateral — verifies.

use std::path::PathBuf;

use teekms_attest::collateral::{CollateralFiles, KNOWN_FILES};
use teekms_attest::evidence::verify_evidence;
use teekms_attest::ratls::{self, Format};
use teekms_attest::{Policy, TeeKind};
use teekms_core::NodeKeys;
use teekms_platform::{Platform, SimPlatform, SimRoot};

fn cert_with_extension(pkcs8: &[u8], oid: &[u64], value: Vec<u8>) -> Vec<u8> {
    let key =
        rcgen::KeyPair::try_from(&rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
            .unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ra-tls".into()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(oid, value));
    params.self_signed(&key).unwrap().der().to_vec()
}

const DICE_OID: &[u64] = &[2, 23, 133, 5, 4, 9];
const GRAMINE_LEGACY_OID: &[u64] = &[0, 6, 9, 42, 840, 113741, 1337, 6];

struct Sim {
    _dir: tempfile::TempDir,
    platform: SimPlatform,
    root: [u8; 32],
}

fn sim() -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.key");
    let root = SimRoot::load_or_create(&root_path).unwrap().public_key();
    let platform = SimPlatform::open(&root_path, dir.path()).unwrap();
    Sim {
        _dir: dir,
        platform,
        root,
    }
}

/// A teekms RA-TLS certificate: the statement and key hash in the claims, the claims'
/// hash in the evidence.
fn teekms_cert(platform: &SimPlatform, keys: &NodeKeys, claims_for_spki: Option<&[u8]>) -> Vec<u8> {
    let spki = claims_for_spki.unwrap_or(keys.tls_spki_der());
    let statement = keys.statement(TeeKind::Sim, None);
    let claims = ratls::claims_buffer(spki, TeeKind::Sim, &statement, None);
    let evidence = platform
        .evidence(&ratls::report_data_for_claims(&claims))
        .unwrap();
    cert_with_extension(
        keys.tls_pkcs8_der(),
        DICE_OID,
        ratls::evidence_extension(&evidence, &claims),
    )
}

#[test]
fn teekms_sim_certificates_verify_in_full() {
    let s = sim();
    let keys = NodeKeys::generate();
    let cert = teekms_cert(&s.platform, &keys, None);
    let ev = ratls::extract(&cert).unwrap();
    assert_eq!(ev.format, Format::DiceTagged);
    let spki_hash = teekms_attest::sha256(keys.tls_spki_der());
    let v = ev
        .verify(&spki_hash, &Policy::sim(s.root, None), 0)
        .unwrap();
    assert!(v.accepted, "{:?}", v.reasons);
    let node = v.verified_node().unwrap();
    assert_eq!(node.hpke_public_key(), &keys.hpke_public_key());

    // Another sim root: authentic, but not admitted.
    let v = ev
        .verify(&spki_hash, &Policy::sim([9; 32], None), 0)
        .unwrap();
    assert!(v.verified && !v.accepted);
    // Claims naming another key: refused before any evidence is looked at.
    let other = NodeKeys::generate();
    let wrong = teekms_cert(&s.platform, &keys, Some(other.tls_spki_der()));
    assert!(
        ratls::extract(&wrong)
            .unwrap_err()
            .to_string()
            .contains("pubkey-hash")
    );
    // Asked about another key than the certificate's.
    assert!(ev.verify(&[0; 32], &Policy::sim(s.root, None), 0).is_err());

    // Evidence made for other claims, spliced into this certificate: the binding fails.
    let statement = keys.statement(TeeKind::Sim, None);
    let claims = ratls::claims_buffer(keys.tls_spki_der(), TeeKind::Sim, &statement, None);
    let stale = s.platform.evidence(&[7; 64]).unwrap();
    let spliced = cert_with_extension(
        keys.tls_pkcs8_der(),
        DICE_OID,
        ratls::evidence_extension(&stale, &claims),
    );
    let v = ratls::extract(&spliced)
        .unwrap()
        .verify(&spki_hash, &Policy::sim(s.root, None), 0)
        .unwrap();
    assert!(
        !v.verified && v.reasons.iter().any(|r| r.contains("report data")),
        "{:?}",
        v.reasons
    );

    // Every byte of the extension altered: never accepted.
    let ext = ratls::evidence_extension(
        &s.platform
            .evidence(&ratls::report_data_for_claims(&claims))
            .unwrap(),
        &claims,
    );
    for i in (0..ext.len()).step_by(7) {
        let mut bad = ext.clone();
        bad[i] ^= 0x10;
        let cert = cert_with_extension(keys.tls_pkcs8_der(), DICE_OID, bad);
        let accepted = ratls::extract(&cert)
            .ok()
            .and_then(|e| e.verify(&spki_hash, &Policy::sim(s.root, None), 0).ok())
            .is_some_and(|v| v.accepted);
        assert!(!accepted, "byte {i} altered was accepted");
    }
    // No extension at all.
    let plain = cert_with_extension(keys.tls_pkcs8_der(), &[1, 2, 3], vec![0x05, 0x00]);
    assert!(ratls::extract(&plain).is_err());
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/sgx/dcapqvl-sgx-v3-processor-ca")
}

fn collateral() -> CollateralFiles {
    let mut files = CollateralFiles::default();
    for name in KNOWN_FILES {
        if let Ok(b) = std::fs::read(vector_dir().join(name)) {
            files.insert(name, b);
        }
    }
    files
}

/// Gramine's shape: tag 60000 around [quote, claims], claims a CBOR map with only
/// `pubkey-hash` (SHA-256 over the certificate's SubjectPublicKeyInfo).
#[test]
fn gramine_shaped_certificates_around_a_real_quote() {
    let quote = std::fs::read(vector_dir().join("quote.bin")).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    // The SPKI of the certificate-to-be, to hash into the claims.
    let probe = cert_with_extension(pkcs8.as_ref(), &[1, 2, 3], vec![0x05, 0x00]);
    let spki = {
        use der::{Decode, Encode};
        x509_cert::Certificate::from_der(&probe)
            .unwrap()
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap()
    };
    let hash_entry = teekms_attest::cbor::Item::Array(vec![
        teekms_attest::cbor::Item::Uint(1),
        teekms_attest::cbor::Item::Bytes(teekms_attest::sha256(&spki).to_vec()),
    ]);
    let claims = teekms_attest::cbor::Item::Map(vec![(
        teekms_attest::cbor::Item::Text("pubkey-hash".into()),
        teekms_attest::cbor::Item::Bytes(hash_entry.encode()),
    )])
    .encode();
    let cert = cert_with_extension(
        pkcs8.as_ref(),
        DICE_OID,
        ratls::evidence_extension(&quote, &claims),
    );
    let ev = ratls::extract(&cert).unwrap();
    assert_eq!(ev.format, Format::DiceTagged);
    assert_eq!(ev.evidence, quote);
    assert!(
        ev.statement.is_none(),
        "a plain Gramine certificate has no teekms claims"
    );

    // The quote itself verifies with its collateral at the vector's time...
    let policy = Policy::from_toml(
        "[[accept]]\ntee = \"sgx\"\ntcb_status = [\"ConfigurationAndSWHardeningNeeded\"]\nadvisory_ids = [\"INTEL-SA-00289\", \"INTEL-SA-00615\"]\n",
    )
    .unwrap();
    let verdict = verify_evidence(TeeKind::Sgx, &quote, &collateral(), &policy, 1_752_919_277);
    assert!(
        verdict.verified && verdict.accepted,
        "{:?}",
        verdict.reasons
    );
    // ...but a captured quote cannot carry the hash of claims made here: the binding
    // (report data = SHA-256(claims), first half) fails, as it must. This is the one
    // check that real hardware would make pass.
    let rd = verdict.report_data.unwrap();
    assert_ne!(rd[..32], ev.expected_report_data[..32]);
    // teekms will not take it as one of its own peers either.
    assert!(
        ev.verify(&teekms_attest::sha256(&spki), &policy, 1_752_919_277)
            .is_err()
    );

    // Gramine's legacy extension: the bare quote; binding = SHA-256 of the public key.
    let legacy = cert_with_extension(pkcs8.as_ref(), GRAMINE_LEGACY_OID, quote.clone());
    let ev = ratls::extract(&legacy).unwrap();
    assert_eq!((ev.format, ev.bound_len), (Format::GramineLegacy, 32));
    assert_eq!(ev.evidence, quote);
    assert_eq!(ev.expected_report_data[..32], teekms_attest::sha256(&spki));
    assert_ne!(
        rd[..32],
        ev.expected_report_data[..32],
        "captured: cannot bind"
    );
}

#[test]
fn malformed_extensions_are_refused() {
    let keys = NodeKeys::generate();
    for value in [
        vec![],
        vec![0xd9, 0xea, 0x60], // tag without item
        teekms_attest::cbor::Item::Tag(60001, Box::new(teekms_attest::cbor::Item::Uint(0)))
            .encode(),
        ratls::evidence_extension(b"quote", b""), // empty claims
        ratls::evidence_extension(b"quote", &teekms_attest::cbor::Item::Map(vec![]).encode()),
    ] {
        let cert = cert_with_extension(keys.tls_pkcs8_der(), DICE_OID, value);
        assert!(ratls::extract(&cert).is_err());
    }
}
