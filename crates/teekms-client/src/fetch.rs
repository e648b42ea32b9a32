//! Fetching collateral from a PCCS, Intel PCS (API v4) or AMD KDS, for offline use.
//!
//! Collateral authenticates itself (everything in it is signed under the pinned Intel and
//! AMD roots and checked at verification), so the transport only has to deliver it:
//! `http://` (a PCCS on the local network) and `https://` (PCS, KDS; Mozilla's roots)
//! are both accepted. Never called inside a TLS handshake.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use teekms_attest::collateral::{CollateralFiles, FetchItem};
use tokio::net::TcpStream;

use crate::ClientError;

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 1024 * 1024;

struct Base {
    tls: bool,
    host: String,
    port: u16,
    prefix: String,
}

fn parse_base(url: &str) -> Result<Base, ClientError> {
    let bad = |why: &str| {
        ClientError::Url(format!(
            "{url:?}: {why} (expected http(s)://HOST[:PORT][/PATH])"
        ))
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("only http:// and https:// are supported"));
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
            (h, p.parse().map_err(|_| bad("invalid port"))?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(Base {
        tls,
        host: host.to_owned(),
        port,
        prefix: prefix.to_owned(),
    })
}

async fn get(
    base: &Base,
    path: &str,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
    let tcp = TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|e| ClientError::Connect {
            url: format!("{}:{}", base.host, base.port),
            reason: e.to_string(),
        })?;
    let req = Request::get(format!("{}{path}", base.prefix))
        .header(hyper::header::HOST, &base.host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&e))?;
    let resp = if base.tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| transport(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(base.host.clone())
            .map_err(|e| transport(&e))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| transport(&e))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| transport(&e))?
        .to_bytes();
    Ok((status, headers, body))
}

async fn send<S>(
    io: TokioIo<S>,
    req: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| transport(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| transport(&e))
}

/// Fetches every item of `plan` from the service at `base_url`.
pub async fn fetch_collateral(
    base_url: &str,
    plan: &[FetchItem],
) -> Result<CollateralFiles, ClientError> {
    let base = parse_base(base_url)?;
    let mut files = CollateralFiles::default();
    for item in plan {
        let (status, headers, body) = tokio::time::timeout(TIMEOUT, get(&base, &item.path))
            .await
            .map_err(|_| {
                ClientError::Transport(format!("{base_url}{} did not answer in time", item.path))
            })??;
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: "collateral_fetch".into(),
                message: format!("{base_url}{} answered {status}", item.path),
            });
        }
        let header = match item.header_file {
            Some((name, _)) => headers.get(name).and_then(|v| v.to_str().ok()),
            None => None,
        };
        files
            .insert_fetched(item, body.to_vec(), header)
            .map_err(|e| ClientError::Response(format!("{base_url}{}: {e}", item.path)))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = parse_base("https://api.trustedservices.intel.com").unwrap();
        assert!(b.tls && b.port == 443 && b.prefix.is_empty());
        let b = parse_base("http://127.0.0.1:8081/pccs/").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("127.0.0.1", 8081, "/pccs")
        );
        assert!(parse_base("ftp://x").is_err());
    }
}
