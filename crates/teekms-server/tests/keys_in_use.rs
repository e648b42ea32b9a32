//! Using deployed keys on a real node (port 0, real TLS, real SQLite): envelope
//! operations, lifecycle, access control (owners, access keys, attested workloads) and the
//! audit log, through the client library.

mod common;

use common::Node;
use serde_json::json;
use teekms_attest::{AttestationDocument, TeeKind};
use teekms_client::{ClientError, Identity, secret_of};
use teekms_core::access::Operation;
use teekms_core::api::ReEncryptRequest;
use teekms_core::{DataKey, KeyId, NodeKeys, OwnerKey};
use teekms_platform::{Platform, SimPlatform, SimRoot};
use teekms_server::now_unix;

fn api_status(e: &ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn deploy(node: &Node, owner: &OwnerKey, id: &str, policy: &str) -> DataKey {
    let dek = DataKey::generate();
    node.verified(Some(owner))
        .await
        .deploy(owner, &KeyId::new(id).unwrap(), policy, &dek)
        .await
        .unwrap();
    dek
}

#[tokio::test]
async fn envelope_operations_and_lifecycle_for_the_owner() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let dek = deploy(&node, &owner, "db", "{}").await;
    let mut c = node.verified(Some(&owner)).await;

    // encrypt / decrypt with associated data; the ciphertext names key and version, and
    // opens offline with the owner's copy of the key.
    let ct = c
        .encrypt("db", None, b"card 4111", Some(b"row 7"))
        .await
        .unwrap();
    assert_eq!((ct.key_id.as_str(), ct.key_version), ("db", 1));
    let env = teekms_core::envelope::Envelope::parse(&ct.ciphertext.0).unwrap();
    assert_eq!(&env.open(&dek, b"row 7").unwrap()[..], b"card 4111");
    let pt = c.decrypt(&ct.ciphertext.0, Some(b"row 7")).await.unwrap();
    assert_eq!(&secret_of(&pt, "decrypt", None).unwrap()[..], b"card 4111");
    let e = c
        .decrypt(&ct.ciphertext.0, Some(b"row 8"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), (400, "decrypt_failed".into()));
    let mut altered = ct.ciphertext.0.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(c.decrypt(&altered, Some(b"row 7")).await.is_err());
    let e = c
        .encrypt("db", None, &vec![0; 64 * 1024 + 1], None)
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 400);

    // generate-data-key: the wrapped copy decrypts to the same key.
    let g = c.generate_data_key("db", None, None).await.unwrap();
    let fresh = secret_of(&g, "generate-data-key", None).unwrap();
    let back = c
        .decrypt(&g.ciphertext.as_ref().unwrap().0, None)
        .await
        .unwrap();
    assert_eq!(secret_of(&back, "decrypt", None).unwrap(), fresh);

    // Rotation: new encryptions use v2, v1 still decrypts until min_decryption_version.
    let d = c.rotate("db").await.unwrap();
    assert_eq!((d.current_version, d.versions.len()), (2, 2));
    assert_eq!(d.versions[0].kcv, dek.kcv());
    assert_ne!(
        d.versions[1].kcv,
        dek.kcv(),
        "a new version has new material"
    );
    let ct2 = c.encrypt("db", None, b"new", None).await.unwrap();
    assert_eq!(ct2.key_version, 2);
    assert!(c.decrypt(&ct.ciphertext.0, Some(b"row 7")).await.is_ok());
    // re-encrypt moves the old ciphertext to the latest version without exposing it.
    let moved = c
        .re_encrypt(&ReEncryptRequest {
            ciphertext: ct.ciphertext.clone(),
            aad: Some(teekms_core::api::B64(b"row 7".to_vec())),
            destination_key_id: None,
            destination_owner: None,
            destination_aad: None,
            context: None,
            destination_context: None,
        })
        .await
        .unwrap();
    assert_eq!(moved.key_version, 2);
    c.set_min_decryption_version("db", 2).await.unwrap();
    let e = c
        .decrypt(&ct.ciphertext.0, Some(b"row 7"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    let pt = c
        .decrypt(&moved.ciphertext.0, Some(b"row 7"))
        .await
        .unwrap();
    assert_eq!(&secret_of(&pt, "decrypt", None).unwrap()[..], b"card 4111");
    assert_eq!(
        api_status(&c.set_min_decryption_version("db", 3).await.unwrap_err()).0,
        400
    );

    // Disable / enable.
    assert!(!c.set_enabled("db", false).await.unwrap().enabled);
    let e = c.encrypt("db", None, b"x", None).await.unwrap_err();
    assert_eq!(api_status(&e), (409, "key_state".into()));
    assert!(c.set_enabled("db", true).await.unwrap().enabled);
    assert!(c.encrypt("db", None, b"x", None).await.is_ok());

    // Export: refused unless the key policy says exportable; then HPKE-wrapped to a key
    // the owner's client names, checked by its KCV.
    let e = c.export("db", None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    let xdek = deploy(&node, &owner, "exp", r#"{"exportable":true}"#).await;
    let (v, got) = c.export("exp", None).await.unwrap();
    assert_eq!(v, 1);
    assert!(got.ct_eq(&xdek));

    // Scheduled deletion: the minimum is enforced by the node (0 in tests), cancel works,
    // a due deletion removes the key.
    let d = c.schedule_deletion("exp", Some("1h")).await.unwrap();
    assert!(d.deletion_at.unwrap() >= now_unix() + 3500);
    let e = c.encrypt("exp", None, b"x", None).await.unwrap_err();
    assert_eq!(api_status(&e), (409, "key_state".into()));
    // When, as a person reads it, and how to undo it.
    let at = teekms_attest::format_rfc3339(d.deletion_at.unwrap());
    assert!(
        e.to_string()
            .contains(&format!("pending deletion (at {at})"))
            && e.to_string().contains("teekms key cancel-deletion"),
        "{e}"
    );
    assert!(
        c.cancel_deletion("exp")
            .await
            .unwrap()
            .deletion_at
            .is_none()
    );
    assert!(c.encrypt("exp", None, b"x", None).await.is_ok());
    c.schedule_deletion("exp", Some("1s")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = c.encrypt("exp", None, b"x", None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 404);
    let e = c.describe("exp", None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 404, "deleted keys are gone");
    let list = c.list().await.unwrap();
    assert!(list.keys.iter().all(|k| k.key_id != "exp"));

    // Another owner gets nothing (default deny), not even metadata.
    let stranger = OwnerKey::generate();
    let mut s = node.verified(Some(&stranger)).await;
    let fp = owner.public_key().fingerprint();
    let e = s.encrypt("db", Some(&fp), b"x", None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    let e = s
        .decrypt(&moved.ciphertext.0, Some(b"row 7"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    assert_eq!(
        api_status(&s.rotate("db").await.unwrap_err()).0,
        404,
        "own namespace"
    );
    assert_eq!(
        api_status(&s.describe("db", Some(&fp)).await.unwrap_err()).0,
        403
    );

    // The audit log has it all, and verifies.
    let tail = c.audit_tail(200).await.unwrap();
    let ops: Vec<&str> = tail
        .entries
        .iter()
        .map(|e| e.draft.operation.as_str())
        .collect();
    for op in [
        "deploy",
        "encrypt",
        "decrypt",
        "generate-data-key",
        "rotate",
        "re-encrypt",
        "disable",
        "export",
        "schedule-deletion",
        "delete",
    ] {
        assert!(ops.contains(&op), "audit lacks {op}: {ops:?}");
    }
    assert!(
        tail.entries
            .iter()
            .any(|e| e.draft.outcome.starts_with("denied")
                && e.draft
                    .caller
                    .contains(&stranger.public_key().fingerprint())),
        "the stranger's denials are audited"
    );
    let v = c.audit_verify().await.unwrap();
    assert!(v.ok && v.entries as usize >= tail.entries.len(), "{v:?}");
}

#[tokio::test]
async fn access_keys_are_scoped_by_themselves_and_by_the_key_policy() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    deploy(&node, &owner, "logs", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    let created = c
        .create_access_key(
            vec!["logs".into()],
            vec![Operation::Encrypt],
            Some("1d"),
            "shipper",
        )
        .await
        .unwrap();
    assert!(created.token.starts_with(&created.info.id));
    let listed = c.list_access_keys().await.unwrap();
    assert_eq!(listed.access_keys, vec![created.info.clone()]);

    // An anonymous verified connection with the token.
    let mut a = node.verified(None).await;
    a.use_access_key(&created.token);
    // The key policy does not name the access key yet: default deny.
    let e = a.encrypt("logs", None, b"line", None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    let policy = json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt", "decrypt"]}]});
    c.set_policy("logs", &policy).await.unwrap();
    assert_eq!(c.get_policy("logs").await.unwrap(), policy);
    let ct = a.encrypt("logs", None, b"line", None).await.unwrap();
    // The policy allows decrypt, but the access key's own scope does not.
    let e = a.decrypt(&ct.ciphertext.0, None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    // Admin is for the owner only.
    assert_eq!(api_status(&a.rotate("logs").await.unwrap_err()).0, 401);
    // A bad policy is refused and the old one kept.
    let e = c
        .set_policy(
            "logs",
            &json!({"rules": [{"principals": [{}], "operations": ["encrypt"]}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(&e).0, 400);
    assert_eq!(c.get_policy("logs").await.unwrap(), policy);

    // A wrong secret, then revocation.
    let mut bad = node.verified(None).await;
    let mut forged = created.token.clone();
    forged.pop();
    forged.push(if created.token.ends_with('0') {
        '1'
    } else {
        '0'
    });
    bad.use_access_key(&forged);
    assert_eq!(
        api_status(&bad.encrypt("logs", None, b"x", None).await.unwrap_err()).0,
        401
    );
    let revoked = c.revoke_access_key(&created.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        api_status(&a.encrypt("logs", None, b"x", None).await.unwrap_err()).0,
        401
    );

    // The audit names the access key, and the secret is nowhere in the data dir.
    let tail = c.audit_tail(100).await.unwrap();
    assert!(tail.entries.iter().any(|e| e.draft.caller
        == format!("access-key:{}", created.info.id)
        && e.draft.outcome == "ok"));
    let secret = created.token.split('.').nth(1).unwrap().to_owned();
    for entry in std::fs::read_dir(&node.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&secret));
        let raw = hex::decode(&secret).unwrap();
        assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()));
    }
}

/// A workload in a (sim) TEE: a TLS client certificate on its attested key, its
/// attestation document presented on that connection, and secrets sealed to it.
#[tokio::test]
async fn attested_workloads_get_secrets_sealed_to_their_key() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let fp = owner.public_key().fingerprint();
    deploy(&node, &owner, "model", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    let ct = c
        .encrypt("model", None, b"weights key", None)
        .await
        .unwrap();

    // The workload's own TEE: here the same sim root as the node (the one simulation).
    let wdir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::open(&node.root, wdir.path()).unwrap();
    let keys = NodeKeys::generate();
    let statement = keys.statement(TeeKind::Sim, None);
    let doc = AttestationDocument {
        version: teekms_attest::document::DOCUMENT_VERSION,
        tee: TeeKind::Sim,
        evidence: platform.evidence(&statement.hash()).unwrap(),
        statement,
        collateral: None,
    };
    let sim_root = hex::encode(SimRoot::load_or_create(&node.root).unwrap().public_key());
    let policy = json!({"rules": [{"principals": [{"workload": {"tee": "sim", "sim_root": sim_root}}], "operations": ["decrypt", "generate-data-key"]}]});
    c.set_policy("model", &policy).await.unwrap();

    let connect = || async {
        teekms_client::connect_verified_as(
            &node.url(),
            &node.policy,
            Identity::Workload(&keys),
            now_unix(),
            None,
        )
        .await
        .unwrap()
    };
    // Before attesting, the workload is nobody.
    let mut w = connect().await;
    let e = w.decrypt(&ct.ciphertext.0, None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);
    let digest = w.attest_workload(&doc).await.unwrap();
    assert_eq!(digest.len(), 64);
    let resp = w.decrypt(&ct.ciphertext.0, None).await.unwrap();
    assert!(
        resp.plaintext.is_none(),
        "secrets to workloads are sealed, never in clear"
    );
    assert_eq!(
        &secret_of(&resp, "decrypt", Some(&keys)).unwrap()[..],
        b"weights key"
    );
    assert!(secret_of(&resp, "decrypt", Some(&NodeKeys::generate())).is_err());
    let g = w.generate_data_key("model", Some(&fp), None).await.unwrap();
    assert!(g.plaintext.is_none() && g.sealed.is_some());
    // Not granted: encrypt.
    assert_eq!(
        api_status(&w.encrypt("model", Some(&fp), b"x", None).await.unwrap_err()).0,
        403
    );

    // Another workload's document on this connection: refused (its statement names
    // another TLS key).
    let other = NodeKeys::generate();
    let st = other.statement(TeeKind::Sim, None);
    let other_doc = AttestationDocument {
        version: teekms_attest::document::DOCUMENT_VERSION,
        tee: TeeKind::Sim,
        evidence: platform.evidence(&st.hash()).unwrap(),
        statement: st,
        collateral: None,
    };
    let mut w2 = connect().await;
    let e = w2.attest_workload(&other_doc).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403);

    // A workload from another sim root is not admitted by the policy.
    let odir = tempfile::tempdir().unwrap();
    let oplatform = SimPlatform::open(&odir.path().join("root.key"), odir.path()).unwrap();
    let okeys = NodeKeys::generate();
    let ost = okeys.statement(TeeKind::Sim, None);
    let odoc = AttestationDocument {
        version: teekms_attest::document::DOCUMENT_VERSION,
        tee: TeeKind::Sim,
        evidence: oplatform.evidence(&ost.hash()).unwrap(),
        statement: ost,
        collateral: None,
    };
    let mut w3 = teekms_client::connect_verified_as(
        &node.url(),
        &node.policy,
        Identity::Workload(&okeys),
        now_unix(),
        None,
    )
    .await
    .unwrap();
    w3.attest_workload(&odoc).await.unwrap();
    assert_eq!(
        api_status(&w3.decrypt(&ct.ciphertext.0, None).await.unwrap_err()).0,
        403
    );

    let tail = c.audit_tail(50).await.unwrap();
    assert!(
        tail.entries
            .iter()
            .any(|e| e.draft.caller == format!("workload:{digest}")
                && e.draft.operation == "decrypt"
                && e.draft.outcome == "ok")
    );

    // Attestation combined with an access key: the principal needs both.
    let ak = c
        .create_access_key(
            vec!["model".into()],
            vec![Operation::Decrypt],
            None,
            "paired",
        )
        .await
        .unwrap();
    let both = json!({"rules": [{"principals": [{"access_key": ak.info.id, "workload": {"tee": "sim", "sim_root": sim_root}}], "operations": ["decrypt"]}]});
    c.set_policy("model", &both).await.unwrap();
    let mut w4 = connect().await;
    w4.attest_workload(&doc).await.unwrap();
    let e = w4.decrypt(&ct.ciphertext.0, None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403, "attestation alone");
    let mut k = node.verified(None).await;
    k.use_access_key(&ak.token);
    let e = k.decrypt(&ct.ciphertext.0, None).await.unwrap_err();
    assert_eq!(api_status(&e).0, 403, "access key alone");
    w4.use_access_key(&ak.token);
    let resp = w4.decrypt(&ct.ciphertext.0, None).await.unwrap();
    assert_eq!(
        &secret_of(&resp, "decrypt", Some(&keys)).unwrap()[..],
        b"weights key"
    );
}

/// The audit log in the store: altered, deleted and reordered entries are each caught
/// at the first broken entry; the node keeps serving and keeps chaining.
#[tokio::test]
async fn tampered_audit_logs_are_caught() {
    let mut node = Node::start().await;
    let owner = OwnerKey::generate();
    deploy(&node, &owner, "a", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    for i in 0..6 {
        c.encrypt("a", None, format!("m{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    assert!(c.audit_verify().await.unwrap().ok);
    drop(c);
    node.stop().await;
    let db = node.data_dir.join(teekms_store::DB_FILE);
    let copy = node.dir.path().join("pristine.sqlite3");
    std::fs::copy(&db, &copy).unwrap();

    // Alters a field of stored entry `seq` as the host could (decoded, changed, stored
    // again in the same form; the MAC left as it was).
    let alter = |seq: i64, change: fn(&mut teekms_core::audit::AuditEntry)| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let stored: Vec<u8> = conn
            .query_row("SELECT entry FROM audit WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
        let mut entry = teekms_core::audit::stored::decode(&stored).unwrap();
        change(&mut entry);
        conn.execute(
            "UPDATE audit SET entry = ?1 WHERE seq = ?2",
            rusqlite::params![teekms_core::audit::stored::encode(&entry), seq],
        )
        .unwrap();
    };
    let check = |sql: &str, tamper: &dyn Fn()| -> teekms_core::api::AuditVerification {
        std::fs::copy(&copy, &db).unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        tamper();
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let platform: std::sync::Arc<dyn Platform> =
            std::sync::Arc::new(SimPlatform::open(&node.root, &node.data_dir).unwrap());
        let mut handle = teekms_server::open_node(platform, &node.data_dir).unwrap();
        teekms_server::audit_verify_offline(&mut handle).unwrap()
    };
    let untouched = || {};
    assert!(check("", &untouched).ok);
    let altered = check("", &|| {
        alter(4, |e| e.draft.operation = "decrypt".into());
    });
    assert_eq!(
        (altered.ok, altered.broken_at),
        (false, Some(4)),
        "{altered:?}"
    );
    assert!(altered.reason.unwrap().contains("MAC"));
    let deleted = check("DELETE FROM audit WHERE seq = 3;", &untouched);
    assert_eq!(deleted.broken_at, Some(4), "{deleted:?}");
    let reordered = check(
        "UPDATE audit SET seq = -1 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 6; UPDATE audit SET seq = 6 WHERE seq = -1;",
        &untouched,
    );
    assert_eq!(reordered.broken_at, Some(5), "{reordered:?}");
    let truncated_middle = check("DELETE FROM audit WHERE seq = 1;", &untouched);
    assert_eq!(truncated_middle.broken_at, Some(2));

    // The node still starts on a tampered log, keeps chaining, and the break stays visible.
    check("", &|| alter(2, |e| e.draft.outcome = "no".into()));
    node.restart().await;
    let mut c = node.verified(Some(&owner)).await;
    c.encrypt("a", None, b"after", None).await.unwrap();
    let v = c.audit_verify().await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(2)));
}

/// The newest audit entries cut from the store under a running node (a rollback of the
/// database, which the chain alone cannot see): the node refuses everything as
/// `store_rolled_back` and writes nothing on the cut log, so nothing is done unrecorded;
/// `/v1/ready` says why; it carries on once the entries are back.
#[tokio::test]
async fn a_cut_audit_log_is_refused_while_the_node_runs() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    deploy(&node, &owner, "a", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    for _ in 0..3 {
        c.encrypt("a", None, b"m", None).await.unwrap();
    }
    let db = node.data_dir.join(teekms_store::DB_FILE);
    let store = move |sql: &'static str| {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(&db).unwrap();
                conn.execute_batch(sql).unwrap();
                conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let whole = store("").await;
    let cut = store(
        "CREATE TABLE cut AS SELECT * FROM audit WHERE seq > (SELECT MAX(seq) - 2 FROM audit);
         DELETE FROM audit WHERE seq IN (SELECT seq FROM cut);",
    )
    .await;
    assert_eq!(cut, whole - 2);
    let e = c.encrypt("a", None, b"m", None).await.unwrap_err();
    assert_eq!(api_status(&e), (503, "store_rolled_back".into()));
    assert_eq!(store("").await, cut, "nothing appended to the cut log");
    let e = c.describe("a", None).await.unwrap_err();
    assert_eq!(api_status(&e), (503, "store_rolled_back".into()));
    let (status, body) = node.ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("store_rolled_back") && body.contains("ends at entry"),
        "{body}"
    );
    assert_eq!(
        store("").await,
        cut,
        "refusals are not audited in the store"
    );

    let restored = store("INSERT INTO audit SELECT * FROM cut; DROP TABLE cut;").await;
    assert_eq!(restored, whole);
    node.until_ready().await;
    c.encrypt("a", None, b"m", None).await.unwrap();
    let v = c.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
}

/// Mutual RA-TLS for a workload: its client certificate carries its evidence (the node
/// is verified by the client as always); no attest request is needed, and a forged or
/// mismatched certificate ends the handshake.
#[tokio::test]
async fn ra_tls_workloads_are_attested_in_the_handshake() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let fp = owner.public_key().fingerprint();
    deploy(&node, &owner, "model", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    let ct = c
        .encrypt("model", None, b"weights key", None)
        .await
        .unwrap();
    let sim_root = hex::encode(SimRoot::load_or_create(&node.root).unwrap().public_key());
    let policy = json!({"rules": [{"principals": [{"workload": {"tee": "sim", "sim_root": sim_root}}], "operations": ["decrypt", "fetch"]}]});
    c.set_policy("model", &policy).await.unwrap();

    let wdir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::open(&node.root, wdir.path()).unwrap();
    let keys = NodeKeys::generate();
    let statement = keys.statement(TeeKind::Sim, None);
    let claims =
        teekms_attest::ratls::claims_buffer(keys.tls_spki_der(), TeeKind::Sim, &statement, None);
    let evidence = platform
        .evidence(&teekms_attest::ratls::report_data_for_claims(&claims))
        .unwrap();
    let ext = teekms_attest::ratls::evidence_extension(&evidence, &claims);
    let mut w = teekms_client::connect_verified_as(
        &node.url(),
        &node.policy,
        Identity::RaTlsWorkload(&keys, &ext),
        now_unix(),
        None,
    )
    .await
    .unwrap();
    let resp = w.decrypt(&ct.ciphertext.0, None).await.unwrap();
    assert_eq!(
        &secret_of(&resp, "decrypt", Some(&keys)).unwrap()[..],
        b"weights key"
    );
    let (_, dek) = w.fetch_key("model", Some(&fp), None, &keys).await.unwrap();
    assert_eq!(
        dek.kcv(),
        c.describe("model", None).await.unwrap().versions[0].kcv
    );

    // Evidence that binds other claims: the node ends the handshake's connection.
    let stale = platform.evidence(&[3; 64]).unwrap();
    let forged = teekms_attest::ratls::evidence_extension(&stale, &claims);
    let r = teekms_client::connect_verified_as(
        &node.url(),
        &node.policy,
        Identity::RaTlsWorkload(&keys, &forged),
        now_unix(),
        None,
    )
    .await;
    assert!(r.is_err(), "a forged RA-TLS certificate got a connection");
}

/// Bad requests to the data plane get a clear 4xx and change nothing.
#[tokio::test]
async fn malformed_data_plane_requests_are_refused_clearly() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    deploy(&node, &owner, "db", "{}").await;
    let mut c = node.verified(Some(&owner)).await;
    let conn = c.connection();
    for (path, body, want) in [
        ("/v1/envelope/encrypt", b"{".to_vec(), 400),
        (
            "/v1/envelope/encrypt",
            br#"{"key_id":"db","plaintext":"AA==","extra":1}"#.to_vec(),
            400,
        ),
        (
            "/v1/envelope/encrypt",
            br#"{"key_id":"db","plaintext":"not base64!"}"#.to_vec(),
            400,
        ),
        (
            "/v1/envelope/encrypt",
            br#"{"key_id":"../db","plaintext":"AA=="}"#.to_vec(),
            400,
        ),
        (
            "/v1/envelope/decrypt",
            br#"{"ciphertext":"AAAA"}"#.to_vec(),
            400,
        ),
        (
            "/v1/keys/db/export",
            br#"{"recipient":"AAAA"}"#.to_vec(),
            403,
        ),
        (
            "/v1/access-keys",
            br#"{"keys":[],"operations":["encrypt"]}"#.to_vec(),
            400,
        ),
        (
            "/v1/access-keys",
            br#"{"keys":["db"],"operations":["fly"]}"#.to_vec(),
            400,
        ),
        ("/v1/workload/attest", b"{}".to_vec(), 400),
    ] {
        let (status, _) = conn
            .raw_request(teekms_client::Method::POST, path, Some(body))
            .await;
        assert_eq!(status, want, "{path}");
    }
    let (status, _) = conn
        .raw_request(teekms_client::Method::GET, "/v1/audit?n=x", None)
        .await;
    assert_eq!(status, 400);
    // Oversized: refused before it is read (the node then closes that connection).
    let (status, _) = conn
        .raw_request(
            teekms_client::Method::POST,
            "/v1/envelope/encrypt",
            Some(vec![b' '; 200 * 1024]),
        )
        .await;
    assert_eq!(status, 413);
    let mut c = node.verified(Some(&owner)).await;
    // Nothing changed: one version, enabled, the audit chain whole.
    let d = c.describe("db", None).await.unwrap();
    assert_eq!((d.current_version, d.enabled), (1, true));
    assert!(c.audit_verify().await.unwrap().ok);
}

/// A node's own TLS certificate is an RA-TLS certificate: a client verifies the node in
/// the handshake, before any request; a policy that does not admit the node fails the
/// handshake with a refusal (not a retryable transport error).
#[tokio::test]
async fn nodes_are_verified_in_the_handshake_by_their_ra_tls_certificate() {
    let node = Node::start().await;
    let mut conn = teekms_client::connect_attested_as(
        &node.url(),
        &node.policy,
        Identity::Anonymous,
        now_unix(),
        None,
    )
    .await
    .unwrap();
    let named = conn.node().statement().tls_spki_sha256.0;
    assert_eq!(&named, conn.connection().server_spki_sha256());
    let (status, _) = conn
        .connection()
        .raw_request(teekms_client::Method::GET, "/v1/attestation", None)
        .await;
    assert_eq!(status, 200, "the connection serves requests");

    let other_root = teekms_attest::Policy::sim([9; 32], None);
    let err = teekms_client::connect_attested_as(
        &node.url(),
        &other_root,
        Identity::Anonymous,
        now_unix(),
        None,
    )
    .await
    .err()
    .expect("a node of another sim root must not be admitted");
    assert!(matches!(err, ClientError::Rejected(_)), "{err}");
    assert!(!err.is_retryable());
}

/// Request bytes: `first` of them at once, then nothing until `until`, then the end.
struct StallingInput {
    first: usize,
    until: std::time::Instant,
}

impl std::io::Read for StallingInput {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.first > 0 {
            let n = self.first.min(out.len());
            out[..n].fill(7);
            self.first -= n;
            return Ok(n);
        }
        std::thread::sleep(
            self.until
                .saturating_duration_since(std::time::Instant::now()),
        );
        Ok(0)
    }
}

#[tokio::test]
async fn a_stream_whose_client_stalls_is_ended_and_audited() {
    let mut node = Node::start().await;
    node.stream_idle_timeout = std::time::Duration::from_secs(1);
    node.restart().await;
    let owner = OwnerKey::generate();
    deploy(&node, &owner, "files", "{}").await;
    let input = StallingInput {
        first: 10_000,
        until: std::time::Instant::now() + std::time::Duration::from_secs(5),
    };
    let r = node
        .verified(Some(&owner))
        .await
        .stream_encrypt(
            "files",
            None,
            None,
            Box::new(input),
            Box::new(std::io::sink()),
        )
        .await;
    assert!(r.is_err(), "a stalled stream must not end as if complete");
    // The node ended it on its own, after 1 s without bytes (the client would have
    // ended its body after 5 s), and audited why. A failed stream is cut first and
    // audited right after, so the entry may land a moment after the client saw the end.
    let mut c = node.verified(Some(&owner)).await;
    let mut ended = None;
    for _ in 0..50 {
        let tail = c.audit_tail(10).await.unwrap();
        ended = tail
            .entries
            .into_iter()
            .find(|e| e.draft.operation == "stream-encrypt");
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ended = ended.expect("the stream is audited");
    assert!(
        ended
            .draft
            .outcome
            .contains("the request body sent nothing for 1 s"),
        "{}",
        ended.draft.outcome
    );
}
