//! `airlift-agent status`: the booted slot, the boot environment, what is
//! installed and the update under way, read without starting an agent (so
//! it works beside a running one and on a device whose agent cannot start:
//! what cannot be read is listed, not fatal).

use super::setup::Boot;
use super::DataDir;
use crate::boot::Slot;
use crate::config::AgentConfig;
use crate::machine::{State, StateFile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `airlift-agent status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The update state machine as saved (`state`, and `job`, `offset`,
    /// `reason` where the state has them).
    #[serde(flatten)]
    pub state: State,
    /// The slot running now.
    pub booted_slot: Option<Slot>,
    /// The bootloader's variables.
    pub boot: Option<BootStatus>,
    /// Installed software (name → version), as reported to the server.
    pub installed: BTreeMap<String, String>,
    /// The running system's version and the name it is reported under,
    /// when `system_version_file` or `system_version_command` is set.
    pub system: Option<SystemStatus>,
    /// How far the download under way has come.
    pub progress: Option<Progress>,
    /// The state file.
    pub state_file: PathBuf,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
}

/// The bootloader's trial-boot variables.
#[derive(Debug, Serialize)]
pub struct BootStatus {
    /// The slot the bootloader boots next.
    pub next_slot: Slot,
    /// A trial boot is armed or running.
    pub trial_pending: bool,
    /// Boots counted during the trial.
    pub bootcount: u32,
    /// Trial boots allowed before the fallback.
    pub bootlimit: u32,
}

/// The running system's version.
#[derive(Debug, Serialize)]
pub struct SystemStatus {
    /// The installed-software name it is reported under.
    pub software: String,
    /// The version it holds.
    pub version: String,
}

/// Bytes of the package downloaded (synced) so far.
#[derive(Debug, Serialize)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// The package's size.
    pub total: u64,
}

/// Reads the status of the device `config` describes.
pub fn status(config: &AgentConfig) -> Status {
    let data = DataDir::new(&config.data_dir);
    let state_file = data.state_file();
    let mut problems = Vec::new();
    let state = match StateFile::new(&state_file).load() {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            problems.push(e.to_string());
            State::default()
        }
    };
    let (mut booted_slot, mut boot) = (None, None);
    match Boot::open(&config.boot) {
        Ok(backend) => {
            match backend.booted_slot() {
                Ok(slot) => booted_slot = Some(slot),
                Err(e) => problems.push(e.to_string()),
            }
            match backend.vars() {
                Ok(vars) => {
                    boot = Some(BootStatus {
                        next_slot: vars.next_slot(),
                        trial_pending: vars.upgrade_available,
                        bootcount: vars.bootcount,
                        bootlimit: vars.effective_bootlimit(),
                    })
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    let mut system = None;
    match config.running_system() {
        Ok(Some(running)) => match running.version() {
            Ok(version) => {
                system = Some(SystemStatus {
                    software: running.software,
                    version,
                })
            }
            Err(e) => problems.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => problems.push(e),
    }
    let installed = super::offers::installed(
        config,
        &data,
        system
            .as_ref()
            .map(|s| (s.software.as_str(), s.version.as_str())),
    );
    let progress = match &state {
        State::Downloading { job, offset } => Some(Progress {
            done: *offset,
            total: job.size,
        }),
        _ => None,
    };
    Status {
        state,
        booted_slot,
        boot,
        installed,
        system,
        progress,
        state_file,
        problems,
    }
}

impl Status {
    /// The status for a person, one `name: value` a line.
    pub fn to_text(&self) -> String {
        let mut lines = Vec::new();
        let slot = |slot: Option<Slot>| slot.map_or("unknown".to_owned(), |s| s.to_string());
        lines.push(format!("booted slot: {}", slot(self.booted_slot)));
        if let Some(boot) = &self.boot {
            let trial = if boot.trial_pending {
                format!(
                    " (trial boot: {} of {} boots used)",
                    boot.bootcount, boot.bootlimit
                )
            } else {
                String::new()
            };
            lines.push(format!("next boot: slot {}{trial}", boot.next_slot));
        }
        if self.installed.is_empty() {
            lines.push("installed: nothing recorded".to_owned());
        }
        for (name, version) in &self.installed {
            let from_system = self
                .system
                .as_ref()
                .is_some_and(|s| &s.software == name && &s.version == version);
            let note = if from_system {
                " (read from the running system)"
            } else {
                ""
            };
            lines.push(format!("installed: {name} {version}{note}"));
        }
        lines.push(format!("update: {}", self.state.name()));
        if let Some(job) = self.state.job() {
            lines.push(format!("  package: {job}"));
            if let Some(deployment) = job.deployment_id {
                lines.push(format!("  deployment: {deployment}"));
            }
            if let Some(trial) = job.trial() {
                lines.push(format!("  target slot: {}", trial.target));
            }
        }
        if let Some(progress) = &self.progress {
            let percent = (progress.done * 100)
                .checked_div(progress.total)
                .unwrap_or(0);
            lines.push(format!(
                "  downloaded: {} of {} bytes ({percent} %)",
                progress.done, progress.total
            ));
        }
        if let State::RolledBack { reason, .. } | State::Failed { reason, .. } = &self.state {
            lines.push(format!("  reason: {reason}"));
        }
        lines.push(format!("state file: {}", self.state_file.display()));
        for problem in &self.problems {
            lines.push(format!("problem: {problem}"));
        }
        lines.join("\n")
    }
}
