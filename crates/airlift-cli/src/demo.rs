//! `airlift demo`: the whole system in one command, for a newcomer.
//!
//! Starts an `airlift-server` (the binary beside this one) on a temporary
//! SQLite database (or the PostgreSQL database `--database-url` names),
//! makes a signing key, builds two signed packages, starts a simulated
//! fleet of devices running the real agent (`airlift-sim`),
//! rolls the good package out in phases — canary, 10 %, 50 %, 100 % — and
//! then a bad one whose health check fails on 40 % of devices: the circuit
//! breaker stops it after the canaries — the unhealthy ones roll back by
//! themselves, and the server rolls the healthy ones that committed it back
//! to 2.0.0 through a rollback deployment — and the rest of the fleet never
//! sees it. The fleet ends on 2.0.0.

use crate::client::{Client, DeviceQuery};
use crate::server_url::ServerUrl;
use airlift_package::SigningKey;
use airlift_protocol::management::{CreateDeploymentRequest, Deployment, Package, Target};
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::strategy::{
    Advance, BreakerAction, FailureThreshold, Phase, PhaseDevices, Phased, Strategy,
};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_sim::server::ServerProcess;
use airlift_sim::{Fleet, FleetConfig, Share, Snapshot};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The device type of the demo's devices.
const DEVICE_TYPE: &str = "demo-board";
/// The version that fails its health check on part of the fleet.
const BAD_VERSION: &str = "2.1.0";

/// Arguments of `airlift demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Share of devices whose health check fails on the bad version.
    #[arg(long, default_value_t = 40.0)]
    pub unhealthy_percent: f64,
    /// The airlift-server binary [default: the one beside this program].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Keep the server and the fleet running at the end, until Ctrl-C, to
    /// look around with the CLI.
    #[arg(long)]
    pub keep: bool,
    /// Run the server on this PostgreSQL database (e.g.
    /// postgres://postgres@127.0.0.1:5432/airlift; give it an empty one, or
    /// a schema of its own with `?options=-csearch_path%3Dname`) instead of
    /// a temporary SQLite database. What the demo writes stays there.
    #[arg(
        long,
        value_name = "URL",
        env = "AIRLIFT_DEMO_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// Runs the demo.
