//! The transition function, one function per state.

use super::job::{Job, JobKind, TrialJob};
use super::outbox::Report;
use super::types::{Decline, Effect, Event, State};
use airlift_protocol::device::MAX_STATUS_MESSAGE;
use airlift_protocol::state::UpdateState;

/// Why a trial that never reached the agent ended.
pub const FELL_BACK_BEFORE_AGENT: &str = "the new version did not boot: the bootloader fell back";

/// Why a trial that reached the agent ended without a commit.
pub const FELL_BACK_DURING_TRIAL: &str =
    "the new version restarted during its trial boot before it was committed: the bootloader fell back";

/// Moves the machine: the state after `event`, and what the driver must do,
/// in order. Total and pure: an event that makes no sense in `state` leaves
/// it unchanged with no effects (logged at debug level), and nothing panics.
pub fn step(state: State, event: Event) -> (State, Vec<Effect>) {
    match state {
        State::Idle => idle(event),
        State::Downloading { job, offset } => downloading(job, offset, event),
        State::Downloaded { job } => downloaded(job, event),
        State::Installing { job } => installing(job, event),
        State::Installed { job } => installed(job, event),
        State::Rebooting { job } => rebooting(job, event),
        State::Verifying { job } => verifying(job, event),
        State::Committed { job } => committed(job, event),
        State::RolledBack { job, reason } => rolled_back(job, reason, event),
        State::Failed { job, reason } => failed(job, reason, event),
    }
}

type Step = (State, Vec<Effect>);

fn idle(event: Event) -> Step {
    match event {
        Event::Offer(job) => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Downloading, None));
            effects.push(Effect::Download { from_offset: 0 });
            (State::Downloading { job, offset: 0 }, effects)
        }
        Event::OfferDeclined {
            deployment_id,
            decline,
        } => {
            let (state, message) = match decline {
                Decline::AlreadyInstalled => (UpdateState::AlreadyInstalled, None),
                Decline::Refused { reason } => (UpdateState::Failure, Some(cap(reason))),
            };
            let report = Report {
                deployment_id,
                state,
                message,
            };
            (State::Idle, vec![Effect::Report(report)])
        }
        other => ignore(State::Idle, &other),
    }
}

fn downloading(job: Job, offset: u64, event: Event) -> Step {
    match event {
        Event::Resume => {
            let effects = vec![Effect::Download {
                from_offset: offset,
            }];
            (State::Downloading { job, offset }, effects)
        }
        Event::Progress { offset: reached } if reached <= job.size => (
            State::Downloading {
                job,
                offset: reached,
            },
            Vec::new(),
        ),
        Event::DownloadComplete => {
            let effects = report(&job, UpdateState::Downloaded, None)
                .into_iter()
                .collect();
            (State::Downloaded { job }, effects)
        }
        Event::DownloadFailed {
            permanent: false,
            reason,
        } => {
            tracing::debug!(%job, offset, %reason, "download interrupted; resuming");
            let effects = vec![Effect::Download {
                from_offset: offset,
            }];
            (State::Downloading { job, offset }, effects)
        }
        // The package streams into the installers as it downloads, so
        // whatever ends a download undoes what was written.
        Event::DownloadFailed {
            permanent: true,
            reason,
        } => fail(job, format!("download failed: {reason}")),
        Event::InstallFailed { reason } => fail(job, format!("install failed: {reason}")),
        Event::Refused { reason } => fail(job, reason),
        Event::Cancelled => fail(job, CANCELLED),
        Event::RollbackRequested => fail(job, ABANDONED),
        other => ignore(State::Downloading { job, offset }, &other),
    }
}

fn downloaded(job: Job, event: Event) -> Step {
    match event {
        // A resting state: the driver decides when to go on.
        Event::Resume => (State::Downloaded { job }, Vec::new()),
        Event::Proceed => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Installing, None));
            effects.push(Effect::Install);
            (State::Installing { job }, effects)
        }
        Event::Refused { reason } => fail(job, reason),
        Event::Cancelled => fail(job, CANCELLED),
        Event::RollbackRequested => fail(job, ABANDONED),
        other => ignore(State::Downloaded { job }, &other),
    }
}

