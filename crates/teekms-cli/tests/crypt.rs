//! `teekms encrypt` / `decrypt` through the real binary: files, pipes, devices, tampering.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::Env;

#[test]
fn files_pipes_and_tampering() {
    let env = Env::new();
    let dek = env.path("dek");
    env.ok(&["key", "generate", "-o", dek.to_str().unwrap()]);
    let d = dek.to_str().unwrap();
    let plain = env.path("plain");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&plain, &data).unwrap();
    let (sealed, opened) = (env.path("sealed"), env.path("opened"));
    env.ok(&[
        "encrypt",
        "--key-id",
        "db",
        "--dek",
        d,
        "-i",
        plain.to_str().unwrap(),
        "-o",
        sealed.to_str().unwrap(),
        "--chunk-log2",
        "16",
    ]);
    env.ok(&[
        "decrypt",
        "--dek",
        d,
        "-i",
        sealed.to_str().unwrap(),
        "-o",
        opened.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&opened).unwrap(), data);
    // /dev/null is a device: streamed, no temporary file games.
    env.ok(&[
        "decrypt",
        "--dek",
        d,
        "-i",
        sealed.to_str().unwrap(),
        "-o",
        "/dev/null",
    ]);

    // stdin to stdout, through a pipe.
    let mut child = env
        .cmd()
        .args(["encrypt", "--key-id", "db", "--dek", d])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let piped = env.path("piped");
    std::fs::write(&piped, &out.stdout).unwrap();
    let (code, back, _) = {
        let o = env
            .cmd()
            .args(["decrypt", "--dek", d, "-i", piped.to_str().unwrap()])
            .output()
            .unwrap();
        (o.status.code().unwrap(), o.stdout, ())
    };
    assert_eq!(code, 0);
    assert_eq!(back, data);

    // One altered byte: exit 1, and the named output never appears, not even partly.
    let mut bad = std::fs::read(&sealed).unwrap();
    let n = bad.len();
    bad[n - 100] ^= 1;
    let tampered = env.path("tampered");
    std::fs::write(&tampered, &bad).unwrap();
    let target = env.path("never");
    let (code, _, err) = env.run(&[
        "decrypt",
        "--dek",
        d,
        "-i",
        tampered.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("failed authentication"), "{err}");
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("teekms-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files are removed");
    // Streamed to stdout, a failure still exits 1.
    let (code, _, _) = env.run(&["decrypt", "--dek", d, "-i", tampered.to_str().unwrap()]);
    assert_eq!(code, 1);
    // The wrong key.
    let other = env.path("other");
    env.ok(&["key", "generate", "-o", other.to_str().unwrap()]);
    let (code, _, _) = env.run(&[
        "decrypt",
        "--dek",
        other.to_str().unwrap(),
        "-i",
        sealed.to_str().unwrap(),
        "-o",
        "/dev/null",
    ]);
    assert_eq!(code, 1);
    // Not a stream at all.
    let (code, _, err) = env.run(&[
        "decrypt",
        "--dek",
        d,
        "-i",
        plain.to_str().unwrap(),
        "-o",
        "/dev/null",
    ]);
    assert_eq!(code, 1, "{err}");
}

/// On a terminal (a pseudo-terminal made by `script`, from util-linux's bsdutils, which
/// Debian always installs), `encrypt` without `-o` refuses to write ciphertext, as age
/// does; redirected, it writes.
#[test]
fn ciphertext_is_never_written_to_a_terminal() {
    let env = Env::new();
    let dek = env.path("dek");
    env.ok(&["key", "generate", "-o", dek.to_str().unwrap()]);
    let line = format!(
        "{} encrypt --dek {} --key-id k < /dev/null",
        common::bin().display(),
        dek.display()
    );
    let out = at_a_terminal(&env, &line);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("refusing to write binary ciphertext to a terminal"),
        "{shown}"
    );
    // The same command with its output redirected writes the stream.
    let out = piped(&env, &line);
    assert!(out.status.success());
    assert!(out.stdout.starts_with(b"TKMS-STR"));
}

/// Progress goes to a terminal only: shown under a pseudo-terminal, absent when stderr is
/// a pipe (logs and scripts get no carriage returns).
#[test]
fn progress_is_shown_on_a_terminal_only() {
    let env = Env::new();
    let dek = env.path("dek");
    env.ok(&["key", "generate", "-o", dek.to_str().unwrap()]);
    let input = env.path("big");
    std::fs::write(&input, vec![7u8; 3 << 20]).unwrap();
    let line = format!(
        "{} encrypt --dek {} --key-id k -i {} -o {}",
        common::bin().display(),
        dek.display(),
        input.display(),
        env.path("big.tkms").display()
    );
    let out = at_a_terminal(&env, &line);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("100.0% 3 MiB"), "{shown}");
    let out = piped(&env, &line);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains('%'));
}

/// Runs a shell command line with its standard output and error on a pseudo-terminal
/// (`script`, from util-linux's bsdutils, which Debian always installs), as at a
/// terminal; what it showed comes back as stdout.
fn at_a_terminal(env: &Env, line: &str) -> std::process::Output {
    std::process::Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .env("HOME", env.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The same command line with its output and error going to pipes.
fn piped(env: &Env, line: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", line])
        .env("HOME", env.dir.path())
        .output()
        .unwrap()
}
