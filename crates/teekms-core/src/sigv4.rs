//! AWS Signature Version 4, header form, as a server checks it: the `Authorization`
//! header parsed strictly, the canonical request and the string to sign rebuilt from
//! what was received, the signing key derived from the secret, and the signatures
//! compared in constant time. Pure: the clock comes in; the caller looks the secret up
//! by the access key id and says which region and service it serves.
//!
//! The rules are AWS's ("Create a signed AWS API request", the SigV4 test suite): header
//! names lowercased and sorted, values trimmed with inner runs of spaces collapsed, the
//! path's segments encoded once more (every service but S3), query parameters encoded and
//! sorted, the payload hashed (or `x-amz-content-sha256` as sent).

use aws_lc_rs::{digest, hmac};

/// A day's signing key (HMAC-SHA256), as [`signing_key`] derives it.
pub use aws_lc_rs::hmac::Key as SigningKey;

/// The only algorithm SigV4 names.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Largest difference between the request's `x-amz-date` and the server's clock (AWS
/// allows 15 minutes either way).
pub const MAX_SKEW_SECS: u64 = 15 * 60;

/// Why a request's signature was not accepted. Messages are safe to return: they never
/// include the expected signature or anything derived from the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// The `Authorization` header is not a SigV4 header of the expected shape.
    #[error("the Authorization header is not AWS Signature Version 4: {0}")]
    Malformed(&'static str),
    /// A header that must be signed was not (or is missing).
    #[error("the request must sign the {0} header")]
    Unsigned(&'static str),
    /// The credential scope names another region or service than this endpoint's.
    #[error("the credential scope is for {found}, but this endpoint is {expected}")]
    WrongScope {
        /// `region/service` of the request.
        found: String,
        /// `region/service` of this endpoint.
        expected: String,
    },
    /// `x-amz-date` is not `YYYYMMDDTHHMMSSZ`, or its day is not the scope's.
    #[error("x-amz-date is not a valid signing time for the credential scope")]
    BadDate,
    /// `x-amz-date` is too far from the server's clock.
    #[error("the signature was made at a time more than 15 minutes from the server's clock")]
    Skewed,
    /// `x-amz-content-sha256` is not the SHA-256 of the body.
    #[error("x-amz-content-sha256 is not the SHA-256 of the request body")]
    PayloadHash,
    /// The signature does not match (a wrong secret, or an altered request).
    #[error(
        "the request signature we calculated does not match the signature you provided; check your AWS secret access key and signing method"
    )]
    Mismatch,
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id (the first part of the credential).
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The signed headers, lowercase, in the order given (which must be sorted).
    pub signed_headers: Vec<String>,
    /// The signature.
    pub signature: [u8; 32],
}

impl Authorization {
    /// Parses the header value. Strict: the three parts once each, the scope ending in
    /// `aws4_request`, signed headers sorted, lowercase and unique, 64 lowercase hex
    /// digits of signature.
    pub fn parse(value: &str) -> Result<Authorization, SigV4Error> {
        let bad = SigV4Error::Malformed;
        let rest = value
            .strip_prefix(ALGORITHM)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(bad("it must start with AWS4-HMAC-SHA256"))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, v) = part
                .trim()
                .split_once('=')
                .ok_or(bad("a part is not name=value"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(bad("unknown part")),
            };
            if slot.replace(v).is_some() {
                return Err(bad("a part is given twice"));
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err(bad(
                "Credential, SignedHeaders and Signature are all required",
            ));
        };
        let mut scope = credential.split('/');
        let (Some(id), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(bad("Credential is not ID/DATE/REGION/SERVICE/aws4_request"));
        };
        if id.is_empty()
            || region.is_empty()
            || service.is_empty()
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("Credential has an empty or malformed field"));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        let well_formed = signed_headers.iter().all(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
        if !well_formed || !signed_headers.windows(2).all(|w| w[0] < w[1]) {
            return Err(bad(
                "SignedHeaders must be lowercase names, sorted, each once",
            ));
        }
        let mut sig = [0u8; 32];
        if signature.len() != 64 || signature.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("Signature must be 64 lowercase hex digits"));
        }
        hex::decode_to_slice(signature, &mut sig)
            .map_err(|_| bad("Signature must be 64 lowercase hex digits"))?;
        Ok(Authorization {
            access_key_id: id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: sig,
        })
    }
}