pub fn run(args: &DemoArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("making a temporary directory")?;
    let token = format!("alt_demo{}", uuid_hex());
    step("1/6", "a signing key");
    let (key, public) = signing_key(dir.path())?;

    step(
        "2/6",
        if args.database_url.is_some() {
            "an airlift-server on the PostgreSQL database given"
        } else {
            "an airlift-server on a temporary SQLite database"
        },
    );
    let server = start_server(args, dir.path(), &public, &token)?;
    println!("      {}", server.url);

    step("3/6", "two signed packages");
    let good = package(&key, "2.0.0")?;
    let bad = package(&key, BAD_VERSION)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let url: ServerUrl = server.url.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let client = Client::new(url, token.clone())?;
    let (good, bad) = upload_packages(&runtime, &client, good, bad, args.unhealthy_percent)?;

    step(
        "4/6",
        &format!(
            "a fleet of {} simulated devices, running the real agent",
            args.devices
        ),
    );
    let fleet = start_fleet(args, &server.url, &public, &token)?;
    let canaries = canaries(&runtime, &client, &fleet)?;

    step(
        "5/6",
        "a staged rollout of rootfs 2.0.0: canary → 10 % → 50 % → 100 %",
    );
    let rollout = Rollout {
        runtime: &runtime,
        client: &client,
        canaries: &canaries,
        devices: args.devices,
        quiet,
    };
    let done = rollout.deploy("rootfs 2.0.0".into(), good.id)?;

    step(
        "6/6",
        &format!("a staged rollout of rootfs {BAD_VERSION}, which is broken"),
    );
    let stopped = rollout.deploy(format!("rootfs {BAD_VERSION}"), bad.id)?;
    let rollbacks = rollout.follow_rollbacks(stopped.id)?;
    // Let the canaries' rollbacks settle before counting.
    let snapshot = fleet
        .wait_until(Duration::from_secs(30), |s| {
            s.in_state("idle") == args.devices
                && s.with_outcome("none") == 0
                && s.running(BAD_VERSION) == 0
        })
        .unwrap_or_else(|s| *s.0);

    let outcome = Outcome {
        done: &done,
        stopped: &stopped,
        rollbacks: &rollbacks,
        snapshot: &snapshot,
    };
    print_what_happened(started, args.devices, &outcome);
    if !args.keep {
        println!();
        println!(
            "Stopping the server and the fleet and removing their files (`airlift demo --keep` leaves them running, to look around with the CLI)."
        );
        drop(fleet);
        drop(server);
        return Ok(());
    }
    println!();
    print_look_around(&server.url, &token, stopped.id);
    println!();
    println!("The server and the fleet keep running; stop with Ctrl-C.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Generates the demo's signing key and writes its public half into `dir`,
/// where the server and the fleet read it.
fn signing_key(dir: &Path) -> Result<(SigningKey, PathBuf)> {
    let key = SigningKey::generate().context("generating a signing key")?;
    let public = dir.join("release.pub");
    std::fs::write(&public, key.public_key().to_pem()?)
        .with_context(|| format!("writing {}", public.display()))?;
    println!("      key id {}", key.public_key().key_id());
    Ok((key, public))
}

/// Uploads the good and the bad package; returns them as the server knows
/// them.
fn upload_packages(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    good: Vec<u8>,
    bad: Vec<u8>,
    unhealthy_percent: f64,
) -> Result<(Package, Package)> {
    let upload = |bytes: Vec<u8>| {
        let len = bytes.len() as u64;
        runtime.block_on(client.upload_package(reqwest::Body::from(bytes), len))
    };
    let good = upload(good).context("uploading rootfs 2.0.0")?;
    let bad = upload(bad).context("uploading rootfs 2.1.0")?;
    println!("      rootfs 2.0.0  {}", good.id);
    println!(
        "      rootfs {BAD_VERSION}  {}  (its health check fails on {unhealthy_percent} % of devices)",
        bad.id
    );
    Ok((good, bad))
}

/// Starts the simulated fleet, whose health check fails on the bad version
/// on a share of devices, and waits until every device checks in.
fn start_fleet(args: &DemoArgs, url: &str, public: &Path, token: &str) -> Result<Fleet> {
    let mut config = FleetConfig::new(url, public.to_path_buf(), args.devices, DEVICE_TYPE);
    config.admin_token = Some(token.to_owned());
    config.poll_interval = Some(Duration::from_secs(1));
    config.faults.fail_health_on = Some(BAD_VERSION.into());
    config.faults.fail_health_share =
        Share::percent(args.unhealthy_percent).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fleet = Fleet::start(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    fleet
        .wait_until(Duration::from_secs(60), |s| {
            s.in_state("idle") == args.devices && s.checked_in == args.devices
        })
        .map_err(|s| anyhow::anyhow!("the fleet did not come up: {:?}", s.0.states))?;
    println!(
        "      all {} devices accepted and checking in every second",
        args.devices
    );
    Ok(fleet)
}

/// What the demo's two staged rollouts share.
struct Rollout<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a Client,
    canaries: &'a [DeviceId],
    devices: usize,
    quiet: bool,
}

impl Rollout<'_> {
    /// Deploys a package to the whole fleet in stages, follows the
    /// deployment until it ends and reports it; returns it as it ended.
    fn deploy(&self, name: String, package_id: PackageId) -> Result<Deployment> {
        let target =
            Target::Attributes([("device_type".to_owned(), DEVICE_TYPE.to_owned())].into());
        let created =
            self.runtime
                .block_on(self.client.create_deployment(&CreateDeploymentRequest {
                    name,
                    package_id,
                    target,
                    strategy: staged(self.canaries),
                    install: Default::default(),
                    // The demo follows each rollout to its end.
                    dynamic: Some(false),
                    ends_at: None,
                }))?;
        let ended = follow(
            self.runtime,
            self.client,
            created.id,
            self.devices,
            self.quiet,
        )?;
        report(&ended);
        Ok(ended)
    }

    /// Follows the rollback deployments the stopped one's breaker started
    /// until they end; returns them as they ended.
    fn follow_rollbacks(&self, stopped: DeploymentId) -> Result<Vec<Deployment>> {
        let detail = self.runtime.block_on(self.client.deployment(stopped))?;
        let mut ended = Vec::new();
        for id in detail.rolled_back_by {
            println!("      the server rolls back the canaries that installed it: deployment {id}");
            let rollback = follow(self.runtime, self.client, id, self.devices, self.quiet)?;
            report(&rollback);
            ended.push(rollback);
        }
        Ok(ended)
    }
}

/// How the demo's rollouts ended and what the fleet runs.
struct Outcome<'a> {
    done: &'a Deployment,
    stopped: &'a Deployment,
    rollbacks: &'a [Deployment],
    snapshot: &'a Snapshot,
}

