//! Checks the committed test vectors in spec/vectors/ (made by examples/gen_vectors.rs).

use serde_json::Value;
use teekms_attest::{AttestationDocument, Freshness, NodeStatement, Policy, verify_document};
use teekms_core::record::DataKeyRecord;
use teekms_core::{Bundle, DataKey, KeyId, NodeKeys, OwnerKey, Receipt, SealingKey};

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec/vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn verified_node() -> teekms_attest::VerifiedNode {
    let b = load("binding-v1.json");
    let doc = AttestationDocument::from_json(b["document"].to_string().as_bytes()).unwrap();
    let policy = Policy::from_toml(b["policy"].as_str().unwrap()).unwrap();
    let nonce = unhex(&b["nonce_hex"]);
    verify_document(&doc, &policy, Freshness::Nonce(&nonce), 0)
        .into_verified_node()
        .unwrap()
}

#[test]
fn binding_vector() {
    let b = load("binding-v1.json");
    let statement: NodeStatement = serde_json::from_value(b["statement"].clone()).unwrap();
    assert_eq!(statement.canonical_bytes(), unhex(&b["canonical_hex"]));
    assert_eq!(statement.hash().to_vec(), unhex(&b["report_data_hex"]));
    assert_eq!(
        NodeStatement::from_canonical_bytes(&unhex(&b["canonical_hex"])).unwrap(),
        statement
    );
    let node = verified_node();
    assert_eq!(node.statement(), &statement);
    // The same document with another nonce expectation, or under another policy, fails.
    let doc = AttestationDocument::from_json(b["document"].to_string().as_bytes()).unwrap();
    let policy = Policy::from_toml(b["policy"].as_str().unwrap()).unwrap();
    assert!(!verify_document(&doc, &policy, Freshness::Nonce(&[0; 32]), 0).accepted);
    assert!(!verify_document(&doc, &Policy::sim([0; 32], None), Freshness::Offline, 0).accepted);
}

#[test]
fn statement_v2_vector() {
    let v = load("statement-v2.json");
    let statement: NodeStatement = serde_json::from_value(v["statement"].clone()).unwrap();
    assert_eq!(statement.version, 2);
    assert!(statement.ca_spki_sha256.is_some());
    assert_eq!(statement.canonical_bytes(), unhex(&v["canonical_hex"]));
    assert_eq!(statement.hash().to_vec(), unhex(&v["report_data_hex"]));
    assert_eq!(
        NodeStatement::from_canonical_bytes(&unhex(&v["canonical_hex"])).unwrap(),
        statement
    );
}

#[test]
fn bundle_vector() {
    let v = load("bundle-v1.json");
    let keys = NodeKeys::from_bytes(&unhex(&v["node_keys_hex"])).unwrap();
    let bundle = Bundle::from_json(v["bundle"].to_string().as_bytes()).unwrap();
    let opened = bundle.open(&keys).unwrap();
    assert_eq!(opened.dek.expose().to_vec(), unhex(&v["dek_hex"]));
    assert_eq!(opened.dek.kcv().to_hex(), v["kcv_hex"].as_str().unwrap());
    assert_eq!(opened.key_id.as_str(), v["key_id"].as_str().unwrap());
    assert_eq!(
        opened.owner.fingerprint(),
        v["owner_fingerprint"].as_str().unwrap()
    );
    let owner = OwnerKey::from_pkcs8(&unhex(&v["owner_pkcs8_hex"])).unwrap();
    assert_eq!(owner.public_key(), opened.owner);
    // The statement in the bundle is the verified one of binding-v1.json.
    assert_eq!(&bundle.statement, verified_node().statement());
    // Another node's keys cannot open it.
    assert!(bundle.open(&NodeKeys::generate()).is_err());
}

#[test]
fn receipt_vector() {
    let v = load("receipt-v1.json");
    let b = load("bundle-v1.json");
    let receipt = Receipt::from_json(v["receipt"].to_string().as_bytes()).unwrap();
    let owner = OwnerKey::from_pkcs8(&unhex(&b["owner_pkcs8_hex"])).unwrap();
    let key_id = KeyId::new(b["key_id"].as_str().unwrap()).unwrap();
    let kcv = teekms_attest::hexbytes::HexBytes::parse(b["kcv_hex"].as_str().unwrap()).unwrap();
    receipt
        .verify(&verified_node(), &owner.public_key(), &key_id, &kcv)
        .unwrap();
    let mut altered = receipt.clone();
    altered.created_at += 1;
    assert!(
        altered
            .verify(&verified_node(), &owner.public_key(), &key_id, &kcv)
            .is_err()
    );
}

#[test]
fn sealed_record_vector() {
    let v = load("sealed-record-v1.json");
    let key: [u8; 32] = unhex(&v["sealing_key_hex"]).try_into().unwrap();
    let key = SealingKey::from_bytes(key);
    let g = &v["generic"];
    let plain = key
        .open(
            "example",
            g["id"].as_str().unwrap(),
            g["version"].as_u64().unwrap(),
            &unhex(&g["record_hex"]),
        )
        .unwrap();
    assert_eq!(plain.to_vec(), unhex(&g["plaintext_hex"]));
    let b = load("bundle-v1.json");
    let owner = OwnerKey::from_pkcs8(&unhex(&b["owner_pkcs8_hex"])).unwrap();
    let d = &v["data_key"];
    let key_id = KeyId::new(d["key_id"].as_str().unwrap()).unwrap();
    let rec = DataKeyRecord::open(
        &key,
        &owner.public_key(),
        &key_id,
        1,
        &unhex(&d["record_hex"]),
    )
    .unwrap();
    assert_eq!(rec.dek.expose().to_vec(), unhex(&b["dek_hex"]));
    assert_eq!(rec.created_at, d["created_at"].as_u64().unwrap());
    assert_eq!(
        DataKeyRecord::record_id(&owner.public_key(), &key_id),
        d["record_id"].as_str().unwrap()
    );
    // Stored under another version or id, it does not open.
    assert!(
        DataKeyRecord::open(
            &key,
            &owner.public_key(),
            &key_id,
            2,
            &unhex(&d["record_hex"])
        )
        .is_err()
    );
}

