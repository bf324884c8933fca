//! A package download that survives a flaky network: it reads the HTTP body
//! as one stream and, when the connection drops, reconnects with `Range`
//! and `If-Range` from the byte it reached — the consumer (the package
//! reader, hashing and installing as it goes) never notices. Retries back
//! off exponentially with jitter, capped; a permanent answer (404, 410, a
//! changed package) ends the download at once.
//!
//! When the server offloads downloads, its answer is a `307` to a
//! presigned URL of the object store: the bytes come from there, a
//! reconnect resumes there with `Range` (the object never changes), and a
//! URL that has expired — or that the store refuses (403, 400, …) — is
//! renewed by asking the server again, then the download goes on from the
//! byte it reached. Renewals after a refusal take their turn in the same
//! back-off as reconnects, so a store that refuses every URL ends the
//! attempt rather than looping.
//!
//! ```text
//!              ┌──────────── 200/206: the server streams ───────────┐
//!  connect ──▶ server ── 307 ──▶ store URL ── 200/206 ─────────────▶ body
//!                ▲                   │  (dropped: reconnect here, Range)
//!                └── expired / 4xx ──┘
//! ```

use crate::client::{ClientError, DownloadAnswer, PresignedUrl, ServerClient};
use airlift_protocol::DeploymentId;
use backon::{BackoffBuilder, ExponentialBuilder};
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
    /// Where the server sent this download, while it is good.
    store: Option<PresignedUrl>,
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
            store: None,
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
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_attempts)
            .with_jitter()
            .build();
        let offset = self.offset;
        loop {
            let (error, renewing) = match self.attempt() {
                Ok(body) => {
                    self.body = Some(body);
                    return Ok(());
                }
                Err(Attempt::Failed(error)) if !error.is_transient() => {
                    return Err(self.stopped(error));
                }
                Err(Attempt::Failed(error)) => (error, false),
                Err(Attempt::Refused(error)) => (error, true),
            };
            let Some(delay) = delays.next() else {
                let error = match renewing {
                    false => error,
                    true => ClientError::Transient(format!(
                        "the object store kept refusing the server's download URLs: {error}"
                    )),
                };
                return Err(self.stopped(error));
            };
            if renewing {
                tracing::info!(%error, ?delay, offset, "the object store refused the download URL; asking the server for a fresh one");
            } else {
                tracing::warn!(%error, ?delay, offset, "download interrupted; reconnecting");
            }
            std::thread::sleep(delay);
        }
    }

    /// One try at a body from `offset`: from the store URL the server gave,
    /// while it is good; else from the server, which streams the package
    /// or hands out a (fresh) store URL.
    fn attempt(&mut self) -> Result<Box<dyn Read + Send + Sync>, Attempt> {
        if let Some(url) = self.store.take() {
            if url.is_expired(Instant::now()) {
                tracing::info!(
                    store = url.redacted(),
                    offset = self.offset,
                    "the download URL expired; asking the server for a fresh one"
                );
            } else {
                self.store = Some(url);
            }
        }
        let url = match self.store.clone() {
            Some(url) => url,
            None => {
                let answer = self
                    .client
                    .open_download(self.deployment, self.offset, &self.etag)
                    .map_err(Attempt::Failed)?;
                match answer {
                    DownloadAnswer::Body(body) => return Ok(body),
                    DownloadAnswer::Redirect(url) => {
                        tracing::debug!(
                            store = url.redacted(),
                            offset = self.offset,
                            "downloading from the object store"
                        );
                        self.store = Some(url.clone());
                        url
                    }
                }
            }
        };
        match self.client.open_store(&url, self.offset) {
            Ok(body) => Ok(body),
            Err(error) if error.is_transient() => Err(Attempt::Failed(error)),
            // Spent: the next attempt asks the server again.
            Err(error) => {
                self.store = None;
                Err(Attempt::Refused(error))
            }
        }
    }
}

/// How one attempt to open the body failed.
enum Attempt {
    /// As the server or the network says: retried if transient.
    Failed(ClientError),
    /// The object store refused its URL: renewed, in the back-off's turn.
    Refused(ClientError),
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