fn installing(job: Job, event: Event) -> Step {
    match event {
        // Interrupted while reading the slots back (or running installers'
        // reboot steps, which are journaled): do it again. No trial is
        // armed yet, and `Installed` needs the read-back digests.
        Event::Resume => (State::Installing { job }, vec![Effect::Install]),
        Event::Installed => {
            let effects = report(&job, UpdateState::Installed, None)
                .into_iter()
                .collect();
            (State::Installed { job }, effects)
        }
        Event::InstallFailed { reason } => fail(job, format!("install failed: {reason}")),
        Event::Refused { reason } => fail(job, reason),
        Event::Cancelled => fail(job, CANCELLED),
        Event::RollbackRequested => fail(job, ABANDONED),
        other => ignore(State::Installing { job }, &other),
    }
}

fn installed(job: Job, event: Event) -> Step {
    let job = match job.into_kind() {
        JobKind::TrialBoot(trial) => return installed_for_trial(trial, event),
        JobKind::InPlace(job) => job,
    };
    match event {
        Event::Resume => (State::Installed { job }, Vec::new()),
        // In place: the new version is already what runs. Nothing to
        // switch, but it must prove healthy before it is kept — after a
        // restart the checks simply run again.
        Event::Proceed => (State::Installed { job }, vec![Effect::RunHealthChecks]),
        Event::HealthPassed | Event::CommitRequested => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Success, None));
            effects.push(Effect::Cleanup);
            (State::Committed { job }, effects)
        }
        // Undone like any failure before a commit: the installers roll back.
        Event::HealthFailed { output } => fail(
            job,
            format!(
                "a health check failed after the change was made in place, so it was undone: {}",
                cap(output)
            ),
        ),
        Event::Cancelled => fail(job, CANCELLED),
        Event::RollbackRequested => fail(job, ABANDONED),
        other => ignore(State::Installed { job }, &other),
    }
}

fn installed_for_trial(job: TrialJob, event: Event) -> Step {
    let trial = job.activation;
    match event {
        // The trial may have been armed (and even booted) just before the
        // agent stopped: look before doing anything.
        Event::Resume => (
            State::Installed { job: job.into() },
            vec![Effect::InspectBoot],
        ),
        // Armed, then a power cut before `Rebooting` was saved: this is the
        // trial boot.
        Event::Booted { slot, .. } if slot == trial.target => {
            (State::Verifying { job }, vec![Effect::RunHealthChecks])
        }
        // Still in the old slot: wait for `Proceed`, which arms the trial
        // again (arming the same trial twice is the same write).
        Event::Booted { .. } => (State::Installed { job: job.into() }, Vec::new()),
        // `Rebooting` is only saved once the trial is armed; were it saved
        // first, a power cut before arming would look like a fallback.
        Event::Proceed => {
            let effects = vec![Effect::ArmTrial { slot: trial.target }];
            (State::Installed { job: job.into() }, effects)
        }
        Event::TrialArmed => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Rebooting, None));
            effects.push(Effect::Reboot);
            (State::Rebooting { job }, effects)
        }
        Event::BootControlFailed { reason } => fail(
            job.into(),
            format!("could not arm the trial boot: {reason}"),
        ),
        Event::Cancelled => fail(job.into(), CANCELLED),
        Event::RollbackRequested => fail(job.into(), ABANDONED),
        other => ignore(State::Installed { job: job.into() }, &other),
    }
}

