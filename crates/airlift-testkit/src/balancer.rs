//! A load balancer in front of several server instances, as an operator
//! runs one (HAProxy, nginx, a cloud load balancer) in TCP mode: each new
//! connection goes to the next instance in turn, skipping an instance that
//! refuses the connection (a killed process), and its bytes are piped both
//! ways until either side closes. A connection to an instance that dies
//! mid-answer ends as it would behind a real balancer: cut, for the client
//! to retry.
//!
//! Optionally it paces what each connection sends to the client
//! ([`Balancer::pace`]), so that downloads last long enough for a test to
//! kill an instance in the middle of them.
//!
//! Async (tokio, on one thread of its own); the caller needs no runtime. It
//! stops when dropped.

use crate::loopback::Service;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Bytes piped per read: also the pacing step.
const CHUNK: usize = 16 * 1024;

/// Receive buffer toward an instance while pacing.
const PACED_RECEIVE_BUFFER: u32 = 64 * 1024;

/// Longest a connection to an instance may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the balancer did, per instance, in the order given to
/// [`Balancer::start`].
#[derive(Debug)]
pub struct BalancerStats {
    connections: Vec<AtomicU64>,
    answer_bytes: Vec<AtomicU64>,
    refused: AtomicU64,
}

impl BalancerStats {
    /// Connections handed to each instance.
    pub fn connections(&self) -> Vec<u64> {
        self.connections
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Bytes each instance sent back to clients.
    pub fn answer_bytes(&self) -> Vec<u64> {
        self.answer_bytes
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Connection attempts an instance refused (each then tried on the
    /// next instance).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Shared {
    upstreams: Vec<SocketAddr>,
    next: AtomicU64,
    /// Bytes a second per connection toward the client; 0 = unpaced.
    pace: AtomicU64,
    stats: BalancerStats,
}

/// A running load balancer on a loopback port.
#[derive(Debug)]
pub struct Balancer {
    service: Service,
    shared: Arc<Shared>,
}

impl Balancer {
    /// Binds a loopback port and spreads its connections over `upstreams`
    /// round robin.
    pub fn start(upstreams: Vec<SocketAddr>) -> std::io::Result<Self> {
        if upstreams.is_empty() {
            return Err(std::io::Error::other("a balancer needs an upstream"));
        }
        let count = || upstreams.iter().map(|_| AtomicU64::new(0)).collect();
        let shared = Arc::new(Shared {
            stats: BalancerStats {
                connections: count(),
                answer_bytes: count(),
                refused: AtomicU64::new(0),
            },
            upstreams,
            next: AtomicU64::new(0),
            pace: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let service = Service::start("balancer", move |listener| accept(listener, accepting))?;
        Ok(Self { service, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.service.url()
    }

    /// What it did so far.
    pub fn stats(&self) -> &BalancerStats {
        &self.shared.stats
    }

    /// From now on, each connection sends the client at most
    /// `bytes_per_second` (0: as fast as it can).
    pub fn pace(&self, bytes_per_second: u64) {
        self.shared.pace.store(bytes_per_second, Ordering::SeqCst);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Some((index, upstream)) = connect(&shared).await {
                pipe(client, upstream, index, &shared).await;
            }
            // No instance took it: dropping the client closes it, as a
            // balancer with every backend down does.
        });
    }
}

/// The next instance in turn that takes a connection, and its index.
async fn connect(shared: &Shared) -> Option<(usize, TcpStream)> {
    let n = shared.upstreams.len();
    let first = shared.next.fetch_add(1, Ordering::SeqCst) as usize;
    for step in 0..n {
        let index = (first + step) % n;
        let paced = shared.pace.load(Ordering::SeqCst) > 0;
        let attempt = open(shared.upstreams[index], paced);
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => {
                shared.stats.connections[index].fetch_add(1, Ordering::SeqCst);
                return Some((index, stream));
            }
            _ => {
                shared.stats.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    None
}

/// A connection to an instance. Paced, with a small receive buffer: the
/// instance's answer then waits in the instance, not in this balancer's
/// socket, so that killing the instance cuts it (a loopback socket may
/// otherwise take megabytes).
async fn open(upstream: SocketAddr, paced: bool) -> std::io::Result<TcpStream> {
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if paced {
        socket.set_recv_buffer_size(PACED_RECEIVE_BUFFER)?;
    }
    socket.connect(upstream).await
}

async fn pipe(client: TcpStream, upstream: TcpStream, index: usize, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let answers = async {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            shared.stats.answer_bytes[index].fetch_add(n as u64, Ordering::SeqCst);
            let pace = shared.pace.load(Ordering::SeqCst);
            if pace > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / pace as f64)).await;
            }
        }
        let _ = client_write.shutdown().await;
    };
    // Either direction ending ends the connection: an instance that died
    // closes both.
    tokio::select! {
        () = requests => {},
        () = answers => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An upstream that answers each connection with its own name, then
    /// closes.
    fn named_upstream(name: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let _ = stream.write_all(name.as_bytes());
            }
        });
        addr
    }

    fn read_all(url: &str) -> String {
        let addr = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// A port nothing listens on: bound, then closed.
    fn dead_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }

    #[test]
    fn connections_go_round_robin_and_skip_an_instance_that_refuses() {
        let a = named_upstream("a");
        let b = named_upstream("b");
        let balancer = Balancer::start(vec![a, dead_port(), b]).expect("balancer");
        let answers: Vec<String> = (0..6).map(|_| read_all(balancer.url())).collect();
        assert!(answers.iter().all(|x| x == "a" || x == "b"), "{answers:?}");
        let [to_a, to_dead, to_b] = balancer.stats().connections()[..] else {
            panic!("three upstreams")
        };
        assert_eq!(to_dead, 0);
        assert_eq!(to_a + to_b, 6);
        assert!(to_a >= 2 && to_b >= 2, "spread: {to_a} and {to_b}");
        assert!(balancer.stats().refused() >= 2);
        assert_eq!(balancer.stats().answer_bytes(), vec![to_a, 0, to_b]);
    }

    #[test]
    fn pacing_slows_what_a_connection_sends() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let _ = stream.write_all(&[7u8; 64 * 1024]);
            }
        });
        let balancer = Balancer::start(vec![addr]).expect("balancer");
        balancer.pace(256 * 1024);
        let started = std::time::Instant::now();
        let answer = read_all(balancer.url());
        assert_eq!(answer.len(), 64 * 1024);
        // 64 KiB at 256 KiB/s: a quarter of a second, less the first chunk.
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn with_every_instance_down_a_connection_is_closed() {
        let balancer = Balancer::start(vec![dead_port()]).expect("balancer");
        assert_eq!(read_all(balancer.url()), "");
        assert_eq!(balancer.stats().refused(), 1);
    }
}
