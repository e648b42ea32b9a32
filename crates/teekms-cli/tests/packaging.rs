//! The systemd unit (deploy/systemd/teekms.service) passes `systemd-analyze verify`
//! without a word, with its ExecStart pointed at this build's binary (`./test` installs
//! Debian's systemd package for the tool if it is absent).

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("deploy/systemd/teekms.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/teekms serve --tee auto "));
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=teekms",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LimitNOFILE=",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("teekms.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/teekms", env!("CARGO_BIN_EXE_teekms")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; ./test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "systemd-analyze warned: {said}");
}
