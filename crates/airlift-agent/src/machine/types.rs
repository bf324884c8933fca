//! The machine's vocabulary: states, the events that move it, and the
//! effects it asks the driver to perform.

use super::job::{Job, TrialJob};
use super::outbox::Report;
use crate::boot::Slot;
use airlift_protocol::DeploymentId;
use serde::{Deserialize, Serialize};

/// Where the agent is with its update. Persisted (see
/// [`StateFile`](super::StateFile)) after every step that changes it.
///
/// `Committed`, `RolledBack` and `Failed` are final: they last until the
/// driver has performed their effects (the report is delivered or queued,
/// the leftovers are removed) and feeds [`Event::CleanedUp`], which returns
/// the machine to `Idle`. Until then a restart performs them again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Nothing under way; ready for an offer.
    #[default]
    Idle,
    /// Streaming the package through its verification into the installers.
    Downloading {
        job: Job,
        /// The last checkpoint: the package byte up to which everything is
        /// written and synced; a restart goes on from here.
        offset: u64,
    },
    /// Every payload is written and matched its signed digests on the way.
    /// Waits for [`Event::Proceed`] to finish the install.
    Downloaded { job: Job },
    /// Reading the image slots back against their signed digests (and
    /// running installers' own reboot steps for an in-place update).
    Installing { job: Job },
    /// Written and read back. Waits for [`Event::Proceed`] to arm the trial
    /// boot and reboot, or for an in-place job, to commit.
    Installed { job: Job },
    /// The trial boot is armed and the device is rebooting into it.
    Rebooting { job: TrialJob },
    /// Running the new version on trial; health checks decide.
    Verifying { job: TrialJob },
    /// Final: the new version runs and is committed.
    Committed { job: Job },
    /// Final: the new version failed its trial and the device goes (or went)
    /// back to the previous slot.
    RolledBack {
        job: TrialJob,
        /// Why, for people: the failing check's output, the fallback.
        reason: String,
    },
    /// Final: the update stopped before the switch; the old version runs.
    Failed {
        job: Job,
        /// Why, for people.
        reason: String,
    },
}

impl State {
    /// The state's name, as it is spelled in the state file.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Downloading { .. } => "downloading",
            State::Downloaded { .. } => "downloaded",
            State::Installing { .. } => "installing",
            State::Installed { .. } => "installed",
            State::Rebooting { .. } => "rebooting",
            State::Verifying { .. } => "verifying",
            State::Committed { .. } => "committed",
            State::RolledBack { .. } => "rolled_back",
            State::Failed { .. } => "failed",
        }
    }

    /// Whether the update has ended (`Committed`, `RolledBack`, `Failed`).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Committed { .. } | State::RolledBack { .. } | State::Failed { .. }
        )
    }

    /// The job under way, if any (a copy: some states hold a [`TrialJob`]).
    pub fn job(&self) -> Option<Job> {
        match self {
            State::Idle => None,
            State::Downloading { job, .. }
            | State::Downloaded { job }
            | State::Installing { job }
            | State::Installed { job }
            | State::Committed { job }
            | State::Failed { job, .. } => Some(job.clone()),
            State::Rebooting { job } | State::Verifying { job } | State::RolledBack { job, .. } => {
                Some(job.clone().into())
            }
        }
    }

    /// The deployment under way, if any; `None` when idle or for a local install.
    pub fn deployment_id(&self) -> Option<DeploymentId> {
        match self {
            State::Idle => None,
            State::Downloading { job, .. }
            | State::Downloaded { job }
            | State::Installing { job }
            | State::Installed { job }
            | State::Committed { job }
            | State::Failed { job, .. } => job.deployment_id,
            State::Rebooting { job } | State::Verifying { job } | State::RolledBack { job, .. } => {
                job.deployment_id
            }
        }
    }
}

