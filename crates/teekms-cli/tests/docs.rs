//! Shell completions and manual pages, generated from the CLI definition.

mod common;

use common::Env;

/// The bash completion loads in bash and completes a subcommand (and a nested one).
#[test]
fn bash_completes_subcommands() {
    let env = Env::new();
    let script = env.path("teekms.bash");
    std::fs::write(&script, env.ok(&["completions", "bash"])).unwrap();
    // As bash calls a completion function: the command, the word being completed and
    // the word before it, with COMP_WORDS and COMP_CWORD set.
    let complete = |words: &[&str]| {
        let cword = words.len() - 1;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; _teekms teekms {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display(),
                words.join(" "),
                words[cword],
                words[cword - 1],
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete(&["teekms", "ke"]).trim(), "key");
    let key = complete(&["teekms", "key", "dep"]);
    assert_eq!(key.trim(), "deploy", "{key}");
    for shell in ["zsh", "fish"] {
        assert!(env.ok(&["completions", shell]).contains("teekms"));
    }
}

/// `teekms man -o DIR` writes `teekms.1` and a page per subcommand, in roff.
#[test]
fn man_pages_for_every_subcommand() {
    let env = Env::new();
    let dir = env.path("man");
    env.ok(&["man", "-o", dir.to_str().unwrap()]);
    for page in [
        "teekms.1",
        "teekms-serve.1",
        "teekms-key.1",
        "teekms-key-deploy.1",
        "teekms-audit-tail.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let deploy = std::fs::read_to_string(dir.join("teekms-key-deploy.1")).unwrap();
    assert!(
        deploy.contains("\\-\\-policy") || deploy.contains("--policy"),
        "{deploy}"
    );
}
