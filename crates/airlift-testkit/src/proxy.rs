//! A flaky network: a loopback TCP proxy in front of a server that reads
//! each HTTP request on a connection (head, then a `content-length` body)
//! and decides what happens to its answer — passed, cut short, stalled,
//! damaged, or refused with `503` — and, as a man in the middle, can alter
//! the signed package head of the offers passing through.
//!
//! Two ways to decide ([`Faults`]): a plan, for tests that need exact
//! faults in a known order (the agent's download tests), and seeded
//! chance, for a simulated fleet of which a share sits behind a bad
//! network ([`Faults::Random`]).
//!
//! Async (tokio, on one thread of its own) so that thousands of idle
//! keep-alive connections cost a few kilobytes each; the caller needs no
//! runtime. It stops when [`FlakyProxy::stop`] is called or it is dropped.
//!
//! ```no_run
//! use airlift_testkit::proxy::{FlakyProxy, Faults, NetFault};
//!
//! let proxy = FlakyProxy::start(
//!     "http://127.0.0.1:8080",
//!     Faults::Planned(vec![NetFault::CutAfter(100_000), NetFault::Unavailable]),
//! )
//! .expect("proxy");
//! // … point a device at proxy.url() …
//! assert_eq!(proxy.unused(), 0, "every fault was met");
//! ```

mod connection;

use crate::loopback::Service;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Under [`Faults::Random`]: the share of download requests cut short (after
/// 0–64 KiB of the answer), in percent.
pub const DOWNLOAD_CUT_PERCENT: u32 = 35;
/// Under [`Faults::Random`]: the share of other requests cut short (in the
/// first 400 bytes of the answer), in percent.
pub const OTHER_CUT_PERCENT: u32 = 10;
/// Under [`Faults::Random`]: the share of requests answered `503 Service
/// Unavailable`, in percent.
pub const REFUSE_PERCENT: u32 = 5;

/// What happens to one request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// Passed through.
    Pass,
    /// This many bytes of the answer forwarded, then the connection cut.
    CutAfter(usize),
    /// This many bytes forwarded, then nothing more for this long (the
    /// connection held open), then the connection cut.
    StallAfter(usize, Duration),
    /// `503 Service Unavailable`, without asking the server, and the
    /// connection closed.
    Unavailable,
    /// The answer's byte at this position with its bits flipped.
    Corrupt(usize),
    /// The request held this long before it is forwarded, then passed: a
    /// slow way to the server (a presigned URL may expire on it).
    HoldRequest(Duration),
    /// The answer dripped at this many bytes per second, whole (slow
    /// retrieval: a server, or a network, that never quite stops).
    Throttle(u64),
    /// Endless data: the answer's `content-length` taken away (so its body
    /// runs until the connection closes) and, after the server's body,
    /// filler bytes sent for as long as the client reads, up to
    /// [`ENDLESS_CAP`].
    Endless,
}

/// Filler bytes an [`NetFault::Endless`] answer sends at most, so that a
/// client that does read for ever fails its test rather than hanging it.
pub const ENDLESS_CAP: u64 = 1 << 30;

/// How the proxy picks each request's [`NetFault`].
#[derive(Debug, Clone)]
pub enum Faults {
    /// Download requests (`GET …/download`) meet these, in order, then
    /// pass; other requests pass.
    Planned(Vec<NetFault>),
    /// Every request draws its fate by chance ([`DOWNLOAD_CUT_PERCENT`],
    /// [`OTHER_CUT_PERCENT`], [`REFUSE_PERCENT`]), from a generator per
    /// connection seeded by `seed` and the connection's number, so a run
    /// can be repeated.
    Random {
        /// The seed.
        seed: u64,
    },
}

/// What a hostile mirror sends in place of the server's package
/// ([`FlakyProxy::serve_instead`]): mix-and-match, a package for another
/// device, a forged one — whatever a compromised server or a man in the
/// middle holding other packages' bytes could serve.
#[derive(Clone)]
pub struct Substitute {
    /// The package head (header, manifest, signatures) every offer carries
    /// instead of its own; its `size` and `sha256` become `file`'s.
    pub head: Vec<u8>,
    /// The package file every download is answered from (one `Range`
    /// honoured), the server not asked.
    pub file: Vec<u8>,
}

