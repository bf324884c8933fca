//! Repairing a rollout through the management API: offering a deployment
//! again to its failed devices (`POST /deployments/{id}/retry`), and
//! resetting a device stuck in one state past its deployment's device
//! timeout (`POST /deployments/{id}/devices/{device_id}/reset`, or
//! `POST /devices/{device_id}/reset` for wherever it is stuck). Both are
//! audited; a reset carries the operator's reason into the audit log and
//! the device's history.

use super::audit;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::repair::{
    ResetRequest, ResetResult, RetryRequest, RetryResult, DEFAULT_RETRY_LIMIT, MAX_REASON,
    MAX_RETRY_LIMIT,
};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::strategy::Strategy;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeploymentRecord, StoreError, RESETTABLE};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};

/// The device timeout of an all-at-once deployment, which names none: the
/// phased default.
pub const DEFAULT_DEVICE_TIMEOUT_SECS: u64 = 6 * 3600;

/// Offer a deployment again to its failed, rolled-back and timed-out
/// devices: each goes back to `pending` (keeping the phase that admitted
/// it) and is offered the update at its next check-in, unless it was
/// retried `limit` times already. A finished deployment becomes active
/// again; the circuit breaker forgets as many acknowledged failures as
/// devices were retried.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/retry",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    request_body = RetryRequest,
    security(("api_token" = [])),
    responses(
        (status = 200, body = RetryResult),
        (status = 400, description = "A malformed deployment id or body", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The deployment was aborted or cancelled", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A limit outside 1–100", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn retry_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Json<RetryResult>> {
    caller.require_operator()?;
    let request: RetryRequest = from_object(body)?;
    let limit = request.limit.unwrap_or(DEFAULT_RETRY_LIMIT);
    if !(1..=MAX_RETRY_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: must be within 1–{MAX_RETRY_LIMIT}"
        )));
    }
    let record = super::deployments::find(&state, id).await?;
    if matches!(
        record.status,
        DeploymentStatus::Aborted | DeploymentStatus::Cancelled
    ) {
        return Err(not_retryable(&record));
    }
    let message = format!("offered again by {} (retry limit {limit})", caller.actor());
    let outcome = state
        .store()
        .retry_failed(id, limit, &message, Utc::now())
        .await
        .map_err(|e| match e {
            // It was aborted or cancelled meanwhile.
            StoreError::Conflict(_) => not_retryable(&record),
            other => other.into(),
        })?;
    state.caches().deployments_changed();
    if !outcome.retried.is_empty() {
        audit(
            &state,
            &caller,
            "deployment.retry",
            id,
            serde_json::json!({"name": record.name, "devices": outcome.retried.len(), "at_limit": outcome.at_limit, "limit": limit, "reopened": outcome.reopened}),
        )
        .await?;
    }
    Ok(Json(RetryResult {
        deployment_id: id,
        retried: outcome.retried,
        at_limit: outcome.at_limit,
        limit,
        reopened: outcome.reopened,
    }))
}

fn not_retryable(record: &DeploymentRecord) -> ApiError {
    ApiError::Conflict(
        "not_retryable",
        format!(
            "deployment is {}: only an active, paused or finished deployment can be retried; create a new deployment instead",
            record.status
        ),
    )
}

