//! One store test suite, run on both backends: SQLite in a temp dir, and PostgreSQL on
//! the throwaway server that `./test` starts (its connection string in
//! `TEEKMS_TEST_PG`; each test gets a fresh database).

use teekms_store::pg::PgStore;
use teekms_store::{Applied, KeyRow, Revisioned, SqliteStore, Store, Write};

fn row(owner: &str, id: &str, version: u64, rec: &[u8]) -> KeyRow {
    KeyRow {
        owner: owner.into(),
        key_id: id.into(),
        key_version: version,
        record: rec.to_vec(),
    }
}

fn state(owner: &str, id: &str, revision: u64, expected: u64, rec: &[u8]) -> Write {
    Write::PutState {
        owner: owner.into(),
        key_id: id.into(),
        revision,
        expected,
        record: rec.to_vec(),
    }
}

/// Inserts rows in one transaction, each as its own job (first writer wins).
fn insert(s: &mut dyn Store, rows: &[KeyRow]) -> Vec<Applied> {
    let mut b = s.write_batch().unwrap();
    let r = rows
        .iter()
        .map(|r| b.apply(&[Write::InsertKey(r.clone())]).unwrap())
        .collect();
    b.commit().unwrap();
    r
}

/// Everything the node relies on.
fn suite(s: &mut dyn Store) {
    // Meta: written once, replaced only on purpose.
    assert!(s.init_meta(&[("a", b"1"), ("b", b"2")]).unwrap());
    assert!(!s.init_meta(&[("b", b"3")]).unwrap());
    assert_eq!(s.get_meta("b").unwrap().unwrap(), b"2");
    s.replace_meta(&[("b", b"4")]).unwrap();
    assert_eq!(s.get_meta("b").unwrap().unwrap(), b"4");
    assert!(s.get_meta("zz").unwrap().is_none());

    // Keys: first writer wins; versions; listing.
    let r = insert(
        s,
        &[
            row("o", "a", 1, b"1"),
            row("o", "b", 1, b"2"),
            row("o", "a", 1, b"3"),
        ],
    );
    assert_eq!(r, vec![Applied::Done, Applied::Done, Applied::Conflict]);
    insert(s, &[row("o", "a", 2, b"a2")]);
    assert_eq!(s.get_key("o", "a").unwrap().unwrap().record, b"a2");
    assert_eq!(
        s.get_key_version("o", "a", 1).unwrap().unwrap().record,
        b"1"
    );
    assert_eq!(s.key_versions("o", "a").unwrap().len(), 2);
    assert_eq!(s.list_keys("o").unwrap().len(), 3);
    assert!(s.list_keys("other").unwrap().is_empty());

    // A batch: jobs atomic each, optimistic state, owners, access keys, audit.
    {
        let mut b = s.write_batch().unwrap();
        assert!(b.audit_head().unwrap().is_none());
        assert_eq!(
            b.apply(&[
                Write::RegisterOwner {
                    fingerprint: "fp".into(),
                    public_key: vec![1; 32]
                },
                state("o", "a", 1, 0, b"s1"),
            ])
            .unwrap(),
            Applied::Done
        );
        // A stale revision conflicts, and the job's other writes are rolled back.
        assert_eq!(
            b.apply(&[row_write("o", "c", 1), state("o", "a", 2, 7, b"x")])
                .unwrap(),
            Applied::Conflict
        );
        assert_eq!(
            b.apply(&[state("o", "a", 2, 1, b"s2")]).unwrap(),
            Applied::Done
        );
        assert_eq!(
            b.apply(&[Write::PutAccessKey {
                id: "ak-1".into(),
                owner: "o".into(),
                revision: 1,
                expected: 0,
                record: b"k1".to_vec(),
            }])
            .unwrap(),
            Applied::Done
        );
        for seq in 1..=5 {
            b.append_audit(seq, format!("entry {seq}").as_bytes())
                .unwrap();
        }
        b.commit().unwrap();
    }
    assert!(
        s.get_key("o", "c").unwrap().is_none(),
        "a conflicting job writes nothing"
    );
    assert_eq!(
        s.get_state("o", "a").unwrap().unwrap(),
        Revisioned {
            revision: 2,
            record: b"s2".to_vec()
        }
    );
    assert_eq!(s.all_states().unwrap().len(), 1);
    assert_eq!(s.owner_key("fp").unwrap().unwrap(), vec![1; 32]);
    assert_eq!(
        s.get_access_key("ak-1").unwrap().unwrap(),
        Revisioned {
            revision: 1,
            record: b"k1".to_vec()
        }
    );
    assert_eq!(s.list_access_keys("o").unwrap().len(), 1);
    assert_eq!(s.audit_last().unwrap().unwrap().seq, 5);
    let page: Vec<u64> = s
        .audit_entries(2, 2)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, vec![2, 3]);
    let back: Vec<u64> = s
        .audit_entries_before(5, 3)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(back, vec![4, 3, 2]);

    // A batch dropped without commit changes nothing.
    {
        let mut b = s.write_batch().unwrap();
        assert_eq!(b.audit_head().unwrap().unwrap().seq, 5);
        b.apply(&[state("o", "a", 3, 2, b"s3")]).unwrap();
        b.append_audit(6, b"entry 6").unwrap();
    }
    assert_eq!(s.get_state("o", "a").unwrap().unwrap().revision, 2);
    assert_eq!(s.audit_last().unwrap().unwrap().seq, 5);

    // Deletion of a key: every version and its state, only over the state revision it
    // was decided on.
    {
        let mut b = s.write_batch().unwrap();
        let stale = Write::DeleteKey {
            owner: "o".into(),
            key_id: "a".into(),
            revision: 1,
        };
        assert_eq!(b.apply(&[stale]).unwrap(), Applied::Conflict);
        b.apply(&[Write::DeleteKey {
            owner: "o".into(),
            key_id: "a".into(),
            revision: 2,
        }])
        .unwrap();
        b.commit().unwrap();
    }
    assert!(s.get_key("o", "a").unwrap().is_none());
    assert!(s.get_state("o", "a").unwrap().is_none());
    assert_eq!(s.list_keys("o").unwrap().len(), 1);

    // A meta record written in a batch (the cluster policy): new, then replaced.
    for value in [b"p1", b"p2"] {
        let mut b = s.write_batch().unwrap();
        b.apply(&[Write::PutMeta {
            name: "cluster-policy".into(),
            record: value.to_vec(),
        }])
        .unwrap();
        b.commit().unwrap();
        assert_eq!(s.get_meta("cluster-policy").unwrap().unwrap(), value);
    }
}

