//! Soft deployments on the device API: what an offer lets the device defer
//! ([`allowance`]), and the device's report that it deferred
//! ([`report_deferral`]). The count lives in the store
//! ([`DeferralStore`](airlift_store::DeferralStore)); whether a deferral is
//! still allowed — the deployment's `max_deferrals` and `deadline` — is
//! decided here, against the same rule the offer was made with
//! ([`SoftInstall::allowance`](airlift_protocol::soft::SoftInstall::allowance)).

use super::download::cancelled;
use crate::auth::DeviceCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use airlift_protocol::install::InstallPermit;
use airlift_protocol::soft::{
    DeferralAck, DeferralAllowance, DeferralReport, MAX_DEFERRAL_MESSAGE, MAX_DEFERRAL_NUMBER,
};
use airlift_protocol::state::DeploymentStatus;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeferralOutcome, DeploymentRecord};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};

/// What an offer of `deployment` lets `device` defer at `now`: nothing for
/// a forced deployment, while the install is held anyway (window,
/// download-only: the device is not asked before it may install), or once
/// the deferrals or the time ran out.
pub(super) async fn allowance(
    state: &AppState,
    deployment: &DeploymentRecord,
    device: DeviceId,
    now: DateTime<Utc>,
) -> ApiResult<Option<DeferralAllowance>> {
    let Some(soft) = &deployment.install.soft else {
        return Ok(None);
    };
    if deployment.install.permit(now) != InstallPermit::Now {
        return Ok(None);
    }
    let deferred = state
        .store()
        .deferrals(deployment.id, device)
        .await?
        .unwrap_or(0);
    Ok(soft.allowance(deferred, now))
}

