//! `teekms`: the command-line tool. Thin: parsing, files, output and exit codes; the work
//! is in the library crates.
//!
//! Exit codes: 0 done/accepted, 1 rejected or refused, 2 usage, configuration or I/O error.

mod cli;
mod cmd;
mod failure;
mod freshness;
mod paths;

use std::process::ExitCode;

use clap::Parser;

use crate::failure::{EXIT_OK, Failure};

/// mimalloc rather than glibc's allocator: a node's requests allocate and free many small
/// buffers across its threads, and glibc's free lists (their consolidation and locking)
/// took about a tenth of the node's CPU time per envelope request. Interleaved runs of
/// `teekms-bench envelope` against the same build with glibc's allocator: ratio 0.35–0.41
/// (median 0.39) against 0.33–0.37 (median 0.35). Built without transparent huge pages
/// (`no_thp`): with them an idle node held 24 MiB instead of 16.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    teekms_platform::sys::release_freed_pages_at_once();
    let cli = cli::Cli::parse();
    let json =
        matches!(&cli.command, cli::Command::Serve(a) if a.log_format == cli::LogFormat::Json);
    // Warnings, and a node's one line per request (target `teekms::request`).
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEEKMS_LOG")
        .unwrap_or_else(|_| "warn,teekms::request=info".into());
    if json {
        paths::JSON_LINES.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colours only on a terminal: a node's log usually goes to a file or a journal.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure {
            code,
            message,
            hint,
        }) => {
            if json {
                paths::say_json("stderr", "ERROR", &message, hint.as_deref());
            } else {
                eprintln!("error: {message}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(code)
        }
    }
}
