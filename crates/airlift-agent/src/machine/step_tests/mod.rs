//! Transition tests: no async, no disk.
//!
//! Each rule on its own, one module per stretch of the way: this file
//! holds the shared helpers and whole updates from offer to report;
//! [`downloading`], [`installing`] (downloaded, installing, installed),
//! [`trial`] (rebooting and verifying), [`by_hand`] (commit and rollback
//! asked for by hand), [`final_states`] and [`offers`]. [`pairs`]: every
//! state against every event, and random walks. [`power_cuts`]: a whole
//! update on an in-memory device, stopped once at every point. [`permits`]:
//! when a downloaded update may install, and when to check in next.

mod by_hand;
mod downloading;
mod final_states;
mod installing;
mod offers;
mod pairs;
mod permits;
mod power_cuts;
mod trial;

use super::test_support::{
    deployment, image_job, in_place_job, local_image_job, local_in_place_job,
    representative_states, trial_job,
};
use super::*;
use crate::boot::Slot;
use airlift_protocol::device::MAX_STATUS_MESSAGE;
use airlift_protocol::state::UpdateState;

fn report(state: UpdateState) -> Effect {
    Effect::Report(Report {
        deployment_id: deployment(),
        state,
        message: None,
    })
}

fn report_with(state: UpdateState, message: &str) -> Effect {
    Effect::Report(Report {
        deployment_id: deployment(),
        state,
        message: Some(message.to_owned()),
    })
}

fn reports(effects: &[Effect]) -> Vec<&Report> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Report(report) => Some(report),
            _ => None,
        })
        .collect()
}

/// Feeds `events` one after the other; the states passed through and all
/// effects, in order.
fn run(
    mut state: State,
    events: impl IntoIterator<Item = Event>,
) -> (State, Vec<&'static str>, Vec<Effect>) {
    let mut names = Vec::new();
    let mut all = Vec::new();
    for event in events {
        let (next, effects) = step(state, event);
        names.push(next.name());
        all.extend(effects);
        state = next;
    }
    (state, names, all)
}

fn booted(slot: Slot) -> Event {
    Event::Booted {
        slot,
        trial_pending: true,
    }
}

fn failed(job: Job, reason: &str) -> State {
    State::Failed {
        job,
        reason: reason.to_owned(),
    }
}

/// A download of the image job that has reached `offset`.
fn downloading(offset: u64) -> State {
    State::Downloading {
        job: image_job(),
        offset,
    }
}

// --- The way through ---------------------------------------------------------

#[test]
fn an_offer_starts_the_download_and_is_reported() {
    let (state, effects) = step(State::Idle, Event::Offer(image_job()));
    assert_eq!(
        state,
        State::Downloading {
            job: image_job(),
            offset: 0
        }
    );
    assert_eq!(
        effects,
        [
            report(UpdateState::Downloading),
            Effect::Download { from_offset: 0 }
        ]
    );
}

#[test]
fn an_image_goes_through_a_trial_boot_and_success_is_reported_after_the_commit() {
    use Event::*;
    let (state, names, effects) = run(
        State::Idle,
        [
            Offer(image_job()),
            Progress { offset: 500 },
            Progress { offset: 1000 },
            DownloadComplete,
            Proceed,
            Installed,
            Proceed,
            TrialArmed,
            booted(Slot::B),
            HealthPassed,
            BootCommitted,
            CleanedUp,
        ],
    );
    assert_eq!(state, State::Idle);
    assert_eq!(
        names,
        [
            "downloading",
            "downloading",
            "downloading",
            "downloaded",
            "installing",
            "installed",
            "installed",
            "rebooting",
            "verifying",
            "verifying",
            "committed",
            "idle",
        ]
    );
    assert_eq!(
        effects,
        [
            report(UpdateState::Downloading),
            Effect::Download { from_offset: 0 },
            report(UpdateState::Downloaded),
            report(UpdateState::Installing),
            Effect::Install,
            report(UpdateState::Installed),
            Effect::ArmTrial { slot: Slot::B },
            report(UpdateState::Rebooting),
            Effect::Reboot,
            Effect::RunHealthChecks,
            Effect::CommitBoot,
            report(UpdateState::Success),
            Effect::Cleanup,
        ]
    );
}

