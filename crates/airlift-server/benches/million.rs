//! A million devices (issue 17): one PostgreSQL with 1 000 000 accepted
//! devices and their inventories, two `airlift-server` instances on it and
//! on one S3 store, and a light load generator speaking the device API at
//! the rate of a million devices polling every 5 minutes (3 300
//! check-ins a second) while a staged rollout to 100 000 of them runs.
//!
//! ```text
//! AIRLIFT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p airlift-server --bench million
//! ```
//!
//! 1. **Cluster** ([`cluster`]): a fresh schema in the database
//!    `$AIRLIFT_TEST_POSTGRES_URL` names (default
//!    `postgres://postgres@127.0.0.1:5432/test`), `s3s-fs` started by the
//!    test kit, and two release `airlift-server` processes on both
//!    (`--blob-offload on`, `--poll-interval 300`), which run the
//!    migrations. The load goes to each in turn, as a round-robin load
//!    balancer would send it.
//! 2. **Seeding** ([`seed`]): the devices, written with `COPY` (the bench
//!    knows the schema there, and says why), then vacuumed and analysed;
//!    the table sizes, per million devices.
//! 3. **Rollout** ([`rollout`]): a small package uploaded, and a phased
//!    deployment to the devices carrying a tag (every
//!    `AIRLIFT_BENCH_ROLLOUT_EVERY`-th: 100 000 of a million) in phases of
//!    1 %, 10 % and 100 %, each advancing by the servers' engine once
//!    `AIRLIFT_BENCH_SUCCESS_PERCENT` of its devices succeeded and soaked
//!    `AIRLIFT_BENCH_SOAK_SECS`.
//! 4. **Warm-up and load** ([`load`]): `AIRLIFT_BENCH_RATE` ×
//!    `AIRLIFT_BENCH_SECS` devices, a random sample spread over the fleet,
//!    authenticate through the auth endpoint (not measured), then each
//!    checks in once, open loop at `AIRLIFT_BENCH_RATE` a second, with
//!    latency from the due time. Offers are answered with `success`.
//! 5. **Checks**: the deployment's records (per phase admitted, the
//!    successes, each offered device's row) must agree exactly with what
//!    the generator saw, and every answered check-in's time must be
//!    stored; if not, the bench says what disagrees and exits non-zero.
//!    Each instance's memory (peak and current RSS from `/proc`).
//! 6. **Downloads** ([`downloads`]): a third instance with
//!    `--blob-offload off`; a package of `AIRLIFT_BENCH_PACKAGE_MIB` MiB
//!    downloaded `AIRLIFT_BENCH_DOWNLOAD_RUNS` times each offloaded,
//!    streamed, and directly from S3.
//!
//! Output ([`report`]): Markdown tables and `bench-result:` lines on
//! stdout, progress on stderr. `scripts/bench --only million` runs a short
//! configuration (20 000 devices, 300 check-ins a second for 15 s);
//! `AIRLIFT_BENCH_SERVER_LOG=1` copies the servers' logs to stderr;
//! `AIRLIFT_SERVER_BIN` runs another build of the server.

#[path = "million/cluster.rs"]
mod cluster;
// The server bench's management client; its enrolment of devices is not
// used here (the million are seeded).
#[path = "server/devices.rs"]
#[allow(dead_code)]
mod devices;
#[path = "million/downloads.rs"]
mod downloads;
#[path = "million/load.rs"]
mod load;
#[path = "server/packages.rs"]
mod packages;
#[path = "million/params.rs"]
mod params;
#[path = "million/report.rs"]
mod report;
#[path = "million/rollout.rs"]
mod rollout;
#[path = "million/seed.rs"]
mod seed;

use airlift_protocol::device::{download_path, CHECK_IN_PATH};
use airlift_testkit::procfs;
use airlift_testkit::server::ServerProcess;
use airlift_testkit::server::ADMIN_TOKEN;
use anyhow::{ensure, Context, Result};
use cluster::Cluster;
use devices::Admin;
use load::{Api, LoadDevice};
use params::Params;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use seed::DEVICE_TYPE;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The load generator allocates with what airlift-server allocates with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The database unless `AIRLIFT_TEST_POSTGRES_URL` names another.
const DEFAULT_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("million bench: the rollout's records disagree with the generator (above)");
            std::process::exit(2);
        }
        Err(error) => {
            eprintln!("million bench failed: {error:#}");
            std::process::exit(1);
        }
    }
}

