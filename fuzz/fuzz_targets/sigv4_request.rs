#![no_main]
//! AWS SigV4 (untrusted: any client's Authorization header and request): the header
//! parsed, and a request verified against it. Nothing a client sends may panic, and
//! random bytes never verify.
use libfuzzer_sys::fuzz_target;
use teekms_core::sigv4::{Authorization, Request, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (header, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(auth) = Authorization::parse(header) else {
        return;
    };
    let (path, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let headers: &[(&str, &[u8])] = &[
        ("host", b"localhost"),
        ("x-amz-date", b"20250101T000000Z"),
        ("X-Amz-Date", body.as_bytes()),
    ];
    let req = Request {
        method: "POST",
        path,
        query,
        headers,
        body: body.as_bytes(),
    };
    let verified = verify(
        &req,
        &auth,
        b"secret",
        &auth.region,
        &auth.service,
        1_735_689_600,
    );
    // A signature that matches would have to be found by the fuzzer: it never is.
    assert!(verified.is_err() || auth.signature != [0; 32]);
});
