//! Prometheus metrics (`serve --metrics-listen ADDR`: plain HTTP on its own listener,
//! `/metrics`, text format 0.0.4). Labels take only values the node chooses — API,
//! route template, outcome class, TEE, verdict — never a key id, owner, token or other
//! string a caller sends (cardinality and privacy).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds of the group-commit size buckets, entries.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The node's metrics.
pub struct Metrics {
    /// Whether anything is scraped (`--metrics-listen`): otherwise requests are not counted.
    enabled: std::sync::atomic::AtomicBool,
    requests: Mutex<BTreeMap<(&'static str, String, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    audit_entries: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    commit_sizes: Mutex<Histogram>,
    commit_seconds: Mutex<Histogram>,
    connections: AtomicI64,
    streams: AtomicI64,
    stream_bytes_in: AtomicU64,
    stream_bytes_out: AtomicU64,
    keys: Mutex<Option<BTreeMap<&'static str, u64>>>,
    epoch: AtomicU64,
    rolled_back: std::sync::atomic::AtomicBool,
    attestations: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    collateral_expires_at: Mutex<Option<u64>>,
    tee: Mutex<&'static str>,
}

/// The process's metrics (one node per process in service).
pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(|| Metrics {
    enabled: std::sync::atomic::AtomicBool::new(false),
    requests: Mutex::default(),
    latency: Mutex::default(),
    audit_entries: AtomicU64::new(0),
    commits: AtomicU64::new(0),
    commit_failures: AtomicU64::new(0),
    commit_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
    commit_seconds: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
    connections: AtomicI64::new(0),
    streams: AtomicI64::new(0),
    stream_bytes_in: AtomicU64::new(0),
    stream_bytes_out: AtomicU64::new(0),
    keys: Mutex::new(None),
    epoch: AtomicU64::new(0),
    rolled_back: std::sync::atomic::AtomicBool::new(false),
    attestations: Mutex::default(),
    collateral_expires_at: Mutex::new(None),
    tee: Mutex::new("unknown"),
});

impl Metrics {
    /// A request answered: its API, route template (or AWS operation), status, time.
    pub fn request(&self, api: &'static str, operation: String, status: u16, took: Duration) {
        let outcome = match status {
            200..=299 => "ok",
            400..=499 => "client_error",
            _ => "server_error",
        };
        *self
            .requests
            .lock()
            .expect("metrics")
            .entry((api, operation, outcome))
            .or_default() += 1;
        self.latency
            .lock()
            .expect("metrics")
            .entry(api)
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// A group commit of `entries` audit entries that took `took` (or failed).
    pub fn commit(&self, entries: usize, took: Duration, ok: bool) {
        if !ok {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.audit_entries
            .fetch_add(entries as u64, Ordering::Relaxed);
        self.commit_sizes
            .lock()
            .expect("metrics")
            .observe(entries as f64);
        self.commit_seconds
            .lock()
            .expect("metrics")
            .observe(took.as_secs_f64());
    }

    /// A connection opened (+1) or closed (−1).
    pub fn connections(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// A stream began (+1) or ended (−1).
    pub fn streams(&self, delta: i64) {
        self.streams.fetch_add(delta, Ordering::Relaxed);
    }

    /// Bytes of a stream's body read (`"in"`) or written (`"out"`).
    pub fn stream_bytes(&self, direction: &'static str, n: usize) {
        let counter = if direction == "in" {
            &self.stream_bytes_in
        } else {
            &self.stream_bytes_out
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The keys in the store by state, as the last deletion sweep counted them.
    pub fn keys(&self, by_state: BTreeMap<&'static str, u64>) {
        *self.keys.lock().expect("metrics") = Some(by_state);
    }

    /// The epoch the node serves (spec/freshness-v1.md).
    pub fn epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The `store_rolled_back` alarm went up or down.
    pub fn rolled_back(&self, up: bool) {
        self.rolled_back.store(up, Ordering::Relaxed);
    }

    /// A workload's (or peer's) evidence checked.
    pub fn attestation(&self, tee: teekms_attest::TeeKind, verified: bool) {
        let verdict = if verified { "verified" } else { "rejected" };
        *self
            .attestations
            .lock()
            .expect("metrics")
            .entry((tee.as_str(), verdict))
            .or_default() += 1;
    }

    /// The node's TEE and its collateral's end of validity, set at start.
    pub fn node(&self, tee: teekms_attest::TeeKind, collateral_expires_at: Option<u64>) {
        self.enabled.store(true, Ordering::Relaxed);
        *self.tee.lock().expect("metrics") = tee.as_str();
        *self.collateral_expires_at.lock().expect("metrics") = collateral_expires_at;
    }

    /// The text exposition format.
    pub fn render(&self, now: u64) -> String {
        let mut out = String::with_capacity(4096);
        let tee = *self.tee.lock().expect("metrics");
        help(
            &mut out,
            "teekms_build_info",
            "gauge",
            "Version and TEE of this node.",
        );
        let _ = writeln!(
            out,
            "teekms_build_info{{version=\"{}\",tee=\"{tee}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        help(
            &mut out,
            "teekms_requests_total",
            "counter",
            "Requests answered, by API, route and outcome.",
        );
        for ((api, op, outcome), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "teekms_requests_total{{api=\"{api}\",operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        help(
            &mut out,
            "teekms_request_duration_seconds",
            "histogram",
            "Time to answer a request, by API.",
        );
        for (api, h) in self.latency.lock().expect("metrics").iter() {
            h.write(
                &mut out,
                "teekms_request_duration_seconds",
                &format!("api=\"{api}\""),
            );
        }
        let counter = |out: &mut String, name: &str, what: &str, v: u64| {
            help(out, name, "counter", what);
            let _ = writeln!(out, "{name} {v}");
        };
        counter(
            &mut out,
            "teekms_audit_entries_total",
            "Audit entries committed.",
            self.audit_entries.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "teekms_audit_commits_total",
            "Group commits of the writer.",
            self.commits.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "teekms_store_commit_failures_total",
            "Group commits that failed (store errors).",
            self.commit_failures.load(Ordering::Relaxed),
        );
        help(
            &mut out,
            "teekms_audit_commit_entries",
            "histogram",
            "Entries per group commit.",
        );
        self.commit_sizes.lock().expect("metrics").write(
            &mut out,
            "teekms_audit_commit_entries",
            "",
        );
        help(
            &mut out,
            "teekms_audit_commit_duration_seconds",
            "histogram",
            "Time of a group commit.",
        );
        self.commit_seconds.lock().expect("metrics").write(
            &mut out,
            "teekms_audit_commit_duration_seconds",
            "",
        );
        let gauge = |out: &mut String, name: &str, what: &str, v: i64| {
            help(out, name, "gauge", what);
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "teekms_connections_open",
            "Open client connections.",
            self.connections.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "teekms_streams_open",
            "Streams in progress.",
            self.streams.load(Ordering::Relaxed),
        );
        help(
            &mut out,
            "teekms_stream_bytes_total",
            "counter",
            "Bytes of stream bodies read (in) and written (out).",
        );
        for (direction, counter) in [
            ("in", &self.stream_bytes_in),
            ("out", &self.stream_bytes_out),
        ] {
            let _ = writeln!(
                out,
                "teekms_stream_bytes_total{{direction=\"{direction}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "teekms_store_reconnects_total",
            "Connections to the shared store (PostgreSQL) made again after one was lost.",
            teekms_store::pg::reconnects(),
        );
        if let Some(keys) = &*self.keys.lock().expect("metrics") {
            help(
                &mut out,
                "teekms_keys",
                "gauge",
                "Keys in the store by state (counted by the deletion sweep, every 30 s).",
            );
            for (state, n) in keys {
                let _ = writeln!(out, "teekms_keys{{state=\"{state}\"}} {n}");
            }
        }
        help(
            &mut out,
            "teekms_epoch",
            "gauge",
            "The store's epoch this node serves (spec/freshness-v1.md).",
        );
        let _ = writeln!(out, "teekms_epoch {}", self.epoch.load(Ordering::Relaxed));
        help(
            &mut out,
            "teekms_store_rolled_back",
            "gauge",
            "1 while the node refuses its store as older than what it acknowledged.",
        );
        let _ = writeln!(
            out,
            "teekms_store_rolled_back {}",
            u8::from(self.rolled_back.load(Ordering::Relaxed))
        );
        help(
            &mut out,
            "teekms_attestation_verifications_total",
            "counter",
            "Evidence of workloads and peers checked, by TEE and verdict.",
        );
        for ((tee, verdict), n) in self.attestations.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "teekms_attestation_verifications_total{{tee=\"{tee}\",verdict=\"{verdict}\"}} {n}"
            );
        }
        if let Some(at) = *self.collateral_expires_at.lock().expect("metrics") {
            help(
                &mut out,
                "teekms_collateral_expiry_seconds",
                "gauge",
                "Seconds until the node's TEE collateral expires.",
            );
            let _ = writeln!(
                out,
                "teekms_collateral_expiry_seconds {}",
                at as i64 - now as i64
            );
        }
        out
    }
}

fn help(out: &mut String, name: &str, kind: &str, what: &str) {
    let _ = writeln!(out, "# HELP {name} {what}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The API and operation label of a request (route templates only).
fn labels(req: &axum::extract::Request, transit_prefix: &str) -> (&'static str, String) {
    const AWS_OPS: [&str; 9] = [
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateRandom",
        "DescribeKey",
        "ListKeys",
        "ListAliases",
    ];
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    if route == "/" {
        let op = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix("TrentService."))
            .filter(|op| AWS_OPS.contains(op))
            .unwrap_or("other");
        return ("aws", op.to_owned());
    }
    if route.starts_with(transit_prefix)
        || route.starts_with("/v1/sys/")
        || route.starts_with("/v1/auth/")
    {
        // One route serves encrypt, decrypt and rewrap: the verb, from a fixed set.
        if route.ends_with("/{verb}/{key}") {
            let verb = req
                .uri()
                .path()
                .get(transit_prefix.len()..)
                .unwrap_or("")
                .split('/')
                .next()
                .filter(|v| ["encrypt", "decrypt", "rewrap"].contains(v))
                .unwrap_or("other");
            return ("transit", format!("{transit_prefix}{verb}/{{key}}"));
        }
        return ("transit", route.to_owned());
    }
    ("native", route.to_owned())
}

/// Counts every request with its labels and latency (a route layer: the route template
/// is known).
pub async fn track(
    axum::extract::State(transit_prefix): axum::extract::State<std::sync::Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Neither counted nor logged (no --metrics-listen, TEEKMS_LOG=warn): no work at all.
    let log = tracing::enabled!(target: "teekms::request", tracing::Level::INFO);
    let count = METRICS.enabled.load(Ordering::Relaxed);
    if !log && !count {
        return next.run(req).await;
    }
    let (api, op) = labels(&req, &transit_prefix);
    let caller = if log {
        caller_kind(&req)
    } else {
        String::new()
    };
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    // The access log: one line per request, never a secret (ids only).
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    tracing::info!(
        target: "teekms::request",
        request_id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
        api,
        operation = %op,
        caller = %caller,
        status,
        latency_ms = took.as_secs_f64() * 1e3,
        "request"
    );
    if count {
        METRICS.request(api, op, status, took);
    }
    response
}

/// Who a request says it is, for the access log: `owner:<fingerprint>`,
/// `workload:<claims digest>`, `access-key:<id>` (the id only, as presented; the secret
/// never), or `anonymous`.
fn caller_kind(req: &axum::extract::Request) -> String {
    if let Some(conn) = req
        .extensions()
        .get::<std::sync::Arc<crate::ops::ConnState>>()
    {
        if let Some(owner) = &conn.owner {
            return format!("owner:{}", owner.fingerprint());
        }
        if let Some(w) = conn.workload.lock().expect("conn lock").as_ref() {
            return format!("workload:{}", w.claims_digest);
        }
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let token = header("x-vault-token")
        .or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ")));
    let id = match (token, header("authorization")) {
        (Some(t), _) => t.trim().split('.').next().map(str::to_owned),
        (None, Some(a)) => teekms_core::sigv4::Authorization::parse(a)
            .ok()
            .map(|a| a.access_key_id),
        (None, None) => return "anonymous".into(),
    };
    match id.filter(|id| teekms_core::access::is_access_key_id(id)) {
        Some(id) => format!("access-key:{id}"),
        None => "access-key:malformed".into(),
    }
}

/// Serves `/metrics` on `listener` (plain HTTP) until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                METRICS.render(crate::now_unix()),
            )
        }),
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(req.map(axum::body::Body::new)).await
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
