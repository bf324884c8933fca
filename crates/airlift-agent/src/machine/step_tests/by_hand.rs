//! Commit and rollback asked for by hand (`airlift-agent commit`,
//! `rollback`).

use super::*;

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
