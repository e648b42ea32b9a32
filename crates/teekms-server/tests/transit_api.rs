//! The Vault Transit API against malformed and hostile requests (hvac's happy paths are
//! in crates/teekms-cli/tests/vault.rs): every answer is Vault's error shape with a 4xx
//! status, batches report each item, the owner (and only the owner) rotates, and the
//! audit log verifies afterwards.

mod common;

use common::Node;
use serde_json::{Value, json};
use teekms_client::{Method, VerifiedConnection};
use teekms_core::{DataKey, KeyId, OwnerKey};

async fn send(
    c: &mut VerifiedConnection,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("x-vault-token", t.to_string()));
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(method, path, &refs, body.to_vec())
        .await;
    let v = if answer.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&answer)
            .unwrap_or_else(|_| panic!("{path}: {status} {}", String::from_utf8_lossy(&answer)))
    };
    (status, v)
}

#[tokio::test]
async fn hostile_transit_requests_get_vault_errors_and_only_owners_rotate() {
    let node = Node::start().await;
    let owner = OwnerKey::generate();
    let mut admin = node.verified(Some(&owner)).await;
    admin
        .deploy(
            &owner,
            &KeyId::new("db").unwrap(),
            "{}",
            &DataKey::generate(),
        )
        .await
        .unwrap();
    let created = admin
        .create_access_key(
            vec!["*".into()],
            vec![
                teekms_core::access::Operation::Encrypt,
                teekms_core::access::Operation::Decrypt,
            ],
            None,
            "",
        )
        .await
        .unwrap();
    admin
        .set_policy("db", &json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt", "decrypt"]}]}))
        .await
        .unwrap();
    let token = created.token.clone();
    let mut c = node.verified(None).await;

    // Batches report each item; one bad item makes the answer 400 with every result.
    let (s, v) = send(&mut c, Method::POST, "/v1/transit/encrypt/db", Some(&token),
        br#"{"batch_input":[{"plaintext":"aGk="},{"plaintext":"not base64!"},{"plaintext":"aGk=","reference":"r3"}]}"#).await;
    assert_eq!(s, 400, "{v}");
    let results = v["data"]["batch_results"].as_array().unwrap();
    assert!(
        results[0]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v1:")
    );
    assert!(results[1]["error"].as_str().unwrap().contains("base64"));
    assert_eq!(results[2]["reference"], "r3");

    let bodies: Vec<&[u8]> = vec![
        b"",
        b"null",
        b"[]",
        b"{",
        b"\xff",
        br#"{"plaintext":7}"#,
        br#"{"unknown":1}"#,
        br#"{"batch_input":[]}"#,
        br#"{"batch_input":"x"}"#,
        br#"{"ciphertext":"vault:v1:AAAA"}"#,
        br#"{"ciphertext":"vault:v01:AAAA"}"#,
        br#"{"ciphertext":"vault:v18446744073709551616:AA"}"#,
        br#"{"plaintext":"aGk=","type":"rsa-4096"}"#,
        br#"{"plaintext":"aGk=","convergent_encryption":true}"#,
        br#"{"bits":7}"#,
        br#"{"bytes":4294967295}"#,
        br#"{"format":"base32"}"#,
    ];
    let paths = [
        "/v1/transit/encrypt/db",
        "/v1/transit/decrypt/db",
        "/v1/transit/rewrap/db",
        "/v1/transit/datakey/plaintext/db",
        "/v1/transit/datakey/other/db",
        "/v1/transit/random",
        "/v1/transit/random/0",
        "/v1/transit/random/x",
        "/v1/transit/encrypt/no-such-key",
        "/v1/transit/sign/db",
        "/v1/transit/hmac/db/sha2-256",
        "/v1/transit/keys/db",
    ];
    for path in paths {
        for body in &bodies {
            let (s, v) = send(&mut c, Method::POST, path, Some(&token), body).await;
            if s == 200 || s == 204 {
                continue;
            }
            assert!(
                (400..500).contains(&s),
                "{path} {:?}: {s} {v}",
                String::from_utf8_lossy(body)
            );
            assert!(v["errors"].is_array(), "{path}: {v}");
        }
    }
    // No token, a bad token: 403 permission denied, as Vault answers.
    for t in [None, Some("ak-0000000000000000.00")] {
        let (s, v) = send(
            &mut c,
            Method::POST,
            "/v1/transit/encrypt/db",
            t,
            br#"{"plaintext":"aGk="}"#,
        )
        .await;
        assert_eq!(
            (s, v["errors"][0].as_str()),
            (403, Some("permission denied")),
            "{v}"
        );
    }
    // Rotation: refused to the token, done for the owner.
    let (s, _) = send(
        &mut c,
        Method::POST,
        "/v1/transit/keys/db/rotate",
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(s, 403);
    let (s, v) = send(
        &mut admin,
        Method::POST,
        "/v1/transit/keys/db/rotate",
        None,
        b"",
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(admin.describe("db", None).await.unwrap().current_version, 2);

    let verification = admin.audit_verify().await.unwrap();
    assert!(verification.ok, "{verification:?}");
}
