//! A real `airlift-server` process, for tests, benchmarks, the simulator
//! and `airlift demo`: started on `127.0.0.1:0` with `--log-format json`,
//! its address read from its "airlift-server ready" log line (never
//! guessed, never slept for), killed when dropped.
//!
//! Only what the builder says configures it: every `AIRLIFT_*` variable of
//! this process is removed from the child's environment, so a developer's
//! shell cannot change what a test runs against.
//!
//! ```no_run
//! use airlift_testkit::server::{ServerProcess, ADMIN_TOKEN};
//!
//! # fn main() -> Result<(), airlift_testkit::server::ServerError> {
//! let data = tempfile::tempdir().expect("data directory");
//! let server = ServerProcess::builder(airlift_testkit::server::binary(), data.path())
//!     .trust("release.pub")
//!     .admin_token(ADMIN_TOKEN)
//!     .args(["--poll-interval", "1"])
//!     .start()?;
//! println!("{} answers, pid {}", server.url(), server.pid());
//! # Ok(())
//! # }
//! ```
//!
//! Its log (stderr) is read to its end by a thread of its own, so the
//! server never blocks on a full pipe; the last lines of both stderr and
//! stdout are kept ([`ServerProcess::log_tail`]) for failure messages, and
//! warnings and errors are counted ([`ServerProcess::warnings`]).

mod log;

use log::{LogEcho, LogReader, Ready};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use log::{Echo, Tally};

/// An admin token for servers that tests start; any `alt_`-prefixed secret
/// of this length would do.
pub const ADMIN_TOKEN: &str = "alt_test_admin_token_0123456789";

/// How long [`ServerBuilder::start`] waits for the ready line unless told
/// otherwise: a debug build migrating a fresh PostgreSQL schema on a busy
/// machine takes seconds, not a minute.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `airlift-server` binary a test or benchmark should run:
/// `AIRLIFT_SERVER_BIN` when set, otherwise the one Cargo built into the
/// same target directory as the running executable (a test or bench binary
/// lives in `target/<profile>/deps/`, the server in `target/<profile>/`).
///
/// Cargo builds the server for another crate's tests only when the same
/// command builds the server crate too (e.g. `cargo test --workspace`, or
/// `cargo build --bin airlift-server` first); [`ServerBuilder::start`]
/// says so when it is missing.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AIRLIFT_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    dir.join("airlift-server")
}

/// Why a server could not be started or restarted.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary where it was looked for.
    #[error("no airlift-server at {0}: build it (`cargo build --bin airlift-server`, or `--release` for benchmarks) or set AIRLIFT_SERVER_BIN")]
    Missing(PathBuf),
    /// The process could not be started.
    #[error("starting {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it said it was ready.
    #[error("airlift-server exited before it was ready (exit code {code:?}); its log:\n{log}")]
    Exited {
        /// Its exit code (`None`: ended by a signal, or not known).
        code: Option<i32>,
        /// Its last log lines.
        log: String,
    },
    /// It did not say it was ready in time.
    #[error("airlift-server did not say it was ready within {waited:?}; its log:\n{log}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// Its last log lines.
        log: String,
    },
}

/// What to start: made by [`ServerProcess::builder`], used by
/// [`start`](Self::start), and kept by the process for
/// [`ServerProcess::crash_and_restart`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_removed: Vec<OsString>,
    ready_timeout: Duration,
    echo: Echo,
    label: Option<String>,
}

impl ServerBuilder {
    /// `--trust FILE`: a public key file the server trusts packages from.
    /// May be given more than once.
    pub fn trust(self, public_key: impl AsRef<Path>) -> Self {
        self.arg("--trust").arg(public_key.as_ref())
    }

    /// The first admin token (`AIRLIFT_ADMIN_TOKEN` in the child's
    /// environment, the only way the server takes it).
    pub fn admin_token(self, token: &str) -> Self {
        self.env("AIRLIFT_ADMIN_TOKEN", token)
    }

    /// One more command-line argument. `--data-dir`, `--listen` and
    /// `--log-format` are the builder's: giving them again is an error of
    /// the server's.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More command-line arguments (`["--poll-interval", "1"]`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// A variable in the child's environment (`AIRLIFT_LOG`, …); the
    /// inherited `AIRLIFT_*` ones are gone already.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// A variable kept out of the child's environment (`AWS_REGION`, …),
    /// beside the inherited `AIRLIFT_*` ones, which are gone already.
    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.env_removed.push(name.as_ref().to_owned());
        self
    }

    /// How long to wait for the ready line ([`READY_TIMEOUT`] unless set).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Which log lines to copy to this process's stderr as they come
    /// ([`Echo::from_env`] unless set).
    pub fn echo(mut self, echo: Echo) -> Self {
        self.echo = echo;
        self
    }

    /// A name for its echoed lines (`airlift-server LABEL: …`), to tell
    /// several servers apart.
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.to_owned());
        self
    }

    /// Starts it on a port of its own choosing and waits until it says it
    /// is ready.
    pub fn start(self) -> Result<ServerProcess, ServerError> {
        let (child, reader, listen) = self.spawn_ready(0)?;
        Ok(ServerProcess {
            child,
            reader,
            url: listen.url(),
            addr: listen.addr,
            builder: self,
        })
    }

    /// Spawns the binary listening on `port` and waits for its ready line.
    fn spawn_ready(&self, port: u16) -> Result<(Child, LogReader, Ready), ServerError> {
        if !self.binary.exists() {
            return Err(ServerError::Missing(self.binary.clone()));
        }
        let mut command = Command::new(&self.binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AIRLIFT_") {
                command.env_remove(name);
            }
        }
        for name in &self.env_removed {
            command.env_remove(name);
        }
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--log-format", "json"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| ServerError::Spawn {
            path: self.binary.clone(),
            source,
        })?;
        let reader = LogReader::start(&mut child, LogEcho::new(self.echo, self.label.as_deref()));
        match reader.wait_ready(self.ready_timeout) {
            Ok(ready) => Ok((child, reader, ready)),
            Err(ServerError::Exited { log, .. }) => {
                let code = child.wait().ok().and_then(|status| status.code());
                Err(ServerError::Exited { code, log })
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }
}

