//! The node's API through the real client: deployments, isolation between owners, and
//! every kind of bad input named in the deployment-flow issue.

mod common;

use common::Node;
use teekms_attest::Policy;
use teekms_client::{ClientError, Method};
use teekms_core::{Bundle, DataKey, KeyId, OwnerKey};
use teekms_platform::SimRoot;
use teekms_server::now_unix;

fn id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn api_code(e: ClientError) -> String {
    match e {
        ClientError::Api { code, .. } => code,
        other => panic!("expected an API error, got {other}"),
    }
}

async fn kcvs(node: &Node, owner: &OwnerKey) -> Vec<(String, String)> {
    let list = node.verified(Some(owner)).await.list().await.unwrap();
    assert!(list.damaged.is_empty(), "{:?}", list.damaged);
    list.keys
        .into_iter()
        .map(|k| (k.key_id, k.kcv.to_hex()))
        .collect()
}

#[tokio::test]
async fn deploy_list_restart_and_idempotence() {
    let mut node = Node::start().await;
    let owner = OwnerKey::generate();
    let dek = DataKey::generate();
    let mut conn = node.verified(Some(&owner)).await;
    let (receipt, created) = conn.deploy(&owner, &id("a"), "{}", &dek).await.unwrap();
    assert!(created);
    assert_eq!(receipt.kcv, dek.kcv());
    // A retry with the same material is acknowledged again, not duplicated.
    let (again, created) = conn.deploy(&owner, &id("a"), "{}", &dek).await.unwrap();
    assert!(!created);
    assert_eq!(again.created_at, receipt.created_at);
    let node_id = node.server.as_ref().unwrap().node_id.clone();
    node.restart().await;
    assert_eq!(
        node.server.as_ref().unwrap().node_id,
        node_id,
        "same keys after restart"
    );
    assert_eq!(
        kcvs(&node, &owner).await,
        vec![("a".into(), dek.kcv().to_hex())]
    );
}

#[tokio::test]
async fn second_deployment_with_other_material_is_refused() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let first = DataKey::generate();
    let mut conn = node.verified(Some(&owner)).await;
    conn.deploy(&owner, &id("a"), "{}", &first).await.unwrap();
    let err = conn
        .deploy(&owner, &id("a"), "{}", &DataKey::generate())
        .await
        .unwrap_err();
    assert_eq!(api_code(err), "conflict");
    assert_eq!(
        kcvs(&node, &owner).await,
        vec![("a".into(), first.kcv().to_hex())]
    );
}

#[tokio::test]
async fn owners_are_isolated() {
    let node = Node::start().await;
    let alice = OwnerKey::generate();
    let bob = OwnerKey::generate();
    let a = DataKey::generate();
    let b = DataKey::generate();
    node.verified(Some(&alice))
        .await
        .deploy(&alice, &id("shared-name"), "{}", &a)
        .await
        .unwrap();
    // Bob's key of the same name lives in Bob's namespace and does not touch Alice's.
    node.verified(Some(&bob))
        .await
        .deploy(&bob, &id("shared-name"), "{}", &b)
        .await
        .unwrap();
    assert_eq!(
        kcvs(&node, &alice).await,
        vec![("shared-name".into(), a.kcv().to_hex())]
    );
    assert_eq!(
        kcvs(&node, &bob).await,
        vec![("shared-name".into(), b.kcv().to_hex())]
    );

    // Alice's bundle sent over a connection authenticated as Bob is refused.
    let mut as_bob = node.verified(Some(&bob)).await;
    let bundle = Bundle::wrap(as_bob.node(), &alice, &id("x"), "{}", &DataKey::generate()).unwrap();
    assert_eq!(
        api_code(as_bob.import(&bundle).await.unwrap_err()),
        "forbidden"
    );

    // Nobody: no client certificate, no listing.
    let mut anonymous = node.verified(None).await;
    assert_eq!(
        api_code(anonymous.list().await.unwrap_err()),
        "unauthenticated"
    );
}