/// The whole run; `false` when the rollout's records disagree.
async fn run() -> Result<bool> {
    let params = Params::from_env()?;
    let binary = airlift_testkit::server::binary();
    eprintln!("airlift-server binary: {}", binary.display());
    if !binary.components().any(|c| c.as_os_str() == "release") {
        eprintln!("warning: the server binary is not a release build; run through `cargo bench`");
    }
    eprintln!("parameters: {params:?}");
    let idle_before = procfs::machine_idle(Duration::from_secs(1));
    let base =
        std::env::var(airlift_testkit::postgres::URL_VAR).unwrap_or(DEFAULT_DATABASE.to_owned());
    let cluster = Cluster::new(&base)?;
    let a = cluster.start("a", "on")?;
    let b = cluster.start("b", "on")?;
    let url = cluster.schema.url().to_owned();

    let sample = sample(&params);
    let authenticating: HashSet<usize> = sample.iter().copied().collect();
    eprintln!("seeding {} devices", params.devices);
    let fleet = seed::seed(&url, &params, &authenticating).await?;
    eprintln!("seeded in {:.1} s", fleet.seeding.as_secs_f64());
    let sizes = seed::table_sizes(&url).await?;

    let admin = Admin::new(a.url())?;
    let dir = tempfile::tempdir()?;
    let small = dir.path().join("rollout.airlift");
    packages::build_package(
        &cluster.signer,
        "2.0.0",
        seed::DEVICE_TYPE,
        64 * 1024,
        &small,
    )?;
    let package = uploaded_id(&admin, &small).await?;
    let (deployment, created_secs) = rollout::create(&admin, &package, &params).await?;
    eprintln!("rollout {deployment} created in {created_secs:.1} s");

    eprintln!("warm-up: {} devices authenticate", sample.len());
    let client = load::client()?;
    let apis = [Api::new(a.url(), &client), Api::new(b.url(), &client)];
    let tagged = |index: usize| params.is_tagged(index);
    let (devices, auth_secs) =
        load::authenticate(&apis, &sample, &tagged, params.auth_concurrency).await?;
    let devices = Arc::new(devices);

    eprintln!(
        "load: {} check-ins at {} a second",
        devices.len(),
        params.rate
    );
    let instances = [&a, &b];
    let before = Usage::take(&instances);
    let urls = [a.url().to_owned(), b.url().to_owned()];
    let watcher = rollout::Watcher::start(b.url(), deployment)?;
    let outcome = load::run(&urls, Arc::clone(&devices), params.rate).await?;
    let usage = Usage::take(&instances).since(&before);
    let admitted_at = watcher.stop().await?;
    // The servers write unchanged devices' check-in times behind, once a
    // second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verdict =
        rollout::verify(&admin, &url, deployment, &fleet.ids, &outcome, &admitted_at).await?;
    let memory = memory(&instances);

    // A failure here keeps what the load measured: reported, then failed.
    let downloads = if params.package_mib > 0 {
        let target = (&devices[..], &fleet.ids[..]);
        Some(
            downloads(&cluster, &admin, &a, target, dir.path(), &params)
                .await
                .map_err(|error| eprintln!("downloads not measured: {error:#}")),
        )
    } else {
        None
    };
    let downloads_failed = matches!(downloads, Some(Err(())));
    let downloads = downloads.and_then(Result::ok);
    let results = report::Results {
        idle_before,
        seeding: fleet.seeding,
        sizes,
        rollout_created_secs: created_secs,
        auth_secs,
        outcome,
        usage,
        verdict,
        memory,
        downloads,
        warnings: a.warnings() + b.warnings(),
        transport: transport(&base),
    };
    print!("{}", report::print(&params, &results));
    Ok(results.verdict.problems.is_empty() && !downloads_failed)
}

/// How the instances reach PostgreSQL, by `url`: a Unix socket (a `host`
/// parameter that is a directory, as libpq reads it) or TCP. On one host
/// the socket costs less (docs/operations.md); TCP is what two hosts use.
fn transport(url: &str) -> &'static str {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let in_query = form_urlencoded::parse(query.as_bytes())
        .any(|(key, value)| key == "host" && value.starts_with('/'));
    let authority = url.split_once("://").map_or("", |(_, rest)| rest);
    let in_authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_ascii_lowercase()
        .starts_with("%2f");
    let socket = in_query || in_authority;
    if socket {
        "its Unix socket"
    } else {
        "TCP"
    }
}

