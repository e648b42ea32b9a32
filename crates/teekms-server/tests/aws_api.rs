//! The AWS KMS API against what a hostile or broken client sends: every operation with
//! malformed, mistyped, oversized and random bodies, unsigned and badly signed requests,
//! stale and future dates, another region. Every answer is an AWS error shape with a
//! 4xx status, nothing crashes the handler, the node goes on serving, and its audit log
//! still verifies. (The real AWS clients are in crates/teekms-cli/tests/aws.rs.)

mod common;

use common::Node;
use serde_json::{Value, json};
use teekms_client::{Method, VerifiedConnection};
use teekms_core::api::AccessKeyCreateRequest;
use teekms_core::sigv4;
use teekms_core::{DataKey, KeyId, OwnerKey};
use teekms_server::now_unix;

struct Signer {
    id: String,
    secret: String,
}

/// Sends `body` as `TrentService.<op>`, signed by `signer` at `at` for `region` (or not
/// at all); returns status and the parsed answer.
async fn send(
    c: &mut VerifiedConnection,
    op: &str,
    body: &[u8],
    signer: Option<(&Signer, u64, &str)>,
) -> (u16, Value) {
    let host = c.connection().host();
    let target = format!("TrentService.{op}");
    let mut headers: Vec<(&str, String)> = vec![
        ("content-type", "application/x-amz-json-1.1".into()),
        ("x-amz-target", target.clone()),
    ];
    if let Some((s, at, region)) = signer {
        let date = sigv4::amz_date(at);
        let all: [(&str, &[u8]); 4] = [
            ("content-type", b"application/x-amz-json-1.1"),
            ("host", host.as_bytes()),
            ("x-amz-date", date.as_bytes()),
            ("x-amz-target", target.as_bytes()),
        ];
        let req = sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &all,
            body,
        };
        let auth = sigv4::authorization(
            &req,
            &s.id,
            s.secret.as_bytes(),
            &date,
            region,
            "kms",
            &["content-type", "host", "x-amz-date", "x-amz-target"],
        )
        .unwrap();
        headers.push(("x-amz-date", date));
        headers.push(("authorization", auth));
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(Method::POST, "/", &refs, body.to_vec())
        .await;
    let value = serde_json::from_slice(&answer).unwrap_or_else(|_| {
        panic!(
            "{op}: not JSON ({status}): {}",
            String::from_utf8_lossy(&answer)
        )
    });
    (status, value)
}

fn kind(v: &Value) -> &str {
    v["__type"].as_str().unwrap_or("")
}