/// Reset a device stuck in one state of a deployment (downloading, …,
/// rebooting) for longer than the deployment's device timeout — or sooner
/// with `force` —: it goes back to `pending` and is offered the update
/// again at its next check-in.
/// The reason goes into the audit log and the device's history.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/devices/{device_id}/reset",
    tag = "deployments",
    params(
        ("deployment_id" = uuid::Uuid, Path, description = "The deployment's id"),
        ("device_id" = uuid::Uuid, Path, description = "The device's id"),
    ),
    request_body = ResetRequest,
    security(("api_token" = [])),
    responses(
        (status = 200, body = ResetResult),
        (status = 400, description = "A malformed id or body", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment, or the device is not in it", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The device is not stuck: done, pending, or (without force) in its state for less than the device timeout (the message says until when)", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A reason that is empty or over 1024 bytes", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn reset_deployment_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath((id, device)): ApiPath<(DeploymentId, DeviceId)>,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Json<ResetResult>> {
    caller.require_operator()?;
    let request: ResetRequest = from_object(body)?;
    let reason = valid_reason(&request.reason)?;
    let record = super::deployments::find(&state, id).await?;
    reset(&state, &caller, &record, device, reason, request.force)
        .await
        .map(Json)
}

/// Reset a device stuck in one state of the deployment it is updating in
/// (see `POST /deployments/{deployment_id}/devices/{device_id}/reset`).
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/reset",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    request_body = ResetRequest,
    security(("api_token" = [])),
    responses(
        (status = 200, body = ResetResult),
        (status = 400, description = "A malformed id or body", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The device is not stuck in any deployment (the message says where it stands)", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A reason that is empty or over 1024 bytes", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn reset_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(device): ApiPath<DeviceId>,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Json<ResetResult>> {
    caller.require_operator()?;
    let request: ResetRequest = from_object(body)?;
    let reason = valid_reason(&request.reason)?;
    let store = state.store();
    if store.device(device).await?.is_none() {
        return Err(ApiError::NotFound(format!("no device {device}")));
    }
    let current = store.current_updates(&[device]).await?;
    let Some(current) = current
        .into_iter()
        .find(|c| RESETTABLE.contains(&c.update.state))
    else {
        return Err(ApiError::Conflict(
            "not_stuck",
            format!("device {device} is not updating in any deployment: nothing to reset"),
        ));
    };
    let record = super::deployments::find(&state, current.deployment).await?;
    reset(&state, &caller, &record, device, reason, request.force)
        .await
        .map(Json)
}

fn valid_reason(reason: &str) -> ApiResult<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON || reason.contains('\0') {
        return Err(ApiError::invalid(format!(
            "reason: say why in 1–{MAX_REASON} bytes (it goes into the audit log)"
        )));
    }
    Ok(reason)
}

/// The deployment's device timeout.
pub fn device_timeout(record: &DeploymentRecord) -> Duration {
    let secs = match &record.strategy {
        Strategy::Phased(phased) => phased.device_timeout_secs,
        Strategy::All => DEFAULT_DEVICE_TIMEOUT_SECS,
    };
    Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

/// When a device in `state` since `since` (with download progress last at
/// `progress_at`) counts as stuck: its clock runs from its latest sign of
/// life, as the rollout engine's timeout does.
fn stuck_at(
    since: DateTime<Utc>,
    progress_at: Option<DateTime<Utc>>,
    timeout: Duration,
) -> DateTime<Utc> {
    let alive = progress_at.map_or(since, |p| p.max(since));
    alive
        .checked_add_signed(timeout)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

async fn reset(
    state: &AppState,
    caller: &ApiCaller,
    record: &DeploymentRecord,
    device: DeviceId,
    reason: &str,
    force: bool,
) -> ApiResult<ResetResult> {
    let store = state.store();
    let update = store
        .device_update(record.id, device)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "device {device} is not in deployment {}",
                record.id
            ))
        })?;
    if !RESETTABLE.contains(&update.state) {
        return Err(ApiError::Conflict(
            "not_stuck",
            format!(
                "device {device} is {} in deployment {}: only a device stuck downloading, installing or rebooting can be reset",
                update.state, record.id
            ),
        ));
    }
    let now = Utc::now();
    let timeout = device_timeout(record);
    let stuck = stuck_at(update.updated_at, update.progress_at, timeout);
    if stuck > now && !force {
        return Err(ApiError::Conflict(
            "not_stuck",
            format!(
                "device {device} has been {} for less than the deployment's device timeout ({} s); it may be reset from {} (or now, with force)",
                update.state,
                timeout.num_seconds(),
                stuck.to_rfc3339()
            ),
        ));
    }
    let message = format!("reset by {}: {reason}", caller.actor());
    // With force, whatever it is in now; else only what it reached before
    // the timeout (it may have moved since the look above).
    let forced = stuck > now;
    let since = if force { now } else { now - timeout };
    let outcome = store
        .reset_update(record.id, device, &message, since, now)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(
                "not_stuck",
                format!("device {device} moved on meanwhile; look again"),
            )
        })?;
    state.caches().deployments_changed();
    let stuck_secs = u64::try_from((now - outcome.since).num_seconds()).unwrap_or(0);
    audit(
        state,
        caller,
        "device.reset",
        device,
        serde_json::json!({"deployment_id": record.id, "was": outcome.was, "stuck_secs": stuck_secs, "forced": forced, "reason": reason}),
    )
    .await?;
    tracing::warn!(deployment_id = %record.id, device_id = %device, was = %outcome.was, "device reset by an operator");
    Ok(ResetResult {
        deployment_id: record.id,
        device_id: device,
        was: outcome.was,
        stuck_secs,
        forced,
        state: UpdateState::Pending,
    })
}

/// A request body as a JSON object: serde would also build these requests
/// from an array (`[]` is a `RetryRequest` with every field defaulted).
type JsonObject = serde_json::Map<String, serde_json::Value>;

fn from_object<T: serde::de::DeserializeOwned>(body: JsonObject) -> ApiResult<T> {
    serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_that_moves_is_not_stuck() {
        let since = Utc::now() - Duration::hours(10);
        let timeout = Duration::hours(6);
        assert_eq!(stuck_at(since, None, timeout), since + timeout);
        let moved = Utc::now() - Duration::minutes(1);
        assert_eq!(stuck_at(since, Some(moved), timeout), moved + timeout);
        assert!(stuck_at(since, Some(moved), timeout) > Utc::now());
    }

    #[test]
    fn reasons_are_required_and_bounded() {
        assert!(valid_reason("  ").is_err());
        assert!(valid_reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert!(valid_reason("a\0b").is_err());
        assert_eq!(
            valid_reason(" power supply replaced ").ok(),
            Some("power supply replaced")
        );
    }
}
