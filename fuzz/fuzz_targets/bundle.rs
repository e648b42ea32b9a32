#![no_main]
//! Bundles (untrusted, from owners or USB sticks): parse, then open with a node key set.
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use teekms_core::{Bundle, NodeKeys};

static KEYS: OnceLock<NodeKeys> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let keys = KEYS.get_or_init(NodeKeys::generate);
    if let Ok(b) = Bundle::from_json(data) {
        // Random input can never be a bundle for this freshly generated node.
        assert!(b.open(keys).is_err());
    }
});
