//! Every state against every event, and random walks: the rules that hold
//! for any step.

use super::{booted, reports};
use crate::boot::Slot;
use crate::machine::test_support::{
    image_job, in_place_job, local_image_job, representative_events, representative_states,
};
use crate::machine::{record, step, Effect, Event, State};
use airlift_protocol::device::MAX_STATUS_MESSAGE;
use airlift_protocol::state::UpdateState;

/// What must hold for any step, whatever came before.
fn check_step(state: &State, event: &Event, next: &State, effects: &[Effect]) {
    let context = || format!("{state:?} + {event:?} -> {next:?}, {effects:?}");
    // Local installs are never reported.
    let offered = match event {
        Event::Offer(job) => job.deployment_id,
        Event::OfferDeclined { deployment_id, .. } => Some(*deployment_id),
        _ => None,
    };
    if state.deployment_id().is_none() && offered.is_none() {
        assert!(reports(effects).is_empty(), "{}", context());
    }
    for report in reports(effects) {
        assert!(report.state.is_reportable(), "{}", context());
        let length = report.message.as_ref().map_or(0, String::len);
        assert!(length <= MAX_STATUS_MESSAGE, "{}", context());
        // Success only after the bootloader committed — or for an in-place
        // job, once healthy (or committed by hand) — or when repeating a
        // committed state's report.
        if report.state == UpdateState::Success {
            let allowed = match (state, event) {
                (State::Verifying { .. }, Event::BootCommitted) => true,
                (State::Installed { job }, Event::HealthPassed | Event::CommitRequested) => {
                    !job.needs_reboot()
                }
                (State::Committed { .. }, Event::Resume) => true,
                _ => false,
            };
            assert!(allowed, "{}", context());
            assert!(!effects.contains(&Effect::CommitBoot), "{}", context());
        }
    }
    // Cleanup and Reboot end their list, and never share one.
    for last in [Effect::Cleanup, Effect::Reboot] {
        if let Some(at) = effects.iter().position(|e| *e == last) {
            assert_eq!(at, effects.len() - 1, "{}", context());
        }
    }
    // Only trial jobs touch the bootloader.
    let touches_boot = effects.iter().any(|e| {
        matches!(
            e,
            Effect::ArmTrial { .. }
                | Effect::AbandonTrial { .. }
                | Effect::CommitBoot
                | Effect::InspectBoot
                | Effect::Reboot
        )
    });
    if touches_boot {
        let job = next.job().or_else(|| state.job());
        assert!(job.is_some_and(|j| j.needs_reboot()), "{}", context());
    }
    // A job stays the same job until the machine is idle again.
    if let (Some(before), Some(after)) = (state.job(), next.job()) {
        assert_eq!(before, after, "{}", context());
    }
    // Whatever comes out can be saved and read back.
    let bytes = record::encode("state", next).expect("encodes");
    let back: State = record::decode("state", &bytes).expect("decodes");
    assert_eq!(&back, next, "{}", context());
}

#[test]
fn every_state_and_event_pair_steps_without_panicking_and_keeps_the_rules() {
    let states = representative_states();
    let events = representative_events();
    let mut changed = 0;
    for state in &states {
        for event in &events {
            let (next, effects) = step(state.clone(), event.clone());
            check_step(state, event, &next, &effects);
            if next != *state || !effects.is_empty() {
                changed += 1;
            }
        }
    }
    // The table is not vacuous: many pairs do something, most do not.
    assert!(changed > 100, "{changed}");
    assert!(changed < states.len() * events.len() / 2, "{changed}");
}

#[test]
fn idle_only_answers_offers() {
    for event in representative_events() {
        let answers = matches!(event, Event::Offer(_) | Event::OfferDeclined { .. });
        let (next, effects) = step(State::Idle, event);
        assert_eq!(next == State::Idle && effects.is_empty(), !answers);
    }
}

/// A small deterministic generator (xorshift), so walks are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_walks_keep_the_rules() {
    let events = representative_events();
    // Half of the time an event that moves an update on, so that walks get
    // past the first states.
    let onwards = [
        Event::Offer(image_job()),
        Event::Offer(in_place_job()),
        Event::Offer(local_image_job()),
        Event::DownloadComplete,
        Event::Proceed,
        Event::Installed,
        Event::TrialArmed,
        booted(Slot::B),
        Event::HealthPassed,
        Event::BootCommitted,
        Event::CleanedUp,
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let mut state = State::Idle;
        for _ in 0..200 {
            let event = if rng.below(2) == 0 {
                onwards[rng.below(onwards.len())].clone()
            } else {
                events[rng.below(events.len())].clone()
            };
            let (next, effects) = step(state.clone(), event.clone());
            check_step(&state, &event, &next, &effects);
            seen.insert(next.name());
            state = next;
        }
    }
    assert_eq!(seen.len(), 10, "every state reached: {seen:?}");
}
