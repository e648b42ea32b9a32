//! `soak --duration 10m`: a node (SQLite) under mixed, rate-bounded load from in-process
//! clients for a while — deployments, every envelope operation, streams, the AWS KMS
//! (SigV4) and Vault Transit APIs, access-key creation and revocation, lifecycle changes,
//! audit reads, connection churn, malformed requests — then the checks a day of service must pass: no unexpected error, memory and
//! file descriptors flat, the audit chain verified, every acknowledged key present.
//!
//! Each action knows what it must get: an answer (checked: a decryption gives back what
//! was encrypted) or a named refusal (a disabled key, a revoked access key, a malformed
//! request). Anything else is an unexpected error; one is enough to exit 1.

use std::io::{Cursor, Write};
use std::sync::Mutex;

use teekms_client::{ClientError, VerifiedConnection};
use teekms_core::api::{
    DecryptRequest, EncryptRequest, GenerateDataKeyRequest, ReEncryptRequest, SecretB64,
};
use teekms_core::context::EncryptionContext;

use super::*;

/// Keys the envelope workers use; never disabled or deleted.
const STABLE_KEYS: [&str; 4] = ["soak-0", "soak-1", "soak-2", "soak-3"];
/// The key whose lifecycle changes all along (disabled, enabled, rotated, scheduled for
/// deletion, the deletion cancelled).
const LIFE_KEY: &str = "life";
/// The key that short-lived access keys are admitted to.
const CHURN_KEY: &str = "churn";
/// Parallel envelope workers.
const ENVELOPE_WORKERS: u64 = 4;

/// `--duration` as given: `90s`, `10m` (or bare seconds).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let (digits, unit) = match text.strip_suffix('m') {
        Some(d) => (d, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = n.checked_mul(unit).filter(|s| *s > 0)?;
    Some(Duration::from_secs(secs))
}

/// Counts of what the clients met.
#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    refused: AtomicU64,
    unexpected: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Stats {
    fn requests(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.refused.load(Ordering::Relaxed)
            + self.unexpected.load(Ordering::Relaxed)
    }

    fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn unexpected(&self, what: &str, why: impl std::fmt::Display) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let line = format!("{what}: {why}");
        eprintln!("soak: unexpected: {line}");
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 20 {
            samples.push(line);
        }
    }

    /// An answer that must come: `Some` of it, or counted as unexpected. A `retry` (a
    /// change that raced with this request, which the node asks to send again) is an
    /// expected refusal.
    fn answer<T>(&self, what: &str, r: Result<T, ClientError>) -> Option<T> {
        match r {
            Ok(v) => {
                self.ok();
                Some(v)
            }
            Err(ClientError::Api { code, .. }) if code == "retry" => {
                self.refused();
                None
            }
            Err(e) => {
                self.unexpected(what, e);
                None
            }
        }
    }

    /// A refusal with one of `codes` that must come.
    fn refusal<T>(&self, what: &str, r: Result<T, ClientError>, codes: &[&str]) {
        match r {
            Err(ClientError::Api { code, .. }) if codes.contains(&code.as_str()) => self.refused(),
            Err(ClientError::Api { code, .. }) if code == "retry" => self.refused(),
            Err(e) => self.unexpected(what, format_args!("{e} (expected one of {codes:?})")),
            Ok(_) => self.unexpected(what, format_args!("answered; expected one of {codes:?}")),
        }
    }

    /// A raw request's status, which must be `want` (or, for 4xx, any client error).
    fn status(&self, what: &str, status: u16, body: &[u8], client_error: bool) {
        if (200..300).contains(&status) && !client_error
            || client_error && (400..500).contains(&status)
        {
            if client_error {
                self.refused();
            } else {
                self.ok();
            }
        } else {
            self.unexpected(
                what,
                format_args!("status {status}: {}", String::from_utf8_lossy(body)),
            );
        }
    }
}

