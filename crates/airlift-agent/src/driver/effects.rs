//! Carrying out the machine's effects: reports, download, install, trial
//! arming, reboot, health checks, commit, rollback and cleanup. Each ends
//! in an [`Outcome`] that [`Agent::feed`] turns into the next event.

use super::reports::Heard;
use super::{Agent, AgentError, Observed, Outcome};
use crate::boot::BootError;
use crate::client::ClientError;
use crate::download::{DownloadEvent, ResumableDownload};
use crate::install::{Installer, PayloadRef};
use crate::machine::{step, Effect, Event, Job, State, StateFile};
use crate::progress::ProgressReporter;
use crate::stream::{Source, Stream, StreamError};
use airlift_package::encryption::IdentityTrait;
use airlift_package::{Limits, PackageReader, PayloadType};
use airlift_protocol::state::UpdateState;
use std::io;
use std::process::Command;
use std::time::Duration;

impl Agent {
    /// Carries out one effect.
    pub(super) fn perform(&mut self, effect: Effect) -> Result<Outcome, AgentError> {
        let job = self.state.job();
        Ok(match (effect, job) {
            (Effect::Report(report), _) => {
                self.observe(Observed::Report(&report));
                let heard = self.deliver(&report)?;
                // The answer to a report made before the new version runs
                // is the last word on whether to go on: an update in a
                // deployment aborted while it downloaded must not install.
                let before_the_switch = matches!(
                    report.state,
                    UpdateState::Downloading
                        | UpdateState::Downloaded
                        | UpdateState::Installing
                        | UpdateState::Installed
                );
                if heard == Heard::Cancelled && before_the_switch {
                    tracing::info!(deployment_id = %report.deployment_id, "the server cancelled this update; giving it up");
                    Outcome::Failed(Event::Cancelled)
                } else {
                    Outcome::Done
                }
            }
            (Effect::Download { from_offset }, Some(job)) => self.download(&job, from_offset)?,
            (Effect::Install, Some(job)) => self.install(&job),
            (Effect::ArmTrial { slot }, _) => match self.boot.control().start_trial(slot) {
                Ok(()) => Outcome::Then(Event::TrialArmed),
                Err(e) => boot_failed(e),
            },
            (Effect::Reboot, _) => self.reboot(),
            (Effect::InspectBoot, _) => self.inspect_boot(),
            (Effect::RunHealthChecks, job) => match self.check_health(job.as_ref()) {
                Ok(()) => Outcome::Then(Event::HealthPassed),
                Err(unhealthy) => {
                    tracing::warn!(check = %unhealthy.name, reason = %unhealthy.reason, "unhealthy");
                    Outcome::Then(Event::HealthFailed {
                        output: unhealthy.to_string(),
                    })
                }
            },
            (Effect::CommitBoot, job) => self.commit_boot(job.as_ref())?,
            (Effect::AbandonTrial { previous }, _) => {
                self.revert_install();
                match self.boot.control().abandon_trial(previous) {
                    Ok(()) => Outcome::Done,
                    Err(e) => boot_failed(e),
                }
            }
            (Effect::RevertInstall, _) => {
                self.revert_install();
                Outcome::Done
            }
            (Effect::Cleanup, job) => self.cleanup(job.as_ref())?,
            (effect, None) => {
                tracing::error!(?effect, "an effect that needs a job, without one; ignored");
                Outcome::Done
            }
        })
    }

    pub(super) fn inspect_boot(&mut self) -> Outcome {
        let boot = self.boot.control();
        match (boot.booted_slot(), boot.trial_pending()) {
            (Ok(slot), Ok(trial_pending)) => Outcome::Then(Event::Booted {
                slot,
                trial_pending,
            }),
            (Err(e), _) | (_, Err(e)) => boot_failed(e),
        }
    }

    pub(super) fn reboot(&mut self) -> Outcome {
        if let Err(e) = self.installers.reboot() {
            return Outcome::Failed(Event::BootControlFailed {
                reason: e.to_string(),
            });
        }
        let command = &self.config.reboot_command;
        tracing::info!(?command, "rebooting");
        // Not through `crate::process`, on purpose: the reboot command keeps
        // the agent's standard streams (what it prints belongs in the
        // journal), has no timeout (it may never return), and must not be
        // killed as a group.
        let before = self.boot.file_stamp();
        let status = Command::new(&command[0]).args(&command[1..]).status();
        match status {
            Ok(status) if status.success() => {
                self.rebooting = true;
                self.power_up_played = before.map(|before| self.boot.file_stamp() != Some(before));
                Outcome::Done
            }
            Ok(status) => Outcome::Failed(Event::BootControlFailed {
                reason: format!("{command:?} exited with {status}"),
            }),
            Err(e) => Outcome::Failed(Event::BootControlFailed {
                reason: format!("running {command:?}: {e}"),
            }),
        }
    }