/// Something that happened: the outcome of an effect, a message from the
/// server, a command from a person, or the agent starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The agent started: continue whatever was persisted. Where the answer
    /// depends on what booted, the machine asks with [`Effect::InspectBoot`].
    Resume,
    /// The answer to [`Effect::InspectBoot`]: the running slot, and whether
    /// the bootloader has a trial armed or running.
    ///
    /// The machine decides on `slot` alone. `trial_pending` is logged, not
    /// trusted: a pending flag cannot tell "armed, not yet rebooted" from
    /// "booting the trial", and whether the agent is in the slot it
    /// installed into is exactly what the slot says.
    Booted {
        /// The slot running now.
        slot: Slot,
        /// `upgrade_available`: a trial is armed or running.
        trial_pending: bool,
    },
    /// An update to install: from the server after its manifest verified and
    /// fits, or from `airlift-agent install FILE` (no deployment id).
    Offer(Job),
    /// The driver declined a server offer before it became a job.
    OfferDeclined {
        /// The deployment offering it.
        deployment_id: DeploymentId,
        decline: Decline,
    },
    /// A checkpoint: everything up to package byte `offset` is written and
    /// synced.
    Progress {
        /// The package byte reached.
        offset: u64,
    },
    /// The package streamed to its end and every digest matched.
    DownloadComplete,
    /// The stream stopped. A transient failure is retried from the last
    /// checkpoint; a permanent one (a payload that does not match its
    /// digest, the server refuses) ends the job.
    DownloadFailed {
        /// Whether retrying could help.
        permanent: bool,
        /// What went wrong.
        reason: String,
    },
    /// The package cannot be installed here — incompatible, untrusted, an
    /// older security version — found before any byte was written.
    Refused { reason: String },
    /// The server cancelled the deployment (HTTP 410).
    Cancelled,
    /// Go on from a resting state: install what was downloaded, or arm the
    /// trial and reboot (commit, for in-place jobs) what was installed. The
    /// driver feeds it when its policy allows (today: at once).
    Proceed,
    /// The payloads are written and read back with their digests checked.
    Installed,
    /// Writing failed.
    InstallFailed {
        /// What went wrong.
        reason: String,
    },
    /// [`Effect::ArmTrial`] succeeded.
    TrialArmed,
    /// The health checks passed on the trial boot.
    HealthPassed,
    /// A health check failed or timed out.
    HealthFailed {
        /// The failing check's output.
        output: String,
    },
    /// [`Effect::CommitBoot`] succeeded.
    BootCommitted,
    /// A boot-control effect ([`Effect::ArmTrial`], [`Effect::CommitBoot`],
    /// [`Effect::AbandonTrial`], [`Effect::InspectBoot`]) or
    /// [`Effect::Reboot`] failed.
    BootControlFailed {
        /// What went wrong.
        reason: String,
    },
    /// `airlift-agent commit`: commit the trial without waiting for the
    /// health checks.
    CommitRequested,
    /// `airlift-agent rollback`: abandon the update, or the trial.
    RollbackRequested,
    /// [`Effect::Cleanup`] is done, and so is everything before it.
    CleanedUp,
}

impl Event {
    /// The event's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Resume => "resume",
            Event::Booted { .. } => "booted",
            Event::Offer(_) => "offer",
            Event::OfferDeclined { .. } => "offer_declined",
            Event::Progress { .. } => "progress",
            Event::DownloadComplete => "download_complete",
            Event::DownloadFailed { .. } => "download_failed",
            Event::Refused { .. } => "refused",
            Event::Cancelled => "cancelled",
            Event::Proceed => "proceed",
            Event::Installed => "installed",
            Event::InstallFailed { .. } => "install_failed",
            Event::TrialArmed => "trial_armed",
            Event::HealthPassed => "health_passed",
            Event::HealthFailed { .. } => "health_failed",
            Event::BootCommitted => "boot_committed",
            Event::BootControlFailed { .. } => "boot_control_failed",
            Event::CommitRequested => "commit_requested",
            Event::RollbackRequested => "rollback_requested",
            Event::CleanedUp => "cleaned_up",
        }
    }
}

/// Why the driver declined an offer without starting a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decline {
    /// The device already runs what the package provides.
    AlreadyInstalled,
    /// The manifest did not verify or does not fit this device.
    Refused { reason: String },
}

/// What the driver must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell the server: send it, or if that fails append it to the
    /// [`Outbox`](super::Outbox). Never emitted for local installs.
    Report(Report),
    /// Stream the job's package into the installers, going on from the
    /// checkpoint `from_offset` (HTTP Range). Feeds [`Event::Progress`],
    /// then [`Event::DownloadComplete`], [`Event::DownloadFailed`] or
    /// [`Event::InstallFailed`]. After a transient failure the driver waits
    /// before it starts again (exponential backoff with jitter): the machine
    /// keeps no clock. For a local install, the file is the source.
    Download {
        /// The checkpoint to go on from.
        from_offset: u64,
    },
    /// Finish the install: read the image slots back against their signed
    /// digests; for an in-place job, run the installers' own reboot steps.
    /// Feeds [`Event::Installed`] or [`Event::InstallFailed`].
    Install,
    /// [`BootControl::start_trial`](crate::boot::BootControl::start_trial).
    /// Feeds [`Event::TrialArmed`] or [`Event::BootControlFailed`].
    ArmTrial {
        /// The slot to trial-boot.
        slot: Slot,
    },
    /// Reboot the device. Nothing comes back; the next start feeds
    /// [`Event::Resume`]. If the reboot cannot be started, feeds
    /// [`Event::BootControlFailed`].
    Reboot,
    /// Read the running slot and the trial flag; feeds [`Event::Booted`]
    /// (or [`Event::BootControlFailed`]).
    InspectBoot,
    /// Run the configured health checks. Feeds [`Event::HealthPassed`] or
    /// [`Event::HealthFailed`] (a check that cannot be run has failed).
    RunHealthChecks,
    /// [`BootControl::commit`](crate::boot::BootControl::commit). Feeds
    /// [`Event::BootCommitted`] or [`Event::BootControlFailed`].
    CommitBoot,
    /// [`BootControl::abandon_trial`](crate::boot::BootControl::abandon_trial)
    /// back to `previous`. Idempotent; a failure feeds
    /// [`Event::BootControlFailed`].
    AbandonTrial {
        /// The known-good slot.
        previous: Slot,
    },
    /// An in-place job that will not commit: put back what the installer
    /// replaced, from its backups. Idempotent (nothing replaced, nothing to do).
    RevertInstall,
    /// Remove the downloaded package and the installer's leftovers and
    /// backups. Always the last effect of its list; feeds [`Event::CleanedUp`].
    Cleanup,
}