impl std::fmt::Debug for Substitute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substitute")
            .field("head", &self.head.len())
            .field("file", &self.file.len())
            .finish()
    }
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    requests: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    cuts: AtomicU64,
    refusals: AtomicU64,
    tampered: AtomicU64,
    filler: AtomicU64,
}

impl ProxyStats {
    /// Filler bytes of [`NetFault::Endless`] answers the client took (what
    /// the socket accepted: up to its buffers beyond what was read).
    pub fn filler_bytes(&self) -> u64 {
        self.filler.load(Ordering::SeqCst)
    }

    /// Requests seen.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Download requests seen.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    /// Answer bytes forwarded for download requests.
    pub fn download_bytes(&self) -> u64 {
        self.download_bytes.load(Ordering::SeqCst)
    }

    /// Answers cut short (stalled ones included).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Requests answered `503`.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::SeqCst)
    }

    /// Offers altered by the man in the middle.
    pub fn tampered(&self) -> u64 {
        self.tampered.load(Ordering::SeqCst)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::SeqCst);
    }
}

/// What every connection's tasks share.
#[derive(Debug)]
struct Shared {
    stats: Arc<ProxyStats>,
    /// Faults left for the next download requests (planned mode).
    plan: Mutex<VecDeque<NetFault>>,
    /// Seed of the chance (random mode).
    seed: Option<u64>,
    /// In every offer passing through, the first occurrence of `.0` in the
    /// base64-decoded signed package head is replaced by `.1`.
    tamper: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// What offers and downloads carry instead of the server's package.
    substitute: Mutex<Option<Arc<Substitute>>>,
    /// `host:port` of the server.
    upstream: String,
}

/// A running proxy.
#[derive(Debug)]
pub struct FlakyProxy {
    service: Service,
    shared: Arc<Shared>,
}

