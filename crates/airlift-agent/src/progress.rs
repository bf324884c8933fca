//! Download progress for the server: while a package downloads, a repeated
//! `downloading` report now and then says how far it got, so an operator
//! sees a slow download moving. Best effort: a report that does not get
//! through is not queued (the next one says more), and it never holds the
//! download up for long.

use crate::client::ServerClient;
use airlift_protocol::device::{Progress, StatusReport};
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use std::time::{Duration, Instant};

/// Longest a progress report may hold the download up.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a deployment's download progress at most once per interval.
#[derive(Debug)]
pub struct ProgressReporter {
    client: ServerClient,
    deployment: DeploymentId,
    total: u64,
    every: Duration,
    last: Instant,
}

impl ProgressReporter {
    /// A reporter on its own session of `client` (the download holds the
    /// other one), first reporting an interval from now; `None` when
    /// `every` is zero (progress reports are off) or no session can be made.
    pub fn new(
        client: &ServerClient,
        deployment: DeploymentId,
        total: u64,
        every: Duration,
    ) -> Option<Self> {
        if every.is_zero() {
            return None;
        }
        let client = client
            .fork(REPORT_TIMEOUT)
            .inspect_err(|e| tracing::debug!(error = %e, "no progress reports"))
            .ok()?;
        Some(Self {
            client,
            deployment,
            total,
            every,
            last: Instant::now(),
        })
    }

    /// The download reached package byte `done`: reports it if the
    /// interval has passed since the last try.
    pub fn reached(&mut self, done: u64) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let report = StatusReport {
            state: UpdateState::Downloading,
            progress: Some(Progress {
                done: done.min(self.total),
                total: self.total,
            }),
            message: None,
        };
        if let Err(error) = self.client.report(self.deployment, &report) {
            tracing::debug!(%error, "progress report not sent");
        }
    }
}
