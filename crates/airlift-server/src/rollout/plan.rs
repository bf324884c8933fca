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
use airlift_protocol::strategy::{Advance, BreakerAction, PhaseDevices, Phased};
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
    let mut plan = Plan::default();
    let strategy = view.strategy;
    let timeout =
        Duration::seconds(i64::try_from(strategy.device_timeout_secs).unwrap_or(i64::MAX));
    // States as they will be once the stuck devices are timed out.
    let mut states: Vec<(DeviceId, UpdateState, Option<u32>)> = Vec::new();
    for device in view.devices {
        let stuck = in_progress(device.state)
            && clock_started(device, view.install, view.now)
                .and_then(|started| started.checked_add_signed(timeout))
                .is_some_and(|deadline| deadline <= view.now);
        if stuck {
            plan.time_out.push(device.device_id);
        }
        let state = if stuck {
            UpdateState::TimedOut
        } else {
            device.state
        };
        states.push((device.device_id, state, device.phase));
    }

    let mut rollout = view.rollout.clone();
    let mut status = view.status;

    // The circuit breaker, over every device admitted so far.
    let admitted: Vec<_> = states
        .iter()
        .filter(|(_, _, phase)| phase.is_some())
        .collect();
    let counted = admitted.iter().filter(|(_, s, _)| !skipped(*s)).count() as u64;
    let failed = admitted.iter().filter(|(_, s, _)| s.is_failure()).count() as u64;
    let new_failures = failed.saturating_sub(rollout.acknowledged_failures);
    if status == DeploymentStatus::Active
        && strategy.failure_threshold.crossed(new_failures, counted)
    {
        let (next_status, verb) = match strategy.on_failure {
            BreakerAction::Pause => (DeploymentStatus::Paused, "paused"),
            BreakerAction::Abort => (DeploymentStatus::Aborted, "aborted"),
        };
        rollout.reason = Some(format!(
            "circuit breaker: {new_failures} of {counted} admitted devices failed, rolled back or timed out (threshold {}); rollout {verb} in phase {} ({})",
            threshold_text(strategy),
            rollout.phase + 1,
            phase_name(strategy, rollout.phase),
        ));
        plan.next = Some((next_status, rollout));
        return plan;
    }
    if status != DeploymentStatus::Active {
        return plan;
    }

    let last = strategy.phases.len().saturating_sub(1) as u32;
    // Admission for the phase under way; after an advance, for the next one too.
    for _ in 0..2 {
        let wanted = admission(view, &states, rollout.phase);
        if !wanted.is_empty() {
            for (device, _, phase) in states.iter_mut() {
                if wanted.contains(device) {
                    *phase = Some(rollout.phase);
                }
            }
            plan.admit_phase = rollout.phase;
            plan.admit.extend(wanted);
        }
        let Some(phase) = strategy.phases.get(rollout.phase as usize) else {
            break;
        };
        // Success of the phase's own devices.
        let own: Vec<_> = states
            .iter()
            .filter(|(_, s, p)| *p == Some(rollout.phase) && !skipped(*s))
            .collect();
        let succeeded = own
            .iter()
            .filter(|(_, s, _)| *s == UpdateState::Success)
            .count() as u64;
        let met = succeeded * 100 >= u64::from(phase.success_percent) * own.len() as u64;
        if !met {
            if rollout.phase_met_at.take().is_some() {
                // A device that joined the phase undid its success: soak again.
                changed(&mut plan, status, &rollout);
            }
            let started = rollout.phase_started_at.unwrap_or(view.now);
            let missed = phase.deadline_secs.is_some_and(|secs| {
                started + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)) <= view.now
            });
            if missed {
                status = DeploymentStatus::Paused;
                rollout.reason = Some(format!(
                    "phase {} ({}) missed its deadline: {succeeded} of {} devices succeeded, {} % needed",
                    rollout.phase + 1,
                    phase.display_name(),
                    own.len(),
                    phase.success_percent
                ));
                changed(&mut plan, status, &rollout);
            }
            break;
        }
        let met_at = *rollout.phase_met_at.get_or_insert(view.now);
        changed(&mut plan, status, &rollout);
        let soaked = met_at + Duration::seconds(i64::try_from(phase.soak_secs).unwrap_or(i64::MAX))
            <= view.now;
        if !soaked || rollout.phase >= last || strategy.advance == Advance::Manual {
            break;
        }
        rollout = advanced(&rollout, view.now);
        changed(&mut plan, status, &rollout);
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
fn admission(
    view: &View<'_>,
    states: &[(DeviceId, UpdateState, Option<u32>)],
    phase: u32,
) -> Vec<DeviceId> {
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
