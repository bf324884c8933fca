//! `airlift-agent`: the device agent's command line.

use airlift_agent::config::AgentConfig;
use airlift_agent::driver::{Agent, DataDir, Poll};
use airlift_agent::machine::{State, StateFile};
use airlift_agent::push::Doorbell;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The Airlift device agent: download, verify, install into the inactive
/// slot, trial boot, commit or roll back.
#[derive(Debug, Parser)]
#[command(version)]
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
    Run {
        /// Resume and check in once, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the persisted update state.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install a local package file (nothing is reported to a server).
    Install { file: PathBuf },
    /// Commit the running trial without waiting for the health checks.
    Commit,
    /// Abandon the update or the trial under way.
    Rollback,
}

/// Longest wait between check-ins while the device is not accepted.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Shortest time between two check-ins that nudges asked for.
const MIN_NUDGE_GAP: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
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
    let config = AgentConfig::load(&cli.config)?;
    match cli.command {
        Command::Status { json } => status(&config, json),
        Command::Run { once } => run(config, once),
        Command::Install { file } => {
            let mut agent = started(config)?;
            agent
                .install_local(&file)
                .with_context(|| format!("installing {}", file.display()))
        }
        Command::Commit => Ok(started(config)?.commit()?),
        Command::Rollback => Ok(started(config)?.rollback()?),
    }
}

/// An agent that has resumed what was persisted.
fn started(config: AgentConfig) -> anyhow::Result<Agent> {
    let mut agent = Agent::new(config).context("starting the agent")?;
    agent.resume().context("resuming")?;
    Ok(agent)
}

fn run(config: AgentConfig, once: bool) -> anyhow::Result<()> {
    let mut agent = started(config)?;
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
        if agent.is_rebooting() {
            return Ok(());
        }
        let wait = match agent.poll_once()? {
            Poll::Rebooting => return Ok(()),
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
            return Ok(());
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
    let path = DataDir::new(&config.data_dir).state_file();
    let state = StateFile::new(&path)
        .load()
        .with_context(|| format!("reading {}", path.display()))?
        .unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        print_status(&state, &path);
    }
    Ok(())
}

fn print_status(state: &State, path: &Path) {
    println!("state: {}", state.name());
    if let Some(job) = state.job() {
        println!("package: {job}");
        if let Some(deployment) = job.deployment_id {
            println!("deployment: {deployment}");
        }
        if let Some(trial) = job.trial() {
            println!("target slot: {}", trial.target);
        }
    }
    if let State::RolledBack { reason, .. } | State::Failed { reason, .. } = state {
        println!("reason: {reason}");
    }
    println!("file: {}", path.display());
}
