//! Helpers to run the real `teekms` binary: isolated homes and node processes.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[allow(unused_imports)]
pub use teekms_testkit::{NodeProcess, Serve, read_url};

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// This machine's clock, Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_teekms"))
}

/// A temp dir that serves as HOME for every command, so nothing of the user's is touched.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        self.isolate(&mut c);
        c.stdin(Stdio::null());
        c
    }

    fn isolate(&self, c: &mut Command) {
        c.env("HOME", self.dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("TEEKMS_OWNER")
            .env_remove("TEEKMS_SIM_ROOT")
            .env_remove("TEEKMS_FRESHNESS_DIR");
    }

    /// Runs a command and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "teekms {args:?} failed:\n{out}\n{err}");
        out
    }

    /// Writes a policy pinning this env's sim root.
    pub fn sim_policy(&self) -> PathBuf {
        let root = self.ok(&["sim", "root"]).trim().to_owned();
        let path = self.path("policy.toml");
        std::fs::write(
            &path,
            format!("[[accept]]\ntee = \"sim\"\nsim_root = \"{root}\"\n"),
        )
        .unwrap();
        path
    }

    /// Starts `teekms serve --tee sim` on port 0 and waits for its URL.
    pub fn serve(&self, data_dir: &Path) -> NodeProcess {
        self.serve_with_log(data_dir, "warn")
    }

    /// Like [`Env::serve`], with `TEEKMS_LOG` set to `log`.
    pub fn serve_with_log(&self, data_dir: &Path, log: &str) -> NodeProcess {
        self.serve_tee("sim", data_dir, &[], log)
    }

    /// Starts `teekms serve --tee TEE` on port 0 with `extra` arguments.
    pub fn serve_tee(&self, tee: &str, data_dir: &Path, extra: &[&str], log: &str) -> NodeProcess {
        self.serve_program(&bin(), tee, data_dir, extra, log)
    }

    /// [`Env::serve_tee`] with another build of teekms (`program`).
    pub fn serve_program(
        &self,
        program: &Path,
        tee: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &str,
    ) -> NodeProcess {
        self.spawn_serve(program, &[], tee, data_dir, extra, log)
    }

    /// A sim node started where `url` (another run's) answered: restarted in place.
    pub fn serve_again(&self, url: &str, data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let addr = url.strip_prefix("https://").expect("an https URL");
        Serve::new(&bin(), data_dir)
            .home(self.dir.path())
            .listen(addr)
            .args(extra)
            .log("warn")
            .spawn()
    }

    /// [`Env::serve_tee`] with more environment variables.
    pub fn serve_with_env(
        &self,
        envs: &[(&str, &str)],
        tee: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &str,
    ) -> NodeProcess {
        self.spawn_serve(&bin(), envs, tee, data_dir, extra, log)
    }

    fn spawn_serve(
        &self,
        program: &Path,
        envs: &[(&str, &str)],
        tee: &str,
        data_dir: &Path,
        extra: &[&str],
        log: &str,
    ) -> NodeProcess {
        Serve::new(program, data_dir)
            .home(self.dir.path())
            .tee(tee)
            .args(extra)
            .envs(envs)
            .log(log)
            .spawn()
    }
}

impl Env {
    /// An owner (made now), key `k` deployed through `url`, and an access key allowed to
    /// encrypt with it (its scope and the key policy both say so). Returns the sim
    /// policy, the token file, and the key policy file that grants the access key.
    pub fn key_with_access(&self, url: &str) -> (PathBuf, PathBuf, PathBuf) {
        let policy = self.sim_policy();
        let p = policy.to_str().unwrap();
        self.ok(&["owner", "init"]);
        let dek = self.path("k.key");
        let dek_s = dek.to_str().unwrap();
        self.ok(&["key", "generate", "-o", dek_s]);
        self.ok(&[
            "key", "deploy", "--node", url, "--policy", p, "--key-id", "k", "--dek", dek_s,
        ]);
        let token = self.path("token");
        let id = self.ok(&[
            "access",
            "create",
            "--keys",
            "k",
            "--operations",
            "encrypt",
            "-o",
            token.to_str().unwrap(),
            "--node",
            url,
            "--policy",
            p,
        ]);
        let grant = self.path("grant.json");
        std::fs::write(
            &grant,
            format!(
                r#"{{"rules":[{{"principals":[{{"access_key":"{}"}}],"operations":["encrypt"]}}]}}"#,
                id.trim()
            ),
        )
        .unwrap();
        let g = grant.to_str().unwrap();
        self.ok(&[
            "key", "policy", "set", "k", "--file", g, "--node", url, "--policy", p,
        ]);
        (policy, token, grant)
    }

    /// Another "build" of teekms: the binary with `tag` appended, so that it behaves the
    /// same but has another sim measurement (SHA-384 of the executable), as a new version
    /// would. Returns its path and its measurement (hex).
    pub fn other_build(&self, tag: &str) -> (PathBuf, String) {
        let path = self.path(&format!("teekms-{tag}"));
        let mut bytes = std::fs::read(bin()).unwrap();
        bytes.extend_from_slice(tag.as_bytes());
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let measurement = self
            .ok(&["sim", "measure", path.to_str().unwrap()])
            .trim()
            .to_owned();
        (path, measurement)
    }

    /// An imitation of Gramine's `/dev/attestation` serving a captured `quote`.
    pub fn fake_gramine(&self, quote: &Path) -> PathBuf {
        let dir = self.path("attestation");
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("attestation_type"), "dcap").unwrap();
        std::fs::copy(quote, dir.join("quote")).unwrap();
        std::fs::write(dir.join("keys/_sgx_mrsigner"), [7u8; 16]).unwrap();
        dir
    }
}