/// Each instance's peak and current RSS, in MiB.
fn memory(instances: &[&ServerProcess]) -> Vec<(f64, f64)> {
    instances
        .iter()
        .map(|s| {
            (
                procfs::peak_rss_mib(s.pid()).unwrap_or(f64::NAN),
                procfs::rss_mib(s.pid()).unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// The devices that check in, each once: a random sample of the fleet,
/// in random order (seeded, so every run draws the same).
fn sample(params: &Params) -> Vec<usize> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let mut sample =
        rand::seq::index::sample(&mut rng, params.devices, params.checking_in()).into_vec();
    sample.shuffle(&mut rng);
    sample
}

/// CPU time of the instances, of this process and of PostgreSQL (every
/// `postgres` process on this machine: none when the database is
/// elsewhere), and the machine's idle and total jiffies, at one moment;
/// or, after [`Usage::since`], over a span.
#[derive(Debug)]
pub struct Usage {
    pub servers_cpu: Vec<f64>,
    pub client_cpu: f64,
    pub database_cpu: f64,
    pub machine: (u64, u64),
    pub seconds: f64,
    at: Instant,
}

impl Usage {
    fn take(instances: &[&ServerProcess]) -> Self {
        Self {
            servers_cpu: instances
                .iter()
                .map(|s| procfs::cpu_seconds(s.pid()).unwrap_or(0.0))
                .collect(),
            client_cpu: procfs::cpu_seconds(std::process::id()).unwrap_or(0.0),
            database_cpu: procfs::cpu_seconds_of_command("postgres"),
            machine: procfs::machine_jiffies().unwrap_or((0, 0)),
            seconds: 0.0,
            at: Instant::now(),
        }
    }

    fn since(self, before: &Usage) -> Self {
        Self {
            servers_cpu: self
                .servers_cpu
                .iter()
                .zip(&before.servers_cpu)
                .map(|(a, b)| a - b)
                .collect(),
            client_cpu: self.client_cpu - before.client_cpu,
            database_cpu: (self.database_cpu - before.database_cpu).max(0.0),
            machine: (
                self.machine.0.saturating_sub(before.machine.0),
                self.machine.1.saturating_sub(before.machine.1),
            ),
            seconds: self.at.duration_since(before.at).as_secs_f64(),
            at: self.at,
        }
    }

    /// How idle the machine was, in per cent of all cores.
    pub fn idle_percent(&self) -> f64 {
        100.0 * self.machine.0 as f64 / self.machine.1.max(1) as f64
    }
}

/// The download figures: a package of `package_mib` MiB deployed to one
/// device of the load that the rollout does not target, a third instance
/// with offload off, and the three kinds of download in turns.
async fn downloads(
    cluster: &Cluster,
    admin: &Admin,
    offloading: &ServerProcess,
    (devices, ids): (&[LoadDevice], &[airlift_protocol::DeviceId]),
    dir: &std::path::Path,
    params: &Params,
) -> Result<(downloads::Setup, Vec<(downloads::Kind, downloads::Runs)>)> {
    let device = devices
        .iter()
        .find(|d| !d.tagged)
        .context("no device of the load outside the rollout")?;
    let file = dir.join("download.airlift");
    eprintln!("downloads: building a {} MiB package", params.package_mib);
    let size = packages::build_package(
        &cluster.signer,
        "3.0.0",
        seed::DEVICE_TYPE,
        (params.package_mib << 20) as usize,
        &file,
    )?;
    let package = uploaded_id(admin, &file).await?;
    std::fs::remove_file(&file)?;
    let id = ids[device.index].to_string();
    let deployment_id = admin.deploy(&package, &[&id]).await?;
    let deployment = deployment_id.parse()?;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}{CHECK_IN_PATH}", offloading.url()))
        .bearer_auth(&device.token)
        .header("content-type", "application/json")
        .body(device.body.clone())
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        answer["update"]["deployment_id"] == deployment_id.as_str(),
        "the download's device was not offered it: {answer}"
    );
    let streaming = cluster.start("c", "off")?;
    let path = download_path(deployment);
    let setup = downloads::Setup {
        offloaded: (format!("{}{path}", offloading.url()), offloading.pid()),
        streamed: (format!("{}{path}", streaming.url()), streaming.pid()),
        token: device.token.clone(),
        size,
    };
    eprintln!(
        "downloads: {size} bytes, {} rounds of three kinds after an untimed one",
        params.download_runs
    );
    let started = Instant::now();
    let runs = downloads::measure(&setup, params.download_runs).await?;
    eprintln!("downloads took {:.1} s", started.elapsed().as_secs_f64());
    Ok((setup, runs))
}

/// Uploads a package file; its id.
async fn uploaded_id(admin: &Admin, file: &std::path::Path) -> Result<String> {
    let answer = admin.upload(file).await?;
    Ok(answer["id"].as_str().context("package id")?.to_owned())
}
