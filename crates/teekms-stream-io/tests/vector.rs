//! The stream vector of spec/vectors: opened, and sealed again byte for byte.

use serde_json::Value;
use teekms_core::DataKey;
use teekms_core::stream::Header;
use teekms_stream_io::{decrypt, encrypt};

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec/vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn stream_vector() {
    let v = load("stream-v1.json");
    let dek = DataKey::from_bytes(&unhex(&v["dek_hex"])).unwrap();
    let sealed = unhex(&v["ciphertext_hex"]);
    let mut plain = Vec::new();
    let header = decrypt(&dek, &sealed[..], &mut plain).unwrap();
    assert_eq!(plain, unhex(&v["plaintext_hex"]));
    assert_eq!(header.key_id.as_str(), v["key_id"].as_str().unwrap());
    let again = Header {
        key_id: header.key_id.clone(),
        key_version: v["key_version"].as_u64().unwrap(),
        chunk_log2: v["chunk_log2"].as_u64().unwrap() as u8,
        salt: unhex(&v["salt_hex"]).try_into().unwrap(),
    };
    let mut resealed = Vec::new();
    encrypt(&dek, &again, &plain[..], &mut resealed).unwrap();
    assert_eq!(
        resealed, sealed,
        "the format is deterministic given the header"
    );
}
