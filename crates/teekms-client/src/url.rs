use std::fmt;

use crate::ClientError;

/// A node address: `https://HOST:PORT` (IPv6 hosts in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUrl {
    host: String,
    port: u16,
}

impl NodeUrl {
    /// Parses `https://HOST:PORT` with an optional trailing `/`.
    pub fn parse(s: &str) -> Result<NodeUrl, ClientError> {
        let bad =
            |why: &str| ClientError::Url(format!("{s:?}: {why} (expected https://HOST:PORT)"));
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| bad("only https:// URLs are supported"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, p) = r.split_once("]:").ok_or_else(|| bad("missing port"))?;
            (h, p)
        } else {
            rest.rsplit_once(':').ok_or_else(|| bad("missing port"))?
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(bad("invalid host"));
        }
        let port = port.parse().map_err(|_| bad("invalid port"))?;
        Ok(NodeUrl {
            host: host.to_owned(),
            port,
        })
    }

    /// Host as written (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `HOST:PORT` for the Host header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            NodeUrl::parse("https://127.0.0.1:8443/")
                .unwrap()
                .authority(),
            "127.0.0.1:8443"
        );
        assert_eq!(NodeUrl::parse("https://[::1]:1").unwrap().host(), "::1");
        for bad in [
            "http://a:1",
            "https://a",
            "https://:1",
            "https://a:x",
            "https://a:1/path",
        ] {
            assert!(NodeUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
