//! Soak under faults (issue 14): twice the check-in load the server
//! sustains at a realistic fleet rate, for ten minutes, while PostgreSQL is
//! restarted twice and one server instance is killed and started again —
//! and afterwards, nothing lost.
//!
//! ```text
//! cargo bench -p airlift-server --bench soak -- --short     # 2 000 devices, 1 minute
//! cargo bench -p airlift-server --bench soak                # 40 000 devices, 10 minutes
//! ```
//!
//! **What "twice the load" means here.** The realistic fleet figure in
//! BENCHMARKS.md is 20 000 devices polling every 60 s (p99 24 ms, "The
//! largest fleet at a 60 s poll"). The soak runs twice that: 40 000 devices
//! at a 60 s poll, about 667 check-ins a second, spread over two
//! `airlift-server` instances (device `i` talks to instance `i % 2`, as if
//! each had its own fixed URL) on one PostgreSQL database
//! (`$AIRLIFT_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, in a fresh schema reached with
//! `?options=-csearch_path%3D<schema>` and dropped at the end). Each
//! instance has its own `--data-dir`, except that B's `blobs` directory is
//! a symbolic link to A's — the shared object store that instances serving
//! the same deployments need: the package is uploaded to A, and without it
//! B answers its devices' downloads with 500 ("Object … not found").
//! Nothing else is shared.
//!
//! **The fleet.** Devices are pre-authorised through the management API
//! (Ed25519 keys made here), authenticate with a signed request, and check
//! in once before the clock starts, so the soak measures the steady state.
//! Then each checks in a poll interval (the server's answer) after its
//! previous check-in began, as the agent does (no jitter; first check-ins
//! spread evenly over one interval); on a 401 it
//! authenticates again; on a refused connection, a timeout (10 s), a broken
//! connection or any other status it retries with capped exponential
//! backoff (1 s, 2 s, … up to the poll interval, jittered) — counted as
//! errors, as a real agent keeps going. (The agent itself waits a whole
//! poll interval after an unreachable server; retrying sooner is harder on
//! a recovering server, and measures the recovery more finely.) A
//! deployment of a small package targets 1 000 devices spread over both
//! instances; each, once offered it at a check-in, reports `downloading`,
//! downloads the package (checking its SHA-256), then `downloaded`,
//! `installing`, `installed`, `rebooting` — after which its check-ins
//! report the new version, the first at once — and `success`, one step
//! every ½–1 `--step-secs`, so that the updates run through the faults.
//! Each device remembers the last inventory a check-in was answered with
//! (and when it was sent) and the last state a status answer named.
//!
//! **Faults**, at 25 %, 50 % and 75 % of the run: `pg_ctlcluster
//! --skip-systemctl-redirect <version> main restart` (as root; open
//! connections are cut); `kill -9` of instance B and a new instance B on the
//! same port and data directory, waited for by its "airlift-server ready"
//! log line; PostgreSQL restarted again. A guard starts PostgreSQL again if
//! the bench stops while it is down. The database must be on loopback.
//!
//! **Nothing lost**: after the run (and its grace period, in which only
//! unanswered reports are retried) and a 3 s wait for the check-in times the
//! servers write behind, the store must hold for every device the
//! inventory of its last answered check-in, a `last_check_in` no older than
//! that check-in's send time, and, for targeted devices, the state of its
//! last acknowledged report (either state when the last report went
//! unanswered); the deployment's counts must agree with its device list,
//! read through each instance.
//!
//! **Report** (stdout, Markdown): totals, failed requests by kind and
//! request, each fault with its outage (requests that failed or took over
//! 1 s) and recovery time (from the fault to the send time of the outage's
//! last request), phases between faults with p50/p99/max check-in latency,
//! a per-minute timeline — each server's `VmRSS` and CPU, the client's, how
//! busy the whole machine was (other work on it shows there), and how
//! often the servers read and wrote the soak's tables (`pg_stat_user_tables`)
//! — whether memory stayed flat after warm-up, the seconds that had
//! failures, the servers' warnings and errors by message, and the "nothing
//! lost" checks.
//! Progress goes to stderr. The exit status is non-zero when anything was
//! lost.
//!
//! The load client is this process: a tokio runtime of
//! `--client-threads` threads, reqwest with kept-alive pooled connections
//! (one per request in flight), at most `--max-in-flight` requests at once
//! (a device due while all are taken waits, and is counted as late).
//! The run is bounded in time (`--minutes` plus a grace period of at most
//! 30 s) and in requests (three times what the schedule needs).
//!
//! The server processes, the fresh schema, the release key and the `/proc`
//! readers are `airlift-testkit`'s; the package builder is
//! `benches/server/packages.rs`, shared with `benches/server.rs`.

