//! Phased rollouts through the management API: the checks a phased
//! deployment must pass before it is stored, its progress per phase, and
//! the operator's controls — advance, pause, resume, abort.

use super::audit;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::rollout::plan::advanced;
use crate::state::AppState;
use airlift_protocol::management::{Deployment, Device};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::{PhaseDevices, PhaseProgress, RolloutProgress, Strategy};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeploymentRecord, RolloutState, UpdateCount};
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use std::collections::BTreeSet;

/// Checks a strategy against the devices its target matches now: the
/// strategy's own rules, then canaries that are in the target.
pub(super) async fn validate_strategy(
    state: &AppState,
    strategy: &Strategy,
    devices: &[Device],
) -> ApiResult<()> {
    let Strategy::Phased(phased) = strategy else {
        return Ok(());
    };
    phased
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(package) = phased.rollback_package {
        if state
            .caches()
            .package(state.store(), package)
            .await?
            .is_none()
        {
            return Err(ApiError::invalid(format!(
                "strategy.rollback_package: no package {package}"
            )));
        }
    }
    let in_target: BTreeSet<DeviceId> = devices.iter().map(|d| d.id).collect();
    for (i, phase) in phased.phases.iter().enumerate() {
        match &phase.devices {
            PhaseDevices::Devices(ids) => {
                let outside: Vec<String> = ids
                    .iter()
                    .filter(|id| !in_target.contains(id))
                    .map(ToString::to_string)
                    .collect();
                if !outside.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "strategy.phases[{i}].devices.devices: not in the target: {}",
                        outside.join(", ")
                    )));
                }
            }
            PhaseDevices::Tag(tag) => {
                let tagged = crate::rollout::engine::tagged(state.store(), tag).await?;
                if !tagged.iter().any(|d| in_target.contains(&d.id)) {
                    return Err(ApiError::invalid(format!(
                        "strategy.phases[{i}].devices.tag: no accepted device of the target carries tag {tag:?}"
                    )));
                }
            }
            PhaseDevices::Percent(_) => {}
        }
    }
    Ok(())
}

/// Refuses a deployment whose devices are still updating in another open
/// deployment: two rollouts racing for one device would fight over it.
pub(super) async fn ensure_no_overlap(state: &AppState, devices: &[Device]) -> ApiResult<()> {
    let wanted: BTreeSet<DeviceId> = devices.iter().map(|d| d.id).collect();
    for other in state.store().open_deployments().await? {
        let busy = state
            .store()
            .deployment_devices(other.id)
            .await?
            .into_iter()
            .filter(|d| !d.state.is_final() && wanted.contains(&d.device_id))
            .count();
        if busy > 0 {
            return Err(ApiError::Conflict(
                "devices_busy",
                format!(
                    "target: {busy} of its devices are still in {} deployment {} ({:?}); wait for it to finish, or cancel it first",
                    other.status, other.id, other.name
                ),
            ));
        }
    }
    Ok(())
}

/// Where a phased deployment's rollout stands, per phase, from its devices
/// counted by state and admitting phase.
pub(super) fn progress(
    record: &DeploymentRecord,
    counts: &[UpdateCount],
) -> Option<RolloutProgress> {
    let Strategy::Phased(phased) = &record.strategy else {
        return None;
    };
    let phases = phased
        .phases
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let mut progress = PhaseProgress {
                name: phase.display_name(),
                admitted: 0,
                succeeded: 0,
                failed: 0,
                skipped: 0,
            };
            for count in counts.iter().filter(|c| c.phase == Some(i as u32)) {
                progress.admitted += count.devices;
                match count.state {
                    UpdateState::Success => progress.succeeded += count.devices,
                    state if state.is_failure() => progress.failed += count.devices,
                    UpdateState::Incompatible
                    | UpdateState::AlreadyInstalled
                    | UpdateState::Cancelled => progress.skipped += count.devices,
                    _ => {}
                }
            }
            progress
        })
        .collect();
    Some(RolloutProgress {
        phase: record.rollout.phase as usize,
        phase_started_at: record.rollout.phase_started_at.unwrap_or(record.created_at),
        phase_met_at: record.rollout.phase_met_at,
        reason: record.rollout.reason.clone(),
        phases,
    })
}

