//! Transition tests: no async, no disk.
//!
//! This file: each rule on its own. [`pairs`]: every state against every
//! event, and random walks. [`power_cuts`]: a whole update on an in-memory
//! device, stopped once at every point. [`permits`]: when a downloaded
//! update may install, and when to check in next.

mod pairs;
mod permits;
mod power_cuts;

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

// --- Downloading -------------------------------------------------------------

fn downloading(offset: u64) -> State {
    State::Downloading {
        job: image_job(),
        offset,
    }
}

#[test]
fn progress_records_the_offset_reached_and_nothing_past_the_end() {
    assert_eq!(
        step(downloading(0), Event::Progress { offset: 700 }),
        (downloading(700), vec![])
    );
    assert_eq!(
        step(downloading(700), Event::Progress { offset: 1001 }),
        (downloading(700), vec![])
    );
}

#[test]
fn an_interrupted_download_resumes_from_the_offset_reached() {
    assert_eq!(
        step(downloading(400), Event::Resume),
        (
            downloading(400),
            vec![Effect::Download { from_offset: 400 }]
        )
    );
    let transient = Event::DownloadFailed {
        permanent: false,
        reason: "connection reset".into(),
    };
    assert_eq!(
        step(downloading(400), transient),
        (
            downloading(400),
            vec![Effect::Download { from_offset: 400 }]
        )
    );
}

