//! A whole update on an in-memory device, as a driver would run it, with
//! the agent stopped (power cut or restart) once at every point.

use crate::boot::Slot;
use crate::machine::test_support::image_job;
use crate::machine::{step, Effect, Event, Job, Report, State};
use airlift_protocol::state::UpdateState;
use std::collections::VecDeque;

/// An in-memory device: two slots and a bootloader with a trial counter, as
/// `crate::boot` documents it.
#[derive(Debug, Clone)]
struct Device {
    running: Slot,
    next: Slot,
    trial: bool,
    bootcount: u32,
    /// Whether the new version boots as far as the agent.
    new_boots: bool,
    /// Whether the new version passes its health checks.
    new_healthy: bool,
}

const BOOTLIMIT: u32 = 3;
const NEW: Slot = Slot::B;
const OLD: Slot = Slot::A;

impl Device {
    fn new(new_boots: bool, new_healthy: bool) -> Self {
        Device {
            running: OLD,
            next: OLD,
            trial: false,
            bootcount: 0,
            new_boots,
            new_healthy,
        }
    }

    /// Power-up until a slot reaches the agent.
    fn boot(&mut self) {
        for _ in 0..10 {
            if self.trial {
                self.bootcount += 1;
                if self.bootcount > BOOTLIMIT {
                    self.next = self.next.other();
                    self.trial = false;
                    self.bootcount = 0;
                }
            }
            self.running = self.next;
            if self.running == OLD || self.new_boots {
                return;
            }
        }
        panic!("bricked: {self:?}");
    }
}

/// How the agent stops at the chosen point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    PowerCut,
    AgentRestart,
}

/// The agent stops; with a power cut, the device boots again.
fn restart(device: &mut Device, events: &mut VecDeque<Event>, reboot: bool) {
    if reboot {
        device.boot();
    }
    events.clear();
    events.push_back(Event::Resume);
}

/// Runs the update of `job` on `device` as a driver would, stopping once at
/// operation `stop_at` (a step or a performed effect). Returns the last
/// final state, the reports sent, and whether the stop happened.
///
/// One function on purpose, over 100 lines: it is the driver's loop and its
/// `perform` match in one place, so that the operation count `stop_at`
/// runs over steps and effects alike, in the order a driver meets them.
fn drive(device: &mut Device, job: Job, stop_at: usize, stop: Stop) -> (State, Vec<Report>, bool) {
    let mut saved = State::Idle;
    let mut events = VecDeque::from([Event::Offer(job)]);
    let mut reports = Vec::new();
    let mut last_final = None;
    let mut ops = 0;
    let mut stopped = false;
    for _ in 0..500 {
        let event = match events.pop_front() {
            Some(event) => event,
            None => match saved {
                State::Downloaded { .. } | State::Installed { .. } => Event::Proceed,
                State::Idle => return (last_final.expect("a final state"), reports, stopped),
                _ => panic!("stuck in {saved:?}"),
            },
        };
        let (next, effects) = step(saved.clone(), event);
        saved = next;
        if saved.is_final() {
            last_final = Some(saved.clone());
        }
        ops += 1;
        if ops == stop_at {
            stopped = true;
            restart(device, &mut events, stop == Stop::PowerCut);
            continue;
        }
        let mut rebooted = false;
        for effect in effects {
            ops += 1;
            match effect {
                Effect::Report(report) => {
                    if report.state == UpdateState::Success {
                        assert!(
                            device.running == NEW && !device.trial,
                            "success reported before the commit: {device:?}"
                        );
                    }
                    reports.push(report);
                }
                Effect::Download { from_offset } => {
                    events.push_back(Event::Progress {
                        offset: (from_offset + 600).min(1000),
                    });
                    events.push_back(Event::Progress { offset: 1000 });
                    events.push_back(Event::DownloadComplete);
                }
                Effect::Install => events.push_back(Event::Installed),
                Effect::ArmTrial { slot } => {
                    assert_ne!(slot, device.running, "arming the running slot");
                    device.next = slot;
                    device.trial = true;
                    device.bootcount = 0;
                    events.push_back(Event::TrialArmed);
                }
                Effect::Reboot => {
                    restart(device, &mut events, true);
                    rebooted = true;
                }
                Effect::InspectBoot => events.push_back(Event::Booted {
                    slot: device.running,
                    trial_pending: device.trial,
                }),
                Effect::RunHealthChecks => {
                    events.push_back(if device.running == NEW && device.new_healthy {
                        Event::HealthPassed
                    } else {
                        Event::HealthFailed {
                            output: "unhealthy".into(),
                        }
                    })
                }
                Effect::CommitBoot => {
                    assert_eq!(
                        device.running, device.next,
                        "commit before the trial booted"
                    );
                    device.trial = false;
                    device.bootcount = 0;
                    events.push_back(Event::BootCommitted);
                }
                Effect::AbandonTrial { previous } => {
                    device.next = previous;
                    device.trial = false;
                    device.bootcount = 0;
                }
                Effect::RevertInstall => {}
                Effect::Cleanup => events.push_back(Event::CleanedUp),
            }
            if ops == stop_at {
                // (Stopping during a reboot is the reboot.)
                stopped = true;
                if !rebooted {
                    restart(device, &mut events, stop == Stop::PowerCut);
                    rebooted = true;
                }
            }
            if rebooted {
                break;
            }
        }
    }
    panic!("no end: {saved:?}");
}

