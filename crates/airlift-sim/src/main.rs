//! The `airlift-sim` command: flags in, a [`Fleet`] running, live progress
//! on stderr, a summary on stdout.

use airlift_agent::push::PushConfig;
use airlift_sim::{Fleet, FleetConfig, Mix, Share, Snapshot};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXAMPLES: &str = "\
Examples:
  # A server to play with (it prints its admin token once) and a release key:
  airlift key generate --out keys
  airlift-server --trust keys/airlift-signing.pub --poll-interval 5

  # 500 devices tagged `sim`, 70 % pi4 and 30 % pi5, half in each region:
  airlift-sim run --server http://127.0.0.1:8080 --trust keys/airlift-signing.pub \\
      --admin-token \"$AIRLIFT_ADMIN_TOKEN\" --devices 500 --tag sim \\
      --device-types pi4:70,pi5:30 --attributes region=eu:50,region=us:50

  # In another terminal: an image the simulator can tell apart, packaged
  # and deployed as usual (the fleet's factory version is 1.0.0):
  airlift-sim image 2.0.0 --size 64K --out rootfs-2.0.0.img
  airlift package build --name rootfs --version 2.0.0 --device-type pi4 --device-type pi5 \\
      --payload image:rootfs=rootfs-2.0.0.img --key keys/airlift-signing.key \\
      --out rootfs-2.0.0.airlift
  airlift package upload rootfs-2.0.0.airlift
  airlift deployment create --name 'rootfs 2.0.0' --package PACKAGE_ID --tag sim

  # The same with faults: 40 % of the devices fail their health check on
  # 2.0.0 (and must roll back), 10 % lose power mid-download, 20 % sit
  # behind a network that drops connections; stop once all is settled:
  airlift-sim run --server http://127.0.0.1:8080 --trust keys/airlift-signing.pub \\
      --devices 1000 --tag sim --fail-health-on 2.0.0 --fail-health-share 40 \\
      --power-loss-share 10 --flaky-network-share 20 --until-settled --json

Which devices meet which fault is a stable hash of --seed and the device's
serial: the same flags pick the same devices on every run. Devices are
driven by --workers threads from a queue ordered by their next check-in;
AIRLIFT_LOG=warn shows what the agents log.";

