//! Final states: back to idle once cleaned up, and their effects again
//! after a restart.

use super::*;

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
