//! A flaky network: a loopback TCP proxy in front of the server for the
//! devices that draw one.
//!
//! It reads each request on a connection (head, then a `content-length`
//! body) and decides what happens to it:
//!
//! - a download (`GET …/download`): cut after a random number of answer
//!   bytes (0–64 KiB) in [`DOWNLOAD_CUT_PERCENT`] % of requests, so the
//!   device must resume with `Range`; answered `503` in
//!   [`REFUSE_PERCENT`] %;
//! - anything else (authentication, check-in, report): cut in the first
//!   few hundred answer bytes in [`OTHER_CUT_PERCENT`] %, answered `503` in
//!   [`REFUSE_PERCENT`] %.
//!
//! Async (tokio, one thread) so that thousands of idle keep-alive
//! connections cost a few kilobytes each.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Share of download requests cut short, in percent.
pub const DOWNLOAD_CUT_PERCENT: u32 = 35;
/// Share of other requests cut short, in percent.
pub const OTHER_CUT_PERCENT: u32 = 10;
/// Share of requests answered `503 Service Unavailable`, in percent.
pub const REFUSE_PERCENT: u32 = 5;

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Answers cut short.
    pub cuts: AtomicU64,
    /// Requests answered 503.
    pub refusals: AtomicU64,
}

/// A running proxy; it stops with the runtime it was started on.
#[derive(Debug)]
pub struct FlakyProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// What it did so far.
    pub stats: Arc<ProxyStats>,
}

impl FlakyProxy {
    /// Binds a loopback port and forwards it to `upstream`
    /// (`http://host:port`) on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        upstream: &str,
        seed: u64,
    ) -> std::io::Result<Self> {
        let upstream = upstream
            .strip_prefix("http://")
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the flaky-network proxy forwards plain http only, not {upstream}"
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let stats = Arc::new(ProxyStats::default());
        let shared = stats.clone();
        runtime.spawn(async move {
            let mut connections = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                connections += 1;
                let rng = SmallRng::seed_from_u64(seed ^ connections.wrapping_mul(0x9E37_79B9));
                let (upstream, stats) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = connection(client, &upstream, rng, stats).await;
                });
            }
        });
        Ok(FlakyProxy { url, stats })
    }
}

/// What to do with one request.
enum Fate {
    Pass,
    /// Forward this many answer bytes, then close.
    Cut(i64),
    Refuse,
}

fn fate(rng: &mut SmallRng, download: bool) -> Fate {
    let roll = rng.gen_range(0..100);
    if roll < REFUSE_PERCENT {
        return Fate::Refuse;
    }
    let (cut, bytes) = if download {
        (DOWNLOAD_CUT_PERCENT, 64 * 1024)
    } else {
        (OTHER_CUT_PERCENT, 400)
    };
    if roll < REFUSE_PERCENT + cut {
        Fate::Cut(rng.gen_range(0..bytes))
    } else {
        Fate::Pass
    }
}

async fn connection(
    client: TcpStream,
    upstream: &str,
    mut rng: SmallRng,
    stats: Arc<ProxyStats>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    // Answer bytes still allowed through; negative: no limit.
    let budget = Arc::new(AtomicI64::new(-1));

    let answers = {
        let (client_write, budget, stats) = (client_write.clone(), budget.clone(), stats.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = server_read.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let allowed = budget.load(Ordering::SeqCst);
                let send = if allowed < 0 {
                    n
                } else {
                    n.min(usize::try_from(allowed).unwrap_or(0))
                };
                client_write.lock().await.write_all(&buf[..send]).await?;
                if allowed >= 0 {
                    budget.fetch_sub(send as i64, Ordering::SeqCst);
                    if send < n || send as i64 == allowed {
                        stats.cuts.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            client_write.lock().await.shutdown().await
        }
    };
    let requests = async move {
        let mut reader = BufReader::new(client_read);
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).await? == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                head.extend_from_slice(&line);
                if line == b"\r\n" || head.len() > 64 * 1024 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length.min(16 * 1024 * 1024)];
            reader.read_exact(&mut body).await?;
            let download = text
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("get ") && l.contains("/download"));
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match fate(&mut rng, download) {
                Fate::Pass => budget.store(-1, Ordering::SeqCst),
                Fate::Cut(bytes) => budget.store(bytes, Ordering::SeqCst),
                Fate::Refuse => {
                    stats.refusals.fetch_add(1, Ordering::Relaxed);
                    let mut client = client_write.lock().await;
                    client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await?;
                    return client.shutdown().await;
                }
            }
            server_write.write_all(&head).await?;
            server_write.write_all(&body).await?;
        }
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        _ = answers => {},
        _ = requests => {},
    }
    Ok(())
}
