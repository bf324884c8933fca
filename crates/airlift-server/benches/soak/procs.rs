//! The processes the soak runs and disturbs: `airlift-server` instances
//! (started, killed with `SIGKILL`, started again on the same port and data
//! directory), the local PostgreSQL cluster (restarted with
//! `pg_ctlcluster`, and started again by a guard if the bench stops while
//! it is down), and what `/proc` says about them.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin token both instances install from `AIRLIFT_ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "alt_soak_admin_token_0123456789";
/// What the servers' database connections call themselves, so that other
/// clients of the same PostgreSQL can be told apart.
pub const APPLICATION_NAME: &str = "airlift-soak";

/// How an instance is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub binary: PathBuf,
    pub database_url: String,
    pub trust: PathBuf,
    pub poll_secs: u64,
    pub token_ttl_secs: u64,
    pub copy_log: bool,
}

/// What an instance's log said: warnings and errors by message.
#[derive(Debug, Default)]
pub struct LogSummary {
    /// `(level, message)` → (count, first line, cut to 600 characters).
    pub by_message: BTreeMap<(String, String), (u64, String)>,
}

/// One `airlift-server` instance: its own data directory, the shared
/// database, a fixed port once first bound.
#[derive(Debug)]
pub struct Instance {
    pub name: &'static str,
    config: ServerConfig,
    data_dir: PathBuf,
    pub addr: Option<SocketAddr>,
    child: Option<Child>,
    /// The live process's id (0 while none runs), for the sampler.
    pub pid: Arc<AtomicU32>,
    pub log: Arc<Mutex<LogSummary>>,
}

impl Instance {
    pub fn new(name: &'static str, config: ServerConfig, dir: &Path) -> Self {
        Self {
            name,
            config,
            data_dir: dir.join(format!("instance-{name}")),
            addr: None,
            child: None,
            pid: Arc::new(AtomicU32::new(0)),
            log: Arc::default(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn url(&self) -> String {
        self.addr
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_default()
    }

    /// Starts the server (on port 0 the first time, on the same port after)
    /// and waits for its `airlift-server ready` log line. Returns how long
    /// that took.
    pub async fn start(&mut self) -> Result<Duration> {
        ensure!(self.child.is_none(), "instance {} is running", self.name);
        std::fs::create_dir_all(&self.data_dir)?;
        let listen = self
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut command = Command::new(&self.config.binary);
        // Only the flags below configure it, whatever this shell exports.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AIRLIFT_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--database-url")
            .arg(&self.config.database_url)
            .arg("--trust")
            .arg(&self.config.trust)
            .arg("--poll-interval")
            .arg(self.config.poll_secs.to_string())
            .arg("--device-token-ttl")
            .arg(self.config.token_ttl_secs.to_string())
            .args(["--log-format", "json"])
            .env("AIRLIFT_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().context("starting airlift-server")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        self.pid.store(child.id(), Ordering::Relaxed);
        self.child = Some(child);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let log = Arc::clone(&self.log);
        let name = self.name;
        let copy_log = self.config.copy_log;
        // Reads the log until the process exits, so that it never blocks on a
        // full pipe; tallies warnings and errors by message.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if copy_log {
                    eprintln!("airlift-server {name}: {line}");
                }
                let entry = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
                let message = entry["fields"]["message"].as_str().unwrap_or_default();
                if message == "airlift-server ready" {
                    let _ = ready_tx.send(Ok(entry["fields"]["listen"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()));
                    continue;
                }
                if let Some(level @ ("WARN" | "ERROR")) = entry["level"].as_str() {
                    if let Ok(mut log) = log.lock() {
                        let slot = log
                            .by_message
                            .entry((level.to_owned(), message.to_owned()))
                            .or_insert_with(|| (0, line.chars().take(600).collect()));
                        slot.0 += 1;
                    }
                }
                let _ = ready_tx.send(Err(line));
            }
        });
        let mut early = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let addr: SocketAddr = loop {
            match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
                Ok(Some(Ok(addr))) => break addr.parse()?,
                Ok(Some(Err(line))) => {
                    if early.len() < 50 {
                        early.push(line);
                    }
                }
                Ok(None) | Err(_) => {
                    self.kill();
                    bail!(
                        "airlift-server {} did not become ready:\n{}",
                        self.name,
                        early.join("\n")
                    )
                }
            }
        };
        self.addr = Some(addr);
        Ok(started.elapsed())
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.pid.store(0, Ordering::Relaxed);
    }

