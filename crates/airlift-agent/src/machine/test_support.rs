//! Jobs, states and events for the machine's tests.

use super::job::{Activation, Job, JobKind, TrialBoot, TrialJob};
use super::types::{Decline, Event, State};
use crate::boot::Slot;
use airlift_package::Sha256Digest;
use airlift_protocol::DeploymentId;
use semver::Version;
use std::collections::BTreeMap;

/// A fixed deployment id, so that tests can compare reports.
pub(crate) fn deployment() -> DeploymentId {
    "00000000-0000-4000-8000-000000005eed"
        .parse()
        .expect("a valid UUID")
}

fn job_with(deployment_id: Option<DeploymentId>, activation: Activation) -> Job {
    let version = Version::new(2, 1, 0);
    Job {
        deployment_id,
        name: "rootfs".to_owned(),
        version: version.clone(),
        size: 1000,
        sha256: Sha256Digest::of(b"the package"),
        security_version: 3,
        provides: BTreeMap::from([("rootfs".to_owned(), version)]),
        activation,
    }
}

/// An image update from a deployment: slot `a` runs, `b` gets the image.
pub(crate) fn image_job() -> Job {
    job_with(
        Some(deployment()),
        Activation::TrialBoot(TrialBoot { target: Slot::B }),
    )
}

/// The same, as a [`TrialJob`].
pub(crate) fn trial_job() -> TrialJob {
    match image_job().into_kind() {
        JobKind::TrialBoot(job) => job,
        JobKind::InPlace(job) => panic!("not a trial job: {job:?}"),
    }
}

/// A file-only update from a deployment.
pub(crate) fn in_place_job() -> Job {
    job_with(Some(deployment()), Activation::InPlace)
}

/// `airlift-agent install FILE` of an image.
pub(crate) fn local_image_job() -> Job {
    job_with(None, Activation::TrialBoot(TrialBoot { target: Slot::A }))
}

/// `airlift-agent install FILE` of files.
pub(crate) fn local_in_place_job() -> Job {
    job_with(None, Activation::InPlace)
}

/// Every state, with each kind of job where it may hold one.
pub(crate) fn representative_states() -> Vec<State> {
    let jobs = [
        image_job(),
        in_place_job(),
        local_image_job(),
        local_in_place_job(),
    ];
    let mut states = vec![State::Idle];
    for job in jobs {
        states.push(State::Downloading {
            job: job.clone(),
            offset: 0,
        });
        states.push(State::Downloading {
            job: job.clone(),
            offset: 400,
        });
        states.push(State::Downloaded { job: job.clone() });
        states.push(State::Installing { job: job.clone() });
        states.push(State::Installed { job: job.clone() });
        states.push(State::Committed { job: job.clone() });
        states.push(State::Failed {
            job: job.clone(),
            reason: "it broke".to_owned(),
        });
        if let JobKind::TrialBoot(trial) = job.into_kind() {
            states.push(State::Rebooting { job: trial.clone() });
            states.push(State::Verifying { job: trial.clone() });
            states.push(State::RolledBack {
                job: trial,
                reason: "a health check failed: boom".to_owned(),
            });
        }
    }
    states
}

/// Every kind of event, with both slots where it names one.
pub(crate) fn representative_events() -> Vec<Event> {
    let mut events = vec![
        Event::Resume,
        Event::Offer(image_job()),
        Event::Offer(in_place_job()),
        Event::Offer(local_image_job()),
        Event::OfferDeclined {
            deployment_id: deployment(),
            decline: Decline::AlreadyInstalled,
        },
        Event::OfferDeclined {
            deployment_id: deployment(),
            decline: Decline::Refused {
                reason: "no trusted key".to_owned(),
            },
        },
        Event::Progress { offset: 0 },
        Event::Progress { offset: 700 },
        Event::Progress { offset: 1000 },
        Event::Progress { offset: 1001 },
        Event::Progress { offset: u64::MAX },
        Event::DownloadComplete,
        Event::DownloadFailed {
            permanent: false,
            reason: "connection reset".to_owned(),
        },
        Event::DownloadFailed {
            permanent: true,
            reason: "digest mismatch".to_owned(),
        },
        Event::Refused {
            reason: "security version 2 is older than 3".to_owned(),
        },
        Event::Cancelled,
        Event::Proceed,
        Event::Installed,
        Event::InstallFailed {
            reason: "short write".to_owned(),
        },
        Event::TrialArmed,
        Event::HealthPassed,
        Event::HealthFailed {
            output: "curl: (7) connection refused".to_owned(),
        },
        Event::HealthFailed {
            output: "é".repeat(20_000),
        },
        Event::BootCommitted,
        Event::BootControlFailed {
            reason: "fw_setenv failed".to_owned(),
        },
        Event::CommitRequested,
        Event::RollbackRequested,
        Event::CleanedUp,
    ];
    for slot in [Slot::A, Slot::B] {
        for trial_pending in [false, true] {
            events.push(Event::Booted {
                slot,
                trial_pending,
            });
        }
    }
    events
}
