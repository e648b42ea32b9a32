//! Asking the node to unwrap a file key: one HTTPS request, trusting the node by its
//! cluster's CA file (exported from verified evidence by `teekms ca export`), with the
//! access key's token from its file.

use std::io::{Read, Write};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::Identity;

/// A file key the node unwrapped, or why it did not.
pub fn unwrap(
    identity: &Identity,
    owner: &str,
    key_id: &str,
    key_version: u64,
    enc: &[u8],
    ciphertext: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let token = std::fs::read_to_string(&identity.token_file)
        .map_err(|e| format!("reading the access key token {}: {e}", identity.token_file))?;
    let body = serde_json::json!({
        "owner": owner,
        "key_id": key_id,
        "key_version": key_version,
        "enc": B64.encode(enc),
        "ciphertext": B64.encode(ciphertext),
    })
    .to_string();
    let (status, answer) = post(identity, "/v1/age/unwrap", token.trim(), body.as_bytes())?;
    let v: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|_| format!("the node answered {status} with no JSON"))?;
    if status != 200 {
        return Err(format!(
            "the node refused ({status} {}): {}",
            v["code"].as_str().unwrap_or("?"),
            v["message"].as_str().unwrap_or("")
        ));
    }
    let key = v["file_key"]
        .as_str()
        .and_then(|k| B64.decode(k).ok())
        .ok_or("the node's answer has no file key")?;
    Ok(zeroize::Zeroizing::new(key))
}

/// `https://HOST:PORT` → (host, port).
fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not https://HOST:PORT"))?
        .trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} has no port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{url:?} has a bad port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// One POST over TLS 1.3 (the CA file the only root; the host name checked); returns
/// status and body.
fn post(
    identity: &Identity,
    path: &str,
    token: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let (host, port) = host_port(&identity.node)?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&identity.ca_file)
        .map_err(|e| format!("reading the CA file {}: {e}", identity.ca_file))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("the CA file {}: {e}", identity.ca_file))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA file {}: {e}", identity.ca_file))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect((host.as_str(), port))
        .map_err(|e| format!("cannot connect to {}: {e}", identity.node))?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .and_then(|_| tls.write_all(body))
        .map_err(|e| format!("talking to {}: {e}", identity.node))?;
    let mut answer = Vec::new();
    // The node may close without close_notify after `Connection: close`: what arrived
    // counts. An answer is small: whatever is sent beyond the limit is not read.
    if let Err(e) = tls.take(MAX_ANSWER).read_to_end(&mut answer)
        && answer.is_empty()
    {
        return Err(format!("talking to {}: {e}", identity.node));
    }
    parse_response(&answer).ok_or_else(|| format!("{} did not answer HTTP", identity.node))
}

/// Largest answer read from the node (an unwrapped file key, or an error, is far less).
const MAX_ANSWER: u64 = 64 * 1024;

/// Status and body of an HTTP/1.1 response with `Content-Length` (which must fit what
/// arrived: it is not trusted further).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(raw.len() - split - 4);
    let start = split + 4;
    let body = raw.get(start..start.checked_add(length)?)?.to_vec();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn a_response_is_taken_as_long_as_it_says_and_no_longer_than_it_is() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi and more";
        assert_eq!(parse_response(ok), Some((200, b"hi".to_vec())));
        let long = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nhi";
        assert_eq!(parse_response(long), None);
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nhi";
        assert_eq!(parse_response(huge), None);
        assert_eq!(parse_response(b"garbage"), None);
    }
}