/// The demo's summary: how far each rollout went, and what the fleet runs.
fn print_what_happened(started: Instant, devices: usize, outcome: &Outcome<'_>) {
    println!();
    println!(
        "What happened, in {:.0} s:",
        started.elapsed().as_secs_f64()
    );
    for line in what_happened(devices, outcome) {
        println!("{line}");
    }
}

/// [`print_what_happened`]'s lines after the first.
fn what_happened(devices: usize, outcome: &Outcome<'_>) -> Vec<String> {
    use airlift_protocol::state::UpdateState;
    let count = |d: &Deployment, state: UpdateState| d.counts.get(&state).copied().unwrap_or(0);
    let mut lines = vec![format!(
        "  rootfs 2.0.0 reached all {} devices, phase by phase, each phase only after the one before was healthy.",
        count(outcome.done, UpdateState::Success)
    )];
    if let Some(rollout) = &outcome.stopped.rollout {
        let canary = rollout.phases.first();
        let admitted = canary.map_or(0, |p| p.admitted);
        lines.push(format!(
            "  rootfs {BAD_VERSION}: {} of its {admitted} canaries failed their health check and rolled back by themselves;",
            canary.map_or(0, |p| p.failed),
        ));
        lines.push(format!(
            "  the circuit breaker stopped it there: the other {} devices were never offered it.",
            devices as u64 - admitted
        ));
    }
    for rollback in outcome.rollbacks {
        let back =
            count(rollback, UpdateState::Success) + count(rollback, UpdateState::AlreadyInstalled);
        lines.push(format!(
            "  The server rolled the {back} canaries that had installed {BAD_VERSION} back to 2.0.0 (rollback deployment {}, {}).",
            rollback.id, rollback.status
        ));
    }
    let bad = outcome.snapshot.running(BAD_VERSION);
    if bad == 0 {
        lines.push(format!(
            "  The fleet now runs (none left on the broken {BAD_VERSION}):"
        ));
    } else {
        lines.push(format!(
            "  The fleet now runs ({bad} devices still on the broken {BAD_VERSION}):"
        ));
    }
    for (version, count) in &outcome.snapshot.running {
        lines.push(format!("    {version:<8} {count} devices"));
    }
    lines
}

/// The commands to look around a demo that keeps running (`--keep`): only
/// then is there a server to point them at.
fn print_look_around(url: &str, token: &str, broken: DeploymentId) {
    for line in look_around(url, token, broken) {
        println!("{line}");
    }
}

/// [`print_look_around`]'s lines. The sign-in link carries the token in its
/// fragment, which the browser keeps to itself: a query string would put
/// it in the server's request log and in the browser's history.
fn look_around(url: &str, token: &str, broken: DeploymentId) -> Vec<String> {
    let fragment = percent_encoded(token);
    vec![
        "In a browser:".to_owned(),
        format!("  dashboard  {url}/ui/"),
        format!("  sign in    {url}/ui/sign-in#token={fragment}"),
        format!("             (or paste the token {token} into the sign-in page)"),
        "From another terminal:".to_owned(),
        format!("  export AIRLIFT_SERVER={url} AIRLIFT_TOKEN={token}"),
        "  airlift deployment list".to_owned(),
        format!("  airlift deployment show {broken}"),
        "  airlift device list".to_owned(),
        format!("  curl {url}/metrics"),
    ]
}

/// `text` with every byte but the URL-unreserved ones as `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn step(number: &str, what: &str) {
    println!("[{number}] {what}");
}

fn uuid_hex() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::getrandom(&mut bytes);
    hex::encode(bytes)
}

