//! What a phased rollout does next, decided without I/O: which devices time
//! out, which are admitted, whether the circuit breaker trips, whether the
//! phase advances or misses its deadline. [`plan`] takes a [`View`] of the
//! deployment at an instant and returns a [`Plan`]; the
//! [engine](super::engine) reads the view from the store, carries the plan
//! out, and hands in the time — so tests can run days of soak in
//! milliseconds.
//!
//! Admission is persisted (each device row remembers the phase that
//! admitted it), and devices are taken in a stable order — a hash of the
//! deployment and the device — so a phase is the same set on every look
//! and after any restart.

use airlift_protocol::install::{InstallPermit, InstallPolicy};
use airlift_protocol::management::DeviceUpdate;
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{Advance, BreakerAction, Phase, PhaseDevices, Phased};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::RolloutState;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// A deployment's rollout at one instant.
#[derive(Debug)]
pub struct View<'a> {
    pub deployment: DeploymentId,
    pub strategy: &'a Phased,
    /// When its devices may install.
    pub install: &'a InstallPolicy,
    /// `active` or `paused`.
    pub status: DeploymentStatus,
    /// Where it stands.
    pub rollout: &'a RolloutState,
    /// Every device of the deployment (its target, as known).
    pub devices: &'a [DeviceUpdate],
    /// For each phase, the canaries it names that are in the target (empty
    /// for percentage phases).
    pub canaries: &'a [BTreeSet<DeviceId>],
    /// Now.
    pub now: DateTime<Utc>,
}

/// What to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Devices stuck past the device timeout: mark them `timed_out`.
    pub time_out: Vec<DeviceId>,
    /// Devices to admit, and the phase admitting them.
    pub admit: Vec<DeviceId>,
    /// The phase that admits them.
    pub admit_phase: u32,
    /// The deployment's new status and rollout state, if they change.
    pub next: Option<(DeploymentStatus, RolloutState)>,
}

/// States in which a device is working on the update (and can get stuck).
fn in_progress(state: UpdateState) -> bool {
    !state.is_final() && state != UpdateState::Pending
}

/// When the device's clock for the device timeout started: when it reached
/// its state, or last reported download progress (a download still moving
/// is not stuck), or for a device waiting at `downloaded` for its
/// deployment's install window, when the window last opened. `None` while
/// the wait is the deployment's (outside the window, or download-only and
/// not released): such a device is not stuck.
fn clock_started(
    device: &DeviceUpdate,
    install: &InstallPolicy,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if device.state == UpdateState::Downloading {
        return Some(
            device
                .progress_at
                .map_or(device.updated_at, |at| at.max(device.updated_at)),
        );
    }
    if device.state != UpdateState::Downloaded {
        return Some(device.updated_at);
    }
    if install.permit(now) != InstallPermit::Now {
        return None;
    }
    Some(match &install.window {
        Some(window) => device.updated_at.max(window.last_opened(now)),
        None => device.updated_at,
    })
}

/// Devices that do not count for shares: the package does not fit, they run
/// it already, or an operator cancelled them.
fn skipped(state: UpdateState) -> bool {
    matches!(
        state,
        UpdateState::Incompatible | UpdateState::AlreadyInstalled | UpdateState::Cancelled
    )
}