/// A running `airlift-server`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    reader: LogReader,
    url: String,
    addr: SocketAddr,
    builder: ServerBuilder,
}

impl ServerProcess {
    /// What to start: `binary` (see [`binary`]) keeping its data in
    /// `data_dir` (on SQLite, its database too, unless `--database-url`
    /// is among the arguments).
    pub fn builder(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> ServerBuilder {
        ServerBuilder {
            binary: binary.into(),
            data_dir: data_dir.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_removed: Vec::new(),
            ready_timeout: READY_TIMEOUT,
            echo: Echo::from_env(),
            label: None,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when it serves TLS.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory it was started with.
    pub fn data_dir(&self) -> &Path {
        &self.builder.data_dir
    }

    /// Warnings and errors it has logged so far.
    pub fn warnings(&self) -> u64 {
        self.reader.warnings()
    }

    /// Its warnings and errors so far by level and message, each with its
    /// first line (at most 200 messages; a restart starts afresh).
    pub fn warnings_by_message(&self) -> Tally {
        self.reader.tally()
    }

    /// Its last log lines (stderr, and stdout prefixed `stdout: `), oldest
    /// first, for a failure message.
    pub fn log_tail(&self) -> String {
        self.reader.tail()
    }

    /// Whether it has exited (on its own, or killed).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// How it exited, once it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and waits until it is gone: a crash, with nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, the way an operator stops it, then waits up to `grace` for
    /// it to finish its requests and exit; SIGKILL after that. Returns how
    /// it exited when it did so by itself.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).ok()?)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// `kill -9`, then starts it again with the same settings, data and
    /// port (so its URL stays valid for clients that hold it).
    pub fn crash_and_restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        let (child, reader, listen) = self.builder.spawn_ready(self.addr.port())?;
        self.child = child;
        self.reader = reader;
        self.url = listen.url();
        self.addr = listen.addr;
        Ok(())
    }

    /// One sample of its `/metrics`, by its name with any labels, as
    /// Prometheus writes it (`airlift_push_connections`,
    /// `airlift_connections_refused_total{reason="limit"}`); 0 when absent
    /// (not recorded yet) or when the server does not answer. Plain HTTP
    /// only, through a blocking request of its own, so that synchronous
    /// tests need no HTTP client for it.
    pub fn metric(&self, sample: &str) -> f64 {
        fetch_metrics(self.addr)
            .and_then(|text| metric_sample(&text, sample))
            .unwrap_or(0.0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `sample` (a metric name with its labels, if any, exactly
/// as written) in a Prometheus text exposition.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// `GET /metrics` over HTTP/1.0, which the server answers without chunking
/// and then closes, so the body is everything after the head.
fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    ok.then(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_name_and_labels() {
        let text = "# TYPE x counter\nairlift_push_connections 3\n\
                    airlift_refused_total{reason=\"limit\"} 2\nairlift_refused_total{reason=\"idle\"} 5\n";
        assert_eq!(metric_sample(text, "airlift_push_connections"), Some(3.0));
        assert_eq!(
            metric_sample(text, "airlift_refused_total{reason=\"idle\"}"),
            Some(5.0)
        );
        assert_eq!(metric_sample(text, "airlift_push"), None);
        assert_eq!(metric_sample(text, "airlift_refused_total"), None);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let error = ServerProcess::builder("/nonexistent/airlift-server", "/tmp")
            .start()
            .expect_err("no such binary");
        assert!(error.to_string().contains("/nonexistent/airlift-server"));
    }

    #[test]
    fn a_process_that_exits_early_fails_at_once_with_its_log() {
        // `sh` is no server: it prints its complaint about `--data-dir` and
        // exits; the builder must not wait the whole timeout for it.
        let started = Instant::now();
        let error = ServerProcess::builder("/bin/sh", "/tmp")
            .start()
            .expect_err("sh never says it is ready");
        assert!(
            matches!(error, ServerError::Exited { code: Some(code), .. } if code != 0),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_removed_variable_does_not_reach_the_process() {
        // A "server" that exits 3 while it inherits CARGO_MANIFEST_DIR
        // (cargo sets it for tests), 4 once it does not. (Not PATH: sh
        // makes up a default one.)
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("fake-server");
        std::fs::write(
            &script,
            "#!/bin/sh\ntest -n \"$CARGO_MANIFEST_DIR\" && exit 3\nexit 4\n",
        )
        .expect("script");
        let mut permissions = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).expect("chmod");
        let exit_code = |builder: ServerBuilder| match builder.start() {
            Err(ServerError::Exited { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        let builder = || ServerProcess::builder(&script, dir.path());
        assert_eq!(exit_code(builder()), Some(3));
        assert_eq!(
            exit_code(builder().env_remove("CARGO_MANIFEST_DIR")),
            Some(4)
        );
    }
}
