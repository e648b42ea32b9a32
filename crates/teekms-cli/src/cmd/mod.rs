//! One module per command group, except `use_keys`, which holds the groups that use a
//! node's deployed keys through one verified connection (key administration, envelope,
//! access, cluster and audit).

mod age;
mod attest;
mod collateral;
mod connect;
mod crypt;
mod demo;
mod docs;
mod evidence;
mod key;
mod owner;
mod recovery;
mod serve;
mod tee;
mod use_keys;
mod workload;

use crate::cli::{Command, FreshnessCmd, SimCmd};
use crate::failure::CmdResult;

/// Runs a command, then checks what every node it reached showed of its store's epoch
/// (spec/freshness-v1.md): a rollback ends any command with exit 1.
pub async fn run(command: Command) -> CmdResult {
    let result = dispatch(command).await;
    match (result, crate::freshness::check_after_command(now())) {
        (_, Err(crate::freshness::Stale::RolledBack(f))) => Err(f),
        (Ok(()), Err(crate::freshness::Stale::Unproven(f))) => Err(f),
        (result, _) => result,
    }
}

async fn dispatch(command: Command) -> CmdResult {
    match command {
        Command::Owner(c) => owner::run(c),
        Command::Serve(a) => serve::run(*a).await,
        Command::Sim(SimCmd::Root(a)) => serve::sim_root(a),
        Command::Sim(SimCmd::Measure { file }) => {
            let m = teekms_platform::sim::measure_file(&file)
                .map_err(|e| crate::failure::Failure::usage(e.to_string()))?;
            println!("{}", hex::encode(m));
            Ok(())
        }
        Command::Workload(c) => workload::run(c).await,
        Command::Recovery(c) => recovery::run(c),
        Command::Cluster(c) => use_keys::cluster(c).await,
        Command::Ca(c) => connect::ca(c).await,
        Command::Age(c) => age::run(c).await,
        Command::Attest(c) => attest::run(c).await,
        Command::Evidence(c) => evidence::run(c),
        Command::Collateral(c) => collateral::run(c).await,
        Command::Key(c) => key::run(c).await,
        Command::Encrypt(a) => crypt::encrypt(a).await,
        Command::Decrypt(a) => crypt::decrypt(a).await,
        Command::Envelope(c) => use_keys::envelope(c).await,
        Command::Access(c) => use_keys::access(c).await,
        Command::Audit(c) => use_keys::audit(c).await,
        Command::Freshness(FreshnessCmd::Show { json }) => crate::freshness::show(json),
        Command::Demo => demo::run().await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
    }
}

/// The verification time: this machine's clock.
pub fn now() -> u64 {
    teekms_server::now_unix()
}

pub fn parse_url(s: &str) -> Result<teekms_client::NodeUrl, crate::failure::Failure> {
    teekms_client::NodeUrl::parse(s).map_err(|e| crate::failure::Failure::usage(e.to_string()))
}

/// Warns on stderr when the evidence is from the simulated TEE.
pub fn warn_if_sim(tee: teekms_attest::TeeKind) {
    if tee == teekms_attest::TeeKind::Sim {
        eprintln!("warning: this node uses the sim TEE: INSECURE, for development and tests only");
    }
}

/// `--at` or now.
pub fn time_arg(at: &Option<String>) -> Result<u64, crate::failure::Failure> {
    match at {
        Some(s) => teekms_attest::parse_rfc3339(s).ok_or_else(|| {
            crate::failure::Failure::usage(format!(
                "--at {s:?} is not an RFC 3339 UTC time like 2025-07-19T10:00:00Z"
            ))
        }),
        None => Ok(now()),
    }
}

/// Prints verdict claims, one `name: value` per line (strings without quotes).
pub fn print_claims(claims: Option<&serde_json::Value>) {
    for (k, v) in claims.and_then(|c| c.as_object()).into_iter().flatten() {
        match v.as_str() {
            Some(s) => println!("  {k}: {s}"),
            None => println!("  {k}: {v}"),
        }
    }
}

/// A Unix time as RFC 3339 (UTC), as people read it everywhere in the CLI.
pub fn format_time(unix: u64) -> String {
    teekms_attest::format_rfc3339(unix)
}

/// Refuses to write a ciphertext to a terminal, as age does: binary on a terminal is
/// unreadable, and can leave the terminal in a broken state. `-o` or a redirection
/// says where it goes.
pub fn refuse_ciphertext_to_terminal(
    output: Option<&std::path::Path>,
) -> Result<(), crate::failure::Failure> {
    use std::io::IsTerminal;
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(crate::failure::Failure::usage(
            "refusing to write binary ciphertext to a terminal",
        )
        .hint("give -o FILE, or redirect standard output to a file or a pipe"));
    }
    Ok(())
}
