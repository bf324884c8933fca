//! The install-permit decisions: when a downloaded update may install, and
//! when to check in next. No clock, no randomness, no server: both are
//! handed in.

use super::super::permit::{
    held_install, install_hold, next_check_in, HeardPermit, HeldInstall, NextCheckIn,
};
use super::*;
use airlift_protocol::device::UpdateOffer;
use airlift_protocol::install::InstallPermit;
use airlift_protocol::DeploymentId;
use chrono::{DateTime, TimeZone, Utc};
use std::time::{Duration, SystemTime};

const POLL: Duration = Duration::from_secs(3600);

fn other_deployment() -> DeploymentId {
    "00000000-0000-4000-8000-00000000beef"
        .parse()
        .expect("a valid UUID")
}

/// Noon, 26 November 2026.
fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("a valid time")
}

fn clock(at: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).expect("after 1970"))
}

fn heard(deployment_id: DeploymentId, permit: InstallPermit) -> HeardPermit {
    HeardPermit {
        deployment_id,
        permit,
    }
}

fn window_opens(at: DateTime<Utc>) -> InstallPermit {
    InstallPermit::Later {
        reason: "outside the install window 22:00-04:00".into(),
        until: Some(at),
    }
}

fn download_only() -> InstallPermit {
    InstallPermit::Later {
        reason: "download-only: waiting for release".into(),
        until: None,
    }
}

fn downloaded(job: Job) -> State {
    State::Downloaded { job }
}

fn offer(deployment_id: DeploymentId, install: InstallPermit) -> UpdateOffer {
    UpdateOffer {
        deployment_id,
        package_id: "00000000-0000-4000-8000-0000000000aa"
            .parse()
            .expect("a valid UUID"),
        name: "rootfs".into(),
        version: "2.1.0".into(),
        signed_manifest: String::new(),
        download_path: "/download".into(),
        size: 1000,
        sha256: "00".repeat(32),
        install,
        deferral: None,
        timestamp: None,
    }
}

// --- install_hold --------------------------------------------------------------

#[test]
fn nothing_heard_since_the_start_holds_the_install() {
    let reason = install_hold(&image_job(), None).expect("held");
    assert!(reason.contains("waiting for the server"), "{reason}");
}

#[test]
fn now_for_the_deployment_lets_it_install() {
    let now = heard(deployment(), InstallPermit::Now);
    assert_eq!(install_hold(&image_job(), Some(&now)), None);
    assert_eq!(install_hold(&in_place_job(), Some(&now)), None);
}

#[test]
fn a_window_that_opens_later_holds_the_install_with_its_reason() {
    let later = heard(deployment(), window_opens(noon()));
    let reason = install_hold(&image_job(), Some(&later)).expect("held");
    assert!(reason.contains("install window"), "{reason}");
}

#[test]
fn a_download_only_deployment_holds_until_released() {
    let waiting = heard(deployment(), download_only());
    let reason = install_hold(&image_job(), Some(&waiting)).expect("held");
    assert!(reason.contains("download-only"), "{reason}");
    // The operator releases it: the next offer says `now`.
    let released = heard(deployment(), InstallPermit::Now);
    assert_eq!(install_hold(&image_job(), Some(&released)), None);
}

#[test]
fn a_word_for_another_deployment_does_not_count() {
    let now = heard(other_deployment(), InstallPermit::Now);
    assert!(install_hold(&image_job(), Some(&now)).is_some());
}

#[test]
fn a_local_install_never_waits() {
    let later = heard(deployment(), download_only());
    for job in [local_image_job(), local_in_place_job()] {
        assert_eq!(install_hold(&job, None), None);
        assert_eq!(install_hold(&job, Some(&later)), None);
    }
}

// --- next_check_in -------------------------------------------------------------

#[test]
fn the_next_check_in_is_the_poll_interval_when_nothing_waits() {
    let later = heard(
        deployment(),
        window_opens(noon() + chrono::Duration::minutes(5)),
    );
    for state in representative_states() {
        if matches!(state, State::Downloaded { .. }) {
            continue;
        }
        assert_eq!(
            next_check_in(&state, Some(&later), POLL, clock(noon()), 7),
            NextCheckIn::Poll(POLL),
            "{state:?}"
        );
    }
}