/// The canary group: the first [`CANARIES`] devices by serial, as an
/// operator names a fixed set of devices to go first. (Fixed, so that every
/// run of the demo tells the same story: a share drawn anew for each
/// deployment could hold fewer than two unhealthy devices, and then the
/// breaker would not trip.)
fn canaries(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    fleet: &Fleet,
) -> Result<Vec<DeviceId>> {
    let mut serials: Vec<String> = fleet.devices().into_iter().map(|d| d.serial).collect();
    serials.sort();
    serials.truncate(CANARIES);
    let query = DeviceQuery {
        per_page: Some(1000),
        ..DeviceQuery::default()
    };
    let page = runtime
        .block_on(client.list_devices(&query))
        .context("listing the devices")?;
    serials
        .iter()
        .map(|serial| {
            page.items
                .iter()
                .find(|d| d.identity.get("serial") == Some(serial))
                .map(|d| d.id)
                .with_context(|| format!("device {serial} is not on the server"))
        })
        .collect()
}

/// Devices in the canary phase.
const CANARIES: usize = 10;

/// canary (10 named devices) → 10 % → 50 % → 100 %, two seconds of soak
/// each; more than 10 % failures stops the rollout and rolls back the
/// devices that installed it.
fn staged(canaries: &[DeviceId]) -> Strategy {
    let phase = |name: &str, devices: PhaseDevices| Phase {
        name: Some(name.to_owned()),
        devices,
        soak_secs: 2,
        success_percent: 100,
        deadline_secs: Some(60),
    };
    Strategy::Phased(Phased {
        phases: vec![
            phase("canary", PhaseDevices::Devices(canaries.to_vec())),
            phase("10 %", PhaseDevices::Percent(10)),
            phase("50 %", PhaseDevices::Percent(50)),
            phase("100 %", PhaseDevices::Percent(100)),
        ],
        failure_threshold: FailureThreshold::Percent(10),
        // Back to the release each device ran before.
        on_failure: BreakerAction::Rollback,
        advance: Advance::Automatic,
        device_timeout_secs: 120,
        rollback_package: None,
    })
}

/// A signed package of one raw simulator image saying it is `version`.
fn package(key: &SigningKey, version: &str) -> Result<Vec<u8>> {
    airlift_sim::image::signed_package(key, version, 64 * 1024, DEVICE_TYPE)
        .with_context(|| format!("building rootfs {version}"))
}

fn start_server(args: &DemoArgs, dir: &Path, public: &Path, token: &str) -> Result<ServerProcess> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("finding this program")?
            .with_file_name("airlift-server"),
    };
    let database: Vec<&str> = match &args.database_url {
        Some(url) => vec!["--database-url", url],
        None => Vec::new(),
    };
    Ok(ServerProcess::start_with(
        &binary,
        &dir.join("server"),
        public,
        token,
        1,
        &database,
    )?)
}

