//! Building an [`Agent`](super::Agent) from its configuration: the
//! bootloader backend, the trust set, the age identities, the device's
//! identity attributes and the installers.

use super::{io_error, AgentError, DataDir};
use crate::boot::{BootControl, BootError, BootVars, FileBootEnv, GrubEnv, Slot, UBootEnv};
use crate::config::{AgentConfig, BootConfig};
use crate::install::{
    ArchiveInstaller, FileInstaller, ImageInstaller, Installers, ModuleInstaller, SlotDevices,
};
use crate::process::{self, Run, RunError};
use crate::system::{check_slots, RunningRoot};
use airlift_package::encryption::Identity as AgeIdentity;
use airlift_package::{PublicKey, TrustSet};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The configured bootloader backend.
#[derive(Debug)]
pub(super) enum Boot {
    Grub(GrubEnv),
    Uboot(UBootEnv),
    File(FileBootEnv),
}

impl Boot {
    pub(super) fn open(config: &BootConfig) -> Result<Self, BootError> {
        Ok(match config {
            BootConfig::Grub { grubenv, cmdline } => {
                Boot::Grub(GrubEnv::new(grubenv).with_cmdline(cmdline))
            }
            BootConfig::Uboot { config, cmdline } => {
                Boot::Uboot(UBootEnv::new(config).with_cmdline(cmdline))
            }
            BootConfig::File { path } => Boot::File(open_file_env(path)?),
        })
    }

    pub(super) fn control(&mut self) -> &mut dyn BootControl {
        match self {
            Boot::Grub(b) => b,
            Boot::Uboot(b) => b,
            Boot::File(b) => b,
        }
    }

    pub(super) fn vars(&self) -> Result<BootVars, BootError> {
        match self {
            Boot::Grub(b) => b.vars(),
            Boot::Uboot(b) => b.vars(),
            Boot::File(b) => b.vars(),
        }
    }

    /// For the file backend, which file its environment is now (device and
    /// inode: every write replaces the file), to tell whether something
    /// played the power-up; `None` for a real bootloader.
    pub(super) fn file_stamp(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        match self {
            Boot::File(env) => std::fs::metadata(env.path())
                .ok()
                .map(|m| (m.dev(), m.ino())),
            Boot::Grub(_) | Boot::Uboot(_) => None,
        }
    }

    pub(super) fn booted_slot(&self) -> Result<Slot, BootError> {
        match self {
            Boot::Grub(b) => b.booted_slot(),
            Boot::Uboot(b) => b.booted_slot(),
            Boot::File(b) => b.booted_slot(),
        }
    }
}

/// The file backend's environment; a missing one says how to make it.
fn open_file_env(path: &Path) -> Result<FileBootEnv, BootError> {
    FileBootEnv::open(path).map_err(|error| match error {
        BootError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            BootError::InvalidEnv {
                location: path.display().to_string(),
                reason: "it does not exist; create it with `airlift-agent boot-env init`"
                    .to_owned(),
            }
        }
        other => other,
    })
}

/// Before anything is written: a device with slots must have a readable
/// boot environment, a known running slot, and slot devices that fit what
/// runs ([`check_slots`]). Returns the running slot; without slots, the one
/// the bootloader names if it names one.
pub(super) fn check_boot(config: &AgentConfig, boot: &Boot) -> Result<Option<Slot>, AgentError> {
    if config.slots.is_empty() {
        return Ok(boot.booted_slot().ok());
    }
    boot.vars()?;
    let running = boot.booted_slot()?;
    let cmdline = match &config.boot {
        BootConfig::Grub { cmdline, .. } | BootConfig::Uboot { cmdline, .. } => {
            Some(cmdline.as_path())
        }
        BootConfig::File { .. } => None,
    };
    check_slots(&config.slots, running, &RunningRoot::read(cmdline))?;
    Ok(Some(running))
}

/// The installers, with their work directories under `data`.
pub(super) fn installers(config: &AgentConfig, data: &DataDir) -> Installers {
    let slot_sets = config
        .slots
        .iter()
        .map(|(name, pair)| {
            let devices = SlotDevices {
                a: pair.a.clone(),
                b: pair.b.clone(),
            };
            (name.clone(), devices)
        })
        .collect();
    Installers {
        image: ImageInstaller::new(slot_sets, Slot::B),
        file: FileInstaller::new(data.work_dir("file")).with_root(&config.root),
        archive: ArchiveInstaller::new(data.work_dir("archive")).with_root(&config.root),
        module: ModuleInstaller::new(&config.modules_dir, data.work_dir("module")),
    }
}

/// The keys packages must be signed with (`trusted_keys`, `trust_threshold`).
pub(super) fn trust_set(config: &AgentConfig) -> Result<TrustSet, AgentError> {
    let mut keys = Vec::new();
    for path in &config.trusted_keys {
        let pem =
            std::fs::read_to_string(path).map_err(io_error("reading the trusted key", path))?;
        let key = PublicKey::from_pem(&pem)
            .map_err(|e| AgentError::Setup(format!("trusted key {}: {e}", path.display())))?;
        keys.push(key);
    }
    TrustSet::new(keys, config.trust_threshold)
        .map_err(|e| AgentError::Setup(format!("trusted_keys: {e}")))
}

/// The age identities that decrypt payloads: the `AGE-SECRET-KEY-` lines
/// of the file at `path`; none without one.
pub(super) fn age_identities(path: Option<&Path>) -> Result<Vec<AgeIdentity>, AgentError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(io_error("reading the age identity", path))?;
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("AGE-SECRET-KEY-"))
        .map(|line| {
            line.parse::<AgeIdentity>()
                .map_err(|e| AgentError::Setup(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// The identity attributes: from the config, or `key=value` lines printed
/// by `identity_command` (run through [`crate::process`], without a
/// timeout; a non-zero exit is an error).
pub(super) fn device_identity(
    config: &AgentConfig,
) -> Result<BTreeMap<String, String>, AgentError> {
    let Some(command) = &config.identity_command else {
        return Ok(config.identity.clone());
    };
    let program = command
        .first()
        .ok_or_else(|| AgentError::Setup("identity_command is empty".into()))?;
    let mut identity = Command::new(program);
    identity.args(&command[1..]);
    let output = process::run(Run::new(identity)).map_err(|e| match e {
        RunError::Spawn { source, .. } => {
            AgentError::Setup(format!("running identity_command {command:?}: {source}"))
        }
        other => AgentError::Setup(format!("identity_command: {other}")),
    })?;
    if !output.status.success() {
        return Err(AgentError::Setup(format!(
            "identity_command {command:?} exited with {}",
            output.status
        )));
    }
    Ok(output
        .stdout
        .text()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}
