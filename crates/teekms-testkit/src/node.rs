//! A `teekms serve` process: started on port 0 with an isolated HOME, its URL read from
//! the first line it prints, its stderr drained (a node logging a lot must never block
//! on a full pipe), killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// How to start `teekms serve` (`--tee sim` by default).
pub struct Serve {
    program: PathBuf,
    data_dir: PathBuf,
    home: Option<PathBuf>,
    tee: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: Option<String>,
    listen: String,
}

impl Serve {
    /// `program serve --tee sim --listen 127.0.0.1:0 --data-dir DATA_DIR`.
    pub fn new(program: &Path, data_dir: &Path) -> Serve {
        Serve {
            program: program.to_owned(),
            data_dir: data_dir.to_owned(),
            home: None,
            tee: "sim".into(),
            args: Vec::new(),
            envs: Vec::new(),
            log: None,
            listen: "127.0.0.1:0".into(),
        }
    }

    /// HOME for the process (and no XDG dirs, owner or sim root of the user's).
    pub fn home(mut self, home: &Path) -> Serve {
        self.home = Some(home.to_owned());
        self
    }

    /// `--tee TEE`.
    pub fn tee(mut self, tee: &str) -> Serve {
        self.tee = tee.into();
        self
    }

    /// `--listen ADDR` (a node restarted where its peers and owners know it).
    pub fn listen(mut self, addr: &str) -> Serve {
        self.listen = addr.into();
        self
    }

    /// More `serve` arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Serve {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// More environment variables.
    pub fn envs(mut self, envs: &[(&str, &str)]) -> Serve {
        self.envs
            .extend(envs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// `TEEKMS_LOG`.
    pub fn log(mut self, level: &str) -> Serve {
        self.log = Some(level.into());
        self
    }

    /// Starts it and waits for its URL.
    pub fn spawn(self) -> NodeProcess {
        let mut c = Command::new(&self.program);
        if let Some(home) = &self.home {
            c.env("HOME", home)
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_DATA_HOME")
                .env_remove("TEEKMS_OWNER")
                .env_remove("TEEKMS_SIM_ROOT");
        }
        if let Some(level) = &self.log {
            c.env("TEEKMS_LOG", level);
        }
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        c.args([
            "serve",
            "--tee",
            &self.tee,
            "--listen",
            &self.listen,
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .args(&self.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting teekms serve");
        NodeProcess::from_child(&mut child).with(child)
    }
}

/// A running `teekms serve`; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// The URL and the stderr drain of a child, before it is owned.
struct Started {
    url: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Started {
    fn with(self, child: Child) -> NodeProcess {
        NodeProcess {
            child,
            url: self.url,
            stderr: self.stderr,
        }
    }
}

impl NodeProcess {
    fn from_child(child: &mut Child) -> Started {
        let url = read_url(child);
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut err, &mut s);
                s
            })
        });
        Started { url, stderr }
    }

    /// A node started some other way (a wrapper script, say): its URL is read and its
    /// stderr drained as for [`Serve::spawn`].
    pub fn adopt(mut child: Child) -> NodeProcess {
        NodeProcess::from_child(&mut child).with(child)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("waiting for the node")
    }

    /// Everything the node wrote to stderr; call after it exited.
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The URL a starting `teekms serve` prints on its first line of stdout.
pub fn read_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("the node's stdout is piped"))
        .read_line(&mut line)
        .expect("reading the node's first line");
    line.split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned()
}