/// A fleet of simulated Airlift devices in one process.
///
/// Each device runs the real agent (state machine, installers, HTTP client)
/// over two small slot files and a file-backed bootloader, and talks real
/// HTTP to the server. The simulator plays the bootloader's power-up after
/// every reboot, power cuts, flaky networks and failing health checks.
#[derive(Debug, Parser)]
#[command(name = "airlift-sim", version, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fleet until --duration passes, it settles (--until-settled) or
    /// Ctrl-C; then print a summary.
    #[command(after_long_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Write a slot image whose first line names its version, for packages
    /// the simulator can tell apart.
    Image {
        /// The version the image says it is.
        version: String,
        /// Its size: bytes, or with K or M (1024-based).
        #[arg(long, default_value = "64K", value_parser = parse_size)]
        size: usize,
        /// Where to write it.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The server's URL.
    #[arg(long, env = "AIRLIFT_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A public key (PEM) packages are signed with; repeat for several.
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// An operator or admin token: every device is pre-authorised with it.
    /// Without one, devices wait as `pending` until an operator accepts them.
    #[arg(long, env = "AIRLIFT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Device types with weights.
    #[arg(long, default_value = "sim-board", value_name = "TYPE:WEIGHT,…")]
    device_types: Mix<String>,
    /// An attribute's values with weights; repeat for more attributes.
    #[arg(long, value_name = "KEY=VALUE:WEIGHT,…")]
    attributes: Vec<Mix<(String, String)>>,
    /// A tag every device is pre-authorised with; repeat for more.
    #[arg(long)]
    tag: Vec<String>,
    /// Serials are PREFIX-00000, PREFIX-00001, …
    #[arg(long, default_value = "sim")]
    serial_prefix: String,
    /// Seconds between check-ins [default: as the server says].
    #[arg(long)]
    poll_interval: Option<u64>,
    /// Seconds over which the devices first power up.
    #[arg(long, default_value_t = 1.0)]
    ramp_up: f64,
    /// Threads driving the devices.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seed of every stable choice (types, attributes, faults).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The package the devices have at the factory.
    #[arg(long, default_value = "rootfs")]
    factory_package: String,
    /// Its version (also what the factory image in slot A says).
    #[arg(long, default_value = "1.0.0")]
    factory_version: String,
    /// The version on which some devices' health check fails.
    #[arg(long, value_name = "VERSION")]
    fail_health_on: Option<String>,
    /// Percentage of devices whose health check fails on --fail-health-on.
    #[arg(long, default_value = "0", value_name = "PERCENT")]
    fail_health_share: Share,
    /// Percentage of devices that lose power once per deployment, mid-download.
    #[arg(long, default_value = "0", value_name = "PERCENT")]
    power_loss_share: Share,
    /// Percentage of devices behind a proxy that cuts connections and
    /// answers 503 now and then.
    #[arg(long, default_value = "0", value_name = "PERCENT")]
    flaky_network_share: Share,
    /// How devices hear "check in now": `events` (each holds the server's
    /// push stream, a thread per device), `mqtt://host:port` (each
    /// subscribes on that broker, topic prefix `airlift`), or `off`.
    #[arg(long, default_value = "off", value_name = "events|mqtt://…|off")]
    push: String,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Stop once every device is idle after an update and nothing changed
    /// for 3 s.
    #[arg(long)]
    until_settled: bool,
    /// Keep the devices here (and reuse them on the next run) instead of a
    /// temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// No live progress.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 65536, 64K, 1M)"))?;
    let unit = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?}: use K or M")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text} is too large"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLIFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Image { version, size, out } => {
            std::fs::write(&out, airlift_sim::image::build(&version, size))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} ({size} bytes, version {version})", out.display());
            Ok(())
        }
        Command::Run(args) => run(*args),
    }
}

