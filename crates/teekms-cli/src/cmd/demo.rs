//! `teekms demo`: the whole attested deployment flow on embedded defaults, narrated.
//!
//! Everything lives in a fresh temporary directory (owner key, sim root, node data dir),
//! so nothing of the user's is read or touched.

use std::path::Path;
use std::sync::Arc;

use teekms_attest::{AttestationDocument, Freshness, Policy, verify_document};
use teekms_core::{Bundle, DataKey, KeyId, OwnerKey};
use teekms_platform::{Platform, SimPlatform, SimRoot};
use teekms_server::{RunningServer, ServeConfig, serve};

use crate::cmd::now;
use crate::failure::{CmdResult, Failure};
use crate::paths;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::rejected(format!("demo failed: {e}"))
}

async fn start(root: &Path, data_dir: &Path) -> Result<RunningServer, Failure> {
    let platform: Arc<dyn Platform> = Arc::new(SimPlatform::open(root, data_dir).map_err(fail)?);
    serve(ServeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data_dir.to_owned(),
        platform,
        min_deletion_wait: teekms_core::state::DEFAULT_DELETION_WAIT,
        stream_idle_timeout: teekms_server::DEFAULT_STREAM_IDLE_TIMEOUT,
        stream_memory: teekms_server::DEFAULT_STREAM_MEMORY,
        max_connections: None,
        collateral_warn_days: teekms_server::DEFAULT_COLLATERAL_WARN_DAYS,
        recovery: None,
        store: None,
        join: None,
        cluster_policy: None,
        cluster_admin: None,
        tls: Default::default(),
        aws_region: teekms_server::DEFAULT_AWS_REGION.into(),
        transit_mount: teekms_server::DEFAULT_TRANSIT_MOUNT.into(),
        metrics_listen: None,
        advertise: None,
        confirm_data_plane: true,
    })
    .await
    .map_err(fail)
}