#[tokio::test]
async fn wrong_policy_refuses_before_sending_anything() {
    let node = Node::start().await;
    let other_root = SimRoot::load_or_create(&node.dir.path().join("other.key"))
        .unwrap()
        .public_key();
    let wrong = Policy::sim(other_root, None);
    let owner = OwnerKey::generate();
    let err = teekms_client::connect_verified(&node.url(), &wrong, Some(&owner), now_unix()).await;
    assert!(matches!(err, Err(ClientError::Rejected(_))));
    let wrong_measurement = Policy::sim(
        match node.policy.entries()[0] {
            teekms_attest::policy::AcceptEntry::Sim { sim_root, .. } => sim_root,
            _ => unreachable!(),
        },
        Some([0; 48]),
    );
    let err =
        teekms_client::connect_verified(&node.url(), &wrong_measurement, Some(&owner), now_unix())
            .await;
    assert!(matches!(err, Err(ClientError::Rejected(_))));
    assert!(kcvs(&node, &owner).await.is_empty());
}

#[tokio::test]
async fn bundle_for_another_node_is_refused() {
    let one = Node::start().await;
    let two = Node::start().await;
    let owner = OwnerKey::generate();
    let conn_one = one.verified(Some(&owner)).await;
    let bundle = Bundle::wrap(
        conn_one.node(),
        &owner,
        &id("k"),
        "{}",
        &DataKey::generate(),
    )
    .unwrap();
    // Sent to node two over a channel node two attested: refused by node two.
    let mut conn_two = two.verified(Some(&owner)).await;
    let err = conn_two
        .connection()
        .raw_request(
            Method::POST,
            "/v1/keys",
            Some(bundle.to_json().into_bytes()),
        )
        .await;
    assert_eq!(err.0, 422);
    assert_eq!(&err.1[..], b"wrong_node");
    // The client refuses even to send it through an unverified connection to node two.
    let mut plain = teekms_client::connect(&two.url(), None).await.unwrap();
    assert!(matches!(
        plain.import(&bundle).await,
        Err(ClientError::ChannelMismatch)
    ));
    assert!(kcvs(&two, &owner).await.is_empty());
}

#[tokio::test]
async fn every_altered_byte_of_a_bundle_is_refused() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let good_key = DataKey::generate();
    let mut conn = node.verified(Some(&owner)).await;
    conn.deploy(&owner, &id("keep"), "{}", &good_key)
        .await
        .unwrap();
    let bundle = Bundle::wrap(
        conn.node(),
        &owner,
        &id("target"),
        "{}",
        &DataKey::generate(),
    )
    .unwrap();
    let json = bundle.to_json().into_bytes();
    let mut plain = teekms_client::connect(&node.url(), None).await.unwrap();
    for i in 0..json.len() {
        for flip in [0x01u8, 0x20] {
            let mut bad = json.clone();
            bad[i] ^= flip;
            let (status, _) = plain.raw_request(Method::POST, "/v1/keys", Some(bad)).await;
            assert!(
                (400..500).contains(&status),
                "byte {i} ^ {flip:#x} gave status {status}"
            );
        }
    }
    assert_eq!(
        kcvs(&node, &owner).await,
        vec![("keep".into(), good_key.kcv().to_hex())]
    );
    // The unaltered bundle still works.
    let (status, _) = plain
        .raw_request(Method::POST, "/v1/keys", Some(json))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn oversized_and_malformed_requests() {
    let node = Node::start().await;
    let mut conn = teekms_client::connect(&node.url(), None).await.unwrap();
    let big = vec![b' '; teekms_core::bundle::MAX_BUNDLE_LEN + 1];
    assert_eq!(
        conn.raw_request(Method::POST, "/v1/keys", Some(big))
            .await
            .0,
        413
    );
    let mut conn = teekms_client::connect(&node.url(), None).await.unwrap();
    assert_eq!(
        conn.raw_request(Method::POST, "/v1/keys", Some(b"{".to_vec()))
            .await
            .0,
        400
    );
    assert_eq!(
        conn.raw_request(Method::POST, "/v1/keys", Some(b"[]".to_vec()))
            .await
            .0,
        400
    );
    let long_nonce = format!("/v1/attestation?nonce={}", "00".repeat(65));
    assert_eq!(
        conn.raw_request(Method::GET, &long_nonce, None).await.0,
        400
    );
    assert_eq!(
        conn.raw_request(Method::GET, "/v1/attestation?nonce=zz", None)
            .await
            .0,
        400
    );
    assert_eq!(
        conn.raw_request(Method::GET, "/v1/attestation?other=1", None)
            .await
            .0,
        400
    );
    assert_eq!(
        conn.raw_request(Method::GET, "/v1/nothing", None).await.0,
        404
    );
    assert_eq!(
        conn.raw_request(Method::GET, "/v1/attestation", None)
            .await
            .0,
        200
    );
}

