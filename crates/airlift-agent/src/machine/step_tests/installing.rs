//! Downloaded, Installing, Installed: resting until told to proceed, an
//! install interrupted or failed, and arming the trial.

use super::*;

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