fn rebooting(job: TrialJob, event: Event) -> Step {
    let trial = job.activation;
    match event {
        Event::Resume => (State::Rebooting { job }, vec![Effect::InspectBoot]),
        Event::Booted {
            slot,
            trial_pending,
        } if slot == trial.target => {
            tracing::info!(%job, %slot, trial_pending, "booted the new version; checking its health");
            (State::Verifying { job }, vec![Effect::RunHealthChecks])
        }
        // Back in the old slot after the reboot: the trial never reached the
        // agent and the bootloader ran out of tries. (Also taken, on
        // purpose, when the agent restarted before the reboot happened: a
        // needless rollback is reported, never a reboot loop.)
        Event::Booted {
            slot,
            trial_pending,
        } => {
            tracing::warn!(%job, %slot, trial_pending, "came back in the old slot");
            back_in_previous(job, FELL_BACK_BEFORE_AGENT.to_owned())
        }
        Event::BootControlFailed { reason } => fail(
            job.into(),
            format!("could not reboot into the new version: {reason}"),
        ),
        Event::RollbackRequested => fail(job.into(), ABANDONED),
        other => ignore(State::Rebooting { job }, &other),
    }
}

fn verifying(job: TrialJob, event: Event) -> Step {
    let trial = job.activation;
    match event {
        Event::Resume => (State::Verifying { job }, vec![Effect::InspectBoot]),
        // Restarted during the checks, still on trial (or committed just
        // before the restart; committing again is harmless): check again.
        Event::Booted { slot, .. } if slot == trial.target => {
            (State::Verifying { job }, vec![Effect::RunHealthChecks])
        }
        Event::Booted { .. } => back_in_previous(job, FELL_BACK_DURING_TRIAL.to_owned()),
        // Success is reported on `BootCommitted`, never before the commit.
        Event::HealthPassed | Event::CommitRequested => {
            (State::Verifying { job }, vec![Effect::CommitBoot])
        }
        Event::BootCommitted => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Success, None));
            effects.push(Effect::Cleanup);
            (State::Committed { job: job.into() }, effects)
        }
        Event::HealthFailed { output } => {
            roll_back(job, format!("a health check failed: {}", cap(output)))
        }
        Event::RollbackRequested => roll_back(job, "rolled back by hand".to_owned()),
        // Not committed means not kept: a trial the agent cannot commit (or
        // cannot even inspect) is rolled back.
        Event::BootControlFailed { reason } => {
            roll_back(job, format!("could not commit the new version: {reason}"))
        }
        other => ignore(State::Verifying { job }, &other),
    }
}

fn committed(job: Job, event: Event) -> Step {
    match event {
        // The report may not have been queued before the agent stopped.
        // The server takes a repeated report as a repeat.
        Event::Resume => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Success, None));
            effects.push(Effect::Cleanup);
            (State::Committed { job }, effects)
        }
        Event::CleanedUp => (State::Idle, Vec::new()),
        other => ignore(State::Committed { job }, &other),
    }
}

fn rolled_back(job: TrialJob, reason: String, event: Event) -> Step {
    let trial = job.activation;
    match event {
        Event::Resume => (State::RolledBack { job, reason }, vec![Effect::InspectBoot]),
        // Still on the new version: the abandon or the reboot did not happen.
        Event::Booted { slot, .. } if slot == trial.target => {
            let effects = leave_trial(&job, UpdateState::RolledBack, &reason);
            (State::RolledBack { job, reason }, effects)
        }
        Event::Booted { .. } => back_in_previous(job, reason),
        Event::CleanedUp => (State::Idle, Vec::new()),
        other => ignore(State::RolledBack { job, reason }, &other),
    }
}

fn failed(job: Job, reason: String, event: Event) -> Step {
    let job = match job.into_kind() {
        JobKind::TrialBoot(trial) => return failed_for_trial(trial, reason, event),
        JobKind::InPlace(job) => job,
    };
    match event {
        Event::Resume => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Failure, Some(reason.clone())));
            effects.push(Effect::RevertInstall);
            effects.push(Effect::Cleanup);
            (State::Failed { job, reason }, effects)
        }
        Event::CleanedUp => (State::Idle, Vec::new()),
        other => ignore(State::Failed { job, reason }, &other),
    }
}

