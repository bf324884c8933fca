//! Update server benchmark: device check-ins per second against the real
//! `airlift-server` on SQLite, with a minimal axum server as the ceiling of
//! the HTTP stack, and package download throughput against nginx serving
//! the same file.
//!
//! ```text
//! cargo bench -p airlift-server --bench server
//! ```
//!
//! Every server is a separate process: `airlift-server` is the binary Cargo
//! builds for this package in the bench profile (`CARGO_BIN_EXE_airlift-server`,
//! under `target/release`), the ceiling server is this binary re-executed
//! with `--ceiling-server`, and nginx runs from a generated configuration in a
//! temporary directory (`apt-get install -y nginx` if it is missing). All of
//! them are killed when the benchmark ends or panics.
//!
//! The load client opens one kept-alive HTTP/1.1 connection per worker and
//! sends `POST /api/device/v1/check-in` back to back, cycling through the
//! devices' tokens, for a warm-up and then a measured window; it keeps every
//! latency of the window and reports exact percentiles. Phases:
//!
//! 1. the ceiling: an axum handler that reads the body and answers a fixed
//!    `{"poll_interval_secs":60}` (the size of a real answer without offer);
//! 2. `airlift-server` with no deployment;
//! 3. `airlift-server` while an active deployment targets every device, for
//!    which every benchmark device is `incompatible` (one extra device that
//!    never checks in keeps the deployment active): each check-in looks the
//!    deployment up and gets no offer.
//!
//! Then the parts of a check-in are timed in this process, on the server's
//! own database through `airlift_store` (the server idles meanwhile): the
//! token check, each store call, and one SQLite round trip through an sqlx
//! pool with and without its liveness ping, alone and with many callers.
//!
//! Last, a package with a 256 MiB uncompressed payload is served by nginx
//! (`sendfile on`, one worker) and downloaded from `airlift-server` by a
//! device, whole and resumed from its middle (`Range: bytes=<half>-`). Each
//! download is a fresh connection read with 1 MiB blocking `read`s and
//! thrown away; the four kinds take turns, 5 rounds after an untimed one,
//! and the best and the median of the 5 are reported.
//!
//! Output: progress on stderr, markdown tables on stdout. Parameters come
//! from the environment: `AIRLIFT_BENCH_DEVICES` (1000),
//! `AIRLIFT_BENCH_CONCURRENCY` (64), `AIRLIFT_BENCH_SECS` (10),
//! `AIRLIFT_BENCH_WARMUP_SECS` (2), `AIRLIFT_BENCH_CLIENT_THREADS` (2),
//! `AIRLIFT_BENCH_PACKAGE_MIB` (256, 0 skips the downloads),
//! `AIRLIFT_BENCH_DOWNLOAD_RUNS` (5). `AIRLIFT_BENCH_SERVER_BIN` runs
//! another build of `airlift-server` (to measure a change against the
//! same client and ceiling). `AIRLIFT_BENCH_KEEP=1` keeps the
//! temporary directory and leaves `airlift-server` running until Enter is pressed
//! (for profiling); `AIRLIFT_BENCH_SERVER_LOG=1` copies the server's log to
//! stderr.

use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageWriter, PayloadSpec,
    PayloadType, SignedManifest, SigningKey,
};
use airlift_protocol::auth::{public_key_pem, sign_body};
use airlift_protocol::device::{AuthRequest, AUTH_PATH, CHECK_IN_PATH, SIGNATURE_HEADER};
use airlift_testkit::procfs;
use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

// The ceiling server and the load client allocate with what airlift-server
// allocates with, so that the ceiling measures the HTTP stack and the
// comparison is not between allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_TOKEN: &str = "alt_bench_admin_token_0123456789";
const DEVICE_TYPE: &str = "bench-board";
const OTHER_DEVICE_TYPE: &str = "other-board";
/// What the real server answers a check-in without offer (poll interval 60 s).
const CEILING_BODY: &str = r#"{"poll_interval_secs":60}"#;
const MIB: u64 = 1024 * 1024;
const MB: f64 = 1e6;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--ceiling-server") {
        if let Err(error) = ceiling_server() {
            eprintln!("ceiling server failed: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    let params = Params::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    if let Err(error) = runtime.block_on(run(params)) {
        eprintln!("benchmark failed: {error:#}");
        std::process::exit(1);
    }
}

// --- parameters ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Params {
    devices: usize,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    client_threads: usize,
    package_mib: u64,
    download_runs: usize,
    /// Servers on one core and the download client on another while
    /// downloads are measured (`AIRLIFT_BENCH_PIN=0` turns it off; needs two
    /// cores).
    pin_downloads: bool,
    keep: bool,
}

impl Params {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(value) => value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
                Err(_) => default,
            }
        };
        Self {
            devices: number("AIRLIFT_BENCH_DEVICES", 1000).max(1) as usize,
            concurrency: number("AIRLIFT_BENCH_CONCURRENCY", 64).max(1) as usize,
            duration: Duration::from_secs(number("AIRLIFT_BENCH_SECS", 10).max(1)),
            warmup: Duration::from_secs(number("AIRLIFT_BENCH_WARMUP_SECS", 2)),
            client_threads: number("AIRLIFT_BENCH_CLIENT_THREADS", 2).max(1) as usize,
            package_mib: number("AIRLIFT_BENCH_PACKAGE_MIB", 256),
            download_runs: number("AIRLIFT_BENCH_DOWNLOAD_RUNS", 5).max(1) as usize,
            pin_downloads: number("AIRLIFT_BENCH_PIN", 1) != 0
                && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2),
            keep: std::env::var_os("AIRLIFT_BENCH_KEEP").is_some(),
        }
    }
}

// --- the ceiling server ---------------------------------------------------------