fn config(args: &RunArgs) -> anyhow::Result<FleetConfig> {
    let device_type = args
        .device_types
        .choices()
        .next()
        .map(|(t, _)| t.clone())
        .unwrap_or_default();
    let mut config = FleetConfig::new(&args.server, PathBuf::new(), args.devices, &device_type);
    config.trusted_keys = args.trust.clone();
    config.admin_token = args.admin_token.clone();
    config.device_types = args.device_types.clone();
    config.attributes = args.attributes.clone();
    config.tags = args.tag.clone();
    config.serial_prefix = args.serial_prefix.clone();
    config.poll_interval = args.poll_interval.map(Duration::from_secs);
    if !(args.ramp_up.is_finite() && args.ramp_up >= 0.0) {
        bail!("--ramp-up: a number of seconds, 0 or more");
    }
    config.ramp_up = Duration::from_secs_f64(args.ramp_up);
    config.workers = args.workers;
    config.seed = args.seed;
    config.factory.package = args.factory_package.clone();
    config.factory.version = args.factory_version.clone();
    config.faults.fail_health_on = args.fail_health_on.clone();
    config.faults.fail_health_share = args.fail_health_share;
    config.faults.power_loss_share = args.power_loss_share;
    config.faults.flaky_network_share = args.flaky_network_share;
    config.dir = args.dir.clone();
    config.push = match args.push.as_str() {
        "off" => PushConfig::Off,
        "events" => PushConfig::Events,
        url if url.starts_with("mqtt://") => PushConfig::Mqtt {
            url: url.to_owned(),
            topic_prefix: airlift_protocol::push::DEFAULT_TOPIC_PREFIX.to_owned(),
        },
        other => bail!("--push {other}: events, mqtt://host:port or off"),
    };
    for key in &config.trusted_keys {
        if !key.is_file() {
            bail!("--trust {}: no such file", key.display());
        }
    }
    config
        .check()
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
    Ok(config)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    if config.admin_token.is_none() {
        eprintln!(
            "note: no --admin-token: the devices will wait as `pending` until an operator accepts them"
        );
    }
    let devices = config.devices;
    let fleet = Fleet::start(config).context("starting the fleet")?;
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(interrupted.clone());

    let bar = if args.quiet {
        ProgressBar::with_draw_target(Some(devices as u64), ProgressDrawTarget::hidden())
    } else {
        ProgressBar::with_draw_target(Some(devices as u64), ProgressDrawTarget::stderr_with_hz(4))
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} updated  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut last_change = Instant::now();
    let mut last: Option<Snapshot> = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let snapshot = fleet.snapshot();
        bar.set_position((devices - snapshot.with_outcome("none")) as u64);
        bar.set_message(progress_line(&snapshot));
        let changed = last.as_ref().is_none_or(|l| !same_counts(l, &snapshot));
        if changed {
            last_change = Instant::now();
        }
        let settled = args.until_settled
            && snapshot.in_state("idle") == devices
            && snapshot.with_outcome("none") == 0
            && last_change.elapsed() >= Duration::from_secs(3);
        let timed_out = args
            .duration
            .is_some_and(|d| started.elapsed() >= Duration::from_secs(d));
        last = Some(snapshot);
        if settled || timed_out || interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
    bar.finish_and_clear();
    let summary = fleet.stop();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

fn same_counts(a: &Snapshot, b: &Snapshot) -> bool {
    a.states == b.states && a.running == b.running && a.outcomes == b.outcomes
}

/// `idle 480 downloading 12 · runs 2.0.0: 300, 1.0.0: 200 · success 300`
fn progress_line(snapshot: &Snapshot) -> String {
    let states: Vec<String> = snapshot
        .states
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let running: Vec<String> = snapshot
        .running
        .iter()
        .map(|(version, n)| format!("{version}: {n}"))
        .collect();
    let outcomes: Vec<String> = snapshot
        .outcomes
        .iter()
        .filter(|(outcome, _)| *outcome != "none")
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect();
    let mut line = format!("{} · runs {}", states.join(" "), running.join(", "));
    if snapshot.nudges > 0 {
        line.push_str(&format!(" · nudged {}", snapshot.nudges));
    }
    if !outcomes.is_empty() {
        line.push_str(" · ");
        line.push_str(&outcomes.join(" "));
    }
    if snapshot.unreachable > 0 {
        line.push_str(&format!(" · unreachable {}", snapshot.unreachable));
    }
    line
}

/// Sets `flag` on Ctrl-C (SIGINT), so the run ends with its summary.
fn watch_ctrl_c(flag: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    if let Err(e) = spawned {
        eprintln!("warning: Ctrl-C will end the run without a summary: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1G").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flags_become_a_fleet_config() {
        let cli = Cli::try_parse_from([
            "airlift-sim",
            "run",
            "--trust",
            "Cargo.toml",
            "--devices",
            "500",
            "--device-types",
            "pi4:70,pi5:30",
            "--attributes",
            "region=eu:50,region=us:50",
            "--fail-health-on",
            "2.0.0",
            "--fail-health-share",
            "40%",
            "--poll-interval",
            "1",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        let config = config(&args).expect("valid config");
        assert_eq!(config.devices, 500);
        assert_eq!(config.faults.fail_health_share.as_percent(), 40.0);
        assert_eq!(config.poll_interval, Some(Duration::from_secs(1)));
        assert_eq!(config.attributes.len(), 1);

        for (flags, says) in [
            (vec!["--fail-health-share", "140"], "0 to 100"),
            (vec!["--device-types", "pi4:x"], "weight"),
            (vec!["--attributes", "region"], "key=value"),
        ] {
            let mut argv = vec!["airlift-sim", "run", "--trust", "Cargo.toml"];
            argv.extend(flags);
            let error = Cli::try_parse_from(argv).expect_err(says).to_string();
            assert!(error.contains(says), "{error}");
        }
        let cli = Cli::try_parse_from([
            "airlift-sim",
            "run",
            "--trust",
            "Cargo.toml",
            "--fail-health-share",
            "40",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        let error = super::config(&args).expect_err("no version").to_string();
        assert!(error.contains("--fail-health-share"), "{error}");
    }
}