#[tokio::test]
async fn hostile_requests_get_aws_errors_and_harm_nothing() {
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
        .create_access_key_request(&AccessKeyCreateRequest {
            keys: vec!["*".into()],
            operations: vec![
                teekms_core::access::Operation::Encrypt,
                teekms_core::access::Operation::Decrypt,
                teekms_core::access::Operation::GenerateDataKey,
                teekms_core::access::Operation::ReEncrypt,
                teekms_core::access::Operation::Describe,
            ],
            expires_in: None,
            description: String::new(),
            aws: true,
        })
        .await
        .unwrap();
    admin
        .set_policy(
            "db",
            &json!({"rules": [{"principals": [{"access_key": created.info.id}],
                "operations": ["encrypt", "decrypt", "generate-data-key", "re-encrypt", "describe"]}]}),
        )
        .await
        .unwrap();
    let signer = Signer {
        id: created.info.id.clone(),
        secret: created.aws_secret_access_key.clone().unwrap(),
    };
    let now = now_unix();
    let mut c = node.verified(None).await;

    // A good request first.
    let (status, v) = send(
        &mut c,
        "Encrypt",
        br#"{"KeyId":"db","Plaintext":"aGk="}"#,
        Some((&signer, now, "us-east-1")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let blob = v["CiphertextBlob"].as_str().unwrap().to_owned();

    // Authentication: unsigned, garbage Authorization, stale, future, other region, wrong
    // secret, unknown id, a body changed after signing.
    let (s, v) = send(&mut c, "Encrypt", b"{}", None).await;
    assert_eq!(
        (s, kind(&v)),
        (400, "MissingAuthenticationTokenException"),
        "{v}"
    );
    for (when, region, expected) in [
        (now - 16 * 60, "us-east-1", "InvalidSignatureException"),
        (now + 16 * 60, "us-east-1", "InvalidSignatureException"),
        (now, "eu-west-1", "InvalidSignatureException"),
    ] {
        let (s, v) = send(
            &mut c,
            "DescribeKey",
            br#"{"KeyId":"db"}"#,
            Some((&signer, when, region)),
        )
        .await;
        assert_eq!((s, kind(&v)), (400, expected), "{when} {region}: {v}");
    }
    for (id, secret, expected) in [
        (
            signer.id.as_str(),
            "A".repeat(40),
            "InvalidSignatureException",
        ),
        (
            "ak-0000000000000000",
            signer.secret.clone(),
            "UnrecognizedClientException",
        ),
        (
            "AKIAIOSFODNN7EXAMPLE",
            signer.secret.clone(),
            "UnrecognizedClientException",
        ),
    ] {
        let other = Signer {
            id: id.into(),
            secret,
        };
        let (s, v) = send(
            &mut c,
            "DescribeKey",
            br#"{"KeyId":"db"}"#,
            Some((&other, now, "us-east-1")),
        )
        .await;
        assert_eq!((s, kind(&v)), (400, expected), "{id}: {v}");
    }

    // Bodies: every operation, with what a broken or hostile client sends.
    let ops = [
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateRandom",
        "DescribeKey",
        "ListKeys",
        "ListAliases",
        "DisableKey",
        "CreateKey",
        "Sign",
        "",
        "../../etc",
    ];
    let huge = format!(r#"{{"KeyId":"db","Plaintext":"{}"}}"#, "A".repeat(200_000));
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{".to_vec(),
        b"\xff\xfe".to_vec(),
        br#"{"KeyId":7}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"not base64!"}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":""}"#.to_vec(),
        br#"{"KeyId":"","Plaintext":"aGk="}"#.to_vec(),
        br#"{"KeyId":"arn:aws:kms:us-east-1:000000000000:key/db","Plaintext":"aGk="}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"aGk=","Unknown":1}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"aGk=","EncryptionContext":{"":"x"}}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"aGk=","EncryptionContext":{"a":7}}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"aGk=","EncryptionAlgorithm":"RSAES_OAEP_SHA_256"}"#.to_vec(),
        br#"{"KeyId":"db","Plaintext":"aGk=","DryRun":true}"#.to_vec(),
        br#"{"KeyId":"db","NumberOfBytes":18446744073709551615}"#.to_vec(),
        br#"{"KeyId":"db","NumberOfBytes":0}"#.to_vec(),
        br#"{"KeyId":"db","NumberOfBytes":-1}"#.to_vec(),
        br#"{"KeyId":"db","NumberOfBytes":32,"KeySpec":"AES_256"}"#.to_vec(),
        br#"{"KeyId":"db","KeySpec":"RSA_4096"}"#.to_vec(),
        br#"{"NumberOfBytes":4294967296}"#.to_vec(),
        br#"{"Limit":0}"#.to_vec(),
        br#"{"Limit":4294967295,"Marker":"zzzz"}"#.to_vec(),
        br#"{"CiphertextBlob":"AAAA"}"#.to_vec(),
        format!(r#"{{"CiphertextBlob":"{blob}","KeyId":"alias/other"}}"#).into_bytes(),
        format!(r#"{{"CiphertextBlob":"{blob}","Recipient":{{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"AAAA"}}}}"#).into_bytes(),
        format!(r#"{{"CiphertextBlob":"{blob}","Recipient":{{"KeyEncryptionAlgorithm":"TEEKMS_HPKE_X25519_SHA256_AES256GCM","AttestationDocument":"e30="}}}}"#).into_bytes(),
        format!(r#"{{"CiphertextBlob":"{blob}","DestinationKeyId":"nope"}}"#).into_bytes(),
    ];
    let mut seen = std::collections::BTreeSet::new();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    for op in ops {
        let mut all = bodies.clone();
        // And some random bytes, and random JSON-ish text.
        for _ in 0..8 {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let len = (rng_state % 300) as usize;
            all.push((0..len).map(|i| (rng_state >> (i % 56)) as u8).collect());
            all.push(
                format!(r#"{{"KeyId":"db","{}":{}}}"#, rng_state % 97, rng_state).into_bytes(),
            );
        }
        for body in &all {
            let (s, v) = send(&mut c, op, body, Some((&signer, now_unix(), "us-east-1"))).await;
            if s == 200 {
                continue;
            }
            assert!(
                (400..500).contains(&s),
                "{op} {:?}: {s} {v}",
                String::from_utf8_lossy(body)
            );
            assert!(
                !kind(&v).is_empty() && v["message"].is_string(),
                "{op}: {v}"
            );
            seen.insert(kind(&v).to_owned());
        }
    }
    // An oversized body is answered, then the connection may close (its rest unread).
    let mut big = node.verified(None).await;
    let (s, v) = send(
        &mut big,
        "Encrypt",
        huge.as_bytes(),
        Some((&signer, now_unix(), "us-east-1")),
    )
    .await;
    assert_eq!((s, kind(&v)), (400, "ValidationException"), "{v}");
    for expected in [
        "ValidationException",
        "NotFoundException",
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "AccessDeniedException",
        "UnsupportedOperationException",
    ] {
        assert!(
            seen.contains(expected),
            "never answered {expected}: {seen:?}"
        );
    }

    // Still serving, the key intact, the audit log whole.
    let (status, v) = send(
        &mut c,
        "Decrypt",
        format!(r#"{{"CiphertextBlob":"{blob}"}}"#).as_bytes(),
        Some((&signer, now_unix(), "us-east-1")),
    )
    .await;
    assert_eq!(
        (status, v["Plaintext"].as_str()),
        (200, Some("aGk=")),
        "{v}"
    );
    let verification = admin.audit_verify().await.unwrap();
    assert!(verification.ok, "{verification:?}");
}