/// Follows a deployment with a progress bar per phase until it ends
/// (finished, aborted, paused or cancelled); returns it.
fn follow(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    id: DeploymentId,
    devices: usize,
    quiet: bool,
) -> Result<Deployment> {
    let bars = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("      {prefix:>8} [{bar:30}] {pos:>3}/{len:3} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut phase_bars: Vec<ProgressBar> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let detail = runtime.block_on(client.deployment(id))?;
        let deployment = detail.deployment;
        if let (Some(rollout), Strategy::Phased(phased)) =
            (&deployment.rollout, &deployment.strategy)
        {
            for (i, phase) in rollout.phases.iter().enumerate() {
                if phase_bars.len() <= i {
                    let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
                    bar.set_prefix(phase.name.clone());
                    phase_bars.push(bar);
                }
                let share = match phased.phases[i].devices {
                    PhaseDevices::Percent(p) => usize::from(p),
                    _ => 0,
                };
                let before = match i {
                    0 => 0,
                    _ => match phased.phases[i - 1].devices {
                        PhaseDevices::Percent(p) => usize::from(p),
                        _ => 0,
                    },
                };
                let expected = (share * devices / 100).saturating_sub(before * devices / 100);
                let bar = &phase_bars[i];
                bar.set_length(expected.max(phase.admitted as usize) as u64);
                bar.set_position(phase.succeeded);
                let mut message = format!("{} admitted", phase.admitted);
                if phase.failed > 0 {
                    message.push_str(&format!(", {} failed", phase.failed));
                }
                bar.set_message(message);
            }
        }
        let ended = matches!(
            deployment.status,
            DeploymentStatus::Finished
                | DeploymentStatus::Aborted
                | DeploymentStatus::Cancelled
                | DeploymentStatus::Paused
        );
        if ended || Instant::now() > deadline {
            for bar in &phase_bars {
                bar.finish();
            }
            if !ended {
                bail!("deployment {id} did not end within 90 s");
            }
            return Ok(deployment);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn report(deployment: &Deployment) {
    for line in phase_table(deployment) {
        println!("{line}");
    }
    println!("      → {}", deployment.status);
    if let Some(reason) = deployment.rollout.as_ref().and_then(|r| r.reason.as_ref()) {
        println!("        {reason}");
    }
}

/// One line per phase: its own admitted devices and, since a phase's share
/// includes the phases before it, the cumulative count the share is of.
fn phase_table(deployment: &Deployment) -> Vec<String> {
    let Some(rollout) = &deployment.rollout else {
        return Vec::new();
    };
    let mut total = 0;
    rollout
        .phases
        .iter()
        .map(|phase| {
            total += phase.admitted;
            format!(
                "      {:>8}  {:>3} admitted ({total:>3} in all)  {:>3} succeeded  {:>3} failed",
                phase.name, phase.admitted, phase.succeeded, phase.failed
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_demo_leads_to_the_dashboard_without_putting_the_token_in_a_query() {
        let broken = DeploymentId::new();
        let lines = look_around("http://127.0.0.1:4321", "alt_demo0f+", broken);
        assert!(
            lines.contains(&"  dashboard  http://127.0.0.1:4321/ui/".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"  sign in    http://127.0.0.1:4321/ui/sign-in#token=alt_demo0f%2B".to_owned()
            ),
            "{lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains("?token=")), "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.contains(&broken.to_string())),
            "{lines:#?}"
        );
    }

    fn deployment(phases: &[(u64, u64, u64)]) -> Deployment {
        use airlift_protocol::strategy::{PhaseProgress, RolloutProgress};
        Deployment {
            id: DeploymentId::new(),
            name: "d".into(),
            package_id: PackageId::new(),
            target: Target::Tag("t".into()),
            strategy: Strategy::All,
            install: Default::default(),
            status: DeploymentStatus::Finished,
            rollout: Some(RolloutProgress {
                phase: 0,
                phase_started_at: chrono::Utc::now(),
                phase_met_at: None,
                reason: None,
                phases: phases
                    .iter()
                    .enumerate()
                    .map(|(i, (admitted, succeeded, failed))| PhaseProgress {
                        name: format!("p{i}"),
                        admitted: *admitted,
                        succeeded: *succeeded,
                        failed: *failed,
                        skipped: 0,
                    })
                    .collect(),
            }),
            counts: [(airlift_protocol::state::UpdateState::Success, 6)].into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            dynamic: false,
            ends_at: None,
            joined_late: 0,
        }
    }

    #[test]
    fn the_phase_table_shows_cumulative_admitted_counts() {
        let lines = phase_table(&deployment(&[(10, 10, 0), (10, 9, 1), (80, 80, 0)]));
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains(" 10 admitted ( 10 in all)"), "{lines:#?}");
        assert!(lines[1].contains(" 10 admitted ( 20 in all)"), "{lines:#?}");
        assert!(lines[2].contains(" 80 admitted (100 in all)"), "{lines:#?}");
    }

    #[test]
    fn the_summary_says_the_rollback_brought_the_canaries_back() {
        let done = deployment(&[(200, 200, 0)]);
        let stopped = deployment(&[(10, 6, 4)]);
        let rollback = deployment(&[(6, 6, 0)]);
        let mut snapshot = Snapshot::default();
        snapshot.running.insert("2.0.0".into(), 200);
        let mut broken = snapshot.clone();
        broken.running.insert(BAD_VERSION.into(), 3);
        let outcome = Outcome {
            done: &done,
            stopped: &stopped,
            rollbacks: std::slice::from_ref(&rollback),
            snapshot: &snapshot,
        };
        let lines = what_happened(200, &outcome).join("\n");
        assert!(
            lines.contains("the other 190 devices were never offered it"),
            "{lines}"
        );
        assert!(
            lines.contains("rolled the 6 canaries that had installed 2.1.0 back to 2.0.0"),
            "{lines}"
        );
        assert!(lines.contains(&rollback.id.to_string()), "{lines}");
        assert!(lines.contains("none left on the broken 2.1.0"), "{lines}");
        let outcome = Outcome {
            snapshot: &broken,
            ..outcome
        };
        let lines = what_happened(200, &outcome).join("\n");
        assert!(
            lines.contains("3 devices still on the broken 2.1.0"),
            "{lines}"
        );
    }
}
