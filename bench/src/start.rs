//! `start`: `teekms serve` cold start to the first answered request, and idle RSS.

use super::*;

pub(crate) const STARTS: usize = 15;

pub(crate) async fn first_answer(url: &NodeUrl) {
    loop {
        if let Ok(mut c) = teekms_client::connect(url, None).await
            && c.attestation(None).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) async fn timed_start(teekms: &Path, home: &Path, data: &Path) -> (Duration, Node) {
    let t = Instant::now();
    let node = spawn_node(teekms, home, data);
    first_answer(&NodeUrl::parse(&node.url).unwrap()).await;
    (t.elapsed(), node)
}

pub(crate) async fn start_bench(teekms: &Path) {
    let dir = scratch();
    sim_policy(teekms, dir.path()); // create the sim root outside the timing
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut rss = 0;
    for i in 0..STARTS {
        let data = dir.path().join(format!("node{i}"));
        let (t, node) = timed_start(teekms, dir.path(), &data).await;
        first.push(t);
        drop(node);
        let (t, node) = timed_start(teekms, dir.path(), &data).await;
        again.push(t);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss = rss_kib(node.child.id());
        }
    }
    let (first, again) = (median(first), median(again));
    println!("\n## serve cold start to first answered request (median of {STARTS})");
    println!(
        "new data dir (key generation, sealing, first commit): {:>6.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "existing data dir (unseal):                           {:>6.1} ms",
        again.as_secs_f64() * 1e3
    );
    println!("ratio: {:.2} x the 100 ms goal", first.as_secs_f64() / 0.1);
    println!("\n## idle RSS after one request");
    println!(
        "{:.1} MiB (goal < 30 MiB; ratio {:.2})",
        rss as f64 / 1024.0,
        rss as f64 / 1024.0 / 30.0
    );
}
