//! The cluster CA for clients that check chains and names (issue 17 §1): `teekms ca
//! export` writes it from verified evidence; Python's ssl with strict X.509 checks, curl
//! and rustls trust the node through it by the names of `--tls-san`, and refuse other
//! names; the node renews its leaf certificate while it runs, and connections made
//! before a renewal keep working.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::{Env, s};

/// A GET over rustls (webpki path validation, the CA as the only root) to `name`.
fn rustls_get(ca: &std::path::Path, port: u16, name: &str, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    match tls.read_to_string(&mut out) {
        Ok(_) => Ok(out),
        // The server may close without close_notify after `Connection: close`.
        Err(e) if !out.is_empty() => Ok(format!("{out}\n({e})")),
        Err(e) => Err(e.to_string()),
    }
}

const PYTHON: &str = r#"
import http.client, socket, ssl, sys, time
ca, port, name, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT

class Named(http.client.HTTPSConnection):
    """Connects to the loopback, and verifies the certificate against `host`."""
    def connect(self):
        sock = socket.create_connection(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(sock, server_hostname=self.host)

def get(c, path):
    c.request("GET", path)
    r = c.getresponse()
    assert r.status == 200, r.status
    r.read()

first = Named(name, port, context=ctx)
get(first, "/v1/health")
s1 = first.sock.getpeercert()["serialNumber"]
try:
    get(Named("other.test", port, context=ctx), "/v1/health")
    print("FAILED: a name the certificate does not carry was accepted")
    sys.exit(1)
except ssl.SSLCertVerificationError:
    pass
time.sleep(wait)
# The connection made before the renewal goes on; a new one meets the new leaf.
get(first, "/v1/health")
second = Named(name, port, context=ctx)
get(second, "/v1/ready")
s2 = second.sock.getpeercert()["serialNumber"]
assert s1 != s2, "the leaf was not renewed"
print("renewed", s1, s2)
"#;

#[test]
fn standard_clients_trust_the_cluster_ca_by_name_and_renewals_go_unnoticed() {
    let env = Env::new();
    let node = env.serve_tee(
        "sim",
        &env.path("node"),
        &[
            "--tls-san",
            "kms.test",
            "--tls-san",
            "127.0.0.1",
            "--tls-cert-lifetime",
            "12s",
        ],
        "warn",
    );
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let policy = env.sim_policy();
    let ca = env.path("ca.pem");
    env.ok(&[
        "ca",
        "export",
        "--node",
        &node.url,
        "--policy",
        s(&policy),
        "-o",
        s(&ca),
    ]);
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    // To stdout as well; the same CA (its key and name) every time.
    let again = env.ok(&["ca", "export", "--node", &node.url, "--policy", s(&policy)]);
    assert_eq!(again.matches("BEGIN CERTIFICATE").count(), 1);

    // rustls: by the DNS name of --tls-san; another name is refused.
    let answer = rustls_get(&ca, port, "kms.test", "/v1/health").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refused = rustls_get(&ca, port, "other.test", "/v1/health").unwrap_err();
    assert!(
        refused.contains("NotValidForName") || refused.contains("not valid"),
        "{refused}"
    );

    // curl, with OpenSSL: by name (resolved to the loopback) and by address.
    for url in [
        format!("https://kms.test:{port}/v1/health"),
        format!("https://127.0.0.1:{port}/v1/ready"),
    ] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--cacert",
                s(&ca),
                "--resolve",
                &format!("kms.test:{port}:127.0.0.1"),
                &url,
            ])
            .output()
            .expect("curl runs (./test installs it if absent)");
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            s(&ca),
            "--resolve",
            &format!("other.test:{port}:127.0.0.1"),
            &format!("https://other.test:{port}/v1/health"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "curl accepted a name the certificate does not carry"
    );

    // Python's ssl with strict X.509 checks; then the renewal (after 2/3 of 12 s).
    let out = std::process::Command::new("python3")
        .args(["-c", PYTHON, s(&ca), &port.to_string(), "kms.test", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("renewed"),
        "python: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