#[test]
fn a_permanent_download_failure_fails_undoes_the_written_part_and_is_reported() {
    let (state, effects) = step(
        downloading(400),
        Event::DownloadFailed {
            permanent: true,
            reason: "digest mismatch".into(),
        },
    );
    let reason = "download failed: digest mismatch";
    assert_eq!(state, failed(image_job(), reason));
    assert_eq!(
        effects,
        [
            report_with(UpdateState::Failure, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Cleanup
        ]
    );
}

#[test]
fn an_installer_failing_mid_stream_fails_and_undoes() {
    let (state, effects) = step(
        downloading(400),
        Event::InstallFailed {
            reason: "slot b: no space left".into(),
        },
    );
    let reason = "install failed: slot b: no space left";
    assert_eq!(state, failed(image_job(), reason));
    assert_eq!(
        effects,
        [
            report_with(UpdateState::Failure, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Cleanup
        ]
    );
}

#[test]
fn a_refusal_while_streaming_fails_with_its_reason_and_undoes() {
    let reason = "security version 2 is older than the running 3";
    let before_install = [downloading(10), State::Downloaded { job: image_job() }];
    for state in before_install {
        let refused = Event::Refused {
            reason: reason.into(),
        };
        assert_eq!(
            step(state, refused),
            (
                failed(image_job(), reason),
                vec![
                    report_with(UpdateState::Failure, reason),
                    Effect::AbandonTrial { previous: Slot::A },
                    Effect::Cleanup
                ]
            )
        );
    }
}

#[test]
fn a_cancelled_deployment_fails_up_to_installed_and_is_ignored_after() {
    let cancelled = "the deployment was cancelled";
    let cases = [
        (
            downloading(3),
            vec![Effect::AbandonTrial { previous: Slot::A }],
        ),
        (
            State::Downloaded { job: image_job() },
            vec![Effect::AbandonTrial { previous: Slot::A }],
        ),
        (
            State::Installing { job: image_job() },
            vec![Effect::AbandonTrial { previous: Slot::A }],
        ),
        (
            State::Installed { job: image_job() },
            vec![Effect::AbandonTrial { previous: Slot::A }],
        ),
        (
            State::Installed {
                job: in_place_job(),
            },
            vec![Effect::RevertInstall],
        ),
    ];
    for (state, undo) in cases {
        let job = state.job().expect("a job");
        let mut expected = vec![report_with(UpdateState::Failure, cancelled)];
        expected.extend(undo);
        expected.push(Effect::Cleanup);
        assert_eq!(
            step(state, Event::Cancelled),
            (failed(job, cancelled), expected)
        );
    }
    for state in [
        State::Rebooting { job: trial_job() },
        State::Verifying { job: trial_job() },
    ] {
        assert_eq!(step(state.clone(), Event::Cancelled), (state, vec![]));
    }
}

// --- Downloaded, Installing, Installed ---------------------------------------

#[test]
fn downloaded_and_installed_rest_until_proceed() {
    let downloaded = State::Downloaded { job: image_job() };
    assert_eq!(
        step(downloaded.clone(), Event::Resume),
        (downloaded, vec![])
    );
    let installed = State::Installed {
        job: in_place_job(),
    };
    assert_eq!(step(installed.clone(), Event::Resume), (installed, vec![]));
}

#[test]
fn an_interrupted_install_starts_again_from_scratch() {
    for job in [image_job(), in_place_job()] {
        let installing = State::Installing { job };
        assert_eq!(
            step(installing.clone(), Event::Resume),
            (installing, vec![Effect::Install])
        );
    }
}

#[test]
fn a_failed_install_fails_and_undoes_what_it_wrote() {
    let failure = Event::InstallFailed {
        reason: "short write".into(),
    };
    let reason = "install failed: short write";
    let (state, effects) = step(
        State::Installing {
            job: in_place_job(),
        },
        failure.clone(),
    );
    assert_eq!(state, failed(in_place_job(), reason));
    assert_eq!(
        effects,
        [
            report_with(UpdateState::Failure, reason),
            Effect::RevertInstall,
            Effect::Cleanup
        ]
    );
    let (state, effects) = step(State::Installing { job: image_job() }, failure);
    assert_eq!(state, failed(image_job(), reason));
    assert_eq!(
        effects,
        [
            report_with(UpdateState::Failure, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Cleanup
        ]
    );
}

#[test]
fn rebooting_is_saved_only_once_the_trial_is_armed() {
    let installed = State::Installed { job: image_job() };
    assert_eq!(
        step(installed.clone(), Event::Proceed),
        (installed.clone(), vec![Effect::ArmTrial { slot: Slot::B }])
    );
    assert_eq!(
        step(installed, Event::TrialArmed),
        (
            State::Rebooting { job: trial_job() },
            vec![report(UpdateState::Rebooting), Effect::Reboot]
        )
    );
}

#[test]
fn a_trial_that_cannot_be_armed_fails() {
    let (state, effects) = step(
        State::Installed { job: image_job() },
        Event::BootControlFailed {
            reason: "fw_setenv failed".into(),
        },
    );
    let reason = "could not arm the trial boot: fw_setenv failed";
    assert_eq!(state, failed(image_job(), reason));
    assert_eq!(
        effects,
        [
            report_with(UpdateState::Failure, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Cleanup
        ]
    );
}

#[test]
fn resuming_installed_looks_at_the_boot_first() {
    let installed = State::Installed { job: image_job() };
    assert_eq!(
        step(installed.clone(), Event::Resume),
        (installed.clone(), vec![Effect::InspectBoot])
    );
    // Still the old slot: arm (again) and reboot when told to proceed.
    assert_eq!(
        step(installed.clone(), booted(Slot::A)),
        (installed.clone(), vec![])
    );
    let (state, names, effects) = run(
        installed.clone(),
        [booted(Slot::A), Event::Proceed, Event::TrialArmed],
    );
    assert_eq!(state, State::Rebooting { job: trial_job() });
    assert_eq!(names, ["installed", "installed", "rebooting"]);
    assert_eq!(
        effects,
        [
            Effect::ArmTrial { slot: Slot::B },
            report(UpdateState::Rebooting),
            Effect::Reboot
        ]
    );
    // Armed, then a power cut before `Rebooting` was saved: this is the trial.
    assert_eq!(
        step(installed, booted(Slot::B)),
        (
            State::Verifying { job: trial_job() },
            vec![Effect::RunHealthChecks]
        )
    );
}

// --- Rebooting and Verifying -------------------------------------------------

#[test]
fn a_reboot_into_the_new_slot_starts_the_health_checks() {
    for trial_pending in [true, false] {
        let event = Event::Booted {
            slot: Slot::B,
            trial_pending,
        };
        assert_eq!(
            step(State::Rebooting { job: trial_job() }, event),
            (
                State::Verifying { job: trial_job() },
                vec![Effect::RunHealthChecks]
            )
        );
    }
}

#[test]
fn a_reboot_that_comes_back_in_the_old_slot_rolled_back() {
    let rebooting = State::Rebooting { job: trial_job() };
    assert_eq!(
        step(rebooting.clone(), Event::Resume),
        (rebooting.clone(), vec![Effect::InspectBoot])
    );
    for trial_pending in [false, true] {
        let event = Event::Booted {
            slot: Slot::A,
            trial_pending,
        };
        let (state, effects) = step(rebooting.clone(), event);
        assert_eq!(
            state,
            State::RolledBack {
                job: trial_job(),
                reason: FELL_BACK_BEFORE_AGENT.to_owned()
            }
        );
        assert_eq!(
            effects,
            [
                report_with(
                    UpdateState::RolledBack,
                    "the new version did not boot: the bootloader fell back"
                ),
                Effect::AbandonTrial { previous: Slot::A },
                Effect::Cleanup,
            ]
        );
    }
}

#[test]
fn a_failed_health_check_rolls_back_with_its_output() {
    let (state, effects) = step(
        State::Verifying { job: trial_job() },
        Event::HealthFailed {
            output: "curl: (7) connection refused".into(),
        },
    );
    let reason = "a health check failed: curl: (7) connection refused";
    assert_eq!(
        state,
        State::RolledBack {
            job: trial_job(),
            reason: reason.to_owned()
        }
    );
    assert_eq!(
        effects,
        [
            report_with(UpdateState::RolledBack, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Reboot,
        ]
    );
}

#[test]
fn long_health_output_keeps_its_end_within_the_server_limit() {
    let output = format!("{}the end", "é".repeat(MAX_STATUS_MESSAGE));
    let (state, effects) = step(
        State::Verifying { job: trial_job() },
        Event::HealthFailed { output },
    );
    let State::RolledBack { reason, .. } = state else {
        panic!("not rolled back: {state:?}");
    };
    assert!(reason.len() <= MAX_STATUS_MESSAGE);
    assert!(reason.ends_with("the end"));
    assert_eq!(
        reports(&effects)[0].message.as_deref(),
        Some(reason.as_str())
    );
}

#[test]
fn passing_health_checks_commit_first_and_report_success_after() {
    let verifying = State::Verifying { job: trial_job() };
    for event in [Event::HealthPassed, Event::CommitRequested] {
        assert_eq!(
            step(verifying.clone(), event),
            (verifying.clone(), vec![Effect::CommitBoot])
        );
    }
    assert_eq!(
        step(verifying, Event::BootCommitted),
        (
            State::Committed { job: image_job() },
            vec![report(UpdateState::Success), Effect::Cleanup]
        )
    );
}

#[test]
fn a_trial_that_cannot_be_committed_rolls_back() {
    let (state, effects) = step(
        State::Verifying { job: trial_job() },
        Event::BootControlFailed {
            reason: "grub-editenv failed".into(),
        },
    );
    let reason = "could not commit the new version: grub-editenv failed";
    assert_eq!(
        state,
        State::RolledBack {
            job: trial_job(),
            reason: reason.to_owned()
        }
    );
    assert_eq!(
        effects,
        [
            report_with(UpdateState::RolledBack, reason),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Reboot,
        ]
    );
}

#[test]
fn a_restart_during_verification_checks_again_or_notices_the_fallback() {
    let verifying = State::Verifying { job: trial_job() };
    assert_eq!(
        step(verifying.clone(), Event::Resume),
        (verifying.clone(), vec![Effect::InspectBoot])
    );
    for trial_pending in [true, false] {
        let event = Event::Booted {
            slot: Slot::B,
            trial_pending,
        };
        assert_eq!(
            step(verifying.clone(), event),
            (verifying.clone(), vec![Effect::RunHealthChecks])
        );
    }
    let (state, effects) = step(verifying, booted(Slot::A));
    assert_eq!(
        state,
        State::RolledBack {
            job: trial_job(),
            reason: FELL_BACK_DURING_TRIAL.to_owned()
        }
    );
    assert_eq!(
        effects,
        [
            report_with(UpdateState::RolledBack, FELL_BACK_DURING_TRIAL),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Cleanup,
        ]
    );
}

// --- By hand -----------------------------------------------------------------

#[test]
fn commit_by_hand_only_commits_a_running_trial() {
    assert_eq!(
        step(
            State::Verifying { job: trial_job() },
            Event::CommitRequested
        )
        .1,
        [Effect::CommitBoot]
    );
    for state in [
        State::Idle,
        State::Installed { job: image_job() },
        State::Rebooting { job: trial_job() },
        State::Committed { job: image_job() },
    ] {
        assert_eq!(step(state.clone(), Event::CommitRequested), (state, vec![]));
    }
}

#[test]
fn rollback_by_hand_abandons_whatever_is_under_way() {
    let abandoned = "abandoned by hand (airlift-agent rollback)";
    let (state, effects) = step(
        State::Verifying { job: trial_job() },
        Event::RollbackRequested,
    );
    assert_eq!(
        state,
        State::RolledBack {
            job: trial_job(),
            reason: "rolled back by hand".into()
        }
    );
    assert_eq!(
        effects,
        [
            report_with(UpdateState::RolledBack, "rolled back by hand"),
            Effect::AbandonTrial { previous: Slot::A },
            Effect::Reboot
        ]
    );
    assert_eq!(
        step(
            State::Rebooting { job: trial_job() },
            Event::RollbackRequested
        ),
        (
            failed(image_job(), abandoned),
            vec![
                report_with(UpdateState::Failure, abandoned),
                Effect::AbandonTrial { previous: Slot::A },
                Effect::Cleanup
            ]
        )
    );
    assert_eq!(
        step(downloading(5), Event::RollbackRequested),
        (
            failed(image_job(), abandoned),
            vec![
                report_with(UpdateState::Failure, abandoned),
                Effect::AbandonTrial { previous: Slot::A },
                Effect::Cleanup
            ]
        )
    );
    for state in [State::Idle, State::Committed { job: image_job() }] {
        assert_eq!(
            step(state.clone(), Event::RollbackRequested),
            (state, vec![])
        );
    }
}

// --- Final states ------------------------------------------------------------

#[test]
fn final_states_return_to_idle_once_cleaned_up() {
    for state in representative_states().into_iter().filter(State::is_final) {
        assert_eq!(step(state, Event::CleanedUp), (State::Idle, vec![]));
    }
}

#[test]
fn a_restart_in_a_final_state_performs_its_effects_again() {
    assert_eq!(
        step(State::Committed { job: image_job() }, Event::Resume),
        (
            State::Committed { job: image_job() },
            vec![report(UpdateState::Success), Effect::Cleanup]
        )
    );
    let in_place = failed(in_place_job(), "it broke");
    assert_eq!(
        step(in_place.clone(), Event::Resume),
        (
            in_place,
            vec![
                report_with(UpdateState::Failure, "it broke"),
                Effect::RevertInstall,
                Effect::Cleanup
            ]
        )
    );
    let rolled_back = State::RolledBack {
        job: trial_job(),
        reason: "a health check failed: x".into(),
    };
    let image_failed = failed(image_job(), "it broke");
    for (state, update) in [
        (rolled_back, UpdateState::RolledBack),
        (image_failed, UpdateState::Failure),
    ] {
        let message = match &state {
            State::RolledBack { reason, .. } | State::Failed { reason, .. } => reason.clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            step(state.clone(), Event::Resume),
            (state.clone(), vec![Effect::InspectBoot])
        );
        // Still on the new version: abandon the trial and reboot.
        assert_eq!(
            step(state.clone(), booted(Slot::B)),
            (
                state.clone(),
                vec![
                    report_with(update, &message),
                    Effect::AbandonTrial { previous: Slot::A },
                    Effect::Reboot
                ]
            )
        );
        // Back on the old one: report and clean up.
        assert_eq!(
            step(state.clone(), booted(Slot::A)),
            (
                state,
                vec![
                    report_with(update, &message),
                    Effect::AbandonTrial { previous: Slot::A },
                    Effect::Cleanup
                ]
            )
        );
    }
}

// --- Offers ------------------------------------------------------------------

#[test]
fn offers_are_ignored_while_a_job_is_under_way_even_the_same_one() {
    for state in representative_states()
        .into_iter()
        .filter(|s| *s != State::Idle)
    {
        for offer in [image_job(), in_place_job(), local_image_job()] {
            assert_eq!(
                step(state.clone(), Event::Offer(offer)),
                (state.clone(), vec![])
            );
        }
    }
}

#[test]
fn a_declined_offer_is_reported_from_idle() {
    assert_eq!(
        step(
            State::Idle,
            Event::OfferDeclined {
                deployment_id: deployment(),
                decline: Decline::AlreadyInstalled
            }
        ),
        (State::Idle, vec![report(UpdateState::AlreadyInstalled)])
    );
    assert_eq!(
        step(
            State::Idle,
            Event::OfferDeclined {
                deployment_id: deployment(),
                decline: Decline::Refused {
                    reason: "no trusted key signed it".into()
                }
            }
        ),
        (
            State::Idle,
            vec![report_with(
                UpdateState::Failure,
                "no trusted key signed it"
            )]
        )
    );
}
