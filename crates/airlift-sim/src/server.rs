//! An `airlift-server` process for demos and benchmarks: started on a
//! loopback port with a data directory, a trusted key and a known admin
//! token; its address read from its JSON log ("airlift-server ready"), not
//! guessed; killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary where it was looked for.
    #[error("no airlift-server at {0}: build it (`cargo build --release --bin airlift-server`) or say where it is")]
    Missing(PathBuf),
    /// It could not be started.
    #[error("starting {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not say it was ready in time.
    #[error("airlift-server did not say it was ready within 30 s")]
    NotReady,
}

/// A running `airlift-server`.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ServerProcess {
    /// Starts `binary` on SQLite under `data_dir`, trusting `trusted`, with
    /// `admin_token` and `--poll-interval poll_secs`. Only these settings
    /// apply, whatever `AIRLIFT_*` variables this process has.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        trusted: &Path,
        admin_token: &str,
        poll_secs: u64,
    ) -> Result<Self, ServerError> {
        Self::start_with(binary, data_dir, trusted, admin_token, poll_secs, &[])
    }

    /// [`start`](Self::start) with more flags (`--database-url …`,
    /// `--mqtt-url …`).
    pub fn start_with(
        binary: &Path,
        data_dir: &Path,
        trusted: &Path,
        admin_token: &str,
        poll_secs: u64,
        flags: &[&str],
    ) -> Result<Self, ServerError> {
        if !binary.exists() {
            return Err(ServerError::Missing(binary.to_owned()));
        }
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AIRLIFT_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--poll-interval", &poll_secs.to_string()])
            .arg("--trust")
            .arg(trusted)
            .args(flags)
            .env("AIRLIFT_ADMIN_TOKEN", admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ServerError::Spawn {
                path: binary.to_owned(),
                source,
            })?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            // Reads the log to its end, so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if entry["fields"]["message"] == "airlift-server ready" {
                        let listen = entry["fields"]["listen"].as_str().unwrap_or_default();
                        let _ = tx.send(listen.to_owned());
                    }
                }
            });
        }
        let mut server = Self {
            child,
            url: String::new(),
        };
        let listen = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| ServerError::NotReady)?;
        server.url = format!("http://{listen}");
        Ok(server)
    }

    /// The value of an unlabelled Prometheus gauge or counter from its
    /// `/metrics`; 0 when it is absent (not yet recorded) or the server does
    /// not answer.
    pub fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.url))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