/// A multi-threaded tokio runtime (as `#[tokio::main]` in `airlift-server`)
/// serving one axum route that reads the request body and answers a fixed
/// JSON body. Prints `listening on ADDR` on stdout when it accepts.
fn ceiling_server() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = axum::Router::new().route(
            CHECK_IN_PATH,
            axum::routing::post(|_body: Bytes| async {
                ([(CONTENT_TYPE, "application/json")], CEILING_BODY)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

// --- child processes ------------------------------------------------------------

/// A child process that is stopped when dropped, also on panic: `SIGTERM`
/// first (nginx's master then stops its workers), `SIGKILL` if it lingers.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ceiling server: this binary again, with `--ceiling-server`.
fn start_ceiling() -> Result<(Guard, SocketAddr)> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let child = Command::new(exe)
        .arg("--ceiling-server")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the ceiling server")?;
    let mut guard = Guard {
        name: "ceiling server",
        child,
    };
    let stdout = guard.child.stdout.take().context("piped stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("ceiling server said {line:?}"))?
        .parse()?;
    Ok((guard, addr))
}

/// One `airlift-server` on SQLite in `dir`, and what its log says.
struct Server {
    guard: Guard,
    addr: SocketAddr,
    url: String,
    warnings: Arc<AtomicU64>,
    signer: SigningKey,
}

/// The server under test: Cargo's build of this package's binary, or
/// `AIRLIFT_BENCH_SERVER_BIN` to compare another build of it.
fn server_binary() -> PathBuf {
    std::env::var_os("AIRLIFT_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airlift-server")))
}

fn start_server(dir: &Path) -> Result<Server> {
    std::fs::create_dir_all(dir)?;
    let signer = SigningKey::generate()?;
    let trust = dir.join("release.pub");
    std::fs::write(&trust, signer.public_key().to_pem()?)?;
    let mut command = Command::new(server_binary());
    // Only the flags below configure it, whatever this shell exports.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AIRLIFT_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--trust")
        .arg(&trust)
        .args(["--poll-interval", "60", "--max-package-mib", "4096"])
        // The bench enrols its whole fleet from one address, faster than
        // the first-contact limit a public server keeps.
        .args(["--first-contact-per-minute", "0"])
        .env("AIRLIFT_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().context("starting airlift-server")?;
    let mut guard = Guard {
        name: "airlift-server",
        child,
    };
    let stderr = guard.child.stderr.take().context("piped stderr")?;
    let warnings = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let counter = Arc::clone(&warnings);
    let copy_log = std::env::var_os("AIRLIFT_BENCH_SERVER_LOG").is_some();
    // Reads the log until the server exits, so that it never blocks on a
    // full pipe; counts warnings and errors.
    std::thread::spawn(move || {
        let mut shown = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let entry = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
            if entry["fields"]["message"] == "airlift-server ready" {
                let _ = tx.send(Ok(entry["fields"]["listen"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()));
                continue;
            }
            if matches!(entry["level"].as_str(), Some("WARN" | "ERROR")) {
                counter.fetch_add(1, Ordering::Relaxed);
                if shown < 5 && !copy_log {
                    shown += 1;
                    eprintln!("airlift-server: {line}");
                }
            }
            if copy_log {
                eprintln!("airlift-server: {line}");
            }
            let _ = tx.send(Err(line));
        }
    });
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(addr)) => break addr.parse()?,
            Ok(Err(line)) => log.push(line),
            Err(_) => bail!("airlift-server did not become ready:\n{}", log.join("\n")),
        }
    };
    Ok(Server {
        guard,
        addr,
        url: format!("http://{addr}"),
        warnings,
        signer,
    })
}

/// nginx serving `root` on a free loopback port, from a generated config.
fn start_nginx(dir: &Path, root: &Path) -> Result<(Guard, SocketAddr)> {
    let nginx = find_nginx()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let d = dir.display();
    let config = format!(
        "worker_processes 1;\n\
         error_log {d}/error.log warn;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen {addr};\n\
         \x20       root {root};\n\
         \x20   }}\n\
         }}\n",
        root = root.display(),
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config)?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx")?;
    let mut guard = Guard {
        name: "nginx",
        child,
    };
    // nginx prints nothing when it is ready: try to connect until it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        if let Some(status) = guard.child.try_wait()? {
            bail!(
                "nginx exited with {status}; its log: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        ensure!(Instant::now() < deadline, "nginx did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((guard, addr))
}

/// nginx's path, installing it with apt-get when it is missing.
fn find_nginx() -> Result<PathBuf> {
    let found = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    eprintln!("nginx is missing: apt-get install -y nginx");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .status()?;
        install()?;
    }
    found().context("nginx is not installed and apt-get could not install it")
}

// --- process accounting ---------------------------------------------------------

// CPU time, context switches and peak memory come from airlift_testkit::procfs.

/// How idle the machine was over `span`, in per cent of all cores, from
/// `/proc/stat`: other work on the machine skews every number here.
fn machine_idle(span: Duration) -> f64 {
    let sample = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let values: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = values.get(3)? + values.get(4)?;
        Some((idle, values.iter().take(8).sum()))
    };
    let Some((idle_0, total_0)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(span);
    let Some((idle_1, total_1)) = sample() else {
        return f64::NAN;
    };
    100.0 * (idle_1 - idle_0) as f64 / (total_1 - total_0).max(1) as f64
}

// --- devices and the management API -----------------------------------------------

/// A device the server accepted, with its token and what it reports.
struct Device {
    id: String,
    token: String,
    inventory: Value,
}

