//! The HTTP/1.1 load client: `concurrency` workers, each on its own
//! kept-alive connection (hyper, `TCP_NODELAY`), send
//! `POST /api/device/v1/check-in` back to back. Every latency of the
//! measured window is kept, so percentiles are exact.
//!
//! Two walks through the devices' requests, both shared by all workers
//! (each takes the next request of one counter):
//! - [`Walk::Cycle`]: round robin, again and again, for a warm-up and then
//!   a measured window of fixed length;
//! - [`Walk::OnePass`]: every request once, in order: a device checks in
//!   once, as each device of a fleet polling once a minute does in a
//!   minute. The window opens at the first request after the warm-up
//!   share and closes when the last answer arrives (or after the window's
//!   length, whichever is first).

use crate::accounting::own_cpu_seconds;
use crate::devices::Device;
use crate::params::Params;
use airlift_protocol::device::CHECK_IN_PATH;
use airlift_testkit::procfs;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One check-in request as sent: the device's bearer token and body.
#[derive(Clone)]
pub struct CheckIn {
    authorization: HeaderValue,
    body: Bytes,
}

pub fn check_ins(devices: &[Device]) -> Result<Arc<Vec<CheckIn>>> {
    devices
        .iter()
        .map(|d| {
            Ok(CheckIn {
                authorization: HeaderValue::from_str(&format!("Bearer {}", d.token))?,
                body: Bytes::from(serde_json::to_vec(&d.inventory())?),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Arc::new)
}

/// How the workers walk through the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Round robin for the warm-up and then the measured window.
    Cycle,
    /// Each request once; the first `warmup` are not measured.
    OnePass { warmup: usize },
}

/// The server a load phase measures.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub pid: u32,
}

/// The result of one load phase.
pub struct LoadResult {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Every latency of the measured window, sorted, in nanoseconds.
    pub latencies: Vec<u64>,
    /// Server CPU seconds (user + system, children included) in the window.
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
    pub server_switches: u64,
    pub server_rss_mib: f64,
    pub response_bytes: usize,
    /// Share of airlift-server's device-record lookups its cache answered
    /// (warm-up included); `None` for the ceiling.
    pub record_hits: Option<f64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Server CPU seconds per 1 000 answered requests.
    pub fn cpu_per_1k(&self) -> f64 {
        1000.0 * self.server_cpu_s / self.requests.max(1) as f64
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1e6
    }
}

/// Not yet: the window has not opened, or not closed.
const NOT_YET: u64 = u64::MAX;

/// The measured window, in nanoseconds since `base` (when the workers
/// start), and the counter the workers take requests from.
struct Window {
    base: Instant,
    start: AtomicU64,
    end: AtomicU64,
    next: AtomicUsize,
    opened: Notify,
}

impl Window {
    fn new(base: Instant) -> Self {
        Self {
            base,
            start: AtomicU64::new(NOT_YET),
            end: AtomicU64::new(NOT_YET),
            next: AtomicUsize::new(0),
            opened: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn open(&self) {
        let _ =
            self.start
                .compare_exchange(NOT_YET, self.now(), Ordering::SeqCst, Ordering::SeqCst);
        self.opened.notify_one();
    }

    fn close(&self) {
        let _ = self
            .end
            .compare_exchange(NOT_YET, self.now(), Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// What one worker saw after the window opened: (answered at, latency)
/// per answer, and when each error came.
#[derive(Default)]
struct WorkerLog {
    answers: Vec<(u64, u64)>,
    errors: Vec<u64>,
    response_bytes: usize,
}

/// CPU time and context switches at one moment.
struct Snapshot {
    server_cpu: f64,
    client_cpu: f64,
    switches: u64,
}

impl Snapshot {
    fn take(pid: u32) -> Self {
        Self {
            server_cpu: procfs::cpu_seconds_with_children(pid),
            client_cpu: own_cpu_seconds(),
            switches: procfs::context_switches(pid).unwrap_or(0),
        }
    }
}

/// One load phase against `target`: workers walk through `requests`, and
/// what the measured window saw is returned.
pub async fn load(
    name: &str,
    target: Target,
    requests: Arc<Vec<CheckIn>>,
    walk: Walk,
    params: &Params,
) -> Result<LoadResult> {
    let host = HeaderValue::from_str(&target.addr.to_string())?;
    let window = Arc::new(Window::new(Instant::now() + Duration::from_millis(50)));
    let workers: Vec<_> = (0..params.concurrency)
        .map(|_| {
            let (requests, window, host) =
                (Arc::clone(&requests), Arc::clone(&window), host.clone());
            tokio::spawn(worker(target.addr, host, requests, walk, window))
        })
        .collect();
    match walk {
        Walk::Cycle => {
            tokio::time::sleep_until((window.base + params.warmup).into()).await;
            window.open();
        }
        Walk::OnePass { .. } => {
            tokio::time::timeout(Duration::from_secs(600), window.opened.notified())
                .await
                .context("the warm-up of the pass did not end")?;
        }
    }
    let before = Snapshot::take(target.pid);
    let mut all = std::pin::pin!(futures::future::join_all(workers));
    let deadline = Instant::now() + params.duration;
    let finished = tokio::select! {
        logs = &mut all => Some(logs),
        () = tokio::time::sleep_until(deadline.into()) => None,
    };
    window.close();
    let after = Snapshot::take(target.pid);
    let logs = match finished {
        Some(logs) => logs,
        None => all.await,
    };
    let mut result = gather(name, &window, logs)?;
    result.server_cpu_s = after.server_cpu - before.server_cpu;
    result.client_cpu_s = after.client_cpu - before.client_cpu;
    result.server_switches = after.switches.saturating_sub(before.switches);
    result.server_rss_mib = procfs::peak_rss_mib(target.pid).unwrap_or(f64::NAN);
    Ok(result)
}

/// What the workers saw inside the window (answered before it closed).
fn gather(
    name: &str,
    window: &Window,
    logs: Vec<Result<Result<WorkerLog>, tokio::task::JoinError>>,
) -> Result<LoadResult> {
    let (start, end) = (
        window.start.load(Ordering::SeqCst),
        window.end.load(Ordering::SeqCst),
    );
    let mut latencies = Vec::new();
    let (mut errors, mut response_bytes) = (0, 0);
    for log in logs {
        let log = log??;
        latencies.extend(
            log.answers
                .iter()
                .filter(|(at, _)| *at <= end)
                .map(|(_, l)| *l),
        );
        errors += log.errors.iter().filter(|at| **at <= end).count() as u64;
        response_bytes = response_bytes.max(log.response_bytes);
    }
    latencies.sort_unstable();
    Ok(LoadResult {
        name: name.to_owned(),
        requests: latencies.len() as u64,
        errors,
        seconds: end.saturating_sub(start) as f64 / 1e9,
        latencies,
        server_cpu_s: 0.0,
        client_cpu_s: 0.0,
        server_switches: 0,
        server_rss_mib: f64::NAN,
        response_bytes,
        record_hits: None,
    })
}

async fn worker(
    addr: SocketAddr,
    host: HeaderValue,
    requests: Arc<Vec<CheckIn>>,
    walk: Walk,
    window: Arc<Window>,
) -> Result<WorkerLog> {
    let mut log = WorkerLog {
        answers: Vec::with_capacity(1 << 16),
        ..WorkerLog::default()
    };
    let mut sender = connect(addr).await?;
    tokio::time::sleep_until(window.base.into()).await;
    loop {
        let index = window.next.fetch_add(1, Ordering::Relaxed);
        let check_in = match walk {
            Walk::Cycle => &requests[index % requests.len()],
            Walk::OnePass { warmup } => {
                if index >= requests.len() {
                    break;
                }
                if index == warmup {
                    window.open();
                }
                &requests[index]
            }
        };
        let sent = window.now();
        if sent >= window.end.load(Ordering::SeqCst) {
            break;
        }
        let outcome = send(&mut sender, &host, check_in).await;
        let done = window.now();
        let measured = sent >= window.start.load(Ordering::SeqCst);
        match outcome {
            Ok((StatusCode::OK, len)) => {
                log.response_bytes = len;
                if measured {
                    log.answers.push((done, done - sent));
                }
            }
            Ok(_) if measured => log.errors.push(done),
            Ok(_) => {}
            Err(_) => {
                if measured {
                    log.errors.push(done);
                }
                sender = connect(addr).await?;
            }
        }
    }
    Ok(log)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &HeaderValue,
    check_in: &CheckIn,
) -> Result<(StatusCode, usize)> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(CHECK_IN_PATH)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, check_in.authorization.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(check_in.body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body.len()))
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
