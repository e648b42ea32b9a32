//! What an attacker without credentials, or with a token in another spelling, gets from
//! a real node (port 0, real TLS): one answer whatever exists, no entry in any owner's
//! log; strict tokens and key policies.

mod common;

use common::Node;
use teekms_client::ClientError;
use teekms_core::access::Operation;
use teekms_core::{DataKey, KeyId, OwnerKey};
use teekms_platform::{Platform, SimPlatform};

fn status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn anonymous_callers_learn_nothing_and_are_counted_not_logged() {
    let mut node = Node::start().await;
    let owner = OwnerKey::generate();
    let fp = owner.public_key().fingerprint();
    let mut c = node.verified(Some(&owner)).await;
    c.deploy(
        &owner,
        &KeyId::new("x").unwrap(),
        "{}",
        &DataKey::generate(),
    )
    .await
    .unwrap();
    let before = c.audit_tail(1000).await.unwrap().entries.len();

    // The same answer for a key that exists, one that does not, and an unknown owner.
    let mut anonymous = node.verified(None).await;
    let nobody = "ab".repeat(32);
    let mut probes = 0;
    for (key, whose) in [("x", &fp), ("y", &fp), ("x", &nobody)] {
        for _ in 0..10 {
            let e = anonymous.describe(key, Some(whose)).await.unwrap_err();
            assert_eq!(
                status(e),
                (401, "unauthenticated".into()),
                "{key} of {whose}"
            );
            let e = anonymous
                .encrypt(key, Some(whose), b"probe", None)
                .await
                .unwrap_err();
            assert_eq!(
                status(e),
                (401, "unauthenticated".into()),
                "{key} of {whose}"
            );
            probes += 2;
        }
    }
    // A token that does not verify, on a connection with no other identity, is an
    // anonymous request too: 401, counted with the rest.
    let mut forged = node.verified(None).await;
    forged.use_access_key(&format!("ak-0123456789abcdef.{}", "00".repeat(32)));
    for _ in 0..5 {
        let e = forged.describe("x", Some(&fp)).await.unwrap_err();
        assert_eq!(status(e), (401, "unauthenticated".into()));
        probes += 1;
    }
    // Nothing in the owner's log.
    let after = c.audit_tail(1000).await.unwrap().entries;
    assert!(after.len() <= before + 1, "{after:?}");
    assert!(
        after
            .iter()
            .all(|e| e.draft.operation != "describe" && e.draft.operation != "encrypt"),
        "{after:?}"
    );
    // Deploying stays open to anyone holding a bundle: its signature authenticates.
    node.stop().await;

    // The node logged the probes as counts, in no owner's log.
    let platform: std::sync::Arc<dyn Platform> =
        std::sync::Arc::new(SimPlatform::open(&node.root, &node.data_dir).unwrap());
    let mut handle = teekms_server::open_node(platform, &node.data_dir).unwrap();
    let entries: Vec<serde_json::Value> = teekms_server::audit_tail_offline(&mut handle, 1000)
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect();
    let counted: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["operation"] == "anonymous-refused")
        .collect();
    let total: u64 = counted
        .iter()
        .map(|e| {
            let outcome = e["outcome"].as_str().unwrap();
            assert!(e["owner"].is_null() && e["key_id"].is_null(), "{e}");
            assert!(
                e["caller"]
                    .as_str()
                    .unwrap()
                    .starts_with("anonymous:127.0.0.1"),
                "{e}"
            );
            outcome
                .trim_start_matches("denied: ")
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, probes);
    // At most one entry per source and minute (the probes may straddle a minute).
    assert!(counted.len() <= 2, "{counted:?}");
}

#[tokio::test]
async fn tokens_in_another_spelling_and_policies_with_repeated_members_are_refused() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let mut c = node.verified(Some(&owner)).await;
    c.deploy(
        &owner,
        &KeyId::new("k").unwrap(),
        "{}",
        &DataKey::generate(),
    )
    .await
    .unwrap();
    let created = c
        .create_access_key(vec!["k".into()], vec![Operation::Encrypt], None, "t")
        .await
        .unwrap();
    let grant = serde_json::json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt"]}]});
    c.set_policy("k", &grant).await.unwrap();
    let mut a = node.verified(None).await;
    a.use_access_key(&created.token);
    a.encrypt("k", None, b"ok", None).await.unwrap();
    let (id, secret) = created.token.split_once('.').unwrap();
    let mut upper = node.verified(None).await;
    upper.use_access_key(&format!("{id}.{}", secret.to_uppercase()));
    let e = upper.encrypt("k", None, b"no", None).await.unwrap_err();
    assert_eq!(status(e), (401, "unauthenticated".into()));

    // A key policy naming a member twice: 400, and the stored policy is unchanged.
    let text = format!(
        r#"{{"rules":[{{"principals":[{{"access_key":"{}"}}],"operations":["encrypt"]}}],"rules":[]}}"#,
        created.info.id
    );
    let (code, body) = c
        .connection()
        .raw_request(
            teekms_client::Method::PUT,
            "/v1/keys/k/policy",
            Some(text.into_bytes()),
        )
        .await;
    assert_eq!((code, &body[..]), (400, &b"bad_request"[..]));
    assert_eq!(c.get_policy("k").await.unwrap(), grant);
}
