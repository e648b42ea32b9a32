//! Crash safety: `kill -9` of a node at random instants during a deployment loop.
//!
//! After every kill the node restarts on the same data dir, and then:
//! - every deployment whose receipt the owner received and verified is present, with
//!   the exact material that was sent (key check value);
//! - every key present is one that was attempted, with the material sent for it (a
//!   half-finished deployment leaves either nothing or the whole key);
//! - no stored record fails authentication.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use rand::Rng;
use teekms_attest::Policy;
use teekms_client::NodeUrl;
use teekms_core::{DataKey, KeyId, OwnerKey};

const KILLS: usize = 60;
const DEPLOYERS: usize = 4;

#[derive(Default)]
struct Ledger {
    attempted: BTreeMap<String, String>,
    acknowledged: BTreeSet<String>,
}

async fn deploy_until_killed(
    url: NodeUrl,
    policy: Arc<Policy>,
    owner: Arc<OwnerKey>,
    ledger: Arc<Mutex<Ledger>>,
    tag: String,
) {
    let Ok(mut conn) =
        teekms_client::connect_verified(&url, &policy, Some(&owner), teekms_server::now_unix())
            .await
    else {
        return;
    };
    for n in 0.. {
        let id = format!("{tag}-{n}");
        let dek = DataKey::generate();
        ledger
            .lock()
            .unwrap()
            .attempted
            .insert(id.clone(), dek.kcv().to_hex());
        match conn
            .deploy(&owner, &KeyId::new(&id).unwrap(), "{}", &dek)
            .await
        {
            // `deploy` verified the node's signed receipt, including the kcv.
            Ok(_) => {
                ledger.lock().unwrap().acknowledged.insert(id);
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_deployments_loses_nothing_acknowledged() {
    let env = Env::new();
    let root_hex = env.ok(&["sim", "root"]).trim().to_owned();
    let mut root = [0u8; 32];
    hex::decode_to_slice(&root_hex, &mut root).unwrap();
    let policy = Arc::new(Policy::sim(root, None));
    let owner = Arc::new(OwnerKey::generate());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let data = env.path("node");
    let mut rng = rand::rng();
    let mut node_id = None;

    for cycle in 0..=KILLS {
        let mut node = env.serve(&data);
        let url = NodeUrl::parse(&node.url).unwrap();
        check(&url, &policy, &owner, &ledger, cycle).await;
        let id = teekms_client::connect(&url, None)
            .await
            .unwrap()
            .attestation(None)
            .await
            .unwrap()
            .statement
            .node_id;
        assert_eq!(
            *node_id.get_or_insert(id),
            id,
            "the node keeps its identity across crashes"
        );
        if cycle == KILLS {
            break;
        }
        let tasks: Vec<_> = (0..DEPLOYERS)
            .map(|t| {
                tokio::spawn(deploy_until_killed(
                    url.clone(),
                    policy.clone(),
                    owner.clone(),
                    ledger.clone(),
                    format!("c{cycle}-t{t}"),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..120))).await;
        node.kill();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let l = ledger.lock().unwrap();
    eprintln!(
        "{KILLS} kills, {} deployments attempted, {} acknowledged",
        l.attempted.len(),
        l.acknowledged.len()
    );
    assert!(
        l.acknowledged.len() >= KILLS,
        "the loop must actually deploy between kills"
    );
    assert!(
        l.attempted.len() > l.acknowledged.len(),
        "some kills must land mid-deployment"
    );
}

async fn check(
    url: &NodeUrl,
    policy: &Policy,
    owner: &OwnerKey,
    ledger: &Mutex<Ledger>,
    cycle: usize,
) {
    let list = teekms_client::connect_verified(url, policy, Some(owner), teekms_server::now_unix())
        .await
        .unwrap()
        .list()
        .await
        .unwrap();
    assert!(
        list.damaged.is_empty(),
        "cycle {cycle}: damaged records {:?}",
        list.damaged
    );
    let present: BTreeMap<String, String> = list
        .keys
        .into_iter()
        .map(|k| (k.key_id, k.kcv.to_hex()))
        .collect();
    let l = ledger.lock().unwrap();
    for id in &l.acknowledged {
        assert_eq!(
            present.get(id),
            l.attempted.get(id),
            "cycle {cycle}: acknowledged key {id} lost or changed"
        );
    }
    for (id, kcv) in &present {
        assert_eq!(
            l.attempted.get(id),
            Some(kcv),
            "cycle {cycle}: key {id} was never sent with this material"
        );
    }
}