/// A device's place in the deployment's stable order.
pub fn rank(deployment: DeploymentId, device: DeviceId) -> u64 {
    let digest = Sha256::new()
        .chain_update(deployment.to_string().as_bytes())
        .chain_update(b"/")
        .chain_update(device.to_string().as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Decides what the rollout does at `view.now`.
pub fn plan(view: &View<'_>) -> Plan {
    let (time_out, mut states) = time_out_stuck(view);
    let mut plan = Plan {
        time_out,
        ..Plan::default()
    };
    if let Some(tripped) = trip_breaker(view, &states) {
        plan.next = Some(tripped);
        return plan;
    }
    if view.status != DeploymentStatus::Active {
        return plan;
    }
    let mut rollout = view.rollout.clone();
    // Admission for the phase under way; after an advance, for the next one too.
    for _ in 0..2 {
        admit(view, &mut states, rollout.phase, &mut plan);
        let Some(phase) = view.strategy.phases.get(rollout.phase as usize) else {
            break;
        };
        let tally = Tally::of(&states, rollout.phase);
        if !tally.met(phase) {
            phase_unmet(view, phase, &tally, &mut rollout, &mut plan);
            break;
        }
        if !phase_met(view, phase, &mut rollout, &mut plan) {
            break;
        }
        rollout = advanced(&rollout, view.now);
        changed(&mut plan, DeploymentStatus::Active, &rollout);
    }
    // Nothing to write if nothing changed.
    if plan
        .next
        .as_ref()
        .is_some_and(|(s, r)| *s == view.status && r == view.rollout)
    {
        plan.next = None;
    }
    plan
}

/// A device's id, its state, and the phase that admitted it (if one has).
type Row = (DeviceId, UpdateState, Option<u32>);

/// Finds the devices stuck past the device timeout, and returns them with
/// every device's row as it will be once they are timed out.
fn time_out_stuck(view: &View<'_>) -> (Vec<DeviceId>, Vec<Row>) {
    let timeout =
        Duration::seconds(i64::try_from(view.strategy.device_timeout_secs).unwrap_or(i64::MAX));
    let mut time_out = Vec::new();
    let mut states = Vec::with_capacity(view.devices.len());
    for device in view.devices {
        let stuck = in_progress(device.state)
            && clock_started(device, view.install, view.now)
                .and_then(|started| started.checked_add_signed(timeout))
                .is_some_and(|deadline| deadline <= view.now);
        if stuck {
            time_out.push(device.device_id);
        }
        let state = if stuck {
            UpdateState::TimedOut
        } else {
            device.state
        };
        states.push((device.device_id, state, device.phase));
    }
    (time_out, states)
}

/// The circuit breaker, over every device admitted so far: the
/// deployment's new status and rollout state if an active rollout trips it.
fn trip_breaker(view: &View<'_>, states: &[Row]) -> Option<(DeploymentStatus, RolloutState)> {
    let strategy = view.strategy;
    let admitted: Vec<_> = states
        .iter()
        .filter(|(_, _, phase)| phase.is_some())
        .collect();
    let counted = admitted.iter().filter(|(_, s, _)| !skipped(*s)).count() as u64;
    let failed = admitted.iter().filter(|(_, s, _)| s.is_failure()).count() as u64;
    let new_failures = failed.saturating_sub(view.rollout.acknowledged_failures);
    if view.status != DeploymentStatus::Active
        || !strategy.failure_threshold.crossed(new_failures, counted)
    {
        return None;
    }
    let (next_status, verb) = match strategy.on_failure {
        BreakerAction::Pause => (DeploymentStatus::Paused, "paused"),
        BreakerAction::Abort => (DeploymentStatus::Aborted, "aborted"),
        // The engine aborts it and starts its rollback (`rollback.rs`).
        BreakerAction::Rollback => (DeploymentStatus::Aborted, "stopped"),
    };
    let mut rollout = view.rollout.clone();
    rollout.reason = Some(format!(
        "circuit breaker: {new_failures} of {counted} admitted devices failed, rolled back or timed out (threshold {}); rollout {verb} in phase {} ({})",
        threshold_text(strategy),
        rollout.phase + 1,
        phase_name(strategy, rollout.phase),
    ));
    Some((next_status, rollout))
}

/// Admits the devices phase `phase` wants and has not admitted yet: into
/// the plan, and into `states` so that the phase's success counts them.
fn admit(view: &View<'_>, states: &mut [Row], phase: u32, plan: &mut Plan) {
    let wanted = admission(view, states, phase);
    if wanted.is_empty() {
        return;
    }
    for (device, _, admitted_by) in states.iter_mut() {
        if wanted.contains(device) {
            *admitted_by = Some(phase);
        }
    }
    plan.admit_phase = phase;
    plan.admit.extend(wanted);
}

/// How a phase's own devices (those that count for shares) are doing.
#[derive(Debug)]
struct Tally {
    devices: u64,
    succeeded: u64,
}

impl Tally {
    fn of(states: &[Row], phase: u32) -> Tally {
        let own: Vec<_> = states
            .iter()
            .filter(|(_, s, p)| *p == Some(phase) && !skipped(*s))
            .collect();
        let succeeded = own
            .iter()
            .filter(|(_, s, _)| *s == UpdateState::Success)
            .count() as u64;
        Tally {
            devices: own.len() as u64,
            succeeded,
        }
    }

    /// Whether the phase's success share is reached.
    fn met(&self, phase: &Phase) -> bool {
        self.succeeded * 100 >= u64::from(phase.success_percent) * self.devices
    }
}

/// The phase under way has not reached its success share: if it had (a
/// device that joined it undid its success), it soaks again once it does;
/// past its deadline, the rollout pauses.
fn phase_unmet(
    view: &View<'_>,
    phase: &Phase,
    tally: &Tally,
    rollout: &mut RolloutState,
    plan: &mut Plan,
) {
    if rollout.phase_met_at.take().is_some() {
        changed(plan, DeploymentStatus::Active, rollout);
    }
    let started = rollout.phase_started_at.unwrap_or(view.now);
    let missed = phase.deadline_secs.is_some_and(|secs| {
        started + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)) <= view.now
    });
    if missed {
        rollout.reason = Some(format!(
            "phase {} ({}) missed its deadline: {} of {} devices succeeded, {} % needed",
            rollout.phase + 1,
            phase.display_name(),
            tally.succeeded,
            tally.devices,
            phase.success_percent
        ));
        changed(plan, DeploymentStatus::Paused, rollout);
    }
}