/// Everything the workers share.
struct Soak {
    url: NodeUrl,
    policy: Arc<Policy>,
    owner: Arc<OwnerKey>,
    stats: Stats,
    until: Instant,
    /// Keys whose deployment the node acknowledged (a verified receipt).
    acknowledged: Mutex<Vec<String>>,
}

impl Soak {
    fn running(&self) -> bool {
        Instant::now() < self.until
    }

    async fn owner_connection(&self) -> VerifiedConnection {
        teekms_client::connect_verified(&self.url, &self.policy, Some(&self.owner), now())
            .await
            .expect("the owner connects")
    }

    /// Deploys `key_id` with a fresh key; acknowledged keys are remembered.
    async fn deploy(&self, c: &mut VerifiedConnection, key_id: &str) {
        let r = c
            .deploy(
                &self.owner,
                &KeyId::new(key_id).unwrap(),
                "{}",
                &DataKey::generate(),
            )
            .await;
        if self.stats.answer("deploy", r).is_some() {
            self.acknowledged.lock().unwrap().push(key_id.to_owned());
        }
    }

    /// Sleeps `d`, or less if the run ends sooner.
    async fn pause(&self, d: Duration) {
        let left = self.until.saturating_duration_since(Instant::now());
        tokio::time::sleep(d.min(left)).await;
    }
}

/// A small deterministic generator (xorshift64*) for sizes and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_vec(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    teekms_core::random_bytes(&mut v);
    v
}

fn context(worker: u64, n: u64) -> EncryptionContext {
    EncryptionContext::from([
        ("worker".to_owned(), worker.to_string()),
        ("n".to_owned(), n.to_string()),
    ])
}

/// Every envelope operation, each answer checked.
async fn envelope_worker(s: Arc<Soak>, worker: u64) {
    let mut c = s.owner_connection().await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
    let mut n = 0;
    while s.running() {
        n += 1;
        let key = STABLE_KEYS[rng.below(STABLE_KEYS.len() as u64) as usize];
        let other = STABLE_KEYS[rng.below(STABLE_KEYS.len() as u64) as usize];
        let plaintext = random_vec(1 + rng.below(4096) as usize);
        let ctx = context(worker, n);
        let encrypted = c
            .encrypt_request(&EncryptRequest {
                key_id: key.into(),
                owner: None,
                plaintext: SecretB64(plaintext.clone().into()),
                aad: None,
                context: Some(ctx.clone()),
            })
            .await;
        let Some(ct) = s.stats.answer("encrypt", encrypted) else {
            continue;
        };
        let decrypt = |context| DecryptRequest {
            ciphertext: ct.ciphertext.clone(),
            aad: None,
            context,
        };
        let opened = c.decrypt_request(&decrypt(Some(ctx.clone()))).await;
        if let Some(o) = s.stats.answer("decrypt", opened)
            && o.plaintext.as_ref().map(|p| &p.0[..]) != Some(&plaintext[..])
        {
            s.stats
                .unexpected("decrypt", "a different plaintext came back");
        }
        let wrong = c
            .decrypt_request(&decrypt(Some(context(worker, n + 1))))
            .await;
        s.stats
            .refusal("decrypt with another context", wrong, &["decrypt_failed"]);
        let generated = c
            .generate_data_key_request(&GenerateDataKeyRequest {
                key_id: key.into(),
                owner: None,
                aad: None,
                context: None,
                number_of_bytes: Some(1 + rng.below(64) as u32),
            })
            .await;
        if let Some(g) = s.stats.answer("generate-data-key", generated) {
            let wrapped = g.ciphertext.expect("a wrapped data key");
            let opened = c.decrypt(&wrapped.0, None).await;
            if let Some(o) = s.stats.answer("decrypt a data key", opened)
                && o.plaintext.map(|p| p.0) != g.plaintext.map(|p| p.0)
            {
                s.stats
                    .unexpected("generate-data-key", "the data key does not open to itself");
            }
        }
        let moved = c
            .re_encrypt(&ReEncryptRequest {
                ciphertext: ct.ciphertext.clone(),
                aad: None,
                context: Some(ctx.clone()),
                destination_key_id: Some(other.into()),
                destination_owner: None,
                destination_aad: None,
                destination_context: Some(ctx.clone()),
            })
            .await;
        if let Some(m) = s.stats.answer("re-encrypt", moved) {
            let opened = c
                .decrypt_request(&DecryptRequest {
                    ciphertext: m.ciphertext,
                    aad: None,
                    context: Some(ctx),
                })
                .await;
            if let Some(o) = s.stats.answer("decrypt re-encrypted", opened)
                && o.plaintext.as_ref().map(|p| &p.0[..]) != Some(&plaintext[..])
            {
                s.stats
                    .unexpected("re-encrypt", "a different plaintext came back");
            }
        }
        s.pause(Duration::from_millis(20)).await;
    }
}