fn row_write(owner: &str, id: &str, version: u64) -> Write {
    Write::InsertKey(row(owner, id, version, b"c"))
}

#[test]
fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SqliteStore::open(dir.path()).unwrap();
    suite(&mut s);
    drop(s);
    // Reopening migrates nothing twice and keeps everything.
    let mut s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(Store::audit_last(&mut s).unwrap().unwrap().seq, 5);
}

/// A fresh database on the test server.
fn pg_database() -> String {
    let base = std::env::var("TEEKMS_TEST_PG").expect(
        "TEEKMS_TEST_PG is not set: run the suite with ./test, which installs and starts a throwaway PostgreSQL",
    );
    let name = format!("t{}", hex::encode(rand_bytes()));
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    format!("{base} dbname={name}")
}

fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    b
}

#[test]
fn postgres_passes_the_suite() {
    let url = pg_database();
    let mut s = PgStore::connect(&url).unwrap();
    suite(&mut s);
    drop(s);
    let mut s = PgStore::connect(&url).unwrap();
    assert_eq!(s.audit_last().unwrap().unwrap().seq, 5);
}

/// Nodes share one PostgreSQL: migrations run once whoever starts first, and audit
/// appends from several writers serialize on the lock, so the log has no gap or fork.
#[test]
fn postgres_with_several_writers() {
    let url = pg_database();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut s = PgStore::connect(&url).unwrap();
                for _ in 0..25 {
                    let mut b = s.write_batch().unwrap();
                    let next = b.audit_head().unwrap().map_or(1, |row| row.seq + 1);
                    b.append_audit(next, b"entry").unwrap();
                    b.commit().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut s = PgStore::connect(&url).unwrap();
    let all = s.audit_entries(1, 1000).unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

/// Ends every session on `dbname` but the caller's, as a server restart would.
fn terminate_other_sessions(admin: &mut postgres::Client, dbname: &str) {
    let killed: i64 = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&dbname],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1);
}

/// A lost connection (here its backend terminated, as a server restart would): a read
/// that finds it gone is made again on a new connection; so is the start of a write.
#[test]
fn postgres_reconnects_after_a_lost_connection() {
    let url = pg_database();
    let mut s = PgStore::connect(&url).unwrap();
    insert(&mut s, &[row("o", "a", 1, b"1")]);
    let dbname = url.rsplit("dbname=").next().unwrap().to_owned();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let reconnects = teekms_store::pg::reconnects();
    terminate_other_sessions(&mut admin, &dbname);
    assert_eq!(s.get_key("o", "a").unwrap().unwrap().record, b"1");
    // Counted for the metrics (other tests of this process may reconnect too).
    assert!(teekms_store::pg::reconnects() > reconnects);
    terminate_other_sessions(&mut admin, &dbname);
    let mut b = s.write_batch().unwrap();
    b.apply(&[Write::InsertKey(row("o", "b", 1, b"2"))])
        .unwrap();
    b.commit().unwrap();
    assert_eq!(s.list_keys("o").unwrap().len(), 2);
}