#[test]
fn a_window_opening_sooner_than_the_poll_brings_the_check_in_forward() {
    let opens = noon() + chrono::Duration::minutes(10);
    let later = heard(deployment(), window_opens(opens));
    let state = downloaded(image_job());
    // 600 s away: the spread is below a tenth of it, 60 s.
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 0),
        NextCheckIn::WindowOpens(Duration::from_secs(600))
    );
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 59),
        NextCheckIn::WindowOpens(Duration::from_secs(659))
    );
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 60),
        NextCheckIn::WindowOpens(Duration::from_secs(600))
    );
}

#[test]
fn the_spread_is_a_tenth_of_the_wait_and_a_minute_at_most() {
    let state = downloaded(in_place_job());
    let wait = |secs: i64, random: u64| {
        let later = heard(
            deployment(),
            window_opens(noon() + chrono::Duration::seconds(secs)),
        );
        next_check_in(&state, Some(&later), POLL, clock(noon()), random).wait()
    };
    // 100 s away: up to 9 s more.
    assert_eq!(wait(100, 9), Duration::from_secs(109));
    assert_eq!(wait(100, 10), Duration::from_secs(100));
    // 50 minutes away: a minute at most, not five.
    assert_eq!(wait(3000, 59), Duration::from_secs(3059));
    assert_eq!(wait(3000, 299), Duration::from_secs(3000 + 299 % 60));
    // 5 s away: no spread.
    assert_eq!(wait(5, u64::MAX), Duration::from_secs(5));
}

#[test]
fn a_window_opening_after_the_next_poll_leaves_the_poll_interval() {
    let later = heard(
        deployment(),
        window_opens(noon() + chrono::Duration::hours(5)),
    );
    let state = downloaded(image_job());
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 0),
        NextCheckIn::Poll(POLL)
    );
    // Within the poll interval, but not with the spread.
    let later = heard(
        deployment(),
        window_opens(noon() + chrono::Duration::seconds(3590)),
    );
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 10),
        NextCheckIn::Poll(POLL)
    );
}

#[test]
fn a_window_already_open_checks_in_at_once() {
    let later = heard(
        deployment(),
        window_opens(noon() - chrono::Duration::minutes(1)),
    );
    let state = downloaded(image_job());
    assert_eq!(
        next_check_in(&state, Some(&later), POLL, clock(noon()), 12345),
        NextCheckIn::WindowOpens(Duration::ZERO)
    );
}

#[test]
fn a_download_only_wait_or_another_deployment_keeps_the_poll_interval() {
    let state = downloaded(image_job());
    for word in [
        heard(deployment(), download_only()),
        heard(deployment(), InstallPermit::Now),
        heard(
            other_deployment(),
            window_opens(noon() + chrono::Duration::minutes(1)),
        ),
    ] {
        assert_eq!(
            next_check_in(&state, Some(&word), POLL, clock(noon()), 0),
            NextCheckIn::Poll(POLL),
            "{word:?}"
        );
    }
    assert_eq!(
        next_check_in(&state, None, POLL, clock(noon()), 0),
        NextCheckIn::Poll(POLL)
    );
}

// --- held_install --------------------------------------------------------------

#[test]
fn an_offer_for_the_waiting_deployment_is_its_word() {
    let answer = offer(deployment(), window_opens(noon()));
    assert_eq!(
        held_install(&downloaded(image_job()), Some(&answer)),
        HeldInstall::Heard(heard(deployment(), window_opens(noon())))
    );
    let released = offer(deployment(), InstallPermit::Now);
    assert_eq!(
        held_install(&downloaded(in_place_job()), Some(&released)),
        HeldInstall::Heard(heard(deployment(), InstallPermit::Now))
    );
}

#[test]
fn no_offer_for_the_waiting_deployment_asks_the_server() {
    let state = downloaded(image_job());
    assert_eq!(
        held_install(&state, None),
        HeldInstall::AskServer(deployment())
    );
    let other = offer(other_deployment(), InstallPermit::Now);
    assert_eq!(
        held_install(&state, Some(&other)),
        HeldInstall::AskServer(deployment())
    );
}

#[test]
fn nothing_is_held_outside_downloaded_or_for_a_local_install() {
    let answer = offer(deployment(), InstallPermit::Now);
    for state in representative_states() {
        let waiting = matches!(&state, State::Downloaded { job } if job.deployment_id.is_some());
        if waiting {
            continue;
        }
        assert_eq!(
            held_install(&state, Some(&answer)),
            HeldInstall::NotWaiting,
            "{state:?}"
        );
        assert_eq!(held_install(&state, None), HeldInstall::NotWaiting);
    }
}