#[path = "soak/dispatch.rs"]
mod dispatch;
#[path = "soak/fleet.rs"]
mod fleet;
#[path = "server/packages.rs"]
mod packages;
#[path = "soak/procs.rs"]
mod procs;
#[path = "soak/record.rs"]
mod record;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/verify.rs"]
mod verify;

use airlift_protocol::management::{CreateDeploymentRequest, Package, Target};
use airlift_protocol::DeploymentId;
use airlift_testkit::packages::Signer;
use airlift_testkit::postgres::FreshSchema;
use airlift_testkit::procfs;
use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use fleet::{Admin, Ctx, Device, DEVICE_TYPE, NEW_VERSION, OS_NAME};
use procs::{Cluster, ClusterGuard, Instance, ServerConfig, ADMIN_TOKEN, APPLICATION_NAME};
use record::{FaultEvent, Recorder, Sample};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The load client allocates with what airlift-server allocates with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Soak the update server under faults (issue 14).
#[derive(Debug, Clone, Parser)]
#[command(name = "soak")]
struct Args {
    /// About a minute with 2 000 devices polling every 10 s, 200 targeted
    /// and a 4 s step: for trying the soak out.
    #[arg(long)]
    short: bool,
    /// Devices in the fleet [default: 40000; --short: 2000].
    #[arg(long)]
    devices: Option<usize>,
    /// Poll interval the servers tell devices, in seconds [default: 60; --short: 10].
    #[arg(long)]
    poll_secs: Option<u64>,
    /// Length of the run in minutes [default: 10; --short: 1].
    #[arg(long)]
    minutes: Option<f64>,
    /// Devices the deployment targets [default: 1000; --short: 200].
    #[arg(long)]
    deployment_devices: Option<usize>,
    /// Seconds between a targeted device's reports (each drawn from ½–1 of
    /// it) [default: a tenth of the run].
    #[arg(long)]
    step_secs: Option<f64>,
    /// Seconds after which memory should stay flat [default: two poll intervals].
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Run without faults (a baseline).
    #[arg(long)]
    no_faults: bool,
    /// Device token lifetime the servers grant, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl_secs: u64,
    /// The package's payload, in KiB.
    #[arg(long, default_value_t = 64)]
    package_kib: usize,
    /// Threads of the load client's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 8192)]
    max_in_flight: usize,
    /// Copy the servers' logs to stderr.
    #[arg(long)]
    server_log: bool,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The parameters of one run, defaults applied.
#[derive(Debug, Clone)]
struct Params {
    devices: usize,
    poll: Duration,
    run: Duration,
    targeted: usize,
    step: Duration,
    warmup: Duration,
    faults: bool,
    token_ttl_secs: u64,
    package_bytes: usize,
    client_threads: usize,
    max_in_flight: usize,
    server_log: bool,
}

impl Params {
    fn from_args(args: Args) -> Result<Self> {
        let short = args.short;
        let devices = args.devices.unwrap_or(if short { 2000 } else { 40_000 });
        let poll_secs = args.poll_secs.unwrap_or(if short { 10 } else { 60 });
        let minutes = args.minutes.unwrap_or(if short { 1.0 } else { 10.0 });
        ensure!(devices >= 2, "--devices: at least 2 (one per instance)");
        ensure!(poll_secs >= 1, "--poll-secs: at least 1");
        ensure!(
            minutes > 0.0 && minutes <= 24.0 * 60.0,
            "--minutes: more than 0, at most a day"
        );
        let run = Duration::from_secs_f64(minutes * 60.0);
        let targeted = args
            .deployment_devices
            .unwrap_or(if short { 200 } else { 1000 })
            .clamp(1, devices);
        let step = args
            .step_secs
            .map_or(run / 10, Duration::from_secs_f64)
            .max(Duration::from_millis(100));
        Ok(Self {
            devices,
            poll: Duration::from_secs(poll_secs),
            run,
            targeted,
            step,
            warmup: Duration::from_secs(args.warmup_secs.unwrap_or(2 * poll_secs)),
            faults: !args.no_faults,
            token_ttl_secs: args.token_ttl_secs,
            package_bytes: args.package_kib * 1024,
            client_threads: args.client_threads.max(1),
            max_in_flight: args.max_in_flight.max(1),
            server_log: args.server_log,
        })
    }