/// A `Write` whose bytes the caller keeps.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams of 64 KiB to 1 MiB through the node and back.
async fn stream_worker(s: Arc<Soak>) {
    let mut c = s.owner_connection().await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    while s.running() {
        let data = random_vec(64 * 1024 + rng.below(960 * 1024) as usize);
        let sealed = Shared::default();
        let r = c
            .stream_encrypt(
                STABLE_KEYS[0],
                None,
                None,
                Box::new(Cursor::new(data.clone())),
                Box::new(sealed.clone()),
            )
            .await;
        if s.stats.answer("stream encrypt", r).is_some() {
            let sealed = std::mem::take(&mut *sealed.0.lock().unwrap());
            let opened = Shared::default();
            let r = c
                .stream_decrypt(
                    None,
                    Box::new(Cursor::new(sealed)),
                    Box::new(opened.clone()),
                )
                .await;
            if s.stats.answer("stream decrypt", r).is_some() && *opened.0.lock().unwrap() != data {
                s.stats
                    .unexpected("stream decrypt", "different bytes came back");
            }
        }
        s.pause(Duration::from_millis(200)).await;
    }
}

/// A new key every second.
async fn deploy_worker(s: Arc<Soak>) {
    let mut c = s.owner_connection().await;
    let mut n = 0;
    while s.running() {
        s.deploy(&mut c, &format!("deployed-{n}")).await;
        n += 1;
        s.pause(Duration::from_secs(1)).await;
    }
}

/// Access keys made, admitted by the key's policy, used, revoked, and then refused.
async fn access_key_worker(s: Arc<Soak>) {
    let mut admin = s.owner_connection().await;
    while s.running() {
        let created = admin
            .create_access_key(
                vec![CHURN_KEY.into()],
                vec![teekms_core::access::Operation::Encrypt],
                Some("1h"),
                "soak",
            )
            .await;
        let Some(created) = s.stats.answer("create access key", created) else {
            continue;
        };
        let rules = serde_json::json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt"]}]});
        let set = admin.set_policy(CHURN_KEY, &rules).await;
        if s.stats.answer("set policy", set).is_some() {
            let mut c = teekms_client::connect_verified(&s.url, &s.policy, None, now())
                .await
                .expect("a client connects");
            c.use_access_key(&created.token);
            let used = c.encrypt(CHURN_KEY, None, b"churn", None).await;
            s.stats.answer("encrypt with a new access key", used);
            let revoked = admin.revoke_access_key(&created.info.id).await;
            s.stats.answer("revoke access key", revoked);
            let after = c.encrypt(CHURN_KEY, None, b"churn", None).await;
            s.stats.refusal(
                "encrypt with a revoked access key",
                after,
                &["unauthenticated"],
            );
        }
        s.pause(Duration::from_millis(500)).await;
    }
}