impl FlakyProxy {
    /// Binds a loopback port and forwards it to `upstream`
    /// (`http://host:port`; plain HTTP only, the proxy reads requests),
    /// deciding faults as `faults` says.
    pub fn start(upstream: &str, faults: Faults) -> std::io::Result<Self> {
        let host = upstream
            .strip_prefix("http://")
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the flaky-network proxy forwards plain http only, not {upstream}"
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let (plan, seed) = match faults {
            Faults::Planned(plan) => (plan.into_iter().collect(), None),
            Faults::Random { seed } => (VecDeque::new(), Some(seed)),
        };
        let shared = Arc::new(Shared {
            stats: Arc::default(),
            plan: Mutex::new(plan),
            seed,
            tamper: Mutex::new(None),
            substitute: Mutex::new(None),
            upstream: host,
        });
        let accepting = Arc::clone(&shared);
        let service = Service::start("flaky-proxy", move |listener| accept(listener, accepting))?;
        Ok(Self { service, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.service.url()
    }

    /// What it did so far (kept after it stops).
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// The same, to keep beyond the proxy's life.
    pub fn shared_stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Planned faults not met yet.
    pub fn unused(&self) -> usize {
        self.shared.plan.lock().map(|p| p.len()).unwrap_or_default()
    }

    /// From now on, alters every offer passing through: in its signed
    /// package head, the first `from` becomes `to` (same length), the
    /// signatures left as they were.
    ///
    /// # Panics
    /// When `from` and `to` differ in length.
    pub fn tamper(&self, from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len(), "a same-length replacement");
        if let Ok(mut tamper) = self.shared.tamper.lock() {
            *tamper = Some((from.to_vec(), to.to_vec()));
        }
    }

    /// From now on, a hostile mirror: every offer passing through carries
    /// `substitute.head` (and its file's size and SHA-256), and every
    /// download is answered with `substitute.file` by the proxy itself.
    /// Each altered offer and each answered download counts as tampered.
    pub fn serve_instead(&self, substitute: Substitute) {
        if let Ok(mut slot) = self.shared.substitute.lock() {
            *slot = Some(Arc::new(substitute));
        }
    }

    /// Closes the port and every connection; the statistics stay.
    pub fn stop(&mut self) {
        self.service.stop();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = 0u64;
    while let Ok((client, _)) = listener.accept().await {
        connections += 1;
        let chance = shared
            .seed
            .map(|seed| connection::Chance::new(seed, connections));
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = connection::run(client, shared, chance).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    const BODY: usize = 1000;

    /// An upstream that answers every request with `BODY` bytes of `x`
    /// and closes.
    fn upstream() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut stream = reader.into_inner();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&[b'x'; BODY]);
            }
        });
        url
    }

    fn download(proxy: &FlakyProxy) -> Vec<u8> {
        let address = proxy.url().trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET /api/device/v1/deployments/1/download HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("request");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    }

    #[test]
    fn planned_faults_meet_downloads_in_order_then_answers_pass() {
        let plan = vec![
            NetFault::Unavailable,
            NetFault::CutAfter(100),
            NetFault::Corrupt(200),
        ];
        let proxy = FlakyProxy::start(&upstream(), Faults::Planned(plan)).expect("proxy");
        assert!(download(&proxy).starts_with(b"HTTP/1.1 503"));
        assert_eq!(download(&proxy).len(), 100);
        let damaged = download(&proxy);
        assert_eq!(damaged[200], b'x' ^ 0xFF);
        let whole = download(&proxy);
        assert!(whole.ends_with(&[b'x'; BODY]), "passed untouched");
        assert_eq!(damaged.len(), whole.len());
        let stats = proxy.stats();
        assert_eq!(
            (stats.downloads(), stats.refusals(), stats.cuts()),
            (4, 1, 1)
        );
        assert_eq!(proxy.unused(), 0);
    }

    #[test]
    fn a_held_request_arrives_late_and_whole() {
        let hold = Duration::from_millis(300);
        let plan = vec![NetFault::HoldRequest(hold)];
        let proxy = FlakyProxy::start(&upstream(), Faults::Planned(plan)).expect("proxy");
        let started = std::time::Instant::now();
        assert!(download(&proxy).ends_with(&[b'x'; BODY]), "passed whole");
        assert!(started.elapsed() >= hold, "{:?}", started.elapsed());
        assert_eq!((proxy.stats().cuts(), proxy.unused()), (0, 0));
    }

    #[test]
    fn a_throttled_answer_drips_but_arrives_whole() {
        let plan = vec![NetFault::Throttle(4000)];
        let proxy = FlakyProxy::start(&upstream(), Faults::Planned(plan)).expect("proxy");
        let started = std::time::Instant::now();
        assert!(download(&proxy).ends_with(&[b'x'; BODY]), "passed whole");
        // Over 1000 bytes at 4000 B/s: a quarter of a second at least.
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_endless_answer_loses_its_length_and_goes_on_after_its_body() {
        let plan = vec![NetFault::Endless];
        let proxy = FlakyProxy::start(&upstream(), Faults::Planned(plan)).expect("proxy");
        let address = proxy.url().trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET /api/device/v1/deployments/1/download HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("request");
        let mut answer = vec![0u8; 64 * 1024];
        stream.read_exact(&mut answer).expect("more than the body");
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
        assert!(head.contains("x-endless-data: 1000"), "{head}");
        assert!(
            body.starts_with(&"x".repeat(BODY)),
            "the server's body first"
        );
        assert!(body[BODY..].bytes().all(|b| b == b'A'), "then filler");
        drop(stream);
        assert!(proxy.stats().filler_bytes() > 0);
    }

    #[test]
    fn a_hostile_mirror_answers_downloads_itself_honouring_the_range() {
        let proxy = FlakyProxy::start(&upstream(), Faults::Planned(Vec::new())).expect("proxy");
        let file: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        proxy.serve_instead(Substitute {
            head: file[..100].to_vec(),
            file: file.clone(),
        });
        let address = proxy.url().trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET /api/device/v1/deployments/1/download HTTP/1.1\r\nhost: x\r\nrange: bytes=1000-\r\n\r\n")
            .expect("request");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8_lossy(&answer[..split]);
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(
            head.contains("content-range: bytes 1000-2999/3000"),
            "{head}"
        );
        assert_eq!(&answer[split..], &file[1000..], "the substitute's bytes");
        assert_eq!(proxy.stats().tampered(), 1);
        assert!(download(&proxy).ends_with(&file), "whole without a range");
    }

    #[test]
    fn only_plain_http_upstreams_are_proxied() {
        let error = FlakyProxy::start("https://127.0.0.1:1", Faults::Planned(Vec::new()))
            .expect_err("https");
        assert!(error.to_string().contains("plain http"), "{error}");
    }
}
