//! README's five-minute tour, run as the script it is (`examples/tour/run.sh`) with this
//! build's binary, and README checked to show the script's steps word for word.

use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_tour_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("examples/tour/run.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let start = text.find("# --- tour ---\n").unwrap() + "# --- tour ---\n".len();
    let end = text.find("# --- end ---").unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&text[start..end]),
        "README's tour is not the script's (examples/tour/run.sh, between the markers)"
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_teekms")).parent().unwrap();
    // From another directory: the script finds its way and keeps to its temp dir.
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(std::env::temp_dir())
        .env("TEEKMS_BIN_DIR", bin_dir)
        .output()
        .unwrap();
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("== tour: every step ran"), "{shown}");
    assert!(shown.contains("audit log verified"), "{shown}");
}
