//! Downloading: progress, resuming, failures while streaming, and a
//! deployment cancelled on the way.

use super::*;

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