/// A request as the server received it.
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path as sent (percent-encoded once by the client).
    pub path: &'a str,
    /// The query string as sent, without `?` (empty if none).
    pub query: &'a str,
    /// Every header received: (name, value), names in any case, a name possibly repeated.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body.
    pub body: &'a [u8],
}

/// Checks `req`'s signature by `auth` with `secret`, for `region`/`service`, at `now`
/// (Unix seconds). `host` and `x-amz-date` must be signed.
pub fn verify(
    req: &Request<'_>,
    auth: &Authorization,
    secret: &[u8],
    region: &str,
    service: &str,
    now: u64,
) -> Result<(), SigV4Error> {
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    verify_with_key(req, auth, &key, region, service, now)
}

/// [`verify`] with the signing key already derived ([`signing_key`] for the scope's date,
/// region and service): a server may keep it for the day rather than derive it for every
/// request.
pub fn verify_with_key(
    req: &Request<'_>,
    auth: &Authorization,
    key: &hmac::Key,
    region: &str,
    service: &str,
    now: u64,
) -> Result<(), SigV4Error> {
    if auth.region != region || auth.service != service {
        return Err(SigV4Error::WrongScope {
            found: format!("{}/{}", auth.region, auth.service),
            expected: format!("{region}/{service}"),
        });
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigV4Error::Unsigned(if required == "host" {
                "host"
            } else {
                "x-amz-date"
            }));
        }
    }
    let amz_date = header(req.headers, "x-amz-date").ok_or(SigV4Error::Unsigned("x-amz-date"))?;
    let amz_date = std::str::from_utf8(&amz_date).map_err(|_| SigV4Error::BadDate)?;
    let signed_at = parse_amz_date(amz_date).ok_or(SigV4Error::BadDate)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::BadDate);
    }
    if signed_at.abs_diff(now) > MAX_SKEW_SECS {
        return Err(SigV4Error::Skewed);
    }
    let canonical = canonical_request(req, &auth.signed_headers)?;
    let expected = sign_canonical(
        key,
        amz_date,
        &auth.date,
        &auth.region,
        &auth.service,
        &canonical,
    );
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &auth.signature)
        .map_err(|_| SigV4Error::Mismatch)
}

/// The signature of a canonical request: HMAC of the string to sign (algorithm, time,
/// scope, hash of the canonical request), fed to the HMAC piece by piece.
fn sign_canonical(
    key: &hmac::Key,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> hmac::Tag {
    let mut mac = hmac::Context::with_key(key);
    for part in [
        ALGORITHM, "\n", amz_date, "\n", date, "/", region, "/", service,
    ] {
        mac.update(part.as_bytes());
    }
    mac.update(b"/aws4_request\n");
    mac.update(&hex_sha256(canonical.as_bytes()));
    mac.sign()
}

/// SHA-256 of `data` in lowercase hex.
fn hex_sha256(data: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    hex::encode_to_slice(digest::digest(&digest::SHA256, data), &mut out)
        .expect("64 hex digits for 32 bytes");
    out
}

/// `x-amz-date` for Unix time `unix`: `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(unix: u64) -> String {
    teekms_attest::format_rfc3339(unix).replace(['-', ':'], "")
}

/// A client's `Authorization` header for `req` (tests and benchmarks sign with it; AWS
/// SDKs sign real clients' requests): over the headers named in `signed` (lowercase,
/// sorted; `req.headers` holds them, `x-amz-date` among them, equal to `amz_date`).
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &[u8],
    amz_date: &str,
    region: &str,
    service: &str,
    signed: &[&str],
) -> Result<String, SigV4Error> {
    let date = amz_date.get(..8).ok_or(SigV4Error::BadDate)?;
    let key = signing_key(secret, date, region, service);
    authorization_with_key(req, access_key_id, &key, amz_date, region, service, signed)
}

/// [`authorization`] with the day's signing key already derived.
#[allow(clippy::too_many_arguments)]
pub fn authorization_with_key(
    req: &Request<'_>,
    access_key_id: &str,
    key: &hmac::Key,
    amz_date: &str,
    region: &str,
    service: &str,
    signed: &[&str],
) -> Result<String, SigV4Error> {
    let date = amz_date.get(..8).ok_or(SigV4Error::BadDate)?;
    let signed_owned: Vec<String> = signed.iter().map(|h| (*h).to_owned()).collect();
    let canonical = canonical_request(req, &signed_owned)?;
    let signature = sign_canonical(key, amz_date, date, region, service, &canonical);
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{date}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={}",
        signed.join(";"),
        hex::encode(signature.as_ref())
    ))
}

