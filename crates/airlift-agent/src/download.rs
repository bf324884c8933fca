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
//! A hostile or broken network cannot hold a download for ever
//! ([`DownloadBounds`], `[download]` in `agent.toml`): a download slower
//! than `min_rate` over a `rate_window_secs` window is cut off (slow
//! retrieval: tried again at the next poll, from the byte reached), and an
//! update still downloading `deadline_secs` after it was offered fails for
//! good. Nor can it feed endless data: nothing beyond the offered size is
//! ever read, whatever the answer claims or keeps sending.
//!
//! A block that arrives damaged (the package reader checks each one against
//! the signed block index before handing it on) is fetched again: the
//! stream asks through a [`RefetchRequests`] handle, and the next read
//! re-requests from the block's first byte with `Range` — from the store
//! URL on the first re-fetch, from the server (a fresh URL, past a cache
//! that may hold the damage) on later ones. How many times is the
//! stream's business (see `crate::stream`).
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
use serde::Deserialize;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Bounds on how slowly, and for how long, an update may download
/// (`[download]` in `agent.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadBounds {
    /// Bytes per second a download must average over each window of
    /// `rate_window_secs`, reconnects included; slower, it is cut off and
    /// tried again at the next poll. `0` turns the check off
    /// [default: 1024].
    pub min_rate: u64,
    /// The window the rate is measured over, in seconds [default: 120].
    pub rate_window_secs: u64,
    /// Seconds from the offer within which the update must have downloaded,
    /// across reconnects, polls and restarts; after them it fails and is
    /// reported [default: 172800, two days].
    pub deadline_secs: u64,
}

impl Default for DownloadBounds {
    fn default() -> Self {
        Self {
            min_rate: 1024,
            rate_window_secs: 120,
            deadline_secs: 2 * 24 * 3600,
        }
    }
}

impl DownloadBounds {
    /// Why these bounds cannot be used with `bandwidth_limit`, if they
    /// cannot.
    pub fn check(&self, bandwidth_limit: Option<u64>) -> Result<(), String> {
        if self.rate_window_secs == 0 || self.deadline_secs == 0 {
            return Err("[download]: rate_window_secs and deadline_secs must be at least 1".into());
        }
        if let Some(limit) = bandwidth_limit.filter(|l| *l > 0 && *l < self.min_rate) {
            return Err(format!(
                "bandwidth_limit ({limit} B/s) is below [download] min_rate ({} B/s): every download would be cut off; lower min_rate",
                self.min_rate
            ));
        }
        Ok(())
    }

    /// The instant the update offered at `offered_at` (wall clock, kept
    /// with the offer) must have downloaded by; from now if unknown. A
    /// clock set back counts as no time passed.
    pub fn deadline(&self, offered_at: Option<SystemTime>) -> Instant {
        let limit = Duration::from_secs(self.deadline_secs);
        let spent = offered_at
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        let left = limit.saturating_sub(spent);
        let now = Instant::now();
        now.checked_add(left).unwrap_or(now)
    }
}

/// Watches one download against its [`DownloadBounds`].
#[derive(Debug)]
struct RateGuard {
    min_rate: u64,
    window: Duration,
    deadline: Instant,
    deadline_secs: u64,
    window_started: Instant,
    /// The package offset when the window started.
    window_offset: u64,
}

impl RateGuard {
    fn new(bounds: &DownloadBounds, deadline: Instant, offset: u64) -> Self {
        Self {
            min_rate: bounds.min_rate,
            window: Duration::from_secs(bounds.rate_window_secs),
            deadline,
            deadline_secs: bounds.deadline_secs,
            window_started: Instant::now(),
            window_offset: offset,
        }
    }

    /// Starts a new window (a new download attempt of the same update).
    fn restart(&mut self, offset: u64) {
        self.window_started = Instant::now();
        self.window_offset = offset;
    }

