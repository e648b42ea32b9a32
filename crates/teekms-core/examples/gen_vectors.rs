//! Generates the test vectors in spec/vectors/ (run from the workspace root):
//!
//! ```text
//! cargo run -p teekms-core --example gen_vectors -- spec/vectors [NAME.json ...]
//! ```
//!
//! With names, only those files are written (the others are random-keyed: regenerating
//! them changes every byte for nothing).
//!
//! One coherent world: a sim root, a node key set, its attestation document and a policy,
//! an owner, a data key, a bundle, a receipt and sealed records. Secrets in here are test
//! values, published on purpose. `tests/vectors.rs` checks the committed files.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;
use teekms_attest::document::DOCUMENT_VERSION;
use teekms_attest::{AttestationDocument, Freshness, Policy, TeeKind, sim, verify_document};
use teekms_core::receipt::ReceiptFields;
use teekms_core::record::DataKeyRecord;
use teekms_core::{Bundle, DataKey, KeyId, NodeKeys, OwnerKey, Receipt, SealingKey};

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "spec/vectors".into());
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let root_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let root = Ed25519KeyPair::from_pkcs8(root_pkcs8.as_ref()).unwrap();
    let root_pub: [u8; 32] = root.public_key().as_ref().try_into().unwrap();
    let measurement = [0x4d; 48];
    let keys = NodeKeys::generate();

    let nonce = [0x6e; 32];
    let statement = keys.statement(TeeKind::Sim, Some(&nonce));
    let report_data = statement.hash();
    let sig: [u8; 64] = root
        .sign(&sim::signed_body(&measurement, &report_data, &root_pub))
        .as_ref()
        .try_into()
        .unwrap();
    let evidence = sim::assemble(&measurement, &report_data, &root_pub, &sig);
    let doc = AttestationDocument {
        version: DOCUMENT_VERSION,
        tee: TeeKind::Sim,
        evidence,
        statement: statement.clone(),
        collateral: None,
    };
    let policy = Policy::sim(root_pub, Some(measurement));
    let node = verify_document(&doc, &policy, Freshness::Nonce(&nonce), 0)
        .into_verified_node()
        .expect("the vector document verifies");

    write(
        &out,
        "binding-v1.json",
        json!({
            "description": "Node statement, its canonical encoding and hash (= report data), and sim evidence binding it. Verify `document` under `policy` with nonce `nonce`: accepted.",
            "statement": statement,
            "canonical_hex": hex::encode(statement.canonical_bytes()),
            "report_data_hex": hex::encode(report_data),
            "nonce_hex": hex::encode(nonce),
            "sim_root_pkcs8_hex": hex::encode(root_pkcs8.as_ref()),
            "policy": policy.to_toml(),
            "document": doc,
        }),
    );

    // Statement version 2: the same keys, in a cluster whose CA has this SPKI hash.
    let v2 = keys.cluster_statement(TeeKind::Sim, Some(&nonce), [0x7c; 32]);
    write(
        &out,
        "statement-v2.json",
        json!({
            "description": "A version 2 node statement (spec/binding-v1.md): version 1's fields and the cluster CA's SPKI hash, before the nonce. Its canonical encoding and hash (= report data).",
            "statement": v2,
            "canonical_hex": hex::encode(v2.canonical_bytes()),
            "report_data_hex": hex::encode(v2.hash()),
        }),
    );

    let owner = OwnerKey::generate();
    let dek = DataKey::from_bytes(&[0x42; 32]).unwrap();
    let key_id = KeyId::new("vector-key").unwrap();
    let key_policy = "{\"exportable\":false}";
    let bundle = Bundle::wrap(&node, &owner, &key_id, key_policy, &dek).unwrap();
    write(
        &out,
        "bundle-v1.json",
        json!({
            "description": "A bundle wrapping `dek_hex` to the node of binding-v1.json. Opening it with `node_keys_hex` (NodeKeys encoding) yields the data key, owner and key id.",
            "node_keys_hex": hex::encode(keys.to_bytes().as_slice()),
            "owner_pkcs8_hex": hex::encode(owner.pkcs8_der()),
            "owner_fingerprint": owner.public_key().fingerprint(),
            "dek_hex": hex::encode(dek.expose()),
            "kcv_hex": dek.kcv().to_hex(),
            "key_id": key_id.as_str(),
            "bundle": bundle,
        }),
    );

    let receipt = Receipt::sign(
        &keys,
        ReceiptFields {
            owner: &owner.public_key(),
            key_id: &key_id,
            key_version: 1,
            kcv: dek.kcv(),
            created_at: 1_790_000_000,
            statement_hash: report_data,
        },
    );
    write(
        &out,
        "receipt-v1.json",
        json!({
            "description": "The node's receipt for the bundle of bundle-v1.json; verifies against the document of binding-v1.json, that owner, key id and kcv.",
            "receipt": receipt,
        }),
    );

    stream_vector(&out);
    envelope_vector(&out);
    audit_vector(&out);
    freshness_vector(&out);

    let sealing = SealingKey::from_bytes([0x53; 32]);
    let record = DataKeyRecord {
        owner: owner.public_key(),
        key_id: key_id.clone(),
        key_version: 1,
        created_at: 1_790_000_000,
        key_policy: key_policy.into(),
        dek: dek.clone(),
    };
    write(
        &out,
        "sealed-record-v1.json",
        json!({
            "description": "Sealed records under `sealing_key_hex`: a generic record, and the data-key record of bundle-v1.json's key.",
            "sealing_key_hex": hex::encode(sealing.expose()),
            "generic": {
                "kind": "example", "id": "example-id", "version": 7,
                "plaintext_hex": hex::encode(b"teekms sealed record"),
                "record_hex": hex::encode(sealing.seal("example", "example-id", 7, b"teekms sealed record")),
            },
            "data_key": {
                "owner_fingerprint": owner.public_key().fingerprint(),
                "key_id": key_id.as_str(),
                "key_version": 1,
                "created_at": 1_790_000_000u64,
                "record_id": DataKeyRecord::record_id(&owner.public_key(), &key_id),
                "record_hex": hex::encode(record.seal(&sealing)),
            },
        }),
    );
}