/// The device runs what the final state says, with nothing armed, and the
/// server heard it last.
fn check_outcome(device: &Device, outcome: &State, reports: &[Report], context: &str) {
    let last = reports.last().map(|r| r.state);
    match outcome {
        State::Committed { .. } => {
            assert_eq!(device.running, NEW, "{context}");
            assert_eq!(last, Some(UpdateState::Success), "{context}");
        }
        State::RolledBack { .. } => {
            assert_eq!(device.running, OLD, "{context}");
            assert_eq!(last, Some(UpdateState::RolledBack), "{context}");
        }
        other => panic!("{context}: ended {other:?}"),
    }
    assert!(!device.trial, "{context}: a trial is still armed");
    assert_eq!(
        device.next, device.running,
        "{context}: boots elsewhere next"
    );
    if !matches!(outcome, State::Committed { .. }) {
        assert!(
            reports.iter().all(|r| r.state != UpdateState::Success),
            "{context}: success reported for an update that did not stay"
        );
    }
}

#[test]
fn a_power_cut_or_restart_at_any_point_ends_in_one_version_healthy_and_reported() {
    // (new version boots, new version healthy, expected outcome)
    let cases = [
        (true, true, "committed"),
        (true, false, "rolled_back"),
        (false, false, "rolled_back"),
    ];
    for (new_boots, new_healthy, expected) in cases {
        let mut device = Device::new(new_boots, new_healthy);
        let (outcome, reports, _) = drive(&mut device, image_job(), usize::MAX, Stop::PowerCut);
        assert_eq!(outcome.name(), expected);
        check_outcome(&device, &outcome, &reports, "no stop");

        for stop in [Stop::PowerCut, Stop::AgentRestart] {
            let mut points = 0;
            for stop_at in 1.. {
                let mut device = Device::new(new_boots, new_healthy);
                let (outcome, reports, stopped) = drive(&mut device, image_job(), stop_at, stop);
                if !stopped {
                    break;
                }
                points += 1;
                let context = format!(
                    "boots {new_boots}, healthy {new_healthy}, {stop:?} at operation {stop_at}"
                );
                check_outcome(&device, &outcome, &reports, &context);
                // A power cut never changes the outcome. An agent restart
                // between arming and rebooting may cost a needless rollback.
                if stop == Stop::PowerCut {
                    assert_eq!(outcome.name(), expected, "{context}");
                }
            }
            assert!(points > 20, "only {points} stops");
        }
    }
}
