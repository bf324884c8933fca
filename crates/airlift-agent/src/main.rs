//! `airlift-agent`: the device agent's command line.

use airlift_agent::boot::{FileBootEnv, Slot};
use airlift_agent::config::{AgentConfig, BootConfig};
use airlift_agent::driver::{Agent, Poll};
use airlift_agent::push::Doorbell;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The Airlift device agent: download, verify, install into the inactive
/// slot, trial boot, commit or roll back.
#[derive(Debug, Parser)]
#[command(
    version,
    long_about = "The Airlift device agent: checks in with an airlift-server, downloads and verifies \
signed update packages, writes them into the inactive slot, boots it on trial and keeps it only if it \
comes up healthy; otherwise the bootloader falls back to the old slot.\n\n\
Its configuration (--config, default /etc/airlift/agent.toml; dist/agent.toml is an annotated example) \
names the server, the slots and the bootloader backend: backend = \"grub\" (grub-editenv on the grubenv), \
\"uboot\" (fw_printenv/fw_setenv) or \"file\" — a plain file that models the bootloader, for trying the \
agent on a laptop with plain files as slots: `airlift-agent boot-env init` creates it and \
`airlift-agent boot-env power-up` plays the bootloader's step at a \"reboot\" (set reboot_command to it; \
docs/laptop-device.md walks through it).",
    after_help = "Examples:
  airlift-agent run                                  # the service: resume, then check in every poll
  airlift-agent run --once                           # resume, check in once, exit
  airlift-agent status                               # booted slot, installed versions, the update
  airlift-agent status --json
  airlift-agent install acme-os-2.4.0.airlift        # a local package, no server
  airlift-agent commit                               # keep the running trial now
  airlift-agent rollback                             # give up the update under way

  # A laptop device: plain files as slots, the file backend as bootloader
  airlift-agent --config device/agent.toml boot-env init
  airlift-agent --config device/agent.toml boot-env power-up
  airlift-agent --config device/agent.toml run"
)]
struct Cli {
    /// The agent's configuration file.
    #[arg(long, global = true, default_value = "/etc/airlift/agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Continue what was under way, then check in every poll interval.
    ///
    /// One agent uses a data directory at a time: `run`, `install`,
    /// `commit` and `rollback` are refused while another holds it (stop
    /// the service first); `status` only reads and always works.
    ///
    /// With backend = "file" there is no real reboot: once reboot_command
    /// has run (`airlift-agent boot-env power-up`), the agent starts again
    /// as after a boot and carries on with the trial.
    Run {
        /// Resume and check in once, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Show the booted slot, the boot environment, the installed versions
    /// and the update under way (state, deployment, progress).
    #[command(after_help = "Examples:
  airlift-agent status
  airlift-agent status --json | jq .installed")]
    Status {
        /// As JSON (the saved state's fields `state`, `job`, `offset`,
        /// `reason`, and `booted_slot`, `boot`, `installed`, `system`,
        /// `progress`, `problems`).
        #[arg(long)]
        json: bool,
    },
    /// Install a local package file (nothing is reported to a server).
    /// Refused while the service runs on the same data directory.
    Install { file: PathBuf },
    /// Commit the running trial without waiting for the health checks.
    /// Refused while the service runs on the same data directory.
    Commit,
    /// Abandon the update or the trial under way. Refused while the
    /// service runs on the same data directory.
    Rollback,
    /// The file backend's boot environment (backend = "file"), for a
    /// device made of plain files.
    #[command(subcommand)]
    BootEnv(BootEnvCommand),
}

#[derive(Debug, Subcommand)]
enum BootEnvCommand {
    /// Create the boot environment file of `[boot] path`: slot a (or
    /// --slot) booted, no trial. Refuses to replace an existing one.
    #[command(after_help = "Examples:
  airlift-agent --config device/agent.toml boot-env init
  airlift-agent --config device/agent.toml boot-env init --slot b --force")]
    Init {
        /// The slot booted now and next.
        #[arg(long, default_value = "a")]
        slot: Slot,
        /// Replace an existing environment (its trial state is lost).
        #[arg(long)]
        force: bool,
    },
    /// Play the bootloader's power-up: during a trial boot count the boot
    /// and, past bootlimit, fall back to the other slot; then record the
    /// slot booted. What GRUB's grub.cfg and U-Boot's bootcount do.
    #[command(after_help = "Examples:
  airlift-agent --config device/agent.toml boot-env power-up

  # As the file backend's reboot, in agent.toml:
  reboot_command = [\"airlift-agent\", \"--config\", \"device/agent.toml\", \"boot-env\", \"power-up\"]")]
    PowerUp,
}

/// Longest wait between check-ins while the device is not accepted.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Shortest time between two check-ins that nudges asked for.
const MIN_NUDGE_GAP: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // `AIRLIFT_LOG=info,airlift_agent::stream=debug`: a level, then
    // per-module levels; an unreadable value falls back to `info`.
    let filter = std::env::var("AIRLIFT_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::INFO)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Plain text: the log goes to journald, and the device
                // build leaves out tracing-subscriber's colour support.
                .with_ansi(false),
        )
        .with(filter)
        .init();
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, for the journal and for a person at a terminal.
            eprintln!("airlift-agent: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig::load(&cli.config)?;
    match cli.command {
        Command::Status { json } => status(&config, json),
        Command::Run { once } => run(config, &cli.config, once),
        Command::Install { file } => {
            let mut agent = started(config)?;
            agent
                .install_local(&file)
                .with_context(|| format!("installing {}", file.display()))
        }
        Command::Commit => Ok(started(config)?.commit()?),
        Command::Rollback => Ok(started(config)?.rollback()?),
        Command::BootEnv(command) => boot_env(&config, &cli.config, command),
    }
}