/// The life key goes round its states; what each state must answer is checked.
async fn lifecycle_worker(s: Arc<Soak>) {
    let mut c = s.owner_connection().await;
    let step = Duration::from_millis(250);
    while s.running() {
        let r = c.set_enabled(LIFE_KEY, false).await;
        s.stats.answer("disable", r);
        let r = c.encrypt(LIFE_KEY, None, b"life", None).await;
        s.stats
            .refusal("encrypt with a disabled key", r, &["key_state"]);
        s.pause(step).await;
        let r = c.set_enabled(LIFE_KEY, true).await;
        s.stats.answer("enable", r);
        let r = c.rotate(LIFE_KEY).await;
        s.stats.answer("rotate", r);
        let r = c.encrypt(LIFE_KEY, None, b"life", None).await;
        s.stats.answer("encrypt with an enabled key", r);
        s.pause(step).await;
        let r = c.schedule_deletion(LIFE_KEY, None).await;
        s.stats.answer("schedule deletion", r);
        let r = c.encrypt(LIFE_KEY, None, b"life", None).await;
        s.stats
            .refusal("encrypt with a key pending deletion", r, &["key_state"]);
        s.pause(step).await;
        let r = c.cancel_deletion(LIFE_KEY).await;
        s.stats.answer("cancel deletion", r);
        let r = c.describe(LIFE_KEY, None).await;
        s.stats.answer("describe", r);
        s.pause(step).await;
    }
}

/// The owner reads its audit log every second and has the chain checked every 20 s.
async fn audit_worker(s: Arc<Soak>) {
    let mut c = s.owner_connection().await;
    let mut n = 0u64;
    while s.running() {
        let r = c.audit_tail(50).await;
        s.stats.answer("audit tail", r);
        if n % 20 == 19 {
            let r = c.audit_verify().await;
            if let Some(v) = s.stats.answer("audit verify", r)
                && !v.ok
            {
                s.stats.unexpected("audit verify", format_args!("{v:?}"));
            }
        }
        n += 1;
        s.pause(Duration::from_secs(1)).await;
    }
}

/// New connections (the node's evidence verified each time), one anonymous request,
/// closed; and
/// plain TCP connections opened and dropped without a word.
async fn connection_worker(s: Arc<Soak>) {
    let addr = format!("{}:{}", s.url.host(), s.url.port());
    while s.running() {
        match teekms_client::connect_verified(&s.url, &s.policy, None, now()).await {
            Ok(mut c) => {
                let (status, body) = c
                    .connection()
                    .raw_request(teekms_client::Method::GET, "/v1/health", None)
                    .await;
                s.stats.status("health", status, &body, false);
            }
            Err(e) => s.stats.unexpected("connect", e),
        }
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(silent) => drop(silent),
            Err(e) => s.stats.unexpected("tcp connect", e),
        }
        s.pause(Duration::from_millis(100)).await;
    }
}

/// Requests a careless or hostile client sends: each must get a 4xx, never a 5xx.
async fn malformed_worker(s: Arc<Soak>) {
    let mut c = s.owner_connection().await;
    let bodies: [(&str, &str, &[u8]); 6] = [
        ("POST", "/v1/envelope/encrypt", b"{"),
        (
            "POST",
            "/v1/envelope/encrypt",
            br#"{"key_id":"soak-0","plaintext":"AAAA","surprise":1}"#,
        ),
        (
            "POST",
            "/v1/envelope/encrypt",
            br#"{"key_id":"soak-0","plaintext":"not base64!"}"#,
        ),
        (
            "POST",
            "/v1/envelope/decrypt",
            br#"{"ciphertext":"dGVla2ttcyBidXQgbm90IGFuIGVudmVsb3Bl"}"#,
        ),
        ("POST", "/v1/keys/..%2f..%2fetc/rotate", b""),
        ("GET", "/v1/audit?n=18446744073709551616", b""),
    ];
    let mut i = 0;
    while s.running() {
        let (method, path, body) = bodies[i % bodies.len()];
        let method = if method == "GET" {
            teekms_client::Method::GET
        } else {
            teekms_client::Method::POST
        };
        let body = (!body.is_empty()).then(|| body.to_vec());
        let (status, answer) = c.connection().raw_request(method, path, body).await;
        s.stats.status(path, status, &answer, true);
        i += 1;
        s.pause(Duration::from_millis(500)).await;
    }
}

/// The key the AWS KMS API and Transit workers use, and the access key (with its AWS
/// secret) its policy admits.
const API_KEY: &str = "soak-api";

