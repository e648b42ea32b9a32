#![no_main]
//! What freshness reads from outside: a node's `teekms-epoch` header (the CLI parses it
//! before checking its signature), an epoch record (opened from the untrusted store),
//! an owner's record file, members' epoch questions and answers, the cluster status and
//! the admin's resumption. Never panics; what
//! parses survives a round trip.
use libfuzzer_sys::fuzz_target;
use teekms_core::api::{ClusterResume, ClusterStatus, PeerEpoch, PeerEpochRequest};
use teekms_core::freshness::{Acknowledged, EpochRecord, Stamp};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(stamp) = Stamp::from_header(text)
    {
        assert_eq!(stamp.to_header(), text);
    }
    if let Ok(record) = EpochRecord::from_bytes(data) {
        assert_eq!(record.to_bytes(), data);
    }
    if let Ok(k) = serde_json::from_slice::<Acknowledged>(data) {
        let again = serde_json::to_vec(&k).unwrap();
        assert_eq!(serde_json::from_slice::<Acknowledged>(&again).unwrap(), k);
    }
    if let Ok(e) = serde_json::from_slice::<PeerEpoch>(data) {
        let again = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<PeerEpoch>(&again).unwrap(), e);
    }
    let _ = serde_json::from_slice::<PeerEpochRequest>(data);
    // The admin's resumption (the node parses it), and a node's status (the CLI does).
    let _ = serde_json::from_slice::<ClusterResume>(data);
    let _ = serde_json::from_slice::<ClusterStatus>(data);
});
