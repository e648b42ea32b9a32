//! PEM certificate chains (collateral files, the PCK chain inside a quote, AMD certificates).

use base64::Engine;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Every `CERTIFICATE` block of a PEM text, as DER, in order. Blocks that do not decode
/// are skipped; the caller's parsing and signature checks decide what the rest is worth.
pub(crate) fn certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    text.split(BEGIN)
        .skip(1)
        .filter_map(|block| block.split(END).next())
        .filter_map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.split_whitespace().collect::<String>())
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn chains_in_order() {
        let pem = format!(
            "{}\nAQID\n{}\njunk\n{}\nBAU=\n{}\n",
            super::BEGIN,
            super::END,
            super::BEGIN,
            super::END
        );
        assert_eq!(
            super::certificates(pem.as_bytes()),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert!(super::certificates(b"no pem here").is_empty());
    }
}
