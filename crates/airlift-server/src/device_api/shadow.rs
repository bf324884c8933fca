//! The device's side of its shadow: the delta in the check-in answer, and
//! `PUT /api/device/v1/shadow/reported`, through which the agent reports
//! the configuration document it applied (and why applying failed).

use crate::auth::DeviceCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use airlift_protocol::device::MAX_STATUS_MESSAGE;
use airlift_protocol::shadow::{ReportedAck, ReportedShadow, ShadowDelta};
use axum::extract::State;
use axum::Json;
use chrono::Utc;

/// The largest body of a report: a document at the default limit, its
/// reason, and room for JSON escapes. A smaller configured limit is
/// checked on the document itself.
pub(super) const REPORTED_BODY_LIMIT: usize = 256 * 1024;

/// What differs between the device's effective desired document and what
/// it reported; `None` when nothing does (the check-in answer then has no
/// `shadow`). From memory when its documents did not change
/// ([`crate::shadow_cache`]): the device's tags and status and the
/// inventory of this check-in (its type, attributes and installed
/// versions) say which group documents reach it.
pub(super) async fn delta_for(
    state: &AppState,
    device: &crate::rollout::DeviceView<'_>,
) -> ApiResult<Option<ShadowDelta>> {
    let facts = device.facts();
    let (delta, _) = state
        .shadows()
        .delta(state.store(), device.id, &facts)
        .await?;
    Ok(delta.map(|delta| ShadowDelta { delta }))
}

/// Report the configuration document the device applied (the whole
/// document), with the reason if applying the last delta failed; answers
/// what still differs.
#[utoipa::path(
    put,
    path = "/api/device/v1/shadow/reported",
    tag = "device",
    request_body = ReportedShadow,
    security(("device_token" = [])),
    responses(
        (status = 200, body = ReportedAck),
        (status = 400, description = "A body that is not a ReportedShadow in JSON, or a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The document is over the size limit (64 KiB by default) or the top-level key limit (256); the message names the limit", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn report_shadow(
    State(state): State<AppState>,
    caller: DeviceCaller,
    ApiJson(report): ApiJson<ReportedShadow>,
) -> ApiResult<Json<ReportedAck>> {
    let id = caller.device.id;
    if let Some(why) = state.settings().shadow.exceeded_by(&report.document) {
        return Err(ApiError::TooLarge(format!("reported document: {why}")));
    }
    // A reason is for people: its head is enough.
    let failure = report.error.as_deref().map(|reason| {
        let mut end = reason.len().min(MAX_STATUS_MESSAGE);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        &reason[..end]
    });
    if let Some(reason) = failure {
        tracing::info!(device_id = %id, %reason, "the device could not apply its configuration");
    }
    let shadow = state
        .store()
        .record_reported(id, &report.document, failure, Utc::now())
        .await?;
    // The device may check in here before the feed's event arrives.
    state.shadows().forget_device(id);
    Ok(Json(ReportedAck {
        version: shadow.reported.version,
        delta: shadow.delta,
    }))
}