fn inventory(index: usize) -> Value {
    let region = ["eu-west", "us-east", "ap-south"][index % 3];
    json!({
        "device_type": DEVICE_TYPE,
        "hardware_revision": "rev-c",
        "installed": {
            "bootloader": "2024.01.3",
            "os": "1.4.2",
            "fleet-agent": "3.2.1",
        },
        "security_version": 3,
        "attributes": {
            "kernel": "6.6.31-bench",
            "region": region,
            "site": format!("plant-{:02}", index % 17),
            "serial": format!("SN-{index:06}"),
            "mac": format!("02:00:00:{:02x}:{:02x}:{:02x}", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff),
        },
    })
}

/// The management and setup side: a pooled reqwest client.
struct Admin {
    client: reqwest::Client,
    url: String,
}

impl Admin {
    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(StatusCode, Value)> {
        let response = self
            .client
            .post(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .client
            .get(self.api(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    async fn upload(&self, file: &Path) -> Result<Value> {
        let bytes = tokio::fs::read(file).await?;
        let response = self
            .client
            .post(self.api("/packages"))
            .bearer_auth(ADMIN_TOKEN)
            .body(bytes)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.as_u16() == 201, "upload: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    async fn deploy(&self, package_id: &str, devices: &[&str]) -> Result<String> {
        let (status, body) = self
            .post(
                "/deployments",
                &json!({"name": "bench", "package_id": package_id, "target": {"devices": devices}}),
            )
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "deployment: {status}: {body}"
        );
        Ok(body["id"].as_str().context("deployment id")?.to_owned())
    }

    /// Auth (pending) → accept → auth (token), as a device's first contact.
    async fn enrol(&self, serial: String) -> Result<(String, String)> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let auth = || async {
            let mut nonce = [0u8; 16];
            getrandom::getrandom(&mut nonce)?;
            let request = AuthRequest {
                identity: [("serial".to_owned(), serial.clone())].into(),
                public_key: public_key_pem(&key.verifying_key()),
                timestamp: chrono::Utc::now().timestamp(),
                nonce: hex::encode(nonce),
            };
            let body = serde_json::to_vec(&request)?;
            let response = self
                .client
                .post(format!("{}{AUTH_PATH}", self.url))
                .header(SIGNATURE_HEADER, sign_body(&key, &body))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let answer: Value = response.json().await?;
            anyhow::Ok((status, answer))
        };
        let (status, answer) = auth().await?;
        ensure!(status == 202, "first auth: {status} {answer}");
        let id = answer["device_id"]
            .as_str()
            .context("device id")?
            .to_owned();
        let (status, answer) = self
            .post(&format!("/devices/{id}/accept"), &Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "accept: {status} {answer}");
        let (status, answer) = auth().await?;
        ensure!(status == 200, "second auth: {status} {answer}");
        let token = answer["token"].as_str().context("token")?.to_owned();
        Ok((id, token))
    }

    async fn check_in(&self, device: &Device) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}{CHECK_IN_PATH}", self.url))
            .bearer_auth(&device.token)
            .json(&device.inventory)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "check-in: {}",
            response.status()
        );
        Ok(response.json().await?)
    }
}

// --- packages -------------------------------------------------------------------

/// A package with one uncompressed image payload of `image` bytes of
/// xorshift noise, written to `path`.
fn build_package(
    key: &SigningKey,
    version: &str,
    device_type: &str,
    image: usize,
    path: &Path,
) -> Result<u64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ image as u64;
    let mut data = Vec::with_capacity(image + 8);
    while data.len() < image {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(image);
    let spec = PayloadSpec::new(PayloadType::Image, "rootfs", Compression::None);
    let mut stored = Vec::with_capacity(image);
    let entry = encode_payload(&data[..], &spec, &EncodeOptions::default(), &mut stored)?;
    drop(data);
    let manifest = Manifest::builder("bench-os", version.parse()?, [device_type])
        .security_version(3)
        .payload(entry)
        .build();
    let signed = SignedManifest::sign(&manifest, &[key], &Limits::default())?;
    let mut file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut writer = PackageWriter::new(&mut file, &signed)?;
    writer.write_payload(&stored[..])?;
    writer.finish()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(std::fs::metadata(path)?.len())
}

// --- the HTTP/1.1 load client ---------------------------------------------------------

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One check-in request as sent: the device's bearer token and body.
#[derive(Clone)]
struct CheckIn {
    authorization: HeaderValue,
    body: Bytes,
}