/// An access key with AWS credentials, admitted by `API_KEY`'s policy to encrypt and
/// decrypt: `(id, token, AWS secret)`.
async fn api_access_key(s: &Soak) -> Option<(String, String, String)> {
    let mut admin = s.owner_connection().await;
    let created = admin
        .create_access_key_request(&teekms_core::api::AccessKeyCreateRequest {
            keys: vec![API_KEY.into()],
            operations: vec![
                teekms_core::access::Operation::Encrypt,
                teekms_core::access::Operation::Decrypt,
            ],
            expires_in: None,
            description: "soak: AWS KMS and Transit APIs".into(),
            aws: true,
        })
        .await;
    let created = s.stats.answer("create an AWS access key", created)?;
    let rules = serde_json::json!({"rules": [{"principals": [{"access_key": created.info.id}], "operations": ["encrypt", "decrypt"]}]});
    let set = admin.set_policy(API_KEY, &rules).await;
    s.stats.answer("set policy", set)?;
    let secret = created.aws_secret_access_key?;
    Some((created.info.id, created.token, secret))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str()?)
        .ok()
}

/// One AWS KMS API request (JSON 1.1), SigV4-signed as an AWS SDK signs it; the answer's
/// JSON if it is a 200.
async fn aws_call(
    c: &mut VerifiedConnection,
    (id, secret): (&str, &str),
    operation: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let body = serde_json::to_vec(&body).expect("JSON");
    let date = teekms_core::sigv4::amz_date(now());
    let target = format!("TrentService.{operation}");
    let host = c.connection().host();
    let headers: [(&str, &[u8]); 4] = [
        ("content-type", b"application/x-amz-json-1.1"),
        ("host", host.as_bytes()),
        ("x-amz-date", date.as_bytes()),
        ("x-amz-target", target.as_bytes()),
    ];
    let req = teekms_core::sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: &body,
    };
    let auth = teekms_core::sigv4::authorization(
        &req,
        id,
        secret.as_bytes(),
        &date,
        "us-east-1",
        "kms",
        &["content-type", "host", "x-amz-date", "x-amz-target"],
    )
    .map_err(|e| e.to_string())?;
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(
            teekms_client::Method::POST,
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-date", &date),
                ("x-amz-target", &target),
                ("authorization", &auth),
            ],
            body,
        )
        .await;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&answer)));
    }
    serde_json::from_slice(&answer).map_err(|e| e.to_string())
}

/// A Transit request with the access key's token; the answer's `data` if it is a 200.
async fn transit_call(
    c: &mut VerifiedConnection,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let (status, answer) = c
        .connection()
        .raw_request_with_headers(
            teekms_client::Method::POST,
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(&body).expect("JSON"),
        )
        .await;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&answer)));
    }
    let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
    Ok(v["data"].clone())
}