    /// `SIGTERM` (a graceful stop writes the queued check-in times), then
    /// `SIGKILL` if it lingers.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.pid.store(0, Ordering::Relaxed);
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "airlift-server {} did not stop on SIGTERM; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process is still alive (it may have exited on its own).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- PostgreSQL ------------------------------------------------------------------

/// The local PostgreSQL cluster behind `AIRLIFT_TEST_POSTGRES_URL`, driven
/// with Debian's `pg_ctlcluster` (as root).
#[derive(Debug, Clone)]
pub struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    /// The one cluster under `/etc/postgresql/<version>/`, named `main`
    /// unless `AIRLIFT_SOAK_PG_CLUSTER=<version>/<name>` says otherwise.
    /// Refuses a database that is not on this machine: restarting it is
    /// not ours to do.
    pub fn local(database_url: &str) -> Result<Self> {
        let host = database_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split(['/', '?']).next())
            .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
            .map(|host_port| host_port.rsplit_once(':').map_or(host_port, |(h, _)| h))
            .unwrap_or_default();
        ensure!(
            matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
            "the soak restarts PostgreSQL, so the database must be on this machine (loopback); the URL names {host:?}"
        );
        if let Ok(spec) = std::env::var("AIRLIFT_SOAK_PG_CLUSTER") {
            let (version, name) = spec
                .split_once('/')
                .context("AIRLIFT_SOAK_PG_CLUSTER is <version>/<name>, e.g. 15/main")?;
            return Ok(Self {
                version: version.to_owned(),
                name: name.to_owned(),
            });
        }
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .context("reading /etc/postgresql (Debian's PostgreSQL clusters)")?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        ensure!(
            versions.len() == 1,
            "expected one PostgreSQL version under /etc/postgresql, found {versions:?}; set AIRLIFT_SOAK_PG_CLUSTER"
        );
        Ok(Self {
            version: versions.remove(0),
            name: "main".into(),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.version, self.name)
    }

    fn ctl(&self, action: &str) -> Result<std::process::Output> {
        Command::new("pg_ctlcluster")
            .arg("--skip-systemctl-redirect")
            .arg(&self.version)
            .arg(&self.name)
            .arg(action)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running pg_ctlcluster {action}"))
    }

    /// `pg_ctlcluster … restart` (fast shutdown: open connections are cut),
    /// which returns once the cluster accepts connections again. Returns how
    /// long that took.
    pub fn restart(&self) -> Result<Duration> {
        let started = Instant::now();
        let output = self.ctl("restart")?;
        ensure!(
            output.status.success(),
            "pg_ctlcluster restart failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(started.elapsed())
    }

    /// Whether the cluster runs (`pg_ctlcluster status` exits 0).
    pub fn running(&self) -> bool {
        self.ctl("status").is_ok_and(|o| o.status.success())
    }

    /// Starts the cluster if it is down.
    pub fn ensure_running(&self) {
        if self.running() {
            return;
        }
        eprintln!("PostgreSQL {} is down: starting it", self.describe());
        match self.ctl("start") {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "pg_ctlcluster start failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("{error:#}"),
        }
    }
}

/// Starts PostgreSQL again when dropped if it is down — on every way out of
/// the bench, a panic included.
#[derive(Debug)]
pub struct ClusterGuard(pub Cluster);

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        self.0.ensure_running();
    }
}

/// A fresh schema for this run, on the base URL, and the URL that keeps a
/// server's tables in it.
pub async fn create_schema(base: &str) -> Result<(String, String)> {
    use sqlx::Connection;
    let schema = format!("soak_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(base)))?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{separator}options=-csearch_path%3D{schema}&application_name={APPLICATION_NAME}"
    );
    Ok((schema, url))
}

pub async fn drop_schema(base: &str, schema: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

/// Client connections to the cluster that are not this soak's (other
/// people's tests, which a restart also cuts), by application name.
pub async fn other_clients(base: &str) -> Result<Vec<(String, i64)>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT COALESCE(NULLIF(application_name, ''), '(unnamed)') || ' on ' || COALESCE(datname, '?'), count(*) \
         FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> $1 \
         GROUP BY 1 ORDER BY 2 DESC",
    )
    .bind(APPLICATION_NAME)
    .fetch_all(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(rows)
}

/// Index and sequential scans, and rows written, of the tables in `schema`
/// so far (`pg_stat_user_tables`): how often the servers went to the
/// database.
pub async fn table_activity(
    conn: &mut sqlx::PgConnection,
    schema: &str,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)), 0)::bigint, \
                COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint \
         FROM pg_stat_user_tables WHERE schemaname = $1",
    )
    .bind(schema)
    .fetch_one(conn)
    .await
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

// --- /proc ---------------------------------------------------------------------

// A process's memory and CPU time come from `airlift_testkit::procfs`.

/// Idle and total jiffies of all cores so far, from `/proc/stat`.
pub fn machine_jiffies() -> Option<(u64, u64)> {
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
}

/// How idle the machine was over `span`, in per cent of all cores.
pub fn machine_idle(span: Duration) -> f64 {
    let Some((idle_0, total_0)) = machine_jiffies() else {
        return f64::NAN;
    };
    std::thread::sleep(span);
    let Some((idle_1, total_1)) = machine_jiffies() else {
        return f64::NAN;
    };
    100.0 * (idle_1 - idle_0) as f64 / (total_1 - total_0).max(1) as f64
}
