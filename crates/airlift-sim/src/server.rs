//! An `airlift-server` process for demos and benchmarks, as the simulator
//! runs it: on SQLite under a data directory, trusting one release key,
//! with a known admin token and poll interval. Starting, readiness and
//! killing are the test kit's ([`airlift_testkit::server`]); this names
//! the settings a fleet needs.

use airlift_testkit::server::ServerProcess as Process;
use std::path::Path;

pub use airlift_testkit::server::ServerError;

/// A running `airlift-server`; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    process: Process,
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
        let process = Process::builder(binary, data_dir)
            .trust(trusted)
            .admin_token(admin_token)
            .args(["--poll-interval", &poll_secs.to_string()])
            .args(flags)
            .start()?;
        Ok(Self {
            url: process.url().to_owned(),
            process,
        })
    }

    /// The value of an unlabelled Prometheus gauge or counter from its
    /// `/metrics`; 0 when it is absent (not yet recorded) or the server does
    /// not answer.
    pub fn metric(&self, name: &str) -> f64 {
        self.process.metric(name)
    }

    /// The process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
