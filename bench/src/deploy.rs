//! `deploy`: durable online deployments per second, next to a bare SQLite insert-and-commit
//! loop with the same durability settings.

use super::*;

pub(crate) const DEPLOY_SECONDS: u64 = 10;

pub(crate) const CLIENTS: usize = 16;

pub(crate) fn sqlite_baseline(dir: &Path, seconds: u64) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("baseline.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE data_keys (owner TEXT NOT NULL, key_id TEXT NOT NULL, key_version INTEGER NOT NULL,
         record BLOB NOT NULL, PRIMARY KEY (owner, key_id, key_version)) STRICT",
    )
    .unwrap();
    // Same row shape as a deployment: 64-char owner, short id, ~190-byte sealed record.
    let owner = "ab".repeat(32);
    let record = vec![7u8; 190];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        conn.execute(
            "INSERT INTO data_keys (owner, key_id, key_version, record) VALUES (?1, ?2, 1, ?3)",
            rusqlite::params![owner, format!("k{n}"), record],
        )
        .unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub(crate) async fn deploy_bench(teekms: &Path) {
    let dir = scratch();
    let baseline = sqlite_baseline(dir.path(), DEPLOY_SECONDS);
    let node = spawn_node(teekms, dir.path(), &dir.path().join("node"));
    let url = NodeUrl::parse(&node.url).unwrap();
    let policy = Arc::new(sim_policy(teekms, dir.path()));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(DEPLOY_SECONDS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, policy, done) = (url.clone(), policy.clone(), done.clone());
            tokio::spawn(async move {
                let owner = OwnerKey::generate();
                let mut conn = teekms_client::connect_verified(&url, &policy, Some(&owner), now())
                    .await
                    .unwrap();
                let mut n = 0;
                while Instant::now() < deadline {
                    let id = KeyId::new(&format!("c{c}-{n}")).unwrap();
                    conn.deploy(&owner, &id, "{}", &DataKey::generate())
                        .await
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!(
        "\n## Durable online deployments ({CLIENTS} concurrent owners, {DEPLOY_SECONDS} s each)"
    );
    println!("bare SQLite insert+commit loop (WAL, synchronous=FULL): {baseline:>9.0} /s");
    println!("teekms deploy (attested TLS, HPKE, receipt, group commit): {rate:>7.0} /s");
    println!(
        "ratio: {:.2} x the bare SQLite loop (goal >= 0.5)",
        rate / baseline
    );
}