/// The signing key: HMAC-SHA256 chained over the date, region, service and
/// `aws4_request`, starting from `"AWS4" + secret`.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k = Vec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret);
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, &k);
    zeroize::Zeroize::zeroize(&mut k);
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&key, part.as_bytes());
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

/// The canonical request of SigV4 for `req`, over the headers named in `signed`.
pub fn canonical_request(req: &Request<'_>, signed: &[String]) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(512 + req.path.len() + req.query.len());
    out.push_str(req.method);
    out.push('\n');
    push_canonical_uri(&mut out, req.path);
    out.push('\n');
    push_canonical_query(&mut out, req.query);
    out.push('\n');
    for name in signed {
        let value = header(req.headers, name).ok_or(SigV4Error::Malformed(
            "a signed header is missing from the request",
        ))?;
        out.push_str(name);
        out.push(':');
        push_canonical_value(&mut out, &value);
        out.push('\n');
    }
    out.push('\n');
    for (i, name) in signed.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out.push('\n');
    // The body is always hashed here: an `x-amz-content-sha256` header must state that
    // very hash (S3's UNSIGNED-PAYLOAD has no place in a key service), else a signature
    // over the header would not cover the body.
    let payload = hex_sha256(req.body);
    if let Some(stated) = header(req.headers, "x-amz-content-sha256")
        && *stated != payload
    {
        return Err(SigV4Error::PayloadHash);
    }
    out.push_str(std::str::from_utf8(&payload).expect("hex is ASCII"));
    Ok(out)
}

/// A header's values, joined by `,` in the order received (names compared ignoring case).
fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    let mut found: Option<Cow<'a, [u8]>> = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            found = Some(match found {
                Some(acc) => {
                    let mut joined = acc.into_owned();
                    joined.push(b',');
                    joined.extend_from_slice(v);
                    Cow::Owned(joined)
                }
                None => Cow::Borrowed(v),
            });
        }
    }
    found
}

/// Appends `value` trimmed, with every run of spaces inside collapsed to one.
fn push_canonical_value(out: &mut String, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// Appends the path with each segment percent-encoded once more (AWS's rule for every
/// service but S3); `/` for an empty path.
fn push_canonical_uri(out: &mut String, path: &str) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_uri_encoded(out, segment);
    }
}

/// Appends the query's parameters, each name and value percent-encoded (after decoding
/// what the client encoded), sorted by name then value.
fn push_canonical_query(out: &mut String, query: &str) {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut name, mut value) = (String::new(), String::new());
            push_uri_encoded(&mut name, &percent_decode(k));
            push_uri_encoded(&mut value, &percent_decode(v));
            (name, value)
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