fn stream_vector(out: &str) {
    use teekms_core::stream::Header;
    use teekms_stream_io::encrypt;
    let dek = DataKey::from_bytes(&[0x44; 32]).unwrap();
    let header = Header {
        key_id: KeyId::new("vector-key").unwrap(),
        key_version: 2,
        chunk_log2: 12,
        salt: [0x5a; 32],
    };
    let plaintext: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut sealed = Vec::new();
    encrypt(&dek, &header, &plaintext[..], &mut sealed).unwrap();
    write(
        out,
        "stream-v1.json",
        json!({
            "description": "10000 bytes in 4096-byte chunks (3 chunks, the last 1808 bytes). Encryption is deterministic given the header (salt), so re-encrypting must give exactly `ciphertext_hex`.",
            "dek_hex": hex::encode(dek.expose()),
            "key_id": "vector-key",
            "key_version": 2,
            "chunk_log2": 12,
            "salt_hex": hex::encode(header.salt),
            "plaintext_hex": hex::encode(&plaintext),
            "ciphertext_hex": hex::encode(&sealed),
        }),
    );
}

fn envelope_vector(out: &str) {
    use teekms_core::envelope::{Envelope, seal_with_salt};
    let dek = DataKey::from_bytes(&[0x45; 32]).unwrap();
    let owner = teekms_core::OwnerPublicKey([0x0e; 32]);
    let key_id = KeyId::new("vector-key").unwrap();
    let (pt, aad, salt) = (b"card 4111 1111 1111 1111", b"row=7", [0x73u8; 16]);
    let ct = seal_with_salt(&owner, &key_id, 3, &dek, pt, aad, salt).unwrap();
    assert_eq!(
        &Envelope::parse(&ct).unwrap().open(&dek, aad).unwrap()[..],
        pt
    );
    write(
        out,
        "envelope-v1.json",
        json!({
            "description": "An envelope ciphertext (spec/envelope-v1.md) under version 3 of key `vector-key` of the owner whose Ed25519 public key is `owner_public_key_hex`. Deterministic given the salt: sealing again with it must give exactly `ciphertext_hex`.",
            "dek_hex": hex::encode(dek.expose()),
            "owner_public_key_hex": hex::encode(owner.0),
            "key_id": key_id.as_str(),
            "key_version": 3,
            "salt_hex": hex::encode(salt),
            "aad_hex": hex::encode(aad),
            "plaintext_hex": hex::encode(pt),
            "ciphertext_hex": hex::encode(&ct),
        }),
    );
}