pub async fn run() -> CmdResult {
    let dir = tempfile::tempdir()
        .map_err(|e| Failure::usage(format!("cannot make a temporary directory: {e}")))?;
    let d = dir.path();
    println!(
        "teekms demo: the attested key deployment flow, in {}",
        d.display()
    );
    println!(
        "(the node uses the sim TEE: INSECURE, for development only; nothing of yours is touched)"
    );

    step(
        1,
        "The owner creates an identity: an Ed25519 key pair that signs every deployment.",
    );
    let owner = OwnerKey::generate();
    paths::write_new_secret(&d.join("owner.key"), owner.to_pem().as_bytes(), "owner key")?;
    println!("    owner fingerprint {}", owner.public_key().fingerprint());

    step(
        2,
        "A node starts inside the (simulated) TEE and generates its keys there.",
    );
    let root_path = d.join("sim-root.key");
    let data_dir = d.join("node");
    let server = start(&root_path, &data_dir).await?;
    let url = teekms_client::NodeUrl::parse(&server.url()).map_err(fail)?;
    println!("    node {} listening on {}", server.node_id, server.url());

    step(
        3,
        "The owner fetches the node's evidence and verifies it offline against a policy.",
    );
    let sim_root = SimRoot::load_or_create(&root_path)
        .map_err(fail)?
        .public_key();
    let measurement = teekms_platform::sim::measure_current_exe().map_err(fail)?;
    let policy = Policy::sim(sim_root, Some(measurement));
    std::fs::write(d.join("policy.toml"), policy.to_toml()).map_err(fail)?;
    println!(
        "    policy.toml pins the sim root {} and the measurement (SHA-384 of this executable)",
        hex::encode(sim_root)
    );
    let doc = teekms_client::connect(&url, None)
        .await?
        .attestation(None)
        .await?;
    std::fs::write(d.join("node.json"), doc.to_json()).map_err(fail)?;
    let verdict = verify_document(&doc, &policy, Freshness::Offline, now());
    println!(
        "    verdict: verified={} accepted={}; the report data is the hash of a statement naming the HPKE key {}",
        verdict.verified, verdict.accepted, doc.statement.hpke_public_key
    );
    let node = verdict
        .into_verified_node()
        .map_err(|v| fail(v.reasons.join("; ")))?;

    step(
        4,
        "Online deployment: verify fresh evidence, HPKE-wrap a data key to the attested key, send it over the attested TLS channel.",
    );
    let key_a = DataKey::generate();
    let id_a = KeyId::new("customer-db").expect("valid id");
    let mut conn = teekms_client::connect_verified(&url, &policy, Some(&owner), now()).await?;
    let (receipt, _) = conn.deploy(&owner, &id_a, "{}", &key_a).await?;
    println!(
        "    deployed {id_a}: the node's signed receipt names key check value {} = ours",
        receipt.kcv
    );
    drop(conn);

    step(
        5,
        "Offline deployment: wrap a key into a bundle file (the USB stick), then import it on the node.",
    );
    let key_b = DataKey::generate();
    let id_b = KeyId::new("analytics").expect("valid id");
    let bundle = Bundle::wrap(&node, &owner, &id_b, "{}", &key_b).map_err(fail)?;
    std::fs::write(d.join("analytics.bundle"), bundle.to_json()).map_err(fail)?;
    let (receipt, _) = teekms_client::connect(&url, None)
        .await?
        .import(&bundle)
        .await?;
    receipt
        .verify(&node, &owner.public_key(), &id_b, &key_b.kcv())
        .map_err(fail)?;
    println!(
        "    imported {id_b} from analytics.bundle; the receipt verifies against the evidence (kcv {})",
        receipt.kcv
    );

    step(
        6,
        "Restart the node with the same data dir: keys are sealed in SQLite under the cluster key.",
    );
    let node_id = server.node_id.clone();
    server.shutdown().await;
    let server = start(&root_path, &data_dir).await?;
    let url = teekms_client::NodeUrl::parse(&server.url()).map_err(fail)?;
    println!(
        "    node {} is back (same id: {})",
        server.node_id,
        server.node_id == node_id
    );
    let list = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
        .await?
        .list()
        .await?;
    for k in &list.keys {
        println!("    {} version {} kcv {}", k.key_id, k.key_version, k.kcv);
    }
    let survived = list
        .keys
        .iter()
        .any(|k| k.key_id == id_a.as_str() && k.kcv == key_a.kcv())
        && list
            .keys
            .iter()
            .any(|k| k.key_id == id_b.as_str() && k.kcv == key_b.kcv());
    if !survived || !list.damaged.is_empty() {
        return Err(fail("the keys did not survive the restart"));
    }
    println!("    both keys survived, with the same key check values");

    step(
        7,
        "Tampered evidence is refused: flip one bit of the evidence in node.json.",
    );
    let mut tampered: AttestationDocument = doc.clone();
    tampered.evidence[60] ^= 1;
    std::fs::write(d.join("node-tampered.json"), tampered.to_json()).map_err(fail)?;
    let v = verify_document(&tampered, &policy, Freshness::Offline, now());
    println!("    accepted={}: {}", v.accepted, v.reasons.join("; "));
    if v.accepted {
        return Err(fail("tampered evidence was accepted"));
    }

    step(
        8,
        "A policy that pins another sim root is refused, and nothing is sent.",
    );
    let other_root = SimRoot::load_or_create(&d.join("other-root.key"))
        .map_err(fail)?
        .public_key();
    let wrong = Policy::sim(other_root, None);
    match teekms_client::connect_verified(&url, &wrong, Some(&owner), now()).await {
        Ok(_) => return Err(fail("a wrong policy was accepted")),
        Err(e) => println!("    refused: {e}"),
    }
    server.shutdown().await;

    println!(
        "\nDone: two keys deployed to an attested node (online and offline), kept across a restart; bad evidence and a wrong policy refused."
    );
    println!("Next: `teekms owner init`, `teekms serve --tee sim ...` and the tour in README.md.");
    Ok(())
}