/// Tampering with the SQLite file while the node is stopped: altered, swapped and
/// truncated records are reported, never returned as data, never overwritten, and
/// leave every other key intact.
#[tokio::test]
async fn tampered_records_are_detected_and_others_survive() {
    let mut node = Node::start().await;
    let owner = OwnerKey::generate();
    let keys: Vec<(KeyId, DataKey)> = ["altered", "swap-a", "swap-b", "truncated", "intact"]
        .iter()
        .map(|n| (id(n), DataKey::generate()))
        .collect();
    let mut conn = node.verified(Some(&owner)).await;
    for (k, dek) in &keys {
        conn.deploy(&owner, k, "{}", dek).await.unwrap();
    }
    drop(conn);
    node.stop().await;

    let db = rusqlite::Connection::open(node.data_dir.join(teekms_store::DB_FILE)).unwrap();
    let get = |k: &str| -> Vec<u8> {
        db.query_row("SELECT record FROM data_keys WHERE key_id = ?1", [k], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let set = |k: &str, v: &[u8]| {
        db.execute(
            "UPDATE data_keys SET record = ?2 WHERE key_id = ?1",
            rusqlite::params![k, v],
        )
        .unwrap();
    };
    let mut altered = get("altered");
    let mid = altered.len() / 2;
    altered[mid] ^= 0x01;
    set("altered", &altered);
    let (a, b) = (get("swap-a"), get("swap-b"));
    set("swap-a", &b);
    set("swap-b", &a);
    let truncated = get("truncated");
    set("truncated", &truncated[..truncated.len() - 5]);
    drop(db);

    node.restart().await;
    let mut conn = node.verified(Some(&owner)).await;
    let list = conn.list().await.unwrap();
    let damaged: Vec<&str> = list.damaged.iter().map(|d| d.key_id.as_str()).collect();
    assert_eq!(damaged, vec!["altered", "swap-a", "swap-b", "truncated"]);
    assert_eq!(list.keys.len(), 1);
    assert_eq!(list.keys[0].key_id, "intact");
    assert_eq!(list.keys[0].kcv, keys[4].1.kcv());
    // A damaged record is never silently replaced by a new deployment.
    let err = conn
        .deploy(&owner, &id("altered"), "{}", &DataKey::generate())
        .await
        .unwrap_err();
    assert_eq!(api_code(err), "record_damaged");
}

#[tokio::test]
async fn fresh_evidence_binds_the_nonce_and_the_tls_key() {
    let node = Node::start().await;
    let mut conn = teekms_client::connect(&node.url(), None).await.unwrap();
    let doc = conn.attestation(Some(&[9; 32])).await.unwrap();
    assert_eq!(
        doc.statement.nonce.as_deref(),
        Some(hex::encode([9; 32]).as_str())
    );
    let v = teekms_attest::verify_document(
        &doc,
        &node.policy,
        teekms_attest::Freshness::Nonce(&[8; 32]),
        now_unix(),
    );
    assert!(!v.accepted, "a stale nonce must not verify");
    let v = teekms_attest::verify_document(
        &doc,
        &node.policy,
        teekms_attest::Freshness::Nonce(&[9; 32]),
        now_unix(),
    );
    assert!(v.accepted);
    assert_eq!(
        v.verified_node().unwrap().tls_spki_sha256(),
        conn.server_spki_sha256()
    );
}

/// `GET /v1/health` and `GET /v1/ready` answer anyone (no certificate, no token) with a
/// JSON object, and leave nothing in the audit log.
#[tokio::test]
async fn health_and_readiness_need_no_credentials_and_are_not_audited() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let mut conn = node.verified(Some(&owner)).await;
    let before = conn.audit_verify().await.unwrap().entries;
    let mut plain = teekms_client::connect(&node.url(), None).await.unwrap();
    let (status, body) = plain.raw_request(Method::GET, "/v1/health", None).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["checks"].is_object());
    let (status, body) = plain.raw_request(Method::GET, "/v1/ready", None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    for check in ["sealed_state", "store", "collateral"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }
    // A sim node has no collateral: it is ready without any.
    assert!(
        ready["checks"]["collateral"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("none")
    );
    assert_eq!(conn.audit_verify().await.unwrap().entries, before);
}