/// Report that the device put a soft update off ("not now", from its
/// `defer_command`). Counted once per number, so a repeated report is
/// harmless; refused with 409 `install_now` when the deployment does not
/// (or no longer) allow deferring — the device then installs.
#[utoipa::path(
    post,
    path = "/api/device/v1/deployments/{deployment_id}/deferral",
    tag = "device",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment being deferred")),
    request_body = DeferralReport,
    security(("device_token" = [])),
    responses(
        (status = 200, body = DeferralAck),
        (status = 400, description = "A malformed deployment id, a body that is not a DeferralReport in JSON, a deferral number outside 1–1000000, a message over 256 characters, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
        (status = 404, description = "This device is not in that deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Deferring is not allowed (code `install_now`: a forced deployment, or its deferrals or time ran out), the device is not waiting to install or the install is held by a window or download-only (code `nothing_to_defer`), or the number skips ahead (code `deferral_out_of_order`)", body = airlift_protocol::ErrorBody),
        (status = 410, description = "The deployment was cancelled", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn report_deferral(
    State(state): State<AppState>,
    caller: DeviceCaller,
    ApiPath(deployment_id): ApiPath<DeploymentId>,
    ApiJson(report): ApiJson<DeferralReport>,
) -> ApiResult<Json<DeferralAck>> {
    validate(&report)?;
    let store = state.store();
    let not_in = || ApiError::NotFound("this device is not in that deployment".into());
    let deployment = store.deployment(deployment_id).await?.ok_or_else(not_in)?;
    if matches!(
        deployment.status,
        DeploymentStatus::Cancelled | DeploymentStatus::Aborted
    ) {
        return Err(cancelled());
    }
    let now = Utc::now();
    let deferred = store
        .deferrals(deployment_id, caller.device_id)
        .await?
        .ok_or_else(not_in)?;
    // A repeat of a counted report is acknowledged whatever the policy says
    // now: the device acted on the first answer.
    if report.deferral <= deferred {
        return Ok(Json(DeferralAck {
            deferred,
            counted: false,
        }));
    }
    let soft = deployment
        .install
        .soft
        .as_ref()
        .ok_or_else(|| install_now("the deployment is forced: install now".into()))?;
    if deployment.install.permit(now) != InstallPermit::Now {
        return Err(nothing_to_defer(
            "the install is held by the deployment (window or download-only); nothing to defer"
                .into(),
        ));
    }
    if soft.allowance(deferred, now).is_none() {
        return Err(install_now(format!(
            "no deferral left ({deferred} used; {soft}): install now"
        )));
    }
    let message = history_message(
        report.deferral,
        soft.max_deferrals,
        report.message.as_deref(),
    );
    let outcome = store
        .record_deferral(
            deployment_id,
            caller.device_id,
            report.deferral,
            soft.max_deferrals,
            Some(&message),
            now,
        )
        .await?
        .ok_or_else(not_in)?;
    acknowledge(outcome, deployment_id, caller.device_id)
}

/// The answer for what the store did.
fn acknowledge(
    outcome: DeferralOutcome,
    deployment_id: DeploymentId,
    device_id: DeviceId,
) -> ApiResult<Json<DeferralAck>> {
    match outcome {
        DeferralOutcome::Counted { deferred, counted } => {
            if counted {
                metrics::counter!("airlift_deferrals_total").increment(1);
                tracing::info!(%device_id, %deployment_id, deferred, "the device deferred the install");
            }
            Ok(Json(DeferralAck { deferred, counted }))
        }
        DeferralOutcome::NotWaiting(state) => Err(nothing_to_defer(format!(
            "the device is {state} in this deployment, not waiting to install: nothing to defer"
        ))),
        DeferralOutcome::Exhausted { deferred } => Err(install_now(format!(
            "no deferral left ({deferred} used): install now"
        ))),
        DeferralOutcome::OutOfOrder { deferred } => Err(ApiError::Conflict(
            "deferral_out_of_order",
            format!(
                "{deferred} deferrals are counted: the next report is number {}",
                deferred + 1
            ),
        )),
    }
}

fn install_now(message: String) -> ApiError {
    ApiError::Conflict("install_now", message)
}

fn nothing_to_defer(message: String) -> ApiError {
    ApiError::Conflict("nothing_to_defer", message)
}

fn validate(report: &DeferralReport) -> ApiResult<()> {
    if report.deferral == 0 || report.deferral > MAX_DEFERRAL_NUMBER {
        return Err(ApiError::bad_request(format!(
            "deferral: a number from 1 to {MAX_DEFERRAL_NUMBER}"
        )));
    }
    if report
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_DEFERRAL_MESSAGE)
    {
        return Err(ApiError::bad_request(format!(
            "message: at most {MAX_DEFERRAL_MESSAGE} characters"
        )));
    }
    Ok(())
}

/// The device's history line: "deferred (2 of 3): in a call".
fn history_message(deferral: u32, max: Option<u32>, reason: Option<&str>) -> String {
    let count = match max {
        Some(max) => format!("deferred ({deferral} of {max})"),
        None => format!("deferred ({deferral})"),
    };
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{count}: {reason}"),
        None => count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_line_counts_and_says_why() {
        assert_eq!(
            history_message(2, Some(3), Some(" in a call\n")),
            "deferred (2 of 3): in a call"
        );
        assert_eq!(history_message(7, None, None), "deferred (7)");
        assert_eq!(history_message(1, Some(1), Some("")), "deferred (1 of 1)");
    }

    #[test]
    fn numbers_and_messages_are_bounded() {
        let report = |deferral, message: Option<&str>| DeferralReport {
            deferral,
            message: message.map(str::to_owned),
        };
        assert!(validate(&report(0, None)).is_err());
        assert!(validate(&report(MAX_DEFERRAL_NUMBER + 1, None)).is_err());
        assert!(validate(&report(1, Some(&"x".repeat(MAX_DEFERRAL_MESSAGE + 1)))).is_err());
        assert!(validate(&report(MAX_DEFERRAL_NUMBER, Some("busy"))).is_ok());
    }
}