fn audit_vector(out: &str) {
    use teekms_core::audit::{AuditChain, AuditDraft};
    let cluster = SealingKey::from_bytes([0x41; 32]);
    let key = cluster.derive(teekms_core::audit::AUDIT_KEY_LABEL);
    let (mut chain, _) = AuditChain::resume(key.clone(), None);
    let mut stored = Vec::new();
    let entries: Vec<serde_json::Value> = ["deploy", "encrypt", "decrypt"]
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let e = chain.append(AuditDraft {
                time: 1_790_000_000 + i as u64,
                operation: (*op).into(),
                owner: Some("ab".repeat(32)),
                key_id: Some("vector-key".into()),
                key_version: Some(1),
                outcome: "ok".into(),
                caller: format!("owner:{}", "ab".repeat(32)),
            });
            stored.push(hex::encode(teekms_core::audit::stored::encode(&e)));
            serde_json::to_value(&e).unwrap()
        })
        .collect();
    write(
        out,
        "audit-v1.json",
        json!({
            "description": "Three chained audit entries (spec/audit-v1.md). The audit MAC key is HKDF-derived from `cluster_key_hex` with the label `teekms/v1/audit-mac`; `audit_key_hex` is the result. Verifying the entries in order must succeed and end at `head_hex`. `stored_hex` is each entry in the compact stored form (spec/audit-v1.md, \"Stored form\"); it decodes to the entry and verifies the same.",
            "cluster_key_hex": hex::encode(cluster.expose()),
            "audit_key_hex": hex::encode(key.as_ref()),
            "entries": entries,
            "head_hex": hex::encode(chain.head().1),
            "stored_hex": stored,
        }),
    );
}

fn freshness_vector(out: &str) {
    use teekms_core::freshness::{Change, ChangeKind, Epoch, EpochRecord, Stamp, next};
    let incarnation = [0x1c; 16];
    let audit = (42u64, [0xad; 32]);
    let changes = [
        Change {
            kind: ChangeKind::AccessKey,
            id: "ak-0123456789abcdef",
            version: 2,
            record: b"sealed access key record",
        },
        Change {
            kind: ChangeKind::KeyState,
            id: &format!("{}/vector-key", "ab".repeat(32)),
            version: 3,
            record: b"sealed key state record",
        },
    ];
    let prev = Epoch {
        number: 6,
        hash: [0x66; 32],
    };
    let epoch = next(&prev, &incarnation, audit, &changes).unwrap();
    let record = EpochRecord {
        epoch,
        incarnation,
        audit_seq: audit.0,
        audit_head: audit.1,
    };
    let keys = NodeKeys::generate();
    let stamp = Stamp::sign(&keys, [0xca; 32], epoch);
    let change_json: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            json!({
                "kind": c.kind as u8,
                "id": c.id,
                "version": c.version,
                "record_hex": hex::encode(c.record),
            })
        })
        .collect();
    write(
        out,
        "freshness-v1.json",
        json!({
            "description": "One step of the epoch chain (spec/freshness-v1.md): from `prev` with `incarnation`, the audit head and two changes, epoch `epoch`/`hash_hex`; `record_hex` is its epoch record before sealing. `stamp` is a node's header for that epoch, signed by `signing_public_key_hex` over `stamp_message_hex`.",
            "prev": {"epoch": prev.number, "hash_hex": hex::encode(prev.hash)},
            "incarnation_hex": hex::encode(incarnation),
            "audit_seq": audit.0,
            "audit_head_hex": hex::encode(audit.1),
            "changes": change_json,
            "epoch": epoch.number,
            "hash_hex": hex::encode(epoch.hash),
            "record_hex": hex::encode(record.to_bytes()),
            "signing_public_key_hex": hex::encode(keys.signing_public_key()),
            "stamp": stamp.to_header(),
            "stamp_message_hex": hex::encode(stamp.signed_message()),
        }),
    );
}

fn write(dir: &str, name: &str, value: serde_json::Value) {
    let only: Vec<String> = std::env::args().skip(2).collect();
    if !only.is_empty() && !only.iter().any(|n| n == name) {
        return;
    }
    let path = std::path::Path::new(dir).join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
    println!("wrote {}", path.display());
}
