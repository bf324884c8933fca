//! Downloads: a package with a large uncompressed payload, served by nginx
//! (`sendfile on`, one worker) and downloaded from airlift-server by a
//! device, whole and resumed from its middle (`Range: bytes=<half>-`).
//! Each download is a fresh connection read with 1 MiB blocking `read`s and
//! thrown away; the four kinds take turns, `runs` rounds after an untimed
//! one.

use crate::accounting::own_cpu_seconds;
use crate::devices::{Admin, Device};
use crate::packages::build_package;
use crate::params::Params;
use crate::procs::{pin_process, pin_this_thread, start_nginx, Guard, Server};
use crate::{DEVICE_TYPE, MIB};
use airlift_testkit::procfs;
use anyhow::{ensure, Context, Result};
use hyper::StatusCode;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The core the servers run on while downloads are measured.
pub const SERVER_CPU: usize = 0;
/// The core the download client runs on.
pub const CLIENT_CPU: usize = 1;

/// One kind of download: where from, what is asked, what must come back.
pub struct DownloadSpec {
    pub name: String,
    addr: SocketAddr,
    server_pid: u32,
    path: String,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    pub bytes: u64,
    /// The row this one is compared with (nginx serving the same bytes).
    pub baseline: Option<usize>,
}

/// What the runs of one kind of download measured.
#[derive(Default)]
pub struct DownloadResult {
    pub runs: Vec<Duration>,
    pub server_cpu: f64,
    pub client_cpu: f64,
    pub server_rss_mib: f64,
}

impl DownloadResult {
    pub fn best(&self) -> Duration {
        self.runs.iter().min().copied().unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        let mut runs = self.runs.clone();
        runs.sort_unstable();
        runs.get(runs.len() / 2).copied().unwrap_or_default()
    }
}

/// Builds and uploads the package, deploys it to `device`, starts nginx on
/// the same file, and measures the four kinds of download.
pub async fn downloads(
    params: &Params,
    server: &Server,
    admin: &Admin,
    device: &Device,
    dir: &Path,
) -> Result<(Vec<DownloadSpec>, Vec<DownloadResult>)> {
    let (package, size, deployment) = offered_package(params, server, admin, device, dir).await?;
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let www = package.parent().context("package directory")?;
    let (nginx, nginx_addr) = start_nginx(&nginx_dir, www)?;
    let specs = specs(server, &nginx, nginx_addr, device, &deployment, size)?;
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
        pin_process(server.pid(), SERVER_CPU)?;
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

/// The package (in a directory nginx serves), its size, and the id of the
/// deployment that offers it to `device`.
async fn offered_package(
    params: &Params,
    server: &Server,
    admin: &Admin,
    device: &Device,
    dir: &Path,
) -> Result<(PathBuf, u64, String)> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let package = www.join("bench.airlift");
    eprintln!(
        "building a package with a {} MiB payload",
        params.package_mib
    );
    let image = (params.package_mib * MIB) as usize;
    let size = build_package(&server.signer, "3.0.0", DEVICE_TYPE, image, &package)?;
    // nginx's worker may run as another user: let it read the file.
    use std::os::unix::fs::PermissionsExt;
    for path in [dir, www.as_path(), package.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    eprintln!("uploading it ({size} bytes)");
    let uploaded = admin.upload(&package).await?;
    let package_id = uploaded["id"].as_str().context("package id")?;
    let deployment = admin.deploy(package_id, &[&device.id]).await?;
    let answer = admin.check_in(device).await?;
    ensure!(
        answer["update"]["deployment_id"] == deployment.as_str(),
        "no offer: {answer}"
    );
    Ok((package, size, deployment))
}

/// nginx whole, airlift-server whole, nginx resumed, airlift-server resumed.
fn specs(
    server: &Server,
    nginx: &Guard,
    nginx_addr: SocketAddr,
    device: &Device,
    deployment: &str,
    size: u64,
) -> Result<Vec<DownloadSpec>> {
    let auth = ("Authorization", format!("Bearer {}", device.token));
    let path = airlift_protocol::device::download_path(deployment.parse()?);
    let half = size / 2;
    let range = ("Range", format!("bytes={half}-"));
    let nginx = |name: String, headers, status, bytes| DownloadSpec {
        name,
        addr: nginx_addr,
        server_pid: nginx.pid(),
        path: "/bench.airlift".into(),
        headers,
        status,
        bytes,
        baseline: None,
    };
    let airlift = |name: String, headers, status, bytes, baseline| DownloadSpec {
        name,
        addr: server.addr,
        server_pid: server.pid(),
        path: path.clone(),
        headers,
        status,
        bytes,
        baseline: Some(baseline),
    };
    Ok(vec![
        nginx(
            "nginx, whole file (baseline)".into(),
            vec![],
            StatusCode::OK,
            size,
        ),
        airlift(
            "airlift-server, whole package".into(),
            vec![auth.clone()],
            StatusCode::OK,
            size,
            0,
        ),
        nginx(
            format!("nginx, `Range: bytes={half}-` (baseline)"),
            vec![range.clone()],
            StatusCode::PARTIAL_CONTENT,
            size - half,
        ),
        airlift(
            format!("airlift-server, resumed: `Range: bytes={half}-`"),
            vec![auth, range],
            StatusCode::PARTIAL_CONTENT,
            size - half,
            2,
        ),
    ])
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

/// One download on a fresh connection: a blocking socket read with a 1 MiB
/// buffer and the bytes discarded, so that the client costs as little as
/// `curl -o /dev/null` would. Returns the time from sending the request to
/// the last byte, and the server's and this process's CPU seconds meanwhile.
fn download_once(spec: &DownloadSpec) -> Result<(Duration, f64, f64)> {
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
    let (head_end, filled, length) = read_head(spec, &mut stream, &mut buf)?;
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

/// Reads the answer's head into `buf` and checks its status and length:
/// where the head ends, how much of `buf` is filled, the body's length.
fn read_head(
    spec: &DownloadSpec,
    stream: &mut std::net::TcpStream,
    buf: &mut [u8],
) -> Result<(usize, usize, u64)> {
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
    Ok((head_end, filled, length))
}