#[test]
fn an_in_place_job_commits_without_a_reboot_once_healthy() {
    use Event::*;
    let (state, names, effects) = run(
        State::Idle,
        [
            Offer(in_place_job()),
            DownloadComplete,
            Proceed,
            Installed,
            Proceed,
            HealthPassed,
            CleanedUp,
        ],
    );
    assert_eq!(state, State::Idle);
    assert_eq!(
        names,
        [
            "downloading",
            "downloaded",
            "installing",
            "installed",
            "installed", // the health checks run
            "committed",
            "idle"
        ]
    );
    assert_eq!(
        effects,
        [
            report(UpdateState::Downloading),
            Effect::Download { from_offset: 0 },
            report(UpdateState::Downloaded),
            report(UpdateState::Installing),
            Effect::Install,
            report(UpdateState::Installed),
            Effect::RunHealthChecks,
            report(UpdateState::Success),
            Effect::Cleanup,
        ]
    );
}

#[test]
fn an_unhealthy_in_place_job_is_undone_and_reported() {
    use Event::*;
    let (state, names, effects) = run(
        State::Idle,
        [
            Offer(in_place_job()),
            DownloadComplete,
            Proceed,
            Installed,
            Proceed,
            Resume, // a restart during the checks: they run again
            Proceed,
            HealthFailed {
                output: "app exited 3".into(),
            },
            CleanedUp,
        ],
    );
    assert_eq!(state, State::Idle);
    assert_eq!(
        names,
        [
            "downloading",
            "downloaded",
            "installing",
            "installed",
            "installed",
            "installed",
            "installed",
            "failed",
            "idle"
        ]
    );
    let tail = &effects[effects.len() - 5..];
    assert_eq!(tail[0], Effect::RunHealthChecks);
    assert_eq!(tail[1], Effect::RunHealthChecks);
    let Effect::Report(failure) = &tail[2] else {
        panic!("a report: {tail:?}")
    };
    assert_eq!(failure.state, UpdateState::Failure);
    let message = failure.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("undone") && message.contains("app exited 3"),
        "{message}"
    );
    assert_eq!(tail[3..], [Effect::RevertInstall, Effect::Cleanup]);
}

#[test]
fn local_installs_are_never_reported() {
    use Event::*;
    let paths: [(Job, Vec<Event>); 4] = [
        (
            local_image_job(),
            vec![
                DownloadComplete,
                Proceed,
                Installed,
                Proceed,
                TrialArmed,
                booted(Slot::A),
                HealthFailed {
                    output: "no".into(),
                },
                Resume,
                booted(Slot::B),
                CleanedUp,
            ],
        ),
        (
            local_image_job(),
            vec![
                DownloadComplete,
                Proceed,
                Installed,
                Proceed,
                TrialArmed,
                booted(Slot::A),
                HealthPassed,
                BootCommitted,
            ],
        ),
        (
            local_in_place_job(),
            vec![
                DownloadComplete,
                Proceed,
                Installed,
                Proceed,
                HealthPassed,
                CleanedUp,
            ],
        ),
        (
            local_in_place_job(),
            vec![
                DownloadFailed {
                    permanent: true,
                    reason: "gone".into(),
                },
                Resume,
            ],
        ),
    ];
    for (job, events) in paths {
        let (state, _, effects) = run(State::Idle, std::iter::once(Offer(job)).chain(events));
        assert!(reports(&effects).is_empty(), "{state:?}: {effects:?}");
        assert!(effects.len() >= 3, "the path did go somewhere: {effects:?}");
    }
}