fn check_ins(devices: &[Device]) -> Result<Arc<Vec<CheckIn>>> {
    devices
        .iter()
        .map(|d| {
            Ok(CheckIn {
                authorization: HeaderValue::from_str(&format!("Bearer {}", d.token))?,
                body: Bytes::from(serde_json::to_vec(&d.inventory)?),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Arc::new)
}

/// The result of one load phase.
struct LoadResult {
    name: String,
    requests: u64,
    errors: u64,
    seconds: f64,
    /// Every latency of the measured window, sorted, in nanoseconds.
    latencies: Vec<u64>,
    server_cpu: f64,
    client_cpu: f64,
    server_switches: u64,
    server_rss_mib: f64,
    response_bytes: usize,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1] as f64 / 1e6
    }
}

/// `concurrency` workers, each on its own kept-alive connection, send
/// check-ins back to back for `warmup + duration`; latencies of requests that
/// complete inside the measured window are kept.
async fn load(
    name: &str,
    addr: SocketAddr,
    server_pid: u32,
    requests: Arc<Vec<CheckIn>>,
    params: &Params,
) -> Result<LoadResult> {
    let host = HeaderValue::from_str(&addr.to_string())?;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_start = start + params.warmup;
    let measure_end = measure_start + params.duration;
    let mut workers = Vec::new();
    for worker in 0..params.concurrency {
        let requests = Arc::clone(&requests);
        let host = host.clone();
        let stride = params.concurrency;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut response_bytes = 0usize;
            let mut sender = connect(addr).await?;
            tokio::time::sleep_until(start.into()).await;
            let mut next = worker;
            loop {
                let check_in = &requests[next % requests.len()];
                next += stride;
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(CHECK_IN_PATH)
                    .header(HOST, host.clone())
                    .header(AUTHORIZATION, check_in.authorization.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(check_in.body.clone()))?;
                let sent = Instant::now();
                if sent >= measure_end {
                    break;
                }
                let outcome = async {
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    anyhow::Ok((status, body.len()))
                }
                .await;
                let done = Instant::now();
                let in_window = sent >= measure_start && done < measure_end;
                match outcome {
                    Ok((StatusCode::OK, len)) => {
                        response_bytes = len;
                        if in_window {
                            latencies.push((done - sent).as_nanos() as u64);
                        }
                    }
                    Ok((_, _)) => errors += u64::from(in_window),
                    Err(_) => {
                        errors += u64::from(in_window);
                        sender = connect(addr).await?;
                    }
                }
            }
            anyhow::Ok((latencies, errors, response_bytes))
        }));
    }
    tokio::time::sleep_until(measure_start.into()).await;
    let (server_cpu_0, client_cpu_0) = (
        procfs::cpu_seconds_with_children(server_pid),
        own_cpu_seconds(),
    );
    let switches_0 = procfs::context_switches(server_pid).unwrap_or(0);
    let measured_from = Instant::now();
    tokio::time::sleep_until(measure_end.into()).await;
    let (server_cpu_1, client_cpu_1) = (
        procfs::cpu_seconds_with_children(server_pid),
        own_cpu_seconds(),
    );
    let switches_1 = procfs::context_switches(server_pid).unwrap_or(0);
    let cpu_window = measured_from.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut response_bytes = 0;
    for worker in workers {
        let (mut l, e, b) = worker.await??;
        latencies.append(&mut l);
        errors += e;
        response_bytes = response_bytes.max(b);
    }
    latencies.sort_unstable();
    Ok(LoadResult {
        name: name.to_owned(),
        requests: latencies.len() as u64,
        errors,
        seconds: params.duration.as_secs_f64(),
        latencies,
        server_cpu: (server_cpu_1 - server_cpu_0) / cpu_window,
        client_cpu: (client_cpu_1 - client_cpu_0) / cpu_window,
        server_switches: switches_1.saturating_sub(switches_0),
        server_rss_mib: procfs::peak_rss_mib(server_pid).unwrap_or(f64::NAN),
        response_bytes,
    })
}

fn own_cpu_seconds() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

// --- downloads --------------------------------------------------------------------

/// One kind of download: where from, what is asked, what must come back.
struct DownloadSpec {
    name: String,
    addr: SocketAddr,
    server_pid: u32,
    path: String,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    bytes: u64,
    /// The row this one is compared with (nginx serving the same bytes).
    baseline: Option<usize>,
}

/// What the runs of one kind of download measured.
#[derive(Default)]
struct DownloadResult {
    runs: Vec<Duration>,
    server_cpu: f64,
    client_cpu: f64,
    server_rss_mib: f64,
}

impl DownloadResult {
    fn best(&self) -> Duration {
        self.runs.iter().min().copied().unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let mut runs = self.runs.clone();
        runs.sort_unstable();
        runs.get(runs.len() / 2).copied().unwrap_or_default()
    }
}

/// One download on a fresh connection: a blocking socket read with a 1 MiB
/// buffer and the bytes discarded, so that the client costs as little as
/// `curl -o /dev/null` would. Returns the time from sending the request to
/// the last byte, and the server's and this process's CPU seconds meanwhile.
fn download_once(spec: &DownloadSpec) -> Result<(Duration, f64, f64)> {
    use std::io::Read;
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", spec.path, spec.addr);
    for (name, value) in &spec.headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    let mut stream = std::net::TcpStream::connect(spec.addr)?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 1 << 20];
    let (server_cpu, client_cpu) = (
        procfs::cpu_seconds_with_children(spec.server_pid),
        own_cpu_seconds(),
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes())?;
    let mut filled = 0;
    let head_end = loop {
        let n = stream.read(&mut buf[filled..])?;
        ensure!(n > 0, "{}: connection closed in the head", spec.name);
        filled += n;
        if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(filled < 64 * 1024, "{}: head too long", spec.name);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    ensure!(
        status == spec.status.as_str(),
        "{}: status {status} instead of {}:\n{head}",
        spec.name,
        spec.status
    );
    let length: u64 = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .with_context(|| format!("{}: no Content-Length:\n{head}", spec.name))?;
    ensure!(
        length == spec.bytes,
        "{}: Content-Length {length} instead of {}",
        spec.name,
        spec.bytes
    );
    let mut received = (filled - head_end) as u64;
    while received < length {
        let n = stream.read(&mut buf)?;
        ensure!(n > 0, "{}: closed after {received} bytes", spec.name);
        received += n as u64;
    }
    let elapsed = started.elapsed();
    ensure!(
        received == length,
        "{}: {received} bytes instead of {length}",
        spec.name
    );
    Ok((
        elapsed,
        procfs::cpu_seconds_with_children(spec.server_pid) - server_cpu,
        own_cpu_seconds() - client_cpu,
    ))
}

/// Runs every kind of download once per round, `runs` rounds after an
/// untimed one, so that whatever else the machine does hits all alike.
fn download_rounds(specs: &[DownloadSpec], runs: usize) -> Result<Vec<DownloadResult>> {
    let mut results: Vec<DownloadResult> =
        specs.iter().map(|_| DownloadResult::default()).collect();
    for round in 0..=runs {
        for (spec, result) in specs.iter().zip(&mut results) {
            let (elapsed, server_cpu, client_cpu) = download_once(spec)?;
            if round > 0 {
                result.runs.push(elapsed);
                result.server_cpu += server_cpu;
                result.client_cpu += client_cpu;
            }
        }
    }
    for (spec, result) in specs.iter().zip(&mut results) {
        result.server_rss_mib = procfs::peak_rss_mib(spec.server_pid).unwrap_or(f64::NAN);
    }
    Ok(results)
}

