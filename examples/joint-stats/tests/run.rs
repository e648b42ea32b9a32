//! The example end to end: `run.sh` with the binaries of this build (no second build).

use std::path::Path;
use std::process::Command;

#[test]
fn run_sh_computes_the_joint_result_and_refuses_an_impostor() {
    let workload = Path::new(env!("CARGO_BIN_EXE_joint-stats-workload"));
    let bin_dir = workload.parent().unwrap();
    assert!(
        bin_dir.join("teekms").exists(),
        "build the teekms binary first (cargo test --workspace builds it)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("TEEKMS_BIN_DIR", bin_dir)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run.sh failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("intersection,,4").count(), 2, "{stdout}");
    assert!(
        stdout.contains("sum_of_first_by_second_group,silver,360"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sum_of_second_by_first_group,south,15"),
        "{stdout}"
    );
    assert!(
        stdout.contains("403 forbidden"),
        "the impostor is refused: {stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
