//! PEM certificate chains (collateral files, the PCK chain inside a quote, AMD certificates),
//! read with `rustls-pki-types`' PEM reader.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Every `CERTIFICATE` section of a PEM text, as DER, in order. A malformed section fails
/// the whole text (it yields no certificate at all): a chain is taken as written or not
/// at all, never with a block silently left out.
pub(crate) fn certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";

    #[test]
    fn chains_in_order_and_nothing_skipped() {
        let pem = format!("{BEGIN}\nAQID\n{END}\njunk\n{BEGIN}\nBAU=\n{END}\n");
        assert_eq!(
            super::certificates(pem.as_bytes()),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert!(super::certificates(b"no pem here").is_empty());
        // A block that does not decode is not left out: the text yields nothing.
        let broken = format!("{BEGIN}\nAQID\n{END}\n{BEGIN}\n!!not base64!!\n{END}\n");
        assert!(super::certificates(broken.as_bytes()).is_empty());
        let unterminated = format!("{BEGIN}\nAQID\n{END}\n{BEGIN}\nBAU=\n");
        assert!(super::certificates(unterminated.as_bytes()).is_empty());
    }
}