    pub(super) fn commit_boot(&mut self, job: Option<&Job>) -> Result<Outcome, AgentError> {
        if let Err(e) = self.boot.control().commit() {
            return Ok(boot_failed(e));
        }
        if let Err(e) = self.installers.commit() {
            tracing::error!(error = %e, "installers could not commit; the boot is committed");
        }
        if let Some(job) = job {
            self.data.record_installed(job)?;
        }
        Ok(Outcome::Then(Event::BootCommitted))
    }

    pub(super) fn revert_install(&mut self) {
        if let Err(e) = self.installers.rollback() {
            tracing::error!(error = %e, "installers could not roll back");
        }
    }

    pub(super) fn cleanup(&mut self, job: Option<&Job>) -> Result<Outcome, AgentError> {
        if let (State::Committed { .. }, Some(job)) = (&self.state, job) {
            if let Err(e) = self.installers.commit() {
                tracing::error!(error = %e, "installers could not commit");
            }
            self.data.record_installed(job)?;
        }
        self.data.remove_offer()?;
        Ok(Outcome::Then(Event::CleanedUp))
    }

    /// Streams the package into the installers from the checkpoint
    /// `from_offset` (see [`stream`](crate::stream)); checkpoints are saved
    /// as [`Event::Progress`] while it runs.
    pub(super) fn download(&mut self, job: &Job, from_offset: u64) -> Result<Outcome, AgentError> {
        if self.download_deferred {
            return Ok(Outcome::Done);
        }
        let head = match std::fs::read(self.data.head_path()) {
            Ok(head) => head,
            Err(e) => {
                return Ok(Outcome::Failed(Event::DownloadFailed {
                    permanent: true,
                    reason: format!("the package head saved with the offer is gone: {e}"),
                }))
            }
        };
        // Whatever an interrupted run changed in place is undone: a stream
        // only resumes inside images (see `stream`).
        self.revert_install();
        if let Some(trial) = job.trial() {
            self.installers.image.set_target(trial.target);
        }
        let mut forward = self
            .observer
            .as_mut()
            .map(|observer| move |event| observer(Observed::Download(event)));
        let source = match (job.deployment_id, self.local_source.clone()) {
            (Some(deployment), _) => {
                let sha256 = job.sha256.to_string();
                let observer = forward
                    .as_mut()
                    .map(|f| f as &mut (dyn FnMut(DownloadEvent) + Send));
                let every = Duration::from_secs(self.config.progress_interval_secs);
                let mut progress = ProgressReporter::new(&self.client, deployment, job.size, every);
                let download =
                    ResumableDownload::new(&mut self.client, deployment, &sha256, job.size)
                        .limit(self.config.bandwidth_limit)
                        .bounded(
                            &self.config.download,
                            self.config.download.deadline(self.data.offered_at()),
                        )
                        .observe(observer)
                        .on_progress(move |done| {
                            if let Some(progress) = progress.as_mut() {
                                progress.reached(done);
                            }
                        });
                Source::Server(Box::new(download))
            }
            (None, Some(path)) => Source::File(path),
            (None, None) => {
                return Ok(Outcome::Failed(Event::DownloadFailed {
                    permanent: true,
                    reason:
                        "a local install was interrupted; run `airlift-agent install FILE` again"
                            .into(),
                }))
            }
        };
        let identities: Vec<&dyn IdentityTrait> = self
            .identities
            .iter()
            .map(|i| i as &dyn IdentityTrait)
            .collect();
        let (state, state_file) = (&mut self.state, &self.state_file);
        let mut save = |offset: u64| checkpoint(state, state_file, offset);
        let stream = Stream {
            head: &head,
            trust: &self.trust,
            identities: &identities,
            installers: &mut self.installers,
            from_offset,
            sync_every: sync_interval(job.size),
            checkpoint: &mut save,
        };
        Ok(match crate::stream::run(stream, source) {
            Ok(()) => Outcome::Then(Event::DownloadComplete),
            Err(StreamError::Download(error)) => self.download_failed(error),
            Err(error @ StreamError::Damaged(_)) => Outcome::Failed(Event::DownloadFailed {
                permanent: true,
                reason: error.to_string(),
            }),
            Err(StreamError::Install(reason)) => Outcome::Failed(Event::InstallFailed { reason }),
        })
    }