    /// Which devices the deployment targets: `targeted` devices spread
    /// over the fleet, alternating between the instances.
    fn targeted_devices(&self) -> Vec<bool> {
        let mut targeted = vec![false; self.devices];
        let stride = self.devices / self.targeted;
        for k in 0..self.targeted {
            let pick = k * stride + usize::from((k * stride) % 2 != k % 2);
            targeted[pick.min(self.devices - 1)] = true;
        }
        targeted
    }
}

fn main() {
    let args = Args::parse();
    let params = match Params::from_args(args) {
        Ok(params) => params,
        Err(error) => {
            eprintln!("{error:#}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(params) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Whatever was still running (servers, the fault task) stops here, and
    // the PostgreSQL guard inside `run` has already done its part.
    drop(runtime);
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("soak: something was lost or broken (see the report)");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("soak failed: {error:#}");
            std::process::exit(1);
        }
    }
}

/// The whole soak, with PostgreSQL guarded and the schema dropped on the
/// way out. `Ok(false)`: the run finished but something was lost.
async fn run(params: Params) -> Result<bool> {
    eprintln!("parameters: {params:?}");
    let base = std::env::var("AIRLIFT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let cluster = Cluster::local(&base)?;
    let guard = ClusterGuard(cluster.clone());
    cluster.ensure_running();
    eprintln!(
        "PostgreSQL cluster {} at {}",
        cluster.describe(),
        procs::redact(&base)
    );
    let schema = FreshSchema::create_in(&base, "soak")
        .with_context(|| format!("making a schema in PostgreSQL at {}", procs::redact(&base)))?;
    eprintln!("schema {}", schema.name());
    let url = format!("{}&application_name={APPLICATION_NAME}", schema.url());
    let result = soak(&params, &url, &base, schema.name(), &cluster).await;
    guard.0.ensure_running();
    // Dropped once PostgreSQL runs again: the schema goes with it.
    drop(schema);
    drop(guard);
    result
}

async fn soak(
    params: &Params,
    database_url: &str,
    base: &str,
    schema: &str,
    cluster: &Cluster,
) -> Result<bool> {
    let idle = tokio::task::spawn_blocking(|| procfs::machine_idle(Duration::from_secs(1))).await?;
    eprintln!("machine idle before the start: {idle:.0} %");
    let dir = tempfile::tempdir()?;
    let signer = Signer::new();
    let (instances, admins) = start_instances(params, database_url, &signer, dir.path()).await?;

    // The fleet, enrolled and checked in once.
    let started = Instant::now();
    let enrol_ctx = Ctx::new(
        admins.iter().map(|a| a.url.clone()).collect(),
        Arc::new(Recorder::new(started)),
        params.step,
        u64::MAX,
    )?;
    let targeted = params.targeted_devices();
    let devices = fleet::enrol(
        &enrol_ctx,
        &admins,
        params.devices,
        |i| targeted[i],
        params.poll,
    )
    .await?;
    let enrolment = started.elapsed();
    eprintln!(
        "{} devices pre-authorised, authenticated and checked in once in {:.1} s",
        devices.len(),
        enrolment.as_secs_f64()
    );

    let deployment_id = deploy(params, &signer, &admins[0], &devices, dir.path()).await?;
    let load = Load {
        params,
        base,
        schema,
        cluster,
    };
    let (ended, mut instances) = load.run(instances, &admins, devices).await?;

    // Check-in times are written behind once a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verdict = verify::verify(&admins, &ended.devices, deployment_id).await;
    let recorded = ended.recorder.snapshot();
    let setting = report::Setting {
        run_ms: ended.run_ms,
        warmup_ms: params.warmup.as_millis() as u32,
        instance_names: instances.iter().map(|i| i.name).collect(),
        devices: params.devices,
        poll_secs: params.poll.as_secs(),
    };
    let mut out = format!(
        "Soak of {:.1} min: {} devices at a {} s poll over 2 instances on PostgreSQL, {} targeted by a deployment; \
         enrolment took {:.0} s; the machine was {idle:.0} % idle before the start.\n\n",
        params.run.as_secs_f64() / 60.0,
        params.devices,
        params.poll.as_secs(),
        params.targeted,
        enrolment.as_secs_f64()
    );
    out.push_str(&report::render(&recorded, &setting, verdict.as_ref().ok()));
    out.push_str(&instance_logs(&instances));
    println!("{out}");
    let verdict = verdict.context("reading the store after the run")?;
    for instance in &mut instances {
        instance.stop();
    }
    let faults_failed = recorded.faults.iter().any(|f| f.error.is_some());
    Ok(verdict.lost() == 0 && !faults_failed)
}

/// Instances A and B on the soak's database, trusting `signer`, with their
/// data under `dir`; and an admin client for each.
async fn start_instances(
    params: &Params,
    database_url: &str,
    signer: &Signer,
    dir: &Path,
) -> Result<(Vec<Instance>, Vec<Admin>)> {
    let config = ServerConfig {
        binary: server_binary(),
        database_url: database_url.to_owned(),
        trust: signer.public_key_file().to_owned(),
        poll_secs: params.poll.as_secs(),
        token_ttl_secs: params.token_ttl_secs,
        copy_log: params.server_log,
    };
    eprintln!("airlift-server binary: {}", config.binary.display());
    let mut instances = vec![
        Instance::new("A", config.clone(), dir),
        Instance::new("B", config, dir),
    ];
    // Packages are uploaded to instance A; instances that serve the same
    // deployments need the same blobs (an object store in production), so
    // B's blob directory is A's (a symbolic link); the rest of each data
    // directory is its own.
    let blobs_a = instances[0].data_dir().join("blobs");
    std::fs::create_dir_all(&blobs_a)?;
    std::fs::create_dir_all(instances[1].data_dir())?;
    std::os::unix::fs::symlink(&blobs_a, instances[1].data_dir().join("blobs"))?;
    // One after the other: the first migrates the fresh schema.
    for instance in &mut instances {
        instance.start().await?;
        eprintln!("instance {} on {}", instance.name, instance.url());
    }
    let admin_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let admins = instances
        .iter()
        .map(|instance| Admin {
            client: admin_client.clone(),
            url: instance.url(),
            token: ADMIN_TOKEN.to_owned(),
        })
        .collect();
    Ok((instances, admins))
}

/// Builds and uploads the package (through `admin`), and deploys it to the
/// targeted devices.
async fn deploy(
    params: &Params,
    signer: &Signer,
    admin: &Admin,
    devices: &[Device],
    dir: &Path,
) -> Result<DeploymentId> {
    let package_file = dir.join("update.airlift");
    packages::build_package(
        signer,
        NEW_VERSION,
        DEVICE_TYPE,
        params.package_bytes,
        &package_file,
    )?;
    let package = upload(admin, &package_file).await?;
    let targets: Vec<_> = devices
        .iter()
        .filter(|d| d.targeted)
        .map(|d| d.id)
        .collect();
    let request = CreateDeploymentRequest {
        name: "soak".into(),
        package_id: package.id,
        target: Target::Devices(targets),
        strategy: airlift_protocol::management::Strategy::All,
        install: Default::default(),
        dynamic: None,
        ends_at: None,
    };
    let (status, body) = admin.post("/deployments", &request).await?;
    ensure!(
        status == StatusCode::CREATED,
        "creating the deployment: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let deployment: airlift_protocol::management::Deployment = serde_json::from_slice(&body)?;
    let deployment_id: DeploymentId = deployment.id;
    eprintln!(
        "deployment {deployment_id} of {OS_NAME} {NEW_VERSION} targets {} devices",
        params.targeted
    );
    Ok(deployment_id)
}

/// What the timed run needs besides the instances and the fleet.
struct Load<'a> {
    params: &'a Params,
    base: &'a str,
    schema: &'a str,
    cluster: &'a Cluster,
}

/// What the timed run left: its recording, the devices as they ended, and
/// its length in milliseconds.
struct RunEnd {
    recorder: Arc<Recorder>,
    devices: Vec<Device>,
    run_ms: u32,
}

impl Load<'_> {
    /// The timed run: the fleet on schedule, the samplers, and the faults
    /// (which own the instances meanwhile and give them back).
    async fn run(
        &self,
        instances: Vec<Instance>,
        admins: &[Admin],
        devices: Vec<Device>,
    ) -> Result<(RunEnd, Vec<Instance>)> {
        let params = self.params;
        let start = Instant::now();
        let deadline = start + params.run;
        let recorder = Arc::new(Recorder::new(start));
        let expected = params.devices as f64
            * (params.run.as_secs_f64() / params.poll.as_secs_f64() + 2.0)
            + params.targeted as f64 * 10.0;
        let cap = (expected * 3.0) as u64 + 10_000;
        let ctx = Arc::new(Ctx::new(
            admins.iter().map(|a| a.url.clone()).collect(),
            Arc::clone(&recorder),
            params.step,
            cap,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = tokio::spawn(sample(
            instances.iter().map(|i| Arc::clone(&i.pid)).collect(),
            Arc::clone(&recorder),
            Arc::clone(&stop),
        ));
        let progress = tokio::spawn(progress(Arc::clone(&ctx), start, Arc::clone(&stop)));
        let db_sampler = tokio::spawn(sample_database(
            self.base.to_owned(),
            self.schema.to_owned(),
            Arc::clone(&recorder),
            Arc::clone(&stop),
        ));
        let faults = tokio::spawn(faults(
            instances,
            self.cluster.clone(),
            self.base.to_owned(),
            Arc::clone(&recorder),
            start,
            params.run,
            params.faults,
        ));
        let poll = params.poll;
        let count = params.devices;
        let end = dispatch::run(
            Arc::clone(&ctx),
            devices,
            move |i| start + poll.mul_f64(i as f64 / count as f64),
            deadline,
            Duration::from_secs(30),
            params.max_in_flight,
        )
        .await;
        let mut instances = faults.await.context("the fault task")?;
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.await;
        let _ = progress.await;
        let _ = db_sampler.await;
        let run_ms = recorder.ms(deadline.min(Instant::now()));
        eprintln!(
            "run over; {} devices came back, {} with a report still unanswered",
            end.devices.len(),
            end.undrained
        );
        ensure!(
            !end.over_budget,
            "the run sent more than {cap} requests and was cut short: a retry loop?"
        );
        for instance in &mut instances {
            if let Some(status) = instance.exited() {
                eprintln!("instance {} exited on its own: {status}", instance.name);
            }
        }
        let run = RunEnd {
            recorder,
            devices: end.devices,
            run_ms,
        };
        Ok((run, instances))
    }
}

/// What each instance logged at warning and error level, by message.
fn instance_logs(instances: &[Instance]) -> String {
    let mut out = String::new();
    for instance in instances {
        let log = instance.warnings_by_message();
        if log.is_empty() {
            out.push_str(&format!(
                "\nInstance {} logged no warning or error.\n",
                instance.name
            ));
            continue;
        }
        out.push_str(&format!(
            "\nInstance {} logged (level, count, message, first line):\n\n",
            instance.name
        ));
        for ((level, message), (count, first)) in &log {
            out.push_str(&format!("- {level} ×{count} \"{message}\": `{first}`\n"));
        }
    }
    out
}

/// The faults, at 25 %, 50 % and 75 % of the run; owns the instances
/// meanwhile and gives them back.
async fn faults(
    mut instances: Vec<Instance>,
    cluster: Cluster,
    base: String,
    recorder: Arc<Recorder>,
    start: Instant,
    run: Duration,
    enabled: bool,
) -> Vec<Instance> {
    if !enabled {
        return instances;
    }
    for (share, fault) in [(0.25, 0), (0.50, 1), (0.75, 2)] {
        tokio::time::sleep_until((start + run.mul_f64(share)).into()).await;
        let at = Instant::now();
        let mut event = FaultEvent {
            name: String::new(),
            at_ms: recorder.ms(at),
            took: Duration::ZERO,
            error: None,
            others: Vec::new(),
        };
        if fault == 1 {
            let victim = &mut instances[1];
            event.name = format!("kill -9 instance {}", victim.name);
            eprintln!(
                "fault: {} at {:.1} s",
                event.name,
                at.duration_since(start).as_secs_f64()
            );
            victim.kill();
            match victim.start().await {
                Ok(_) => event.took = at.elapsed(),
                Err(error) => event.error = Some(format!("{error:#}")),
            }
        } else {
            event.name = format!("PostgreSQL restart {}", fault / 2 + 1);
            event.others = procs::other_clients(&base).await.unwrap_or_default();
            eprintln!(
                "fault: {} at {:.1} s",
                event.name,
                at.duration_since(start).as_secs_f64()
            );
            event.at_ms = recorder.ms(Instant::now());
            let cluster = cluster.clone();
            match tokio::task::spawn_blocking(move || cluster.restart()).await {
                Ok(Ok(took)) => event.took = took,
                Ok(Err(error)) => event.error = Some(format!("{error:#}")),
                Err(error) => event.error = Some(error.to_string()),
            }
        }
        eprintln!("  done in {:.2} s", event.took.as_secs_f64());
        recorder.fault(event);
    }
    instances
}

/// Every second: each server's and this process's resident memory and CPU.
async fn sample(
    pids: Vec<Arc<std::sync::atomic::AtomicU32>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let own = std::process::id();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut jiffies = procfs::machine_jiffies();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let at_ms = recorder.ms(Instant::now());
        let now = procfs::machine_jiffies();
        if let (Some((idle_0, total_0)), Some((idle_1, total_1))) = (jiffies, now) {
            let busy = 1.0 - (idle_1 - idle_0) as f64 / (total_1 - total_0).max(1) as f64;
            recorder.machine_busy(at_ms, busy);
        }
        jiffies = now;
        let look = |process: usize, pid: u32| {
            let (rss_kib, cpu_secs) =
                match (procfs::status_kib(pid, "VmRSS"), procfs::cpu_seconds(pid)) {
                    (Some(rss), Some(cpu)) if pid != 0 => (rss, cpu),
                    _ => (0, 0.0),
                };
            recorder.sample(Sample {
                at_ms,
                process,
                pid: if rss_kib == 0 { 0 } else { pid },
                rss_kib,
                cpu_secs,
            });
        };
        for (process, pid) in pids.iter().enumerate() {
            look(process, pid.load(Ordering::Relaxed));
        }
        look(pids.len(), own);
    }
}

/// Every 5 s: how often the servers have read and written the soak's
/// tables so far. A restarted PostgreSQL is connected to again.
async fn sample_database(
    base: String,
    schema: String,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    use sqlx::Connection;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut conn: Option<sqlx::PgConnection> = None;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if conn.is_none() {
            conn = sqlx::PgConnection::connect(&base).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        match procs::table_activity(c, &schema).await {
            Ok((scans, writes)) => recorder.db_stats(Instant::now(), scans, writes),
            Err(_) => conn = None,
        }
    }
}

/// A line on stderr every 10 s.
async fn progress(ctx: Arc<Ctx>, start: Instant, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let (mut ok, mut failed) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now_ok = ctx.ok_check_ins.load(Ordering::Relaxed);
        let now_failed = ctx.failures.load(Ordering::Relaxed);
        eprintln!(
            "  {:>5.0} s: {:.0} check-ins/s, {} failed requests in the last 10 s",
            start.elapsed().as_secs_f64(),
            (now_ok - ok) as f64 / 10.0,
            now_failed - failed
        );
        (ok, failed) = (now_ok, now_failed);
    }
}

/// The server under test: Cargo's build of this package's binary, or
/// `AIRLIFT_BENCH_SERVER_BIN` to soak another build.
fn server_binary() -> PathBuf {
    std::env::var_os("AIRLIFT_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airlift-server")))
}

async fn upload(admin: &Admin, file: &Path) -> Result<Package> {
    let bytes = tokio::fs::read(file).await?;
    let response = admin
        .client
        .post(admin.api("/packages"))
        .bearer_auth(&admin.token)
        .body(bytes)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if status != StatusCode::CREATED {
        bail!("upload: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}