// --- components ---------------------------------------------------------------------

/// What one step of a check-in costs, timed in this process.
struct Component {
    name: String,
    calls: u64,
    wall_us: f64,
    cpu_us: f64,
}

/// Calls `step` `n` times one after another; wall and CPU time per call
/// (CPU of this whole process: the caller and SQLite's worker threads).
async fn time_sequential<F, Fut>(name: &str, n: usize, mut step: F) -> Result<Component>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for i in 0..n / 10 {
        step(i).await?;
    }
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    for i in 0..n {
        step(i).await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu;
    Ok(Component {
        name: name.to_owned(),
        calls: n as u64,
        wall_us: wall * 1e6 / n as f64,
        cpu_us: cpu * 1e6 / n as f64,
    })
}

type Step = Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// `tasks` callers run `step` back to back for `duration`: calls per second
/// and CPU per call.
async fn time_concurrent(
    name: &str,
    tasks: usize,
    duration: Duration,
    step: Step,
) -> Result<Component> {
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    let end = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let step = Arc::clone(&step);
        handles.push(tokio::spawn(async move {
            let mut calls = 0u64;
            let mut i = task;
            while Instant::now() < end {
                step(i).await?;
                i += tasks;
                calls += 1;
            }
            anyhow::Ok(calls)
        }));
    }
    let mut calls = 0;
    for handle in handles {
        calls += handle.await??;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu;
    Ok(Component {
        name: name.to_owned(),
        calls,
        wall_us: wall * 1e6 / calls as f64,
        cpu_us: cpu * 1e6 / calls as f64,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DeviceClaims {
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// Times the parts of a check-in on the server's own database, with the
/// store the server uses, opened in this process while the server idles.
async fn components(
    db: &Path,
    devices: &[Device],
    deployment: &str,
    concurrency: usize,
) -> Result<Vec<Component>> {
    use airlift_protocol::device::Inventory;
    use airlift_protocol::{DeploymentId, DeviceId};
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use sqlx::{Connection, Row};

    let store = airlift_store::open(&airlift_store::DatabaseUrl::Sqlite(db.to_owned())).await?;
    let ids: Arc<Vec<DeviceId>> = Arc::new(
        devices
            .iter()
            .map(|d| d.id.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("device id: {e:?}"))?,
    );
    let inventories: Arc<Vec<Inventory>> = Arc::new(
        devices
            .iter()
            .map(|d| serde_json::from_value(d.inventory.clone()))
            .collect::<Result<_, _>>()?,
    );
    let deployment: DeploymentId = deployment
        .parse()
        .map_err(|e| anyhow::anyhow!("deployment id: {e:?}"))?;
    let n = ids.len();
    let mut rows = Vec::new();

    // The device token check of every request.
    let secret = store
        .setting("device_token_secret")
        .await?
        .context("device token secret")?;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["airlift-device"]);
    validation.leeway = 5;
    let tokens: Vec<&str> = devices.iter().map(|d| d.token.as_str()).collect();
    rows.push(
        time_sequential("device token check (HS256 JWT decode)", 20_000, |i| {
            let result = jsonwebtoken::decode::<DeviceClaims>(tokens[i % n], &key, &validation);
            async move {
                result?;
                Ok(())
            }
        })
        .await?,
    );

    let now = chrono::Utc::now();
    macro_rules! sequential {
        ($name:expr, |$i:ident, $store:ident, $ids:ident, $inventories:ident| $body:expr) => {
            rows.push(
                time_sequential($name, 3000, |$i| {
                    let $store = Arc::clone(&store);
                    let $ids = Arc::clone(&ids);
                    let $inventories = Arc::clone(&inventories);
                    async move {
                        let _ = (&$store, &$ids, &$inventories);
                        $body;
                        Ok(())
                    }
                })
                .await?,
            )
        };
    }
    sequential!(
        "store.device(): 1 SELECT (device_records view)",
        |i, store, ids, inv| { store.device(ids[i % n]).await?.context("device")? }
    );
    sequential!(
        "store.record_check_in(), inventory unchanged: 1 UPDATE",
        |i, store, ids, inv| store.record_check_in(ids[i % n], &inv[i % n], now).await?
    );
    sequential!(
        "store.device_update(): 1 SELECT per active deployment, (c) only",
        |i, store, ids, inv| store.device_update(deployment, ids[i % n]).await?
    );

    // What one query through the pool costs with and without the liveness
    // ping sqlx sends before handing out an idle connection.
    let options = SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    for test in [true, false] {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(test)
            .connect_with(options.clone())
            .await?;
        rows.push(
            time_sequential(
                &format!("sqlx pool, `SELECT 1`, test_before_acquire({test})"),
                5000,
                |_| {
                    let pool = pool.clone();
                    async move {
                        let row = sqlx::query("SELECT 1").fetch_one(&pool).await?;
                        let _: i64 = row.try_get(0)?;
                        Ok(())
                    }
                },
            )
            .await?,
        );
        let six: Step = {
            let pool = pool.clone();
            Arc::new(move |_| {
                let pool = pool.clone();
                Box::pin(async move {
                    for _ in 0..6 {
                        sqlx::query("SELECT 1").fetch_one(&pool).await?;
                    }
                    Ok(())
                })
            })
        };
        rows.push(
            time_concurrent(
                &format!(
                    "6 × `SELECT 1` through the pool, test_before_acquire({test}), {concurrency} callers"
                ),
                concurrency,
                Duration::from_secs(3),
                six,
            )
            .await?,
        );
        pool.close().await;
    }
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let calls = 5000;
    for _ in 0..calls / 10 {
        sqlx::query("SELECT 1").fetch_one(&mut conn).await?;
    }
    let cpu = own_cpu_seconds();
    let started = Instant::now();
    for _ in 0..calls {
        sqlx::query("SELECT 1").fetch_one(&mut conn).await?;
    }
    rows.push(Component {
        name: "`SELECT 1` on one connection, no pool".into(),
        calls,
        wall_us: started.elapsed().as_secs_f64() * 1e6 / calls as f64,
        cpu_us: (own_cpu_seconds() - cpu) * 1e6 / calls as f64,
    });
    conn.close().await?;

    // The store's part of whole check-ins, many callers at once.
    // The store calls of whole check-ins as the server makes them (active
    // deployments and packages come from its in-memory caches), many
    // callers at once.
    let active: Arc<Vec<DeploymentId>> = Arc::new(
        store
            .active_deployments()
            .await?
            .iter()
            .map(|d| d.id)
            .collect(),
    );
    for (label, deployments) in [
        (
            "(b) check-in without caches: 2 queries",
            Arc::new(Vec::new()),
        ),
        ("(c) check-in without caches: 3 queries", active),
    ] {
        let sequence: Step = {
            let store = Arc::clone(&store);
            let ids = Arc::clone(&ids);
            let inventories = Arc::clone(&inventories);
            Arc::new(move |i| {
                let store = Arc::clone(&store);
                let ids = Arc::clone(&ids);
                let inventories = Arc::clone(&inventories);
                let deployments = Arc::clone(&deployments);
                Box::pin(async move {
                    let id = ids[i % ids.len()];
                    store.device(id).await?.context("device")?;
                    store
                        .record_check_in(id, &inventories[i % ids.len()], chrono::Utc::now())
                        .await?;
                    for deployment in deployments.iter() {
                        store.device_update(*deployment, id).await?;
                    }
                    Ok(())
                })
            })
        };
        rows.push(
            time_concurrent(
                &format!("store calls of a {label}, {concurrency} callers"),
                concurrency,
                Duration::from_secs(3),
                sequence,
            )
            .await?,
        );
    }
    Ok(rows)
}

// --- the benchmark ---------------------------------------------------------------

async fn run(params: Params) -> Result<()> {
    let binary = server_binary();
    eprintln!("airlift-server binary: {}", binary.display());
    if !binary.components().any(|c| c.as_os_str() == "release") {
        eprintln!(
            "warning: the server binary is not under target/release; run `cargo bench`, \
             not `cargo test --benches`, for optimised numbers"
        );
    }
    eprintln!("parameters: {params:?}");
    let idle = machine_idle(Duration::from_secs(1));
    eprintln!("machine idle before the start: {idle:.0} %");
    let dir = tempfile::tempdir()?;

    // (a) the ceiling, first, on an idle machine.
    let server = start_server(&dir.path().join("airlift"))?;
    let admin = Admin {
        client: reqwest::Client::builder().build()?,
        url: server.url.clone(),
    };
    let devices = enrol_devices(&admin, params.devices).await?;
    let requests = check_ins(&devices)?;
    let (ceiling, ceiling_addr) = start_ceiling()?;
    eprintln!("(a) ceiling server on {ceiling_addr}");
    let mut results = vec![
        load(
            "(a) ceiling: minimal axum handler, fixed JSON",
            ceiling_addr,
            ceiling.pid(),
            Arc::clone(&requests),
            &params,
        )
        .await?,
    ];
    drop(ceiling);

    eprintln!("(b) airlift-server, no deployment");
    results.push(
        load(
            "(b) airlift-server, no deployment",
            server.addr,
            server.guard.pid(),
            Arc::clone(&requests),
            &params,
        )
        .await?,
    );

    // (c) an active deployment targeting every device, all incompatible but
    // one that never checks in (and keeps the deployment active).
    let holdout = admin.enrol("SN-HOLDOUT".into()).await?.0;
    let other = dir.path().join("other.airlift");
    build_package(&server.signer, "2.0.0", OTHER_DEVICE_TYPE, 300_000, &other)?;
    let other = admin.upload(&other).await?;
    let mut targets: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    targets.push(&holdout);
    let deployment = admin
        .deploy(other["id"].as_str().context("package id")?, &targets)
        .await?;
    let detail = admin.get(&format!("/deployments/{deployment}")).await?;
    let answer = admin.check_in(&devices[0]).await?;
    if detail["status"] == "active"
        && detail["counts"]["incompatible"] == devices.len()
        && answer.get("update").is_none()
    {
        eprintln!("(c) airlift-server, active deployment {deployment}, devices incompatible");
        results.push(
            load(
                "(c) airlift-server, active deployment, device incompatible",
                server.addr,
                server.guard.pid(),
                Arc::clone(&requests),
                &params,
            )
            .await?,
        );
        let detail = admin.get(&format!("/deployments/{deployment}")).await?;
        ensure!(
            detail["status"] == "active",
            "deployment {deployment} finished during (c)"
        );
    } else {
        // Only a server that does not record inventories gets here.
        eprintln!(
            "(c) skipped: the deployment is not as planned: {} {}; check-in answer {answer}",
            detail["status"], detail["counts"]
        );
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "The machine was {idle:.0} % idle in the second before the start.\n"
    );
    print_load_table(&mut out, &params, &results);

    eprintln!("timing the parts of a check-in");
    let parts = components(
        &dir.path().join("airlift/data/airlift.db"),
        &devices,
        &deployment,
        params.concurrency,
    )
    .await?;
    print_components(&mut out, &parts);

    if params.package_mib > 0 {
        let (specs, results) = downloads(&params, &server, &admin, &devices[0], dir.path()).await?;
        print_download_table(&mut out, &params, &specs, &results);
    }
    let warnings = server.warnings.load(Ordering::Relaxed);
    if warnings > 0 {
        let _ = writeln!(out, "\nThe server logged {warnings} warnings or errors.");
    }
    println!("{out}");
    if params.keep {
        let kept = dir.keep();
        eprintln!(
            "kept {}; airlift-server (pid {}) on {}; press Enter to stop",
            kept.display(),
            server.guard.pid(),
            server.url
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    Ok(())
}

async fn enrol_devices(admin: &Admin, count: usize) -> Result<Vec<Device>> {
    let started = Instant::now();
    let enrolled: Vec<Result<(String, String)>> = futures::stream::iter(0..count)
        .map(|i| admin.enrol(format!("SN-{i:06}")))
        .buffered(16)
        .collect()
        .await;
    let mut devices = Vec::with_capacity(count);
    for (index, result) in enrolled.into_iter().enumerate() {
        let (id, token) = result?;
        devices.push(Device {
            id,
            token,
            inventory: inventory(index),
        });
    }
    // First check-ins store the inventories; from here on only the time changes.
    let answers: Vec<Result<Value>> = futures::stream::iter(&devices)
        .map(|d| admin.check_in(d))
        .buffered(16)
        .collect()
        .await;
    for answer in answers {
        answer?;
    }
    eprintln!(
        "{count} devices authenticated, accepted and checked in once in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(devices)
}

async fn downloads(
    params: &Params,
    server: &Server,
    admin: &Admin,
    device: &Device,
    dir: &Path,
) -> Result<(Vec<DownloadSpec>, Vec<DownloadResult>)> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let package = www.join("bench.airlift");
    eprintln!(
        "building a package with a {} MiB payload",
        params.package_mib
    );
    let size = build_package(
        &server.signer,
        "3.0.0",
        DEVICE_TYPE,
        (params.package_mib * MIB) as usize,
        &package,
    )?;
    // nginx's worker may run as another user: let it read the file.
    use std::os::unix::fs::PermissionsExt;
    for path in [dir, www.as_path(), package.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    eprintln!("uploading it ({size} bytes)");
    let uploaded = admin.upload(&package).await?;
    let deployment = admin
        .deploy(
            uploaded["id"].as_str().context("package id")?,
            &[&device.id],
        )
        .await?;
    let answer = admin.check_in(device).await?;
    ensure!(
        answer["update"]["deployment_id"] == deployment.as_str(),
        "no offer: {answer}"
    );

    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let (nginx, nginx_addr) = start_nginx(&nginx_dir, &www)?;
    let auth = ("Authorization", format!("Bearer {}", device.token));
    let path = airlift_protocol::device::download_path(deployment.parse()?);
    let half = size / 2;
    let range = ("Range", format!("bytes={half}-"));
    let specs = vec![
        DownloadSpec {
            name: "nginx, whole file (baseline)".into(),
            addr: nginx_addr,
            server_pid: nginx.pid(),
            path: "/bench.airlift".into(),
            headers: vec![],
            status: StatusCode::OK,
            bytes: size,
            baseline: None,
        },
        DownloadSpec {
            name: "airlift-server, whole package".into(),
            addr: server.addr,
            server_pid: server.guard.pid(),
            path: path.clone(),
            headers: vec![auth.clone()],
            status: StatusCode::OK,
            bytes: size,
            baseline: Some(0),
        },
        DownloadSpec {
            name: format!("nginx, `Range: bytes={half}-` (baseline)"),
            addr: nginx_addr,
            server_pid: nginx.pid(),
            path: "/bench.airlift".into(),
            headers: vec![range.clone()],
            status: StatusCode::PARTIAL_CONTENT,
            bytes: size - half,
            baseline: None,
        },
        DownloadSpec {
            name: format!("airlift-server, resumed: `Range: bytes={half}-`"),
            addr: server.addr,
            server_pid: server.guard.pid(),
            path,
            headers: vec![auth, range],
            status: StatusCode::PARTIAL_CONTENT,
            bytes: size - half,
            baseline: Some(2),
        },
    ];
    eprintln!(
        "downloading {size} bytes, {} rounds after an untimed one (nginx on {nginx_addr})",
        params.download_runs
    );
    let runs = params.download_runs;
    // One core each for the servers and the client, so that neither's copy
    // competes with the other's and every run is scheduled alike (unpinned,
    // nginx swung between two speeds from run to run).
    let pinned = params.pin_downloads;
    if pinned {
        pin_process(nginx.pid(), SERVER_CPU)?;
        pin_process(server.guard.pid(), SERVER_CPU)?;
    }
    let (specs, results) = tokio::task::spawn_blocking(move || {
        if pinned {
            pin_this_thread(CLIENT_CPU)?;
        }
        download_rounds(&specs, runs).map(|results| (specs, results))
    })
    .await??;
    drop(nginx);
    Ok((specs, results))
}

/// The core the servers run on while downloads are measured.
const SERVER_CPU: usize = 0;
/// The core the download client runs on.
const CLIENT_CPU: usize = 1;

/// Pins every thread of process `pid` (and threads it starts later) to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    taskset(&["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
}

/// Pins the calling thread to `cpu`.
fn pin_this_thread(cpu: usize) -> Result<()> {
    // "/proc/thread-self" links to "PID/task/TID".
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("unexpected /proc/thread-self: {}", link.display()))?
        .to_owned();
    taskset(&["-p", "-c", &cpu.to_string(), &tid])
}

fn taskset(args: &[&str]) -> Result<()> {
    let output = Command::new("taskset")
        .args(args)
        .output()
        .context("running taskset (util-linux); AIRLIFT_BENCH_PIN=0 measures unpinned")?;
    ensure!(
        output.status.success(),
        "taskset {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

// --- output ------------------------------------------------------------------------

fn print_load_table(out: &mut String, params: &Params, results: &[LoadResult]) {
    let ceiling = results.first().map_or(f64::NAN, LoadResult::rate);
    let _ = writeln!(
        out,
        "Check-ins: {} devices, {} connections (one worker each), {} s measured after {} s warm-up, \
         client runtime with {} threads. Latency in ms; CPU in cores (1.00 = one core busy).\n",
        params.devices,
        params.concurrency,
        params.duration.as_secs(),
        params.warmup.as_secs(),
        params.client_threads,
    );
    let _ = writeln!(
        out,
        "| scenario | requests | req/s | vs ceiling | p50 | p99 | p99.9 | max | errors | server CPU | server CPU per request | server context switches per request | client CPU | server max RSS |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in results {
        let rate = r.rate();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} % | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {:.1} µs | {:.1} | {:.2} | {:.1} MiB |",
            r.name,
            r.requests,
            rate,
            100.0 * rate / ceiling,
            r.percentile_ms(0.50),
            r.percentile_ms(0.99),
            r.percentile_ms(0.999),
            r.percentile_ms(1.0),
            r.errors,
            r.server_cpu,
            1e6 * r.server_cpu / rate,
            r.server_switches as f64 / (rate * r.seconds),
            r.client_cpu,
            r.server_rss_mib,
        );
    }
    let sizes: Vec<String> = results
        .iter()
        .map(|r| r.response_bytes.to_string())
        .collect();
    let _ = writeln!(out, "\nAnswer body sizes (bytes): {}.\n", sizes.join(", "));
    let _ = writeln!(
        out,
        "The ceiling, to run alone: this bench's binary (`target/release/deps/server-*`) with `--ceiling-server`, an axum route answering a fixed body; it prints the address it listens on.\n"
    );
    // For scripts/bench, which keeps the table at the top of BENCHMARKS.md.
    for r in results.iter().skip(1) {
        let _ = writeln!(
            out,
            "bench-result: {}",
            json!({
                "goal": format!("check-ins, {}", r.name),
                "baseline": "ceiling server (axum, fixed answer)",
                "ratio": r.rate() / ceiling,
                "target": 0.5,
                "load": format!(
                    "best case: {} devices back to back on {} connections, caches hot",
                    params.devices, params.concurrency
                ),
            })
        );
    }
}

fn print_components(out: &mut String, rows: &[Component]) {
    let _ = writeln!(
        out,
        "Parts of a check-in, timed in the benchmark process on the server's database (server idle). \
         CPU is the whole process's: caller and SQLite worker threads.\n"
    );
    let _ = writeln!(
        out,
        "| part | calls | wall µs per call | CPU µs per call | calls/s |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.0} |",
            r.name,
            r.calls,
            r.wall_us,
            r.cpu_us,
            1e6 / r.wall_us
        );
    }
    let _ = writeln!(out);
}

fn print_download_table(
    out: &mut String,
    params: &Params,
    specs: &[DownloadSpec],
    results: &[DownloadResult],
) {
    let runs = results.first().map_or(0, |r| r.runs.len());
    let placement = if params.pin_downloads {
        format!("servers pinned to CPU {SERVER_CPU} and the client to CPU {CLIENT_CPU}")
    } else {
        "unpinned".to_owned()
    };
    let _ = writeln!(
        out,
        "Downloads: each on a fresh HTTP/1.1 connection, body read with 1 MiB `read`s and discarded; the four kinds \
         take turns, {runs} rounds after an untimed one; best and median of the {runs}; {placement}. \
         MB = 10^6 bytes; CPU in seconds per GiB sent.\n"
    );
    let _ = writeln!(
        out,
        "| download | bytes | best time | best MB/s | vs nginx (best) | median MB/s | vs nginx (median) | runs (s) | server CPU s/GiB | client CPU s/GiB | server max RSS |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    );
    let mb_per_s = |bytes: u64, time: Duration| bytes as f64 / MB / time.as_secs_f64();
    for (spec, r) in specs.iter().zip(results) {
        let gib = spec.bytes as f64 * r.runs.len() as f64 / (1u64 << 30) as f64;
        let best = mb_per_s(spec.bytes, r.best());
        let median = mb_per_s(spec.bytes, r.median());
        let (versus_best, versus_median) = match spec.baseline {
            Some(b) => (
                format!(
                    "{:.0} %",
                    100.0 * best / mb_per_s(specs[b].bytes, results[b].best())
                ),
                format!(
                    "{:.0} %",
                    100.0 * median / mb_per_s(specs[b].bytes, results[b].median())
                ),
            ),
            None => ("–".into(), "–".into()),
        };
        let times: Vec<String> = r
            .runs
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect();
        if let Some(b) = spec.baseline {
            let _ = writeln!(
                out,
                "bench-result: {}",
                json!({
                    "goal": format!("download, {}", spec.name),
                    "baseline": "nginx (sendfile on, one worker), same file",
                    "ratio": median / mb_per_s(specs[b].bytes, results[b].median()),
                    "target": 0.9,
                    "load": format!("{} bytes, fresh connection, median of {}", spec.bytes, r.runs.len()),
                })
            );
        }
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} s | {:.0} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.1} MiB |",
            spec.name,
            spec.bytes,
            r.best().as_secs_f64(),
            best,
            versus_best,
            median,
            versus_median,
            times.join(" "),
            r.server_cpu / gib,
            r.client_cpu / gib,
            r.server_rss_mib,
        );
    }
}
