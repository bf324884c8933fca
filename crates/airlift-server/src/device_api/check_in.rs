use crate::auth::DeviceCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::rollout;
use crate::state::AppState;
use airlift_protocol::device::{
    download_path, CheckInResponse, Inventory, UpdateOffer, MAX_DEVICE_TYPE, MAX_INVENTORY_ENTRIES,
    MAX_INVENTORY_NAME, MAX_INVENTORY_VALUE, MAX_STORED_INTEGER,
};
use airlift_protocol::state::UpdateState;
use airlift_protocol::strategy::Strategy;
use airlift_store::{DeploymentRecord, PackageRecord};
use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};

/// Report inventory; get the poll interval and, if there is one, an update offer.
#[utoipa::path(
    post,
    path = "/api/device/v1/check-in",
    tag = "device",
    request_body = Inventory,
    security(("device_token" = [])),
    responses(
        (status = 200, body = CheckInResponse),
        (status = 400, description = "A body that is not an Inventory in JSON, a device type not of 1–128 bytes, more than 256 entries in a map or names and values too long, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No device token, an invalid or expired one, or the device is no longer accepted: authenticate again", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn check_in(
    State(state): State<AppState>,
    caller: DeviceCaller,
    ApiJson(inventory): ApiJson<Inventory>,
) -> ApiResult<Json<CheckInResponse>> {
    validate_inventory(&inventory)?;
    let now = Utc::now();
    let store = state.store();
    let caches = state.caches();
    let known = caller.device;
    let id = known.id;
    let digest = airlift_store::inventory_digest(&inventory)?;
    if known.inventory_sha256 == Some(digest) {
        // Only the time moves: written behind.
        caches.queue_check_in(id, digest, now);
    } else {
        caches.unqueue_check_in(id);
        store.record_check_in(id, &inventory, now).await?;
        caches.forget_device(id);
    }
    metrics::counter!("airlift_check_ins_total").increment(1);
    caches.count_check_in(now);

    let device = rollout::DeviceView::checking_in(id, known.status, &known.tags, &inventory);
    let mut update = find_offer(&state, &device, now).await?;
    if let Some(offer) = update.as_mut() {
        super::stamp(&state, offer).await?;
    }
    Ok(Json(CheckInResponse {
        poll_interval_secs: state.settings().poll_interval.as_secs(),
        update,
        shadow: super::shadow::delta_for(&state, &device).await?,
    }))
}

/// The oldest active deployment with work for this device, if any, bringing
/// the device's state in each deployment up to date on the way.
async fn find_offer(
    state: &AppState,
    device: &rollout::DeviceView<'_>,
    now: DateTime<Utc>,
) -> ApiResult<Option<UpdateOffer>> {
    let store = state.store();
    let caches = state.caches();
    for deployment in caches.active_deployments(store).await?.iter() {
        if caches.final_state(deployment.id, device.id).is_some() {
            continue;
        }
        let current = store.device_update(deployment.id, device.id).await?;
        if let Some(update) = &current {
            caches.remember_final(deployment.id, device.id, update.state);
        }
        let Some(cached) = caches.package(store, deployment.package_id).await? else {
            continue;
        };
        let (package, manifest) = (&cached.record, &cached.manifest);
        let admitted = current.as_ref().is_some_and(|u| u.phase.is_some());
        let update_state = match current {
            Some(update) => update.state,
            // A dynamic deployment takes in a device that joined its
            // target later, until it ends.
            None if deployment.takes_in_devices(now)
                && rollout::target_matches(&deployment.target, device) =>
            {
                let (initial, reason) = rollout::initial_state(manifest, device);
                store
                    .add_device_to_deployment(
                        deployment.id,
                        device.id,
                        initial,
                        reason.as_deref(),
                        now,
                    )
                    .await?
                    .state
            }
            None => continue,
        };
        if update_state.is_final() {
            continue;
        }
        // A phased rollout waits for its engine to admit the device.
        if matches!(deployment.strategy, Strategy::Phased(_)) && !admitted {
            continue;
        }
        if update_state == UpdateState::Pending {
            if rollout::runs_package(&package.provides, device) {
                store
                    .decide_update_state(
                        deployment.id,
                        device.id,
                        UpdateState::AlreadyInstalled,
                        None,
                        now,
                    )
                    .await?;
                finish_if_done(state, deployment.id).await?;
                continue;
            }
            let (fresh, reason) = rollout::initial_state(manifest, device);
            if fresh == UpdateState::Incompatible {
                store
                    .decide_update_state(deployment.id, device.id, fresh, reason.as_deref(), now)
                    .await?;
                finish_if_done(state, deployment.id).await?;
                continue;
            }
        }
        let deferral = super::deferral::allowance(state, deployment, device.id, now).await?;
        return Ok(Some(offer(deployment, package, deferral, now)));
    }
    Ok(None)
}

/// Marks the deployment finished if every device is done, and tells the
/// cache of active deployments. A phased rollout is left to its engine,
/// which finishes it at its next tick after the circuit breaker has seen
/// the last reports: finished here first, a rollout whose every device
/// failed would end "finished" instead of tripping its breaker.
pub(crate) async fn finish_if_done(
    state: &AppState,
    deployment: airlift_protocol::DeploymentId,
) -> ApiResult<()> {
    let phased = state
        .caches()
        .active_deployments(state.store())
        .await?
        .iter()
        .any(|d| d.id == deployment && matches!(d.strategy, Strategy::Phased(_)));
    if phased {
        return Ok(());
    }
    if state
        .store()
        .finish_deployment_if_done(deployment, Utc::now())
        .await?
    {
        state.caches().deployments_changed();
    }
    Ok(())
}

fn offer(
    deployment: &DeploymentRecord,
    package: &PackageRecord,
    deferral: Option<airlift_protocol::soft::DeferralAllowance>,
    now: DateTime<Utc>,
) -> UpdateOffer {
    UpdateOffer {
        deployment_id: deployment.id,
        package_id: package.package.id,
        name: package.package.name.clone(),
        version: package.package.version.clone(),
        signed_manifest: STANDARD.encode(&package.head),
        download_path: download_path(deployment.id),
        size: package.package.size,
        sha256: package.package.sha256.clone(),
        install: deployment.install.permit(now),
        deferral,
        timestamp: None,
    }
}

fn validate_inventory(inventory: &Inventory) -> ApiResult<()> {
    if inventory.device_type.is_empty() || inventory.device_type.len() > MAX_DEVICE_TYPE {
        return Err(ApiError::bad_request(format!(
            "device_type must be 1–{MAX_DEVICE_TYPE} bytes"
        )));
    }
    let too_big = |map: &std::collections::BTreeMap<String, String>| {
        map.len() > MAX_INVENTORY_ENTRIES
            || map.iter().any(|(k, v)| {
                k.is_empty() || k.len() > MAX_INVENTORY_NAME || v.len() > MAX_INVENTORY_VALUE
            })
    };
    if inventory.security_version > MAX_STORED_INTEGER {
        return Err(ApiError::bad_request(format!(
            "security_version: at most {MAX_STORED_INTEGER}"
        )));
    }
    if too_big(&inventory.installed) || too_big(&inventory.attributes) {
        return Err(ApiError::bad_request(format!(
            "installed and attributes: at most {MAX_INVENTORY_ENTRIES} entries each, names of 1–{MAX_INVENTORY_NAME} bytes, values up to {MAX_INVENTORY_VALUE} bytes"
        )));
    }
    Ok(())
}