    /// Whether the download may go on, having reached `offset` at `now`.
    fn check(&mut self, offset: u64, now: Instant) -> Result<(), ClientError> {
        if now >= self.deadline {
            return Err(ClientError::Retrieval(format!(
                "the update did not download within {} s of its offer (byte {offset} reached);                  a network this slow, or a server holding the download back, fails the update —                  raise [download] deadline_secs if the link is really this slow",
                self.deadline_secs
            )));
        }
        let elapsed = now.saturating_duration_since(self.window_started);
        if self.min_rate == 0 || elapsed < self.window {
            return Ok(());
        }
        let bytes = offset.saturating_sub(self.window_offset);
        let rate = bytes as f64 / elapsed.as_secs_f64();
        if rate < self.min_rate as f64 {
            return Err(ClientError::Transient(format!(
                "the download ran at {rate:.0} B/s over the last {} s, below the minimum of {} B/s                  (byte {offset} reached); cut off, and resumed at the next poll",
                elapsed.as_secs(),
                self.min_rate
            )));
        }
        self.window_started = now;
        self.window_offset = offset;
        Ok(())
    }
}

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

/// A damaged block to fetch again, as the stream asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refetch {
    /// The package offset of the block's first byte: the download goes on
    /// from there.
    pub from: u64,
    /// Which re-fetch of this block it is, from 1.
    pub attempt: u32,
}

/// The way into a download for asking it to fetch a damaged block again:
/// the download takes the request at its next read. Cloned freely (the
/// package reader's refetch hook holds one).
#[derive(Debug, Clone, Default)]
pub struct RefetchRequests(Arc<Mutex<Option<Refetch>>>);

impl RefetchRequests {
    /// Asks for the bytes from `refetch.from` again, at the next read.
    pub fn ask(&self, refetch: Refetch) {
        if let Ok(mut pending) = self.0.lock() {
            *pending = Some(refetch);
        }
    }

    fn take(&self) -> Option<Refetch> {
        self.0.lock().ok().and_then(|mut pending| pending.take())
    }
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
    guard: Option<RateGuard>,
    progress: Box<dyn FnMut(u64) + 'c>,
    observer: Option<&'c mut (dyn FnMut(DownloadEvent) + Send)>,
    failure: Option<ClientError>,
    refetches: RefetchRequests,
    /// The furthest offset reached: what progress reports, so that a
    /// re-fetched block does not show as the download going backwards.
    furthest: u64,
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
            guard: None,
            progress: Box::new(|_| {}),
            observer: None,
            failure: None,
            refetches: RefetchRequests::default(),
            furthest: 0,
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

    /// The handle through which a damaged block is asked for again.
    pub fn refetch_requests(&self) -> RefetchRequests {
        self.refetches.clone()
    }