/// The AWS KMS API (SigV4) and the Vault Transit API, each round trip checked; single
/// items and batches.
async fn api_worker(s: Arc<Soak>) {
    let Some((id, token, secret)) = api_access_key(&s).await else {
        return;
    };
    let mut c = teekms_client::connect_verified(&s.url, &s.policy, None, now())
        .await
        .expect("a client connects");
    c.use_access_key(&token);
    let mut rng = Rng(0xA076_1D64_78BD_642F);
    while s.running() {
        let plaintext = random_vec(1 + rng.below(4096) as usize);
        let context = serde_json::json!({"purpose": "soak", "n": rng.below(1000).to_string()});
        let sealed = aws_call(
            &mut c,
            (&id, &secret),
            "Encrypt",
            serde_json::json!({"KeyId": API_KEY, "Plaintext": b64(&plaintext), "EncryptionContext": context}),
        )
        .await;
        match sealed {
            Ok(v) => {
                s.stats.ok();
                let opened = aws_call(
                    &mut c,
                    (&id, &secret),
                    "Decrypt",
                    serde_json::json!({"CiphertextBlob": v["CiphertextBlob"], "EncryptionContext": context}),
                )
                .await;
                match opened.map(|o| unb64(&o["Plaintext"])) {
                    Ok(Some(p)) if p == plaintext => s.stats.ok(),
                    Ok(_) => s
                        .stats
                        .unexpected("AWS Decrypt", "a different plaintext came back"),
                    Err(e) => s.stats.unexpected("AWS Decrypt", e),
                }
            }
            Err(e) => s.stats.unexpected("AWS Encrypt", e),
        }
        let transit = format!("/v1/transit/encrypt/{API_KEY}");
        match transit_call(
            &mut c,
            &transit,
            serde_json::json!({"plaintext": b64(&plaintext)}),
        )
        .await
        {
            Ok(data) => {
                s.stats.ok();
                let opened = transit_call(
                    &mut c,
                    &format!("/v1/transit/decrypt/{API_KEY}"),
                    serde_json::json!({"ciphertext": data["ciphertext"]}),
                )
                .await;
                match opened.map(|d| unb64(&d["plaintext"])) {
                    Ok(Some(p)) if p == plaintext => s.stats.ok(),
                    Ok(_) => s
                        .stats
                        .unexpected("Transit decrypt", "a different plaintext came back"),
                    Err(e) => s.stats.unexpected("Transit decrypt", e),
                }
            }
            Err(e) => s.stats.unexpected("Transit encrypt", e),
        }
        let items: Vec<serde_json::Value> = (0..10)
            .map(|i| serde_json::json!({"plaintext": b64(&[i; 32])}))
            .collect();
        match transit_call(&mut c, &transit, serde_json::json!({"batch_input": items})).await {
            Ok(data) if data["batch_results"].as_array().map(Vec::len) == Some(10) => s.stats.ok(),
            Ok(data) => s.stats.unexpected("Transit batch", data),
            Err(e) => s.stats.unexpected("Transit batch", e),
        }
        s.pause(Duration::from_millis(20)).await;
    }
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the soak; the process exits 1 on an unexpected error, a lost key or a broken
/// chain.
pub(crate) async fn soak(teekms: &Path, duration: Duration) {
    let dir = scratch();
    let data = dir.path().join("node");
    let node = spawn_node(teekms, dir.path(), &data);
    let pid = node.child.id();
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let owner = Arc::new(OwnerKey::generate());
    let started = Instant::now();
    let s = Arc::new(Soak {
        url,
        policy,
        owner,
        stats: Stats::default(),
        until: started + duration,
        acknowledged: Mutex::new(Vec::new()),
    });
    println!(
        "soak: {} s of mixed load on one node (SQLite), loopback, rate-bounded",
        duration.as_secs()
    );
    let mut setup = s.owner_connection().await;
    for key in STABLE_KEYS.iter().chain(&[LIFE_KEY, CHURN_KEY, API_KEY]) {
        s.deploy(&mut setup, key).await;
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..ENVELOPE_WORKERS {
        workers.spawn(envelope_worker(s.clone(), w));
    }
    workers.spawn(stream_worker(s.clone()));
    workers.spawn(deploy_worker(s.clone()));
    workers.spawn(access_key_worker(s.clone()));
    workers.spawn(lifecycle_worker(s.clone()));
    workers.spawn(audit_worker(s.clone()));
    workers.spawn(connection_worker(s.clone()));
    workers.spawn(malformed_worker(s.clone()));
    workers.spawn(api_worker(s.clone()));

    // Reports every minute (every tenth of a shorter run). RSS is sampled every second
    // and a report gives the median of its period's samples: a single reading catches
    // whatever a stream or a chain check holds at that instant (a few MiB either way).
    // The first period's figures are the baseline ("minute 1").
    let every = Duration::from_secs(60)
        .min(duration / 10)
        .max(Duration::from_secs(1));
    let mut baseline = None;
    let mut latest = (0, 0);
    let (mut low, mut high) = (u64::MAX, 0);
    let mut last = (Instant::now(), 0);
    while s.running() {
        let period_end = Instant::now() + every;
        let mut samples = Vec::new();
        while s.running() && Instant::now() < period_end {
            s.pause(Duration::from_secs(1).min(every)).await;
            samples.push(rss_kib(pid));
        }
        samples.sort_unstable();
        let rss = samples[samples.len() / 2];
        low = low.min(samples[0]);
        high = high.max(samples[samples.len() - 1]);
        let open = fds(pid);
        latest = (rss, open);
        baseline.get_or_insert((rss, open));
        let requests = s.stats.requests();
        let rate = (requests - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), requests);
        let t = started.elapsed().as_secs();
        println!(
            "[{:>2}:{:02}] {requests} requests ({:.0}/s): ok {}, refused as expected {}, unexpected {}; RSS {:.1} MiB (median of {} samples), fds {open}, store {:.1} MiB",
            t / 60,
            t % 60,
            rate,
            s.stats.ok.load(Ordering::Relaxed),
            s.stats.refused.load(Ordering::Relaxed),
            s.stats.unexpected.load(Ordering::Relaxed),
            mib(rss),
            samples.len(),
            dir_bytes(&data) as f64 / (1 << 20) as f64,
        );
    }
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            s.stats.unexpected("worker", e);
        }
    }
    let (rss_end, fds_end) = latest;
    let (rss_start, fds_start) = baseline.unwrap_or(latest);

    // What a day of service must leave: the chain whole, every key there.
    let mut c = s.owner_connection().await;
    let verification = c.audit_verify().await;
    let chain = match &verification {
        Ok(v) if v.ok => format!("verified ({} entries)", v.entries),
        Ok(v) => format!("BROKEN at {:?}: {:?}", v.broken_at, v.reason),
        Err(e) => format!("not checked: {e}"),
    };
    let entries = verification.as_ref().map_or(0, |v| v.entries);
    let listed: Vec<String> = match c.list().await {
        Ok(l) => l.keys.into_iter().map(|k| k.key_id).collect(),
        Err(e) => {
            s.stats.unexpected("list keys", e);
            Vec::new()
        }
    };
    let acknowledged = s.acknowledged.lock().unwrap().clone();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|k| !listed.contains(k))
        .collect();
    let store = dir_bytes(&data);
    let growth = (rss_end as f64 / rss_start.max(1) as f64 - 1.0) * 100.0;
    let (ok, refused, unexpected) = (
        s.stats.ok.load(Ordering::Relaxed),
        s.stats.refused.load(Ordering::Relaxed),
        s.stats.unexpected.load(Ordering::Relaxed),
    );
    println!("\n## Soak, {} s", duration.as_secs());
    println!(
        "requests by outcome: ok {ok}, refused as expected {refused}, unexpected {unexpected}"
    );
    for line in s.stats.samples.lock().unwrap().iter() {
        println!("  unexpected: {line}");
    }
    println!(
        "RSS {:.1} -> {:.1} MiB, first and last period's medians ({growth:+.1} %, goal < 10 %; every sample {:.1} to {:.1} MiB), open fds {fds_start} -> {fds_end}",
        mib(rss_start),
        mib(rss_end),
        mib(low),
        mib(high)
    );
    println!(
        "store {:.1} MiB for {entries} audit entries: {:.0} bytes per audited operation",
        store as f64 / (1 << 20) as f64,
        store as f64 / entries.max(1) as f64
    );
    println!("audit chain: {chain}");
    println!(
        "keys: {} acknowledged, {} present, {} lost",
        acknowledged.len(),
        acknowledged.len() - lost.len(),
        lost.len()
    );
    println!(
        "soak: {} requests, {unexpected} unexpected errors, RSS {:.1} -> {:.1} MiB, fds {fds_start} -> {fds_end}",
        ok + refused + unexpected,
        mib(rss_start),
        mib(rss_end)
    );
    drop(node);
    if unexpected > 0 || !lost.is_empty() || !chain.starts_with("verified") {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_and_minutes() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        for bad in ["", "0s", "m", "10h", "-1s", "18446744073709551615m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