fn failed_for_trial(job: TrialJob, reason: String, event: Event) -> Step {
    let trial = job.activation;
    match event {
        // A trial may have been armed before the failure, and booted by a
        // power cut before it was abandoned.
        Event::Resume => (
            State::Failed {
                job: job.into(),
                reason,
            },
            vec![Effect::InspectBoot],
        ),
        Event::Booted { slot, .. } if slot == trial.target => {
            let effects = leave_trial(&job, UpdateState::Failure, &reason);
            let job = job.into();
            (State::Failed { job, reason }, effects)
        }
        Event::Booted { .. } => {
            let mut effects = Vec::new();
            effects.extend(report(&job, UpdateState::Failure, Some(reason.clone())));
            effects.push(Effect::AbandonTrial {
                previous: trial.previous(),
            });
            effects.push(Effect::Cleanup);
            let job = job.into();
            (State::Failed { job, reason }, effects)
        }
        Event::CleanedUp => (State::Idle, Vec::new()),
        other => ignore(
            State::Failed {
                job: job.into(),
                reason,
            },
            &other,
        ),
    }
}

const CANCELLED: &str = "the deployment was cancelled";
const ABANDONED: &str = "abandoned by hand (airlift-agent rollback)";

/// Ends the job before the switch: the old version still runs.
///
/// Whatever was written is undone: the package streams into the
/// installers from the first downloaded byte, and undoing is idempotent (an
/// image's trial may not be armed yet; abandoning it then changes nothing).
fn fail(job: Job, reason: impl Into<String>) -> Step {
    let reason = cap(reason.into());
    let mut effects = Vec::new();
    effects.extend(report(&job, UpdateState::Failure, Some(reason.clone())));
    effects.push(match job.trial() {
        Some(trial) => Effect::AbandonTrial {
            previous: trial.previous(),
        },
        None => Effect::RevertInstall,
    });
    effects.push(Effect::Cleanup);
    (State::Failed { job, reason }, effects)
}

/// Ends a trial that runs now: go back to the previous slot.
fn roll_back(job: TrialJob, reason: String) -> Step {
    let reason = cap(reason);
    let effects = leave_trial(&job, UpdateState::RolledBack, &reason);
    (State::RolledBack { job, reason }, effects)
}

/// From the trial slot: report, abandon the trial, reboot into the old one.
/// The report goes first so that it is queued before the reboot; it is
/// repeated from the old slot (a repeat is harmless).
fn leave_trial(job: &TrialJob, state: UpdateState, reason: &str) -> Vec<Effect> {
    let mut effects = Vec::new();
    effects.extend(report(job, state, Some(reason.to_owned())));
    effects.push(Effect::AbandonTrial {
        previous: job.activation.previous(),
    });
    effects.push(Effect::Reboot);
    effects
}

/// Running the old slot again after a trial: rolled back. The trial is
/// abandoned anyway, so no stale flag can send a later boot into it.
fn back_in_previous(job: TrialJob, reason: String) -> Step {
    let reason = cap(reason);
    let mut effects = Vec::new();
    effects.extend(report(&job, UpdateState::RolledBack, Some(reason.clone())));
    effects.push(Effect::AbandonTrial {
        previous: job.activation.previous(),
    });
    effects.push(Effect::Cleanup);
    (State::RolledBack { job, reason }, effects)
}

/// A report on `job`, unless it is a local install.
fn report<A>(job: &Job<A>, state: UpdateState, message: Option<String>) -> Option<Effect> {
    let deployment_id = job.deployment_id?;
    Some(Effect::Report(Report {
        deployment_id,
        state,
        message,
    }))
}

/// Keeps the last [`MAX_STATUS_MESSAGE`] bytes of a message (the end of a
/// log says most), on a character boundary, as the server would.
fn cap(mut message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let mut start = message.len() - MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(start) {
        start += 1;
    }
    message.drain(..start);
    message
}

fn ignore(state: State, event: &Event) -> Step {
    tracing::debug!(
        state = state.name(),
        event = event.name(),
        deployment_id = ?state.deployment_id(),
        "event ignored in this state"
    );
    (state, Vec::new())
}
