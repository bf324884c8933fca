//! Rebooting and Verifying: the trial boot, its health checks, the commit
//! and the rollbacks.

use super::*;

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