    pub(super) fn download_failed(&mut self, error: ClientError) -> Outcome {
        match error {
            ClientError::Permanent { status: 410, .. } => Outcome::Failed(Event::Cancelled),
            error if !error.is_transient() => Outcome::Failed(Event::DownloadFailed {
                permanent: true,
                reason: error.to_string(),
            }),
            error => {
                tracing::warn!(%error, "download interrupted; trying again at the next poll");
                self.download_deferred = true;
                Outcome::Failed(Event::DownloadFailed {
                    permanent: false,
                    reason: error.to_string(),
                })
            }
        }
    }

    /// The streamed package is in place: read every image slot back against
    /// its signed digest, and for an update without a device reboot, run the
    /// installers' own reboot steps (a module that asked for one).
    pub(super) fn install(&mut self, job: &Job) -> Outcome {
        if let Some(trial) = job.trial() {
            self.installers.image.set_target(trial.target);
        }
        match self.finish_install(job) {
            Ok(()) => Outcome::Then(Event::Installed),
            Err(reason) => Outcome::Failed(Event::InstallFailed { reason }),
        }
    }

    pub(super) fn finish_install(&mut self, job: &Job) -> Result<(), String> {
        let head = std::fs::read(self.data.head_path())
            .map_err(|e| format!("reading the package head: {e}"))?;
        let package = PackageReader::open(&head[..], Limits::default())
            .and_then(|reader| reader.verify(&self.trust))
            .map_err(|e| e.to_string())?;
        let manifest = package.manifest();
        for (index, entry) in manifest.payloads.iter().enumerate() {
            if entry.kind != PayloadType::Image {
                continue;
            }
            let payload = PayloadRef::new(manifest, index)
                .ok_or_else(|| format!("payload {index} is not in the manifest"))?;
            self.installers
                .image
                .verify(payload)
                .map_err(|e| e.to_string())?;
        }
        if !job.needs_reboot() {
            self.installers.reboot().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The trial boot's verdict: the configured health checks, then — for
    /// an update from the server — a check-in of the new version (an answer
    /// that the device is not accepted counts too: the server was reached
    /// and knew the device). An offer in that answer waits for the next poll.
    pub(super) fn check_health(
        &mut self,
        job: Option<&Job>,
    ) -> Result<(), crate::health::Unhealthy> {
        if let Some(error) = &self.system_unreadable {
            return Err(crate::health::Unhealthy {
                name: "system version".to_owned(),
                reason: error.to_string(),
                output: String::new(),
            });
        }
        crate::health::run_all(&self.config.health_checks)?;
        let timeout = self.config.trial.reach_server_timeout_secs;
        if timeout == 0 || job.and_then(|job| job.deployment_id).is_none() {
            return Ok(());
        }
        let inventory = self.inventory();
        let client = &mut self.client;
        crate::health::reach_server(Duration::from_secs(timeout), || {
            match client.check_in(&inventory) {
                Ok(_) | Err(ClientError::NotAccepted(_)) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        })
    }
}

/// Installed bytes between two checkpoints of a stream: a hundredth of the
/// package, but no fewer than 64 KiB (each one is two `fsync`s) and no more
/// than 8 MiB (what a power cut may cost).
fn sync_interval(package_size: u64) -> u64 {
    (package_size / 100).clamp(64 * 1024, 8 * 1024 * 1024)
}

/// Feeds [`Event::Progress`] for bytes already synced and saves the state:
/// a restart resumes the download there. Progress asks for no effects.
fn checkpoint(state: &mut State, file: &StateFile, offset: u64) -> io::Result<()> {
    let (next, effects) = step(state.clone(), Event::Progress { offset });
    debug_assert!(effects.is_empty(), "progress asks for nothing");
    if next != *state {
        file.save(&next).map_err(io::Error::other)?;
        *state = next;
    }
    Ok(())
}

fn boot_failed(error: BootError) -> Outcome {
    Outcome::Failed(Event::BootControlFailed {
        reason: error.to_string(),
    })
}