/// An operator's move on a phased rollout.
#[derive(Debug, Clone, Copy)]
enum Control {
    Advance,
    Pause,
    Resume,
    Abort,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Advance => "advance",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Abort => "abort",
        }
    }
}

async fn control(
    state: &AppState,
    caller: &ApiCaller,
    id: DeploymentId,
    control: Control,
) -> ApiResult<Json<Deployment>> {
    caller.require_operator()?;
    let store = state.store();
    let record = store
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no deployment {id}")))?;
    let Strategy::Phased(phased) = &record.strategy else {
        return Err(ApiError::Conflict(
            "not_phased",
            format!(
                "deployment {id} rolls out to all devices at once; only phased deployments can {}",
                control.name()
            ),
        ));
    };
    let now = Utc::now();
    let refuse = |why: String| Err(ApiError::Conflict("invalid_state", why));
    let rollout = &record.rollout;
    let (status, next) = match (control, record.status) {
        (Control::Advance, DeploymentStatus::Active) => {
            if rollout.phase as usize + 1 >= phased.phases.len() {
                return refuse(format!(
                    "the rollout is in its last phase ({}); there is nothing to advance to",
                    phased.phases.len()
                ));
            }
            (DeploymentStatus::Active, advanced(rollout, now))
        }
        (Control::Pause, DeploymentStatus::Active) => (
            DeploymentStatus::Paused,
            RolloutState {
                reason: Some(format!("paused by {}", caller.name)),
                ..rollout.clone()
            },
        ),
        (Control::Resume, DeploymentStatus::Paused) => {
            // The failures seen so far are acknowledged: the breaker trips
            // again only on new ones. A missed deadline starts again now.
            let devices = store.deployment_devices(id).await?;
            let failed = devices
                .iter()
                .filter(|d| d.phase.is_some() && d.state.is_failure())
                .count() as u64;
            (
                DeploymentStatus::Active,
                RolloutState {
                    reason: None,
                    acknowledged_failures: failed,
                    phase_started_at: Some(now),
                    ..rollout.clone()
                },
            )
        }
        (Control::Abort, DeploymentStatus::Active | DeploymentStatus::Paused) => (
            DeploymentStatus::Aborted,
            RolloutState {
                reason: Some(format!("aborted by {}", caller.name)),
                ..rollout.clone()
            },
        ),
        (control, status) => {
            return refuse(format!(
                "deployment {id} is {status}; it cannot {} now",
                control.name()
            ))
        }
    };
    if !store
        .update_rollout(id, record.status, status, &next, now)
        .await?
    {
        return refuse(format!(
            "deployment {id} changed meanwhile; look at it again"
        ));
    }
    state.caches().deployments_changed();
    audit(
        state,
        caller,
        &format!("deployment.{}", control.name()),
        id,
        serde_json::json!({"phase": next.phase, "status": status}),
    )
    .await?;
    tracing::info!(deployment_id = %id, action = control.name(), %status, phase = next.phase + 1, "rollout control");
    let record = store
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no deployment {id}")))?;
    Ok(Json(super::deployments::with_counts(state, record).await?))
}

/// Start the next phase now, whatever the current one's conditions.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/advance",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not phased, not active, or in its last phase, or changed meanwhile", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn advance_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    control(&state, &caller, id, Control::Advance).await
}

/// Stop admitting devices; devices already updating finish.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/pause",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not phased, or not active, or changed meanwhile", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn pause_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    control(&state, &caller, id, Control::Pause).await
}

/// Go on after a pause; the failures seen so far no longer count for the
/// circuit breaker.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/resume",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not phased, or not paused, or changed meanwhile", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn resume_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    control(&state, &caller, id, Control::Resume).await
}

/// End the rollout: devices not yet done are never offered it.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/abort",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not phased, or neither active nor paused, or changed meanwhile", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn abort_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    control(&state, &caller, id, Control::Abort).await
}
