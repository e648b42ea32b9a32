//! A node whose cluster records live in PostgreSQL (the throwaway server `./test`
//! starts; its address in `TEEKMS_TEST_PG`): keys, states, access keys and the audit log
//! in the database, the node's own sealed records in its data dir. Two nodes holding the
//! same cluster key share it (here: a copy of a sim node's data dir, which in sim is the
//! same "hardware"); a node of another cluster is refused the database.

mod common;

use common::Node;
use teekms_client::secret_of;
use teekms_core::{DataKey, KeyId, OwnerKey};

/// Runs `f` on a blocking thread with a client of `url` (the synchronous client cannot
/// run inside the test's async runtime).
async fn with_pg<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        f(&mut c)
    })
    .await
    .unwrap()
}

fn database() -> String {
    let base = std::env::var("TEEKMS_TEST_PG").expect(
        "TEEKMS_TEST_PG is not set: run the suite with ./test, which starts a throwaway PostgreSQL",
    );
    let mut b = [0u8; 8];
    teekms_core::random_bytes(&mut b);
    let name = format!("n{}", hex::encode(b));
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    format!("{base} dbname={name}")
}

#[tokio::test]
async fn nodes_share_a_postgres_store() {
    let url = tokio::task::spawn_blocking(database).await.unwrap();
    let mut n1 = Node::start_with(Some(url.clone())).await;
    let owner = OwnerKey::generate();
    let dek = DataKey::generate();
    n1.verified(Some(&owner))
        .await
        .deploy(&owner, &KeyId::new("shared").unwrap(), "{}", &dek)
        .await
        .unwrap();
    let mut c1 = n1.verified(Some(&owner)).await;
    let ct = c1
        .encrypt("shared", None, b"in the database", None)
        .await
        .unwrap();

    // The records are in PostgreSQL, not in the data dir's SQLite file.
    let (n, audit): (i64, i64) = with_pg(&url, |pg| {
        (
            pg.query_one("SELECT COUNT(*) FROM data_keys", &[])
                .unwrap()
                .get(0),
            pg.query_one("SELECT COUNT(*) FROM audit", &[])
                .unwrap()
                .get(0),
        )
    })
    .await;
    assert_eq!(n, 1);
    assert!(audit >= 2);

    // A second node with the same cluster key (sim: a copy of the data dir) on the same
    // database: the key deployed through node 1 works through node 2, and a change made
    // on one node is seen by the other.
    n1.stop().await;
    let n2 = n1.sibling(Some(url.clone())).await;
    n1.restart().await;
    let mut c2 = n2.verified(Some(&owner)).await;
    let pt = c2.decrypt(&ct.ciphertext.0, None).await.unwrap();
    assert_eq!(
        &secret_of(&pt, "decrypt", None).unwrap()[..],
        b"in the database"
    );
    c2.rotate("shared").await.unwrap();
    let mut c1 = n1.verified(Some(&owner)).await;
    assert_eq!(
        c1.encrypt("shared", None, b"x", None)
            .await
            .unwrap()
            .key_version,
        2
    );
    c1.set_enabled("shared", false).await.unwrap();
    assert!(
        c2.encrypt("shared", None, b"x", None).await.is_err(),
        "disabled on node 1, refused on node 2"
    );
    // One audit chain across both nodes.
    assert!(c2.audit_verify().await.unwrap().ok);
    let seqs: Vec<i64> = with_pg(&url, |pg| {
        pg.query("SELECT seq FROM audit ORDER BY seq", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    })
    .await;
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    // A node of another cluster (its own fresh cluster key) is refused the database.
    let dir = tempfile::tempdir().unwrap();
    let platform: std::sync::Arc<dyn teekms_platform::Platform> =
        std::sync::Arc::new(teekms_platform::SimPlatform::open(&n1.root, dir.path()).unwrap());
    let r = teekms_server::serve(teekms_server::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("node"),
        platform,
        min_deletion_wait: 0,
        stream_idle_timeout: teekms_server::DEFAULT_STREAM_IDLE_TIMEOUT,
        stream_memory: teekms_server::DEFAULT_STREAM_MEMORY,
        max_connections: None,
        collateral_warn_days: teekms_server::DEFAULT_COLLATERAL_WARN_DAYS,
        recovery: None,
        store: Some(url.clone()),
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
    .await;
    let err = r
        .err()
        .expect("a node of another cluster must be refused")
        .to_string();
    assert!(err.contains("another cluster"), "{err}");
}

/// A node on a new database, and its owner's connection, with the key "k" deployed.
async fn node_with_key_k() -> (String, Node, teekms_client::VerifiedConnection) {
    let url = tokio::task::spawn_blocking(database).await.unwrap();
    let node = Node::start_with(Some(url.clone())).await;
    let owner = OwnerKey::generate();
    let mut c = node.verified(Some(&owner)).await;
    c.deploy(
        &owner,
        &KeyId::new("k").unwrap(),
        "{}",
        &DataKey::generate(),
    )
    .await
    .unwrap();
    (url, node, c)
}

/// The database ends every session of the node (as a server restart would) while the
/// node is in steady use: the next operations, writes included, are served on new
/// connections; none is refused.
#[tokio::test]
async fn a_node_carries_on_after_its_database_sessions_end() {
    let (url, _node, mut c) = node_with_key_k().await;
    // Every connection of the node (readers and writer) has been used.
    for _ in 0..4 {
        c.encrypt("k", None, b"before", None).await.unwrap();
    }
    let dbname = url.rsplit("dbname=").next().unwrap().to_owned();
    let ended: i64 = with_pg(&url, move |pg| {
        pg.query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .unwrap()
        .get(0)
    })
    .await;
    assert!(ended >= 2, "the node's sessions were ended ({ended})");
    for _ in 0..4 {
        c.encrypt("k", None, b"after", None)
            .await
            .expect("served on a new connection");
    }
    c.rotate("k").await.expect("a key change after the loss");
    assert!(c.audit_verify().await.unwrap().ok);
}

/// The newest audit entries cut from the shared database under a running node (a
/// rollback): the node refuses to write on the cut log, and carries on once they are back.
#[tokio::test]
async fn a_cut_audit_log_in_the_database_is_refused() {
    let (url, _node, mut c) = node_with_key_k().await;
    c.encrypt("k", None, b"m", None).await.unwrap();
    let count = |pg: &mut postgres::Client| -> i64 {
        pg.query_one("SELECT COUNT(*) FROM audit", &[])
            .unwrap()
            .get(0)
    };
    let cut = with_pg(&url, move |pg| {
        pg.batch_execute(
            "CREATE TABLE cut AS SELECT * FROM audit WHERE seq = (SELECT MAX(seq) FROM audit);
             DELETE FROM audit WHERE seq IN (SELECT seq FROM cut);",
        )
        .unwrap();
        count(pg)
    })
    .await;
    let e = c.encrypt("k", None, b"m", None).await.unwrap_err();
    assert!(
        matches!(&e, teekms_client::ClientError::Api { status: 503, code, .. } if code == "store_rolled_back"),
        "{e}"
    );
    let after = with_pg(&url, move |pg| count(pg)).await;
    assert_eq!(after, cut, "nothing appended to the cut log");
    with_pg(&url, |pg| {
        pg.batch_execute("INSERT INTO audit SELECT * FROM cut; DROP TABLE cut;")
            .unwrap()
    })
    .await;
    _node.until_ready().await;
    c.encrypt("k", None, b"m", None).await.unwrap();
    assert!(c.audit_verify().await.unwrap().ok);
}

/// Three nodes on one database: node 2 joins node 1 and node 3 joins node 2 over mutual
/// RA-TLS (each new node's evidence checked against the stored cluster policy, the
/// cluster key sealed to it); a key deployed through node 1 is used through nodes 2 and
/// 3 at once; a node from another sim root is refused and learns nothing.
#[tokio::test]
async fn nodes_join_a_cluster_by_attestation() {
    let url = tokio::task::spawn_blocking(database).await.unwrap();
    let n1 = Node::start_with(Some(url.clone())).await;
    let n2 = Node::joining(&n1, url.clone()).await.unwrap();
    let n3 = Node::joining(&n2, url.clone()).await.unwrap();
    let owner = OwnerKey::generate();
    let dek = DataKey::generate();
    n1.verified(Some(&owner))
        .await
        .deploy(&owner, &KeyId::new("k").unwrap(), "{}", &dek)
        .await
        .unwrap();
    let mut c1 = n1.verified(Some(&owner)).await;
    let ct = c1.encrypt("k", None, b"one cluster", None).await.unwrap();
    let (a, b) = tokio::join!(
        async {
            let mut c = n2.verified(Some(&owner)).await;
            c.decrypt(&ct.ciphertext.0, None).await.unwrap()
        },
        async {
            let mut c = n3.verified(Some(&owner)).await;
            c.decrypt(&ct.ciphertext.0, None).await.unwrap()
        }
    );
    for r in [a, b] {
        assert_eq!(&secret_of(&r, "decrypt", None).unwrap()[..], b"one cluster");
    }
    // The joiners restart on their own sealed copy of the cluster key.
    let mut n3 = n3;
    n3.restart().await;
    let mut c3 = n3.verified(Some(&owner)).await;
    assert!(c3.decrypt(&ct.ciphertext.0, None).await.is_ok());
    let tail = c1.audit_tail(50).await;
    assert!(tail.is_ok());

    // Another sim root: the newcomer accepts node 1 (its policy names node 1's root),
    // but the stored cluster policy (same TEE, measurement and sim root as the first
    // node) does not admit the newcomer: refused, and nothing is stored for it.
    let other = tempfile::tempdir().unwrap();
    let accepts_n1 = n1.policy.to_toml();
    let err = Node::joining_with_root(
        &n1,
        url.clone(),
        &other.path().join("other-root.key"),
        Some(accepts_n1),
    )
    .await
    .err()
    .expect("a node the cluster policy does not admit joined");
    assert!(
        err.contains("refused") && err.contains("does not admit"),
        "{err}"
    );
}

/// Under a running two-node cluster, each record kind of a key removed or swapped with
/// another key's (or owner's) in PostgreSQL: every node refuses the key as damaged
/// (409 `record_damaged`), never serves it in another state; put back, it serves again.
/// A key deleted on one node stays deleted on the other.
#[tokio::test]
async fn records_removed_or_swapped_in_postgres_are_damage_on_every_node() {
    let url = tokio::task::spawn_blocking(database).await.unwrap();
    let n1 = Node::start_with(Some(url.clone())).await;
    let n2 = Node::joining(&n1, url.clone()).await.unwrap();
    let owner = OwnerKey::generate();
    let other = OwnerKey::generate();
    let mut c1 = n1.verified(Some(&owner)).await;
    let mut c2 = n2.verified(Some(&owner)).await;
    let deks: Vec<DataKey> = (0..3).map(|_| DataKey::generate()).collect();
    for (id, dek) in ["a", "b", "c"].iter().zip(&deks) {
        c1.deploy(&owner, &KeyId::new(id).unwrap(), "{}", dek)
            .await
            .unwrap();
    }
    n1.verified(Some(&other))
        .await
        .deploy(
            &other,
            &KeyId::new("z").unwrap(),
            "{}",
            &DataKey::generate(),
        )
        .await
        .unwrap();
    c1.set_enabled("a", false).await.unwrap();
    let fp = owner.public_key().fingerprint();

    fn damaged<T>(r: Result<T, teekms_client::ClientError>) -> (u16, String) {
        match r {
            Err(teekms_client::ClientError::Api { status, code, .. }) => (status, code),
            Ok(_) => (200, "served".into()),
            Err(e) => panic!("{e}"),
        }
    }
    let cases: Vec<(&str, String)> = vec![
        (
            "state removed",
            format!("DELETE FROM key_state WHERE owner = '{fp}' AND key_id = 'a'"),
        ),
        (
            "state swapped with b's",
            format!(
                "UPDATE key_state SET revision = s.revision, record = s.record FROM key_state s WHERE key_state.owner = '{fp}' AND key_state.key_id = 'a' AND s.owner = '{fp}' AND s.key_id = 'b'"
            ),
        ),
        (
            "key record removed",
            format!("DELETE FROM data_keys WHERE owner = '{fp}' AND key_id = 'a'"),
        ),
        (
            "key record swapped with b's",
            format!(
                "UPDATE data_keys SET record = s.record FROM data_keys s WHERE data_keys.owner = '{fp}' AND data_keys.key_id = 'a' AND s.owner = '{fp}' AND s.key_id = 'b'"
            ),
        ),
    ];
    for (what, statement) in cases {
        let saved = with_pg(&url, |pg| {
            let rows = pg
                .query("SELECT key_id, revision, record FROM key_state", &[])
                .unwrap();
            let keys = pg
                .query(
                    "SELECT owner, key_id, key_version, record FROM data_keys",
                    &[],
                )
                .unwrap();
            (
                rows.iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, Vec<u8>>(2),
                        )
                    })
                    .collect::<Vec<_>>(),
                keys.iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, String>(1),
                            r.get::<_, i64>(2),
                            r.get::<_, Vec<u8>>(3),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        with_pg(&url, move |pg| pg.batch_execute(&statement).unwrap()).await;
        for c in [&mut c1, &mut c2] {
            assert_eq!(
                damaged(c.describe("a", None).await),
                (409, "record_damaged".into()),
                "{what}"
            );
            // Never served: refused as damaged, or (its state intact) as disabled before
            // the key record is opened.
            let (status, code) = damaged(c.encrypt("a", None, b"x", None).await);
            assert!(
                status == 409 && (code == "record_damaged" || code == "key_state"),
                "{what}: {status} {code}"
            );
        }
        let fp2 = fp.clone();
        with_pg(&url, move |pg| {
            pg.batch_execute(&format!(
                "DELETE FROM key_state WHERE owner = '{fp2}'; DELETE FROM data_keys WHERE owner = '{fp2}';"
            ))
            .unwrap();
            for (id, rev, rec) in saved.0 {
                pg.execute(
                    "INSERT INTO key_state (owner, key_id, revision, record) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&fp2, &id, &rev, &rec],
                )
                .unwrap();
            }
            for (o, id, v, rec) in saved.1 {
                pg.execute(
                    "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&o, &id, &v, &rec],
                )
                .unwrap();
            }
        })
        .await;
        // Put back: disabled, as it was.
        assert!(!c2.describe("a", None).await.unwrap().enabled, "{what}");
    }

    // Access keys: removed, the token is refused; swapped with another one's record, it
    // is refused as damaged. Never served with another grant.
    let mut tokens = Vec::new();
    for key in ["a", "b"] {
        let created = c1
            .create_access_key(
                vec![key.into()],
                vec![teekms_core::access::Operation::Describe],
                None,
                key,
            )
            .await
            .unwrap();
        tokens.push(created);
    }
    let first = tokens[0].info.id.clone();
    for (what, statement) in [
        (
            "access key removed",
            format!("DELETE FROM access_keys WHERE id = '{first}'"),
        ),
        (
            "access key swapped",
            format!(
                "UPDATE access_keys SET record = s.record FROM access_keys s WHERE access_keys.id = '{first}' AND s.id = '{}'",
                tokens[1].info.id
            ),
        ),
    ] {
        let saved: (i64, Vec<u8>) = {
            let first = first.clone();
            with_pg(&url, move |pg| {
                let r = pg
                    .query_one(
                        "SELECT revision, record FROM access_keys WHERE id = $1",
                        &[&first],
                    )
                    .unwrap();
                (r.get(0), r.get(1))
            })
            .await
        };
        with_pg(&url, move |pg| pg.batch_execute(&statement).unwrap()).await;
        for node in [&n1, &n2] {
            let mut a = node.verified(None).await;
            a.use_access_key(&tokens[0].token);
            let (status, code) = damaged(a.describe("a", Some(&fp)).await);
            // A node that wrote or read the record holds a floor for it: its removal
            // is a rollback there (spec/freshness-v1.md).
            assert!(
                (status, code.as_str()) == (401, "unauthenticated")
                    || (status, code.as_str()) == (409, "record_damaged")
                    || (status, code.as_str()) == (503, "store_rolled_back"),
                "{what}: {status} {code}"
            );
        }
        let (owner_fp, first) = (fp.clone(), first.clone());
        with_pg(&url, move |pg| {
            pg.execute(
                "INSERT INTO access_keys (id, owner, revision, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, record = excluded.record",
                &[&first, &owner_fp, &saved.0, &saved.1],
            )
            .unwrap();
        })
        .await;
        n1.until_ready().await;
        n2.until_ready().await;
    }

    // Deletion on node 1 is final on node 2, and the owner's record cannot be dropped
    // or swapped to make it forget.
    c1.schedule_deletion("c", Some("1s")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let _ = c1.encrypt("c", None, b"x", None).await;
    let again = c2
        .deploy(&owner, &KeyId::new("c").unwrap(), "{}", &deks[2])
        .await;
    assert_eq!(damaged(again), (410, "deleted".into()));
    let fp2 = fp.clone();
    let other_fp = other.public_key().fingerprint();
    for statement in [
        format!("DELETE FROM owner_state WHERE owner = '{fp2}'"),
        format!(
            "UPDATE owner_state SET revision = s.revision, record = s.record FROM owner_state s WHERE owner_state.owner = '{fp2}' AND s.owner = '{other_fp}'"
        ),
    ] {
        let fp3 = fp2.clone();
        let saved: (i64, Vec<u8>) = with_pg(&url, move |pg| {
            let r = pg
                .query_one(
                    "SELECT revision, record FROM owner_state WHERE owner = $1",
                    &[&fp3],
                )
                .unwrap();
            (r.get(0), r.get(1))
        })
        .await;
        with_pg(&url, move |pg| pg.batch_execute(&statement).unwrap()).await;
        let again = c2
            .deploy(&owner, &KeyId::new("c").unwrap(), "{}", &deks[2])
            .await;
        let refused = damaged(again);
        assert!(
            refused == (409, "record_damaged".into())
                || refused == (503, "store_rolled_back".into()),
            "{refused:?}"
        );
        let fp3 = fp2.clone();
        with_pg(&url, move |pg| {
            pg.execute(
                "INSERT INTO owner_state (owner, revision, record) VALUES ($1, $2, $3)
                 ON CONFLICT (owner) DO UPDATE SET revision = excluded.revision, record = excluded.record",
                &[&fp3, &saved.0, &saved.1],
            )
            .unwrap();
        })
        .await;
        n1.until_ready().await;
        n2.until_ready().await;
    }
}