/// The phase under way has reached its success share: its soak starts if it
/// had not. Returns whether the rollout now moves on to the next phase —
/// soaked, not the last phase, and advancing automatically.
fn phase_met(view: &View<'_>, phase: &Phase, rollout: &mut RolloutState, plan: &mut Plan) -> bool {
    let met_at = *rollout.phase_met_at.get_or_insert(view.now);
    changed(plan, DeploymentStatus::Active, rollout);
    let soaked =
        met_at + Duration::seconds(i64::try_from(phase.soak_secs).unwrap_or(i64::MAX)) <= view.now;
    let last = view.strategy.phases.len().saturating_sub(1) as u32;
    soaked && rollout.phase < last && view.strategy.advance != Advance::Manual
}

/// The rollout moved on to the next phase at `now`.
pub fn advanced(rollout: &RolloutState, now: DateTime<Utc>) -> RolloutState {
    RolloutState {
        phase: rollout.phase + 1,
        phase_started_at: Some(now),
        phase_met_at: None,
        reason: None,
        acknowledged_failures: rollout.acknowledged_failures,
    }
}

fn changed(plan: &mut Plan, status: DeploymentStatus, rollout: &RolloutState) {
    plan.next = Some((status, rollout.clone()));
}

/// The devices phase `phase` admits that are not admitted yet, in order.
fn admission(view: &View<'_>, states: &[Row], phase: u32) -> Vec<DeviceId> {
    let upto = (phase as usize + 1).min(view.strategy.phases.len());
    let phases = &view.strategy.phases[..upto];
    let canaries: BTreeSet<DeviceId> = phases
        .iter()
        .enumerate()
        .filter(|(_, p)| !matches!(p.devices, PhaseDevices::Percent(_)))
        .flat_map(|(i, _)| view.canaries.get(i).into_iter().flatten().copied())
        .collect();
    let percent = phases
        .iter()
        .filter_map(|p| match p.devices {
            PhaseDevices::Percent(p) => Some(u64::from(p)),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut wanted: Vec<DeviceId> = states
        .iter()
        .filter(|(id, _, admitted)| admitted.is_none() && canaries.contains(id))
        .map(|(id, _, _)| *id)
        .collect();
    let quota = (percent * states.len() as u64 / 100) as usize;
    let already = states.iter().filter(|(_, _, p)| p.is_some()).count() + wanted.len();
    if quota > already {
        let mut candidates: Vec<(u64, DeviceId)> = states
            .iter()
            .filter(|(id, _, admitted)| admitted.is_none() && !canaries.contains(id))
            .map(|(id, _, _)| (rank(view.deployment, *id), *id))
            .collect();
        candidates.sort_unstable();
        wanted.extend(
            candidates
                .into_iter()
                .take(quota - already)
                .map(|(_, id)| id),
        );
    }
    wanted
}

fn phase_name(strategy: &Phased, phase: u32) -> String {
    strategy
        .phases
        .get(phase as usize)
        .map(|p| p.display_name())
        .unwrap_or_default()
}

fn threshold_text(strategy: &Phased) -> String {
    match strategy.failure_threshold {
        airlift_protocol::strategy::FailureThreshold::Percent(p) => format!("more than {p} %"),
        airlift_protocol::strategy::FailureThreshold::Count(c) => format!("more than {c}"),
    }
}
