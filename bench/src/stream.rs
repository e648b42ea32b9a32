//! `stream`: `teekms encrypt` / `decrypt` of a 1 GiB file, next to `age` and `cat`.

use super::*;

/// Wall time of a command with stdout to /dev/null.
pub(crate) fn time_cmd(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).status().expect("command runs");
    assert!(status.success(), "{cmd:?} failed");
    t.elapsed()
}

/// Best of three runs (the page cache and the machine's noise favour no one this way).
pub(crate) fn best_of_5(mut f: impl FnMut() -> Duration) -> Duration {
    (0..5).map(|_| f()).min().unwrap()
}

pub(crate) fn stream_bench(teekms: &Path) {
    const SIZE: usize = 1 << 30;
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let plain = dir.path().join("plain");
    {
        // Random-looking data, made fast: AES-CTR-like expansion through the AEAD itself.
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).unwrap());
        let mut f = std::fs::File::create(&plain).unwrap();
        let mut buf = vec![0u8; 1 << 24];
        for i in 0..(SIZE / buf.len()) {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let _ = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::empty(),
                &mut buf,
            );
            std::io::Write::write_all(&mut f, &buf).unwrap();
        }
    }
    let dek = dir.path().join("dek");
    let out = Command::new(teekms)
        .args(["key", "generate", "-o"])
        .arg(&dek)
        .output()
        .unwrap();
    assert!(out.status.success());
    let age_key = dir.path().join("age.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&age_key)
        .output()
        .expect("age-keygen (apt-get install age)");
    assert!(out.status.success());
    let recipient = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_owned();
    // Ciphertexts to decrypt (setup, not measured).
    let sealed = dir.path().join("plain.tkms");
    let aged = dir.path().join("plain.age");
    time_cmd(
        Command::new(teekms)
            .args(["encrypt", "--key-id", "bench", "--dek"])
            .arg(&dek)
            .arg("-i")
            .arg(&plain)
            .arg("-o")
            .arg(&sealed),
    );
    time_cmd(
        Command::new("age")
            .args(["-r", &recipient, "-o"])
            .arg(&aged)
            .arg(&plain),
    );

    let gib = |d: Duration| SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
    let cat = best_of_5(|| time_cmd(Command::new("cat").arg(&plain)));
    let enc = best_of_5(|| {
        time_cmd(
            Command::new(teekms)
                .args(["encrypt", "--key-id", "bench", "--dek"])
                .arg(&dek)
                .arg("-i")
                .arg(&plain)
                .args(["-o", "/dev/null"]),
        )
    });
    let dec = best_of_5(|| {
        time_cmd(
            Command::new(teekms)
                .args(["decrypt", "--dek"])
                .arg(&dek)
                .arg("-i")
                .arg(&sealed)
                .args(["-o", "/dev/null"]),
        )
    });
    let age_enc = best_of_5(|| {
        time_cmd(
            Command::new("age")
                .args(["-r", &recipient, "-o", "/dev/null"])
                .arg(&plain),
        )
    });
    let age_dec = best_of_5(|| {
        time_cmd(
            Command::new("age")
                .args(["-d", "-i"])
                .arg(&age_key)
                .args(["-o", "/dev/null"])
                .arg(&aged),
        )
    });
    // The AEAD alone, in memory, one core.
    let aead = {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).unwrap());
        let mut buf = vec![0u8; 1 << 18];
        let per = time_per_op(|| {
            let _ = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            );
        });
        buf.len() as f64 / per.as_secs_f64() / (1u64 << 30) as f64
    };
    println!("\n## Streaming encryption, 1 GiB in /dev/shm to /dev/null (best of 5, GiB/s)");
    println!("cat FILE > /dev/null (I/O floor):  {:>6.2}", gib(cat));
    println!("age -r (encrypt):                  {:>6.2}", gib(age_enc));
    println!("age -d (decrypt):                  {:>6.2}", gib(age_dec));
    println!(
        "teekms encrypt:                    {:>6.2}  = {:.2} x age, {:.2} x cat (goals >= 3, >= 0.6)",
        gib(enc),
        gib(enc) / gib(age_enc),
        gib(enc) / gib(cat)
    );
    println!(
        "teekms decrypt:                    {:>6.2}  = {:.2} x age, {:.2} x cat (goals >= 3, >= 0.6)",
        gib(dec),
        gib(dec) / gib(age_dec),
        gib(dec) / gib(cat)
    );
    println!("AES-256-GCM in memory, one core:   {:>6.2}", aead);
}
