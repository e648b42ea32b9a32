//! Shell completions and manual pages, generated from the command-line definition (so
//! they never disagree with it).

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::failure::{CmdResult, Failure};

/// `teekms completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> CmdResult {
    use std::io::Write;
    // Made in memory first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "teekms", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Failure::usage(format!("writing stdout: {e}")))
}

/// `teekms man -o DIR`: `teekms.1`, and `teekms-<sub>[-<sub>…].1` for every subcommand.
pub fn man(dir: &Path) -> CmdResult {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::usage(format!("cannot make {}: {e}", dir.display())))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, "teekms", dir, &mut written)?;
    eprintln!("{written} manual pages in {}", dir.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> CmdResult {
    let page = cmd.clone().name(name.to_owned());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|e| Failure::usage(format!("rendering the {name} page: {e}")))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
