//! Child processes: the server under test (through
//! `airlift_testkit::server`), nginx and the ceiling server with a guard
//! that stops each when the benchmark ends or panics; pinning to cores.

use crate::load::Target;
use crate::ADMIN_TOKEN;
use airlift_testkit::packages::Signer;
use airlift_testkit::server::{Echo, ServerBuilder, ServerProcess};
use anyhow::{bail, ensure, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is stopped when dropped, also on panic: `SIGTERM`
/// first (nginx's master then stops its workers), `SIGKILL` if it lingers.
pub struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    pub fn new(name: &'static str, child: Child) -> Self {
        Self { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// `SIGTERM`, then up to 5 s to exit by itself; `SIGKILL` after that.
    pub fn stop(&mut self) {
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

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server under test: Cargo's build of this package's binary, or
/// `AIRLIFT_BENCH_SERVER_BIN` to compare another build of it.
pub fn server_binary() -> PathBuf {
    std::env::var_os("AIRLIFT_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airlift-server")))
}

/// One `airlift-server` on SQLite in a directory of its own, started
/// through `airlift_testkit::server`; it can be restarted on the same data
/// (with empty caches).
pub struct Server {
    process: ServerProcess,
    builder: ServerBuilder,
    pub addr: SocketAddr,
    pub url: String,
    /// The key the server trusts packages from.
    pub signer: Signer,
    /// Warnings and errors logged by the processes before this one.
    earlier_warnings: u64,
}

impl Server {
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let signer = Signer::new();
        let echo = if std::env::var_os("AIRLIFT_BENCH_SERVER_LOG").is_some() {
            Echo::All
        } else {
            Echo::FirstWarnings(5)
        };
        let builder = ServerProcess::builder(server_binary(), dir.join("data"))
            .trust(signer.public_key_file())
            .admin_token(ADMIN_TOKEN)
            .args(["--poll-interval", "60", "--max-package-mib", "4096"])
            // The bench enrols its whole fleet from one address, faster
            // than the first-contact limit a public server keeps.
            .args(["--first-contact-per-minute", "0"])
            .echo(echo);
        let process = builder.clone().start()?;
        Ok(Self {
            addr: process.addr(),
            url: process.url().to_owned(),
            process,
            builder,
            signer,
            earlier_warnings: 0,
        })
    }

    /// Stops it as an operator would (`SIGTERM`: it writes what it holds)
    /// and starts it again on the same data: every cache of the new process
    /// is empty. It listens on a new port.
    pub fn restart(&mut self) -> Result<()> {
        self.earlier_warnings += self.process.warnings();
        self.process.stop(Duration::from_secs(10));
        self.process = self.builder.clone().start()?;
        self.addr = self.process.addr();
        self.url = self.process.url().to_owned();
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What a load phase measures.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            pid: self.pid(),
        }
    }

    /// Its SQLite database.
    pub fn database(&self) -> PathBuf {
        self.process.data_dir().join("airlift.db")
    }

    /// Its device-record cache's lookups so far (`/metrics`; zeros from a
    /// server without them). Blocking.
    pub fn device_lookups(&self) -> Lookups {
        let count = |result: &str| {
            let sample = format!("airlift_cache_device_lookups_total{{result=\"{result}\"}}");
            self.process.metric(&sample)
        };
        Lookups {
            hits: count("hit"),
            misses: count("miss"),
        }
    }

    /// Warnings and errors logged so far, over every start.
    pub fn warnings(&self) -> u64 {
        self.earlier_warnings + self.process.warnings()
    }
}

/// Device-record cache lookups, as counted by the server.
#[derive(Debug, Clone, Copy)]
pub struct Lookups {
    hits: f64,
    misses: f64,
}

impl Lookups {
    /// The share of the lookups since `before` that hit; `None` if none
    /// were counted (or the process restarted in between).
    pub fn hit_share_since(self, before: Lookups) -> Option<f64> {
        let (hits, misses) = (self.hits - before.hits, self.misses - before.misses);
        (hits >= 0.0 && misses >= 0.0 && hits + misses > 0.0).then(|| hits / (hits + misses))
    }
}

/// nginx serving `root` on a free loopback port, from a generated config.
pub fn start_nginx(dir: &Path, root: &Path) -> Result<(Guard, SocketAddr)> {
    let nginx = find_nginx()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, root, addr))?;
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
    let mut guard = Guard::new("nginx", child);
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

/// One worker, `sendfile on`, no access log, everything under `dir`.
fn nginx_config(dir: &Path, root: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
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
    )
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

/// Pins every thread of process `pid` (and threads it starts later) to `cpu`.
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    taskset(&["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
}

/// Pins the calling thread to `cpu`.
pub fn pin_this_thread(cpu: usize) -> Result<()> {
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
