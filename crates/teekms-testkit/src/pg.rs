use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server for one test or benchmark (one that restarts it, say):
/// Debian's binaries (`./test` installs them if absent), a temp dir, a free loopback
/// port; run as the `postgres` user when running as root (initdb refuses root). Stopped
/// on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run the suite with ./test, which installs it")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

impl PgServer {
    pub fn start() -> PgServer {
        let as_postgres = running_as_root();
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            dir,
            bin: bin_dir(),
            port,
            as_postgres,
        };
        let data = server.data();
        server.run("initdb", &["-D", &data, "-A", "trust", "-U", "teekms"]);
        server.ctl("start");
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = c.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-m",
                "fast",
                "-o",
                &opts,
                action,
            ],
        );
    }

    /// Stops and starts the server: every client connection is cut.
    pub fn restart(&self) {
        self.ctl("restart");
    }

    /// `pg_dump -Fc` of database `db` into a file named `name` in the server's dir: a
    /// host's backup.
    pub fn dump(&self, db: &str, name: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        self.client("pg_dump", &["-Fc", "-f", file.to_str().unwrap(), db]);
        file
    }

    /// `pg_restore --clean` of a dump into database `db`, under whoever is connected: a
    /// host's rollback (or, with a newer dump, bringing the database forward).
    pub fn restore_clean(&self, db: &str, dump: &Path) {
        let dump = dump.to_str().unwrap();
        self.client("pg_restore", &["--clean", "--if-exists", "-d", db, dump]);
    }

    /// Creates database `db` (empty): another cluster on the same server.
    pub fn create_database(&self, db: &str) {
        self.client("createdb", &[db]);
    }

    /// Runs SQL `statement` in database `db` as the host would, behind the nodes' backs.
    pub fn sql(&self, db: &str, statement: &str) {
        self.client(
            "psql",
            &["-v", "ON_ERROR_STOP=1", "-d", db, "-c", statement],
        );
    }

    /// A client tool of the server's, connected to it as the `teekms` role.
    fn client(&self, tool: &str, args: &[&str]) {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "teekms"];
        all.extend_from_slice(args);
        self.run(tool, &all);
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://teekms@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"])
        }));
    }
}

fn running_as_root() -> bool {
    // The uid without libc: /proc/self/status "Uid:\treal\teffective...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