#[test]
fn envelope_vector() {
    use teekms_core::envelope::{Envelope, seal_with_salt};
    let v = load("envelope-v1.json");
    let dek = DataKey::from_bytes(&unhex(&v["dek_hex"])).unwrap();
    let ct = unhex(&v["ciphertext_hex"]);
    let env = Envelope::parse(&ct).unwrap();
    assert_eq!(
        hex::encode(env.header.owner.0),
        v["owner_public_key_hex"].as_str().unwrap()
    );
    assert_eq!(env.header.key_id.as_str(), v["key_id"].as_str().unwrap());
    assert_eq!(env.header.key_version, v["key_version"].as_u64().unwrap());
    let aad = unhex(&v["aad_hex"]);
    assert_eq!(
        &env.open(&dek, &aad).unwrap()[..],
        &unhex(&v["plaintext_hex"])[..]
    );
    let again = seal_with_salt(
        &env.header.owner,
        &env.header.key_id,
        env.header.key_version,
        &dek,
        &unhex(&v["plaintext_hex"]),
        &aad,
        unhex(&v["salt_hex"]).try_into().unwrap(),
    )
    .unwrap();
    assert_eq!(again, ct, "deterministic given the salt");
}

#[test]
fn audit_vector() {
    let v = load("audit-v1.json");
    let cluster =
        teekms_core::SealingKey::from_bytes(unhex(&v["cluster_key_hex"]).try_into().unwrap());
    let key = cluster.derive(teekms_core::audit::AUDIT_KEY_LABEL);
    assert_eq!(
        hex::encode(key.as_ref()),
        v["audit_key_hex"].as_str().unwrap()
    );
    let entries: Vec<Vec<u8>> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let (n, head) = teekms_core::audit::verify_log(
        &key,
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e.as_slice())),
    )
    .unwrap();
    assert_eq!(
        (n, hex::encode(head)),
        (3, v["head_hex"].as_str().unwrap().to_owned())
    );
    // The compact stored form: each decodes to its entry, encodes back byte for byte,
    // and the stored log verifies to the same head.
    let stored: Vec<Vec<u8>> = v["stored_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    for (json, bytes) in entries.iter().zip(&stored) {
        let entry: teekms_core::audit::AuditEntry = serde_json::from_slice(json).unwrap();
        assert_eq!(teekms_core::audit::stored::decode(bytes).unwrap(), entry);
        assert_eq!(&teekms_core::audit::stored::encode(&entry), bytes);
    }
    let (n, again) = teekms_core::audit::verify_log(
        &key,
        stored
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e.as_slice())),
    )
    .unwrap();
    assert_eq!((n, again), (3, head));
}

#[test]
fn freshness_vector() {
    use teekms_core::freshness::{Change, ChangeKind, Epoch, EpochRecord, Stamp, next};
    let v = load("freshness-v1.json");
    let arr = |x: &Value| -> [u8; 32] { unhex(x).try_into().unwrap() };
    let prev = Epoch {
        number: v["prev"]["epoch"].as_u64().unwrap(),
        hash: arr(&v["prev"]["hash_hex"]),
    };
    let incarnation: [u8; 16] = unhex(&v["incarnation_hex"]).try_into().unwrap();
    let audit = (v["audit_seq"].as_u64().unwrap(), arr(&v["audit_head_hex"]));
    let records: Vec<Vec<u8>> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unhex(&c["record_hex"]))
        .collect();
    let kinds = [ChangeKind::AccessKey, ChangeKind::KeyState];
    let changes: Vec<Change<'_>> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&records)
        .zip(kinds)
        .map(|((c, record), kind)| {
            assert_eq!(c["kind"].as_u64().unwrap(), kind as u64);
            Change {
                kind,
                id: c["id"].as_str().unwrap(),
                version: c["version"].as_u64().unwrap(),
                record,
            }
        })
        .collect();
    let epoch = next(&prev, &incarnation, audit, &changes).unwrap();
    assert_eq!(epoch.number, v["epoch"].as_u64().unwrap());
    assert_eq!(epoch.hash.to_vec(), unhex(&v["hash_hex"]));
    let record = EpochRecord::from_bytes(&unhex(&v["record_hex"])).unwrap();
    assert_eq!(
        record,
        EpochRecord {
            epoch,
            incarnation,
            audit_seq: audit.0,
            audit_head: audit.1,
        }
    );
    let stamp = Stamp::from_header(v["stamp"].as_str().unwrap()).unwrap();
    assert_eq!(stamp.epoch, epoch);
    assert_eq!(stamp.signed_message(), unhex(&v["stamp_message_hex"]));
    let key: [u8; 32] = unhex(&v["signing_public_key_hex"]).try_into().unwrap();
    assert!(teekms_attest::ed25519_verify(
        &key,
        &stamp.signed_message(),
        &stamp.signature
    ));
    let mut other = stamp.clone();
    other.epoch.number += 1;
    assert!(!teekms_attest::ed25519_verify(
        &key,
        &other.signed_message(),
        &other.signature
    ));
}
