//! A package download that survives a flaky network: it reads the HTTP body
//! as one stream and, when the connection drops, reconnects with `Range`
//! and `If-Range` from the byte it reached — the consumer (the package
//! reader, hashing and installing as it goes) never notices. Retries back
//! off exponentially with jitter, capped; a permanent answer (404, 410, a
//! changed package) ends the download at once.

use crate::client::{ClientError, ServerClient};
use airlift_protocol::DeploymentId;
use backon::{BlockingRetryable, ExponentialBuilder};
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// How reconnects back off.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Attempts per interruption before giving up until the next poll.
    pub max_attempts: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_attempts: 8,
        }
    }
}

/// What a download tells its observer (see [`ResumableDownload::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadEvent {
    /// A request is about to ask for the package from `offset` (more than
    /// 0: the download resumes with `Range`).
    Connecting {
        /// The deployment whose package this is.
        deployment: DeploymentId,
        /// The first byte asked for.
        offset: u64,
        /// The package's size.
        size: u64,
    },
    /// A chunk arrived: the package offset reached.
    Received {
        /// The deployment whose package this is.
        deployment: DeploymentId,
        /// Bytes of the package received so far (counting from 0).
        offset: u64,
        /// The package's size.
        size: u64,
    },
}

/// Why a download stopped for good (carried inside `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("download stopped: {0}")]
pub struct DownloadStopped(#[source] pub ClientError);

/// Streams one package from the server.
pub struct ResumableDownload<'c> {
    client: &'c mut ServerClient,
    deployment: DeploymentId,
    etag: String,
    size: u64,
    offset: u64,
    body: Option<Box<dyn Read + Send + Sync>>,
    retry: RetryPolicy,
    limit: Option<BandwidthLimit>,
    progress: Box<dyn FnMut(u64) + 'c>,
    observer: Option<&'c mut (dyn FnMut(DownloadEvent) + Send)>,
    failure: Option<ClientError>,
}

impl std::fmt::Debug for ResumableDownload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableDownload")
            .field("deployment", &self.deployment)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<'c> ResumableDownload<'c> {
    /// A download of `size` bytes whose ETag is the package's SHA-256.
    pub fn new(
        client: &'c mut ServerClient,
        deployment: DeploymentId,
        sha256: &str,
        size: u64,
    ) -> Self {
        Self {
            client,
            deployment,
            etag: sha256.to_owned(),
            size,
            offset: 0,
            body: None,
            retry: RetryPolicy::default(),
            limit: None,
            progress: Box::new(|_| {}),
            observer: None,
            failure: None,
        }
    }

    /// Starts at byte `offset` (what an earlier run already has on disk):
    /// the first request asks for the rest with `Range`.
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.offset = offset.min(self.size);
        self
    }

    /// Goes on from byte `offset` (the next read asks for it with `Range`).
    pub fn seek_to(&mut self, offset: u64) {
        self.offset = offset.min(self.size);
        self.body = None;
    }

    /// Why the download stopped, if it did: its readers only see an
    /// `io::Error` (the package reader wraps it further), this is the cause.
    pub fn take_failure(&mut self) -> Option<ClientError> {
        self.failure.take()
    }

    /// Records why the download stops, and returns it as the reader's error.
    fn stopped(&mut self, error: ClientError) -> io::Error {
        self.failure = Some(error.clone());
        io::Error::other(DownloadStopped(error))
    }

    /// Sets the reconnect policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Caps the average rate at `bytes_per_second`.
    pub fn limit(mut self, bytes_per_second: Option<u64>) -> Self {
        self.limit = bytes_per_second.filter(|b| *b > 0).map(BandwidthLimit::new);
        self
    }

    /// Called with the offset reached after each read.
    pub fn on_progress(mut self, progress: impl FnMut(u64) + 'c) -> Self {
        self.progress = Box::new(progress);
        self
    }

    /// Tells `observer` of each connection and each chunk (a simulator
    /// uses it; a device sets none, and then nothing is done per chunk
    /// beyond one check).
    pub fn observe(mut self, observer: Option<&'c mut (dyn FnMut(DownloadEvent) + Send)>) -> Self {
        self.observer = observer;
        self
    }

    fn connect(&mut self) -> io::Result<()> {
        if let Some(observer) = self.observer.as_mut() {
            observer(DownloadEvent::Connecting {
                deployment: self.deployment,
                offset: self.offset,
                size: self.size,
            });
        }
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_attempts)
            .with_jitter();
        let (client, deployment, offset, etag) = (
            &mut *self.client,
            self.deployment,
            self.offset,
            self.etag.as_str(),
        );
        let response = (|| client.open_download(deployment, offset, etag))
            .retry(policy)
            .when(ClientError::is_transient)
            .notify(|error, delay| {
                tracing::warn!(%error, ?delay, offset, "download interrupted; reconnecting");
            })
            .call();
        self.body = Some(response.map_err(|e| self.stopped(e))?);
        Ok(())
    }
}

impl Read for ResumableDownload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.size - self.offset).unwrap_or(usize::MAX));
        let mut failures = 0;
        loop {
            if self.body.is_none() {
                self.connect()?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(&mut buf[..want]) {
                Ok(n) if n > 0 => {
                    self.offset += n as u64;
                    if let Some(limit) = self.limit.as_mut() {
                        limit.consume(n as u64);
                    }
                    (self.progress)(self.offset);
                    if let Some(observer) = self.observer.as_mut() {
                        observer(DownloadEvent::Received {
                            deployment: self.deployment,
                            offset: self.offset,
                            size: self.size,
                        });
                    }
                    crate::fault::downloaded(self.offset);
                    return Ok(n);
                }
                // The body ended before the package did, or the connection
                // broke: reconnect from where we are.
                Ok(_) | Err(_) => {
                    self.body = None;
                    failures += 1;
                    if failures > self.retry.max_attempts {
                        let reason = format!(
                            "the connection kept breaking at byte {} of {}",
                            self.offset, self.size
                        );
                        return Err(self.stopped(ClientError::Transient(reason)));
                    }
                }
            }
        }
    }
}

/// Keeps the average rate since the start at or below a cap by sleeping.
#[derive(Debug)]
struct BandwidthLimit {
    bytes_per_second: u64,
    started: Instant,
    sent: u64,
}

impl BandwidthLimit {
    fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            started: Instant::now(),
            sent: 0,
        }
    }

    fn consume(&mut self, bytes: u64) {
        self.sent += bytes;
        let due = Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BandwidthLimit;
    use std::time::Instant;

    #[test]
    fn the_limit_holds_the_average_rate() {
        let started = Instant::now();
        let mut limit = BandwidthLimit::new(1_000_000);
        for _ in 0..10 {
            limit.consume(20_000);
        }
        // 200 kB at 1 MB/s cannot take less than 0.2 s.
        assert!(started.elapsed().as_secs_f64() >= 0.199);
    }
}
