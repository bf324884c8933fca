use super::download::cancelled;
use crate::auth::DeviceCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::device::{StatusAck, StatusReport, MAX_STATUS_MESSAGE, MAX_STORED_INTEGER};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::DeploymentId;
use axum::extract::State;
use axum::Json;
use chrono::Utc;

/// Report a step of an update. Idempotent; a late report never moves the
/// device backwards; `success` means a healthy, committed boot of the new version.
#[utoipa::path(
    post,
    path = "/api/device/v1/deployments/{deployment_id}/status",
    tag = "device",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment being reported on")),
    request_body = StatusReport,
    security(("device_token" = [])),
    responses(
        (status = 200, body = StatusAck),
        (status = 400, description = "A malformed deployment id, a body that is not a StatusReport in JSON, a state devices do not report, progress done beyond its total, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
        (status = 404, description = "This device is not in that deployment", body = airlift_protocol::ErrorBody),
        (status = 410, description = "The deployment was cancelled", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn report_status(
    State(state): State<AppState>,
    caller: DeviceCaller,
    ApiPath(deployment_id): ApiPath<DeploymentId>,
    ApiJson(report): ApiJson<StatusReport>,
) -> ApiResult<Json<StatusAck>> {
    if !report.state.is_reportable() {
        return Err(ApiError::bad_request(format!(
            "devices cannot report state {}; reportable states are downloading, downloaded, installing, installed, rebooting, success, failure, rolled_back, already_installed",
            report.state
        )));
    }
    let store = state.store();
    let not_in = || ApiError::NotFound("this device is not in that deployment".into());
    let deployment = store.deployment(deployment_id).await?.ok_or_else(not_in)?;
    let current = store
        .device_update(deployment_id, caller.device_id)
        .await?
        .ok_or_else(not_in)?;
    let ended = matches!(
        deployment.status,
        DeploymentStatus::Cancelled | DeploymentStatus::Aborted
    );
    if ended && !current.state.is_final() {
        return Err(cancelled());
    }
    if let Some(progress) = report.progress {
        if progress.total > MAX_STORED_INTEGER {
            return Err(ApiError::bad_request(format!(
                "progress.total: at most {MAX_STORED_INTEGER}"
            )));
        }
        if progress.done > progress.total {
            return Err(ApiError::bad_request(format!(
                "progress: done ({}) is more than total ({})",
                progress.done, progress.total
            )));
        }
    }
    // A repeated state changes nothing worth a history entry; a download's
    // progress is kept (the latest only) for operators to see.
    if current.state == report.state {
        if let (UpdateState::Downloading, Some(progress)) = (report.state, report.progress) {
            store
                .record_progress(deployment_id, caller.device_id, progress, Utc::now())
                .await?;
        }
        return Ok(Json(StatusAck {
            state: current.state,
            applied: false,
        }));
    }
    let message = report.message.as_deref().map(tail);
    let now = Utc::now();
    let outcome = store
        .record_update_state(deployment_id, caller.device_id, report.state, message, now)
        .await?;
    if outcome.applied {
        metrics::counter!("airlift_update_reports_total", "state" => report.state.as_str())
            .increment(1);
        tracing::info!(
            device_id = %caller.device_id,
            deployment_id = %deployment_id,
            state = %outcome.state,
            "device update state"
        );
        if outcome.state.is_final() {
            super::check_in::finish_if_done(&state, deployment_id).await?;
        }
    }
    Ok(Json(StatusAck {
        state: outcome.state,
        applied: outcome.applied,
    }))
}

/// The last [`MAX_STATUS_MESSAGE`] bytes of a message, on a char boundary.
fn tail(message: &str) -> &str {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    let mut start = message.len() - MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(start) {
        start += 1;
    }
    &message[start..]
}

#[cfg(test)]
mod tests {
    use super::tail;
    use airlift_protocol::device::MAX_STATUS_MESSAGE;

    #[test]
    fn long_messages_keep_their_end() {
        let message = format!("{}the end", "é".repeat(MAX_STATUS_MESSAGE));
        let kept = tail(&message);
        assert!(kept.len() <= MAX_STATUS_MESSAGE);
        assert!(kept.ends_with("the end"));
    }
}