    /// Goes back to a damaged block's first byte. The first re-fetch keeps
    /// the store URL (the damage was most likely in transit); later ones ask
    /// the server again, so a cache in front of the store that holds the
    /// damage under the old URL is passed by with a fresh one.
    fn refetch(&mut self, refetch: Refetch) {
        tracing::info!(
            from = refetch.from,
            attempt = refetch.attempt,
            "fetching a damaged block again with Range"
        );
        self.offset = refetch.from.min(self.size);
        self.body = None;
        if refetch.attempt > 1 {
            self.store = None;
        }
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

    /// Holds the download to `bounds`: at least `min_rate` over each
    /// window, and done by `deadline` (see [`DownloadBounds::deadline`]).
    pub fn bounded(mut self, bounds: &DownloadBounds, deadline: Instant) -> Self {
        self.guard = Some(RateGuard::new(bounds, deadline, self.offset));
        self
    }

    /// Fails the download if it broke its bounds by now.
    fn within_bounds(&mut self) -> io::Result<()> {
        let Some(guard) = self.guard.as_mut() else {
            return Ok(());
        };
        match guard.check(self.offset, Instant::now()) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.body = None;
                // The next read (another attempt in this run) starts a new
                // window; the deadline stays.
                guard.restart(self.offset);
                tracing::warn!(%error, "download cut off");
                Err(self.stopped(error))
            }
        }
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
            self.within_bounds()?;
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
        if let Some(refetch) = self.refetches.take() {
            self.refetch(refetch);
        }
        if self.offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        // Never more than the offered size, whatever the answer says or
        // keeps sending (endless data): the rest of a longer body is left
        // unread, and its connection dropped with it.
        let want = buf
            .len()
            .min(usize::try_from(self.size - self.offset).unwrap_or(usize::MAX));
        let mut failures = 0;
        loop {
            self.within_bounds()?;
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
                    self.furthest = self.furthest.max(self.offset);
                    (self.progress)(self.furthest);
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
    use super::{BandwidthLimit, DownloadBounds, RateGuard, Refetch, RefetchRequests};
    use crate::client::ClientError;
    use std::time::{Duration, Instant, SystemTime};

    fn bounds(min_rate: u64, window: u64, deadline: u64) -> DownloadBounds {
        DownloadBounds {
            min_rate,
            rate_window_secs: window,
            deadline_secs: deadline,
        }
    }

    #[test]
    fn a_download_below_the_minimum_rate_over_a_window_is_cut_off() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let mut guard = RateGuard::new(&bounds(1000, 10, 3600), deadline, 0);
        let start = guard.window_started;
        // Within the first window nothing is judged.
        assert!(guard.check(10, start + Duration::from_secs(5)).is_ok());
        // 20 000 bytes in 10 s: 2000 B/s, fine; a new window starts.
        assert!(guard.check(20_000, start + Duration::from_secs(10)).is_ok());
        // 5000 more in the next 10 s: 500 B/s, too slow — transient.
        let error = guard
            .check(25_000, start + Duration::from_secs(20))
            .expect_err("too slow");
        assert!(
            matches!(&error, ClientError::Transient(m) if m.contains("below the minimum")),
            "{error}"
        );
    }

    #[test]
    fn a_zero_minimum_turns_the_rate_check_off_but_not_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let mut guard = RateGuard::new(&bounds(0, 1, 30), deadline, 0);
        assert!(guard.check(0, start + Duration::from_secs(29)).is_ok());
        let error = guard.check(1, deadline).expect_err("past the deadline");
        assert!(!error.is_transient(), "the deadline fails the update");
        assert!(error.to_string().contains("within 30 s"), "{error}");
    }

    #[test]
    fn the_deadline_counts_from_the_offer_and_a_clock_set_back_spends_nothing() {
        let day = bounds(1, 1, 86_400);
        let now = Instant::now();
        let offered = SystemTime::now() - Duration::from_secs(86_000);
        let left = day.deadline(Some(offered)).saturating_duration_since(now);
        assert!(
            left <= Duration::from_secs(401) && left >= Duration::from_secs(390),
            "{left:?}"
        );
        let long_ago = SystemTime::now() - Duration::from_secs(200_000);
        assert!(day.deadline(Some(long_ago)) <= Instant::now(), "spent");
        let future = SystemTime::now() + Duration::from_secs(3600);
        let left = day.deadline(Some(future)).saturating_duration_since(now);
        assert!(left >= Duration::from_secs(86_390), "{left:?}");
        assert!(day.deadline(None) > now + Duration::from_secs(86_000));
    }

    #[test]
    fn bounds_are_checked_against_the_bandwidth_limit() {
        assert!(DownloadBounds::default().check(None).is_ok());
        assert!(bounds(1024, 60, 60).check(Some(4096)).is_ok());
        let error = bounds(1024, 60, 60).check(Some(512)).expect_err("below");
        assert!(error.contains("lower min_rate"), "{error}");
        assert!(bounds(1024, 0, 60).check(None).is_err());
        assert!(bounds(1024, 60, 0).check(None).is_err());
    }

    #[test]
    fn a_refetch_request_is_taken_once_and_the_latest_wins() {
        let requests = RefetchRequests::default();
        let held = requests.clone();
        assert_eq!(requests.take(), None);
        held.ask(Refetch {
            from: 10,
            attempt: 1,
        });
        held.ask(Refetch {
            from: 20,
            attempt: 2,
        });
        assert_eq!(
            requests.take(),
            Some(Refetch {
                from: 20,
                attempt: 2
            })
        );
        assert_eq!(requests.take(), None, "taken once");
    }

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
