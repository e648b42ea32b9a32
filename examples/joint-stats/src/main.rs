//! The workload of the joint-statistics example: a program that runs in a TEE (here the
//! sim TEE), proves so to a teekms node, fetches two owners' keys by attestation, decrypts
//! their CSV files in memory, computes joint statistics over the shared column, and
//! returns the result encrypted to each owner under that owner's own key. Plaintext
//! exists only in this process.
//!
//! ```text
//! joint-stats-workload --node URL --policy POLICY --sim-root FILE \
//!     --input OWNER_FP:KEY_ID:FILE.tkms --input OWNER_FP:KEY_ID:FILE.tkms --out-dir DIR
//! ```
//!
//! Each input is a CSV whose first column is the shared identifier and whose second and
//! third columns are a group label and a number. The result (CSV) holds the size of the
//! intersection and, over the matching rows, the sum of each owner's numbers per group of
//! the *other* owner's labels.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use teekms_attest::Policy;
use teekms_client::{Identity, NodeUrl};
use teekms_core::stream::Header;
use teekms_core::{DataKey, KeyId, NodeKeys};
use teekms_platform::{Platform, SimPlatform};
use teekms_stream_io as stream;

struct Input {
    owner: String,
    key_id: String,
    file: PathBuf,
}

struct Args {
    node: String,
    policy: PathBuf,
    sim_root: PathBuf,
    inputs: Vec<Input>,
    out_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut node, mut policy, mut sim_root, mut out_dir) = (None, None, None, None);
    let mut inputs = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--node" => node = Some(value()?),
            "--policy" => policy = Some(PathBuf::from(value()?)),
            "--sim-root" => sim_root = Some(PathBuf::from(value()?)),
            "--out-dir" => out_dir = Some(PathBuf::from(value()?)),
            "--input" => {
                let v = value()?;
                let mut parts = v.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(o), Some(k), Some(f)) => inputs.push(Input {
                        owner: o.into(),
                        key_id: k.into(),
                        file: f.into(),
                    }),
                    _ => return Err(format!("--input {v}: expected OWNER_FP:KEY_ID:FILE")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if inputs.len() != 2 {
        return Err("exactly two --input".into());
    }
    Ok(Args {
        node: node.ok_or("--node is required")?,
        policy: policy.ok_or("--policy is required")?,
        sim_root: sim_root.ok_or("--sim-root is required")?,
        inputs,
        out_dir: out_dir.ok_or("--out-dir is required")?,
    })
}

/// One owner's rows: identifier → (group label, number).
type Rows = HashMap<String, (String, f64)>;

fn parse_csv(text: &str, who: &str) -> Result<Rows, String> {
    let mut rows = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let [id, group, value] = cols[..] else {
            return Err(format!("{who}: line {} has not 3 columns", i + 1));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| format!("{who}: line {}: {value:?} is not a number", i + 1))?;
        rows.insert(id.to_owned(), (group.to_owned(), value));
    }
    Ok(rows)
}

/// The joint result: intersection size, and per-group sums across the two owners.
fn joint(a: &Rows, b: &Rows) -> String {
    let mut a_by_b_group: BTreeMap<&str, f64> = BTreeMap::new();
    let mut b_by_a_group: BTreeMap<&str, f64> = BTreeMap::new();
    let mut n = 0;
    for (id, (a_group, a_value)) in a {
        if let Some((b_group, b_value)) = b.get(id) {
            n += 1;
            *a_by_b_group.entry(b_group).or_default() += a_value;
            *b_by_a_group.entry(a_group).or_default() += b_value;
        }
    }
    let mut out = String::from("metric,group,value\n");
    out.push_str(&format!("intersection,,{n}\n"));
    for (g, v) in &a_by_b_group {
        out.push_str(&format!("sum_of_first_by_second_group,{g},{v}\n"));
    }
    for (g, v) in &b_by_a_group {
        out.push_str(&format!("sum_of_second_by_first_group,{g},{v}\n"));
    }
    out
}

async fn run(args: Args) -> Result<(), String> {
    // This program's own keys and evidence, made in its TEE.
    let scratch = std::env::temp_dir().join(format!("joint-stats-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let platform = SimPlatform::open(&args.sim_root, &scratch).map_err(|e| e.to_string())?;
    let keys = NodeKeys::generate();
    // Its RA-TLS certificate carries its evidence: the node sees a workload of this
    // measurement from the handshake on.
    let statement = keys.statement(platform.tee(), None);
    let extension = platform
        .ratls_extension(&statement, keys.tls_spki_der())
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&scratch);
    let policy_text = std::fs::read_to_string(&args.policy).map_err(|e| e.to_string())?;
    let policy = Policy::from_toml(&policy_text).map_err(|e| e.to_string())?;
    let url = NodeUrl::parse(&args.node).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    // Mutual RA-TLS: the node's certificate is verified against the policy in the same
    // handshake.
    let mut conn = teekms_client::connect_attested_as(
        &url,
        &policy,
        Identity::RaTlsWorkload(&keys, &extension),
        now,
        None,
    )
    .await
    .map_err(|e| format!("the node did not verify: {e}"))?;
    let mut tables = Vec::new();
    let mut owner_keys: Vec<(KeyId, u64, DataKey)> = Vec::new();
    for input in &args.inputs {
        let (version, dek) = conn
            .fetch_key(&input.key_id, Some(&input.owner), None, &keys)
            .await
            .map_err(|e| format!("fetching key {} of {}: {e}", input.key_id, input.owner))?;
        let sealed =
            std::fs::read(&input.file).map_err(|e| format!("{}: {e}", input.file.display()))?;
        let mut plain = Vec::new();
        stream::decrypt(&dek, &sealed[..], &mut plain)
            .map_err(|e| format!("{}: {e}", input.file.display()))?;
        let text = String::from_utf8(plain).map_err(|_| "an input is not UTF-8".to_string())?;
        tables.push(parse_csv(&text, &input.owner)?);
        let key_id = KeyId::new(&input.key_id).map_err(|e| e.to_string())?;
        owner_keys.push((key_id, version, dek));
    }
    let result = joint(&tables[0], &tables[1]);
    // The same result, encrypted to each owner under their own key.
    for (i, (key_id, version, dek)) in owner_keys.iter().enumerate() {
        let header = Header::new(key_id.clone(), *version, 12);
        let mut sealed = Vec::new();
        stream::encrypt(dek, &header, result.as_bytes(), &mut sealed).map_err(|e| e.to_string())?;
        let path = args
            .out_dir
            .join(format!("result-for-owner-{}.tkms", i + 1));
        std::fs::write(&path, sealed).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("joint-stats: wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("joint-stats-workload: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("joint-stats-workload: {e}");
            ExitCode::from(1)
        }
    }
}
