//! The processes the soak runs and disturbs: `airlift-server` instances
//! (started, killed with `SIGKILL`, started again on the same port and data
//! directory), the local PostgreSQL cluster (restarted with
//! `pg_ctlcluster`, and started again by a guard if the bench stops while
//! it is down). The servers are `airlift_testkit::server` processes.

use airlift_testkit::server::{Echo, ServerBuilder, ServerProcess, Tally};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin token both instances install from `AIRLIFT_ADMIN_TOKEN`.
pub use airlift_testkit::server::ADMIN_TOKEN;
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

/// One `airlift-server` instance, started through `airlift_testkit::server`:
/// its own data directory, the shared database, a fixed port once first
/// bound (a restart after a kill keeps it).
#[derive(Debug)]
pub struct Instance {
    pub name: &'static str,
    builder: ServerBuilder,
    data_dir: PathBuf,
    process: Option<ServerProcess>,
    /// The live process's id (0 while none runs), for the sampler.
    pub pid: Arc<AtomicU32>,
    /// The warnings and errors of the processes before the running one.
    earlier: Tally,
}

impl Instance {
    pub fn new(name: &'static str, config: ServerConfig, dir: &Path) -> Self {
        let data_dir = dir.join(format!("instance-{name}"));
        let builder = ServerProcess::builder(&config.binary, &data_dir)
            .label(name)
            .echo(if config.copy_log {
                Echo::All
            } else {
                Echo::Off
            })
            .admin_token(ADMIN_TOKEN)
            .trust(&config.trust)
            .arg("--database-url")
            .arg(&config.database_url)
            .arg("--poll-interval")
            .arg(config.poll_secs.to_string())
            .arg("--device-token-ttl")
            .arg(config.token_ttl_secs.to_string());
        Self {
            name,
            builder,
            data_dir,
            process: None,
            pid: Arc::new(AtomicU32::new(0)),
            earlier: Tally::new(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn url(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.url().to_owned())
            .unwrap_or_default()
    }

    /// Starts the server (on a port of its own the first time, on the same
    /// port after) and waits for its ready line, on a blocking thread so
    /// that the load client's runtime keeps going. Returns how long that
    /// took.
    pub async fn start(&mut self) -> Result<Duration> {
        std::fs::create_dir_all(&self.data_dir)?;
        let started = Instant::now();
        let process = match self.process.take() {
            None => {
                let builder = self.builder.clone();
                tokio::task::spawn_blocking(move || builder.start()).await?
            }
            Some(mut process) => {
                merge(&mut self.earlier, process.warnings_by_message());
                tokio::task::spawn_blocking(move || process.crash_and_restart().map(|()| process))
                    .await?
            }
        }
        .with_context(|| format!("starting airlift-server {}", self.name))?;
        self.pid.store(process.pid(), Ordering::Relaxed);
        self.process = Some(process);
        Ok(started.elapsed())
    }

    /// `kill -9`, and waits for the process to be gone; [`start`](Self::start)
    /// starts it again on the same port.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
        self.pid.store(0, Ordering::Relaxed);
    }

    /// `SIGTERM` (a graceful stop writes the queued check-in times), then
    /// `SIGKILL` if it lingers.
    pub fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        self.pid.store(0, Ordering::Relaxed);
        if process.stop(Duration::from_secs(10)).is_none() {
            eprintln!(
                "airlift-server {} did not stop on SIGTERM; killed it",
                self.name
            );
        }
        merge(&mut self.earlier, process.warnings_by_message());
    }

    /// How the process exited, if it has (on its own, or killed).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.as_mut().and_then(ServerProcess::exit_status)
    }

    /// Warnings and errors by `(level, message)` over every process of
    /// this instance: count, and the first line.
    pub fn warnings_by_message(&self) -> Tally {
        let mut all = self.earlier.clone();
        if let Some(process) = &self.process {
            merge(&mut all, process.warnings_by_message());
        }
        all
    }
}

/// Adds `more`'s counts to `into`, keeping the first line `into` had.
fn merge(into: &mut Tally, more: Tally) {
    for (key, (count, first)) in more {
        into.entry(key).or_insert((0, first)).0 += count;
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
