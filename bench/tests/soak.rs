//! The soak in short (30 s): every kind of operation under mixed load, ending with no
//! unexpected error, the audit chain verified and every acknowledged key present.
//! `teekms-bench soak --duration 10m` is the long run (README).

#[test]
fn a_thirty_second_soak_ends_clean() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teekms-bench"))
        .args(["soak", "--duration", "30s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("soak: ") && last.contains(" requests, 0 unexpected errors, RSS "),
        "{stdout}"
    );
    assert!(stdout.contains("audit chain: verified"), "{stdout}");
    assert!(stdout.contains(" 0 lost"), "{stdout}");
}