/// An error and its causes on one line, leaving out a cause whose text the
/// message before it already holds; a full disk says what to do.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut full = false;
    for cause in error.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            full |= matches!(
                io.kind(),
                ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
            );
        }
        let text = cause.to_string();
        if parts.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    let mut line = parts.join(": ").replace('\n', " ");
    if full {
        line.push_str(
            " (the data partition is full or over its size limit: free space there and start the agent again; the running slot stays as it is)",
        );
    }
    line
}

/// An agent that has resumed what was persisted.
fn started(config: AgentConfig) -> anyhow::Result<Agent> {
    let mut agent = Agent::new(config).context("starting the agent")?;
    agent.resume().context("resuming")?;
    Ok(agent)
}

fn run(mut config: AgentConfig, config_path: &Path, once: bool) -> anyhow::Result<()> {
    loop {
        let Some(Rebooted { power_up_played }) = run_until_reboot(started(config.clone())?, once)?
        else {
            return Ok(());
        };
        if once || !matches!(config.boot, BootConfig::File { .. }) {
            // A real reboot is under way: the next boot starts the agent.
            return Ok(());
        }
        // The file backend has no real reboot: reboot_command played the
        // bootloader's power-up, and the device is "up" again — unless it
        // played nothing, when starting again would find the same boot and
        // could only go round in circles.
        if power_up_played == Some(false) {
            anyhow::bail!(
                "reboot_command {:?} returned without playing the bootloader's power-up (the file backend's environment is as the agent left it); set reboot_command = [\"airlift-agent\", \"--config\", \"{}\", \"boot-env\", \"power-up\"]",
                config.reboot_command,
                config_path.display()
            );
        }
        tracing::info!("file backend: starting again, as after a boot");
        // As a boot would: the configuration as it is now.
        config = AgentConfig::load(config_path)?;
    }
}

/// How [`run_until_reboot`] ended: a reboot was started.
struct Rebooted {
    /// See [`Agent::power_up_played`].
    power_up_played: Option<bool>,
}

/// The agent's loop; `Some(Rebooted)` when it started a reboot, `None`
/// after `--once`.
fn run_until_reboot(mut agent: Agent, once: bool) -> anyhow::Result<Option<Rebooted>> {
    let mut backoff = agent.poll_interval();
    let doorbell = Arc::new(Doorbell::default());
    let _push = if once {
        None
    } else {
        agent
            .start_push(doorbell.ringer())
            .context("starting the push listener")?
    };
    let mut checked_at = Instant::now();
    loop {
        let rebooted = |agent: &Agent| Rebooted {
            power_up_played: agent.power_up_played(),
        };
        if agent.is_rebooting() {
            return Ok(Some(rebooted(&agent)));
        }
        let wait = match agent.poll_once()? {
            Poll::Rebooting => return Ok(Some(rebooted(&agent))),
            Poll::Checked(interval) => {
                backoff = interval;
                interval
            }
            Poll::NotAccepted => {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
            Poll::Unreachable(reason) => {
                tracing::warn!(%reason, "server unreachable");
                agent.poll_interval()
            }
        };
        if once {
            return Ok(None);
        }
        let wait = wait.saturating_sub(checked_at.elapsed());
        if let Some(rang) = doorbell.wait(wait) {
            // Nudges, real or forged, never make the agent check in more
            // often than this.
            std::thread::sleep(MIN_NUDGE_GAP.saturating_sub(checked_at.elapsed()));
            tracing::info!(?rang, "push: checking in now");
        }
        checked_at = Instant::now();
    }
}

fn status(config: &AgentConfig, json: bool) -> anyhow::Result<()> {
    let status = airlift_agent::driver::status(config);
    let text = if json {
        serde_json::to_string_pretty(&status)?
    } else {
        status.to_text()
    };
    // `airlift-agent status | head -3` closes the pipe early: not an error.
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `boot-env init` and `boot-env power-up`, on the file backend only.
fn boot_env(
    config: &AgentConfig,
    config_path: &Path,
    command: BootEnvCommand,
) -> anyhow::Result<()> {
    let BootConfig::File { path } = &config.boot else {
        anyhow::bail!(
            "{}: boot-env works on the file backend only ([boot] backend = \"file\"); a device with GRUB or U-Boot has a real bootloader",
            config_path.display()
        );
    };
    match command {
        BootEnvCommand::Init { slot, force } => {
            if force {
                // Made beside it, then renamed over it: never half a file.
                let mut name = path.file_name().unwrap_or_default().to_owned();
                name.push(".new");
                let fresh = path.with_file_name(name);
                let _ = std::fs::remove_file(&fresh);
                FileBootEnv::create(&fresh, slot)?;
                std::fs::rename(&fresh, path)
                    .with_context(|| format!("replacing {}", path.display()))?;
            } else {
                FileBootEnv::create(path, slot).context("pass --force to replace it")?;
            }
            println!(
                "boot-env: created {}: slot {slot} booted, no trial",
                path.display()
            );
        }
        BootEnvCommand::PowerUp => {
            let mut env = FileBootEnv::open(path)?;
            let outcome = env.boot()?;
            let vars = env.vars()?;
            let slot = outcome.slot;
            let what = if outcome.fell_back {
                format!("the trial ran out of boots: fell back to slot {slot}")
            } else if outcome.trial {
                format!(
                    "trial boot {} of {} of slot {slot}: the agent must commit it, or a later power-up falls back",
                    vars.bootcount,
                    vars.effective_bootlimit()
                )
            } else {
                format!("booted slot {slot}")
            };
            println!("boot-env: power-up: {what}");
        }
    }
    Ok(())
}