/// Appends `s` in RFC 3986 encoding as SigV4 wants it: unreserved characters as they
/// are, every other byte `%XX` in uppercase hex.
fn push_uri_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// `%XX` decoded (anything malformed is kept as it is: it is then encoded as sent).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_pair = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex_pair) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        return None;
    }
    let num = |at: usize, len: usize| -> i64 {
        b[at..at + len]
            .iter()
            .fold(0, |n, d| n * 10 + i64::from(d - b'0'))
    };
    teekms_attest::unix_from_civil([
        num(0, 4),
        num(4, 2),
        num(6, 2),
        num(9, 2),
        num(11, 2),
        num(13, 2),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS's published example (S3 GetObject of the first 10 bytes of test.txt, in the
    /// S3 API reference, "Signature Calculations for the Authorization Header"): the
    /// same canonical request and signature.
    #[test]
    fn aws_documented_example() {
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"examplebucket.s3.amazonaws.com"),
            ("Range", b"bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256.as_bytes()),
            ("x-amz-date", b"20130524T000000Z"),
        ];
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers,
            body: b"",
        };
        let value = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let auth = Authorization::parse(value).unwrap();
        let canonical = canonical_request(&req, &auth.signed_headers).unwrap();
        assert_eq!(
            canonical,
            format!(
                "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
            )
        );
        let at = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(verify(&req, &auth, SECRET, "us-east-1", "s3", at), Ok(()));
        // Anything altered, or another secret, region or time: refused.
        assert_eq!(
            verify(&req, &auth, b"wrong", "us-east-1", "s3", at),
            Err(SigV4Error::Mismatch)
        );
        assert!(matches!(
            verify(&req, &auth, SECRET, "eu-west-1", "s3", at),
            Err(SigV4Error::WrongScope { .. })
        ));
        assert_eq!(
            verify(
                &req,
                &auth,
                SECRET,
                "us-east-1",
                "s3",
                at + MAX_SKEW_SECS + 1
            ),
            Err(SigV4Error::Skewed)
        );
        let altered: &[(&str, &[u8])] = &[
            ("Host", b"examplebucket.s3.amazonaws.com"),
            ("Range", b"bytes=0-10"),
            ("x-amz-content-sha256", EMPTY_SHA256.as_bytes()),
            ("x-amz-date", b"20130524T000000Z"),
        ];
        let req2 = Request {
            headers: altered,
            ..req
        };
        assert_eq!(
            verify(&req2, &auth, SECRET, "us-east-1", "s3", at),
            Err(SigV4Error::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA1 Credential=a/20130524/r/s/aws4_request,SignedHeaders=host,Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s/aws4_request,SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=a/2013052/r/s/aws4_request,SignedHeaders=host,Signature=0000000000000000000000000000000000000000000000000000000000000000",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s/aws5_request,SignedHeaders=host,Signature=0000000000000000000000000000000000000000000000000000000000000000",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s/aws4_request,SignedHeaders=x-amz-date;host,Signature=0000000000000000000000000000000000000000000000000000000000000000",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s/aws4_request,SignedHeaders=host,Signature=00000000000000000000000000000000000000000000000000000000000000AA",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s/aws4_request,Credential=a/20130524/r/s/aws4_request,SignedHeaders=host,Signature=0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_parts_follow_aws_rules() {
        let canonical_uri = |path| {
            let mut out = String::new();
            push_canonical_uri(&mut out, path);
            out
        };
        let canonical_query = |query| {
            let mut out = String::new();
            push_canonical_query(&mut out, query);
            out
        };
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        // Encoded once more: `%20` becomes `%2520` (every service but S3).
        assert_eq!(canonical_uri("/a%20b/c"), "/a%2520b/c");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b"), "k=a%20b");
        let mut value = String::new();
        push_canonical_value(&mut value, b"  a   b  ");
        assert_eq!(value, "a b");
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(1_369_353_600));
        assert_eq!(parse_amz_date("2013-05-24T00:00:00Z"), None);
        assert_eq!(parse_amz_date("20131324T000000Z"), None);
        assert_eq!(parse_amz_date("20130524T240000Z"), None);
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
    }

    #[test]
    fn what_a_client_signs_the_server_verifies_and_nothing_else() {
        let now = 1_796_212_609;
        let date = amz_date(now);
        assert_eq!(date.len(), 16);
        let body = br#"{"KeyId":"db"}"#;
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"127.0.0.1:8443"),
            ("X-Amz-Date", date.as_bytes()),
            ("X-Amz-Target", b"TrentService.DescribeKey"),
        ];
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let signed = ["host", "x-amz-date", "x-amz-target"];
        let header = authorization(
            &req,
            "ak-0123456789abcdef",
            b"secret",
            &date,
            "us-east-1",
            "kms",
            &signed,
        )
        .unwrap();
        let auth = Authorization::parse(&header).unwrap();
        assert_eq!(
            verify(&req, &auth, b"secret", "us-east-1", "kms", now),
            Ok(())
        );
        assert_eq!(
            verify(&req, &auth, b"other", "us-east-1", "kms", now),
            Err(SigV4Error::Mismatch)
        );
        let altered = Request {
            body: br#"{"KeyId":"xx"}"#,
            ..req
        };
        assert_eq!(
            verify(&altered, &auth, b"secret", "us-east-1", "kms", now),
            Err(SigV4Error::Mismatch)
        );
        assert_eq!(
            verify(&req, &auth, b"secret", "us-east-1", "kms", now + 901),
            Err(SigV4Error::Skewed)
        );
    }

    #[test]
    fn a_stated_payload_hash_must_be_the_bodys() {
        let now = 1_796_212_609;
        let date = amz_date(now);
        let stated = EMPTY_SHA256;
        let headers: Vec<(&str, &[u8])> = vec![
            ("host", b"h"),
            ("x-amz-content-sha256", stated.as_bytes()),
            ("x-amz-date", date.as_bytes()),
        ];
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"not empty",
        };
        let signed = ["host", "x-amz-content-sha256", "x-amz-date"];
        assert_eq!(
            authorization(
                &req,
                "ak-0123456789abcdef",
                b"s",
                &date,
                "us-east-1",
                "kms",
                &signed
            ),
            Err(SigV4Error::PayloadHash)
        );
    }
}
