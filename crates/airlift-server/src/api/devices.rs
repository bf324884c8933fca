use super::audit;
use crate::auth::ApiCaller;
use crate::device_api::validate_identity;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::auth::{parse_public_key, public_key_pem};
use airlift_protocol::management::{
    Device, DeviceDetail, Page, PreauthorizeRequest, SetTagsRequest,
};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{DeviceFilter, PageRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Filters and paging for listing devices.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// pending, accepted, rejected, preauthorized or decommissioned.
    status: Option<DeviceStatus>,
    /// Reported device type.
    device_type: Option<String>,
    /// Carries this tag.
    tag: Option<String>,
    /// Inventory attributes, `key=value` pairs separated by commas; all must match.
    attributes: Option<String>,
    /// Installed software, `name=version` pairs separated by commas; all must match.
    installed: Option<String>,
    /// 1-based page [default: 1].
    page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    per_page: Option<u32>,
}

fn pairs(field: &str, text: Option<&str>) -> ApiResult<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in text
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ApiError::bad_request(format!("{field}: {pair:?} is not key=value")))?;
        map.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(map)
}

/// List devices with filters and pagination, oldest first.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceQuery), security(("api_token" = [])), responses((status = 200, body = Page<Device>), (status = 400, body = airlift_protocol::ErrorBody)))]
pub async fn list_devices(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<Page<Device>>> {
    let filter = DeviceFilter {
        status: query.status,
        device_type: query.device_type,
        tag: query.tag,
        attributes: pairs("attributes", query.attributes.as_deref())?,
        installed: pairs("installed", query.installed.as_deref())?,
    };
    let page = PageRequest {
        page: query.page.unwrap_or(1).max(1),
        per_page: query.per_page.unwrap_or(100),
    };
    if !(1..=1000).contains(&page.per_page) {
        return Err(ApiError::bad_request("per_page must be between 1 and 1000"));
    }
    let (items, total) = state.store().list_devices(&filter, page).await?;
    Ok(Json(Page {
        items,
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}

/// One device with its inventory and full update history.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "devices", params(("device_id" = String, Path)), security(("api_token" = [])), responses((status = 200, body = DeviceDetail), (status = 404, body = airlift_protocol::ErrorBody)))]
pub async fn get_device(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<DeviceDetail>> {
    let device = find(&state, id).await?;
    let history = state.store().device_history(id).await?;
    Ok(Json(DeviceDetail { device, history }))
}

async fn find(state: &AppState, id: DeviceId) -> ApiResult<Device> {
    state
        .store()
        .device(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))
}

async fn set_status(
    state: &AppState,
    caller: &ApiCaller,
    id: DeviceId,
    status: DeviceStatus,
) -> ApiResult<Json<Device>> {
    caller.require_operator()?;
    let before = find(state, id).await?;
    if before.status == DeviceStatus::Decommissioned && status != DeviceStatus::Decommissioned {
        return Err(ApiError::Conflict(
            "decommissioned",
            "a decommissioned device stays retired; pre-authorise its new key instead".into(),
        ));
    }
    state.store().set_device_status(id, status).await?;
    state.caches().forget_device(id);
    audit(
        state,
        caller,
        &format!("device.{}", verb(status)),
        id,
        serde_json::json!({"from": before.status, "to": status}),
    )
    .await?;
    Ok(Json(Device { status, ..before }))
}

fn verb(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Accepted => "accept",
        DeviceStatus::Rejected => "reject",
        DeviceStatus::Decommissioned => "decommission",
        DeviceStatus::Pending => "pending",
        DeviceStatus::Preauthorized => "preauthorize",
    }
}

/// Accept a device: it gets a token at its next authentication.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/accept", tag = "devices", params(("device_id" = String, Path)), security(("api_token" = [])), responses((status = 200, body = Device), (status = 404, body = airlift_protocol::ErrorBody)))]
pub async fn accept_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Accepted).await
}

/// Reject a device: its authentication is refused from now on.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/reject", tag = "devices", params(("device_id" = String, Path)), security(("api_token" = [])), responses((status = 200, body = Device), (status = 404, body = airlift_protocol::ErrorBody)))]
pub async fn reject_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Rejected).await
}

/// Decommission a device: retired for good; its key no longer works.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/decommission", tag = "devices", params(("device_id" = String, Path)), security(("api_token" = [])), responses((status = 200, body = Device), (status = 404, body = airlift_protocol::ErrorBody)))]
pub async fn decommission_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Decommissioned).await
}

/// Pre-authorise a device by identity and public key: it is accepted on
/// first contact.
#[utoipa::path(post, path = "/api/v1/devices/preauthorize", tag = "devices", request_body = PreauthorizeRequest, security(("api_token" = [])), responses((status = 201, body = Device), (status = 409, description = "A device with this key exists", body = airlift_protocol::ErrorBody)))]
pub async fn preauthorize_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(request): ApiJson<PreauthorizeRequest>,
) -> ApiResult<(StatusCode, Json<Device>)> {
    caller.require_operator()?;
    validate_identity(&request.identity)?;
    validate_tags(&request.tags)?;
    let mut tags = request.tags;
    tags.sort();
    tags.dedup();
    let key =
        parse_public_key(&request.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let device = Device {
        id: DeviceId::new(),
        status: DeviceStatus::Preauthorized,
        identity: request.identity,
        public_key: public_key_pem(&key),
        tags,
        device_type: None,
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: Utc::now(),
        last_check_in: None,
    };
    state
        .store()
        .insert_device(&device)
        .await
        .map_err(|e| match e {
            airlift_store::StoreError::Conflict(_) => ApiError::Conflict(
                "conflict",
                "a device with this public key already exists; accept it instead".into(),
            ),
            other => other.into(),
        })?;
    if !device.tags.is_empty() {
        state
            .store()
            .set_device_tags(device.id, &device.tags)
            .await?;
    }
    audit(
        &state,
        &caller,
        "device.preauthorize",
        device.id,
        serde_json::json!({"identity": device.identity}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(device)))
}

/// Replace a device's tags.
#[utoipa::path(put, path = "/api/v1/devices/{device_id}/tags", tag = "devices", params(("device_id" = String, Path)), request_body = SetTagsRequest, security(("api_token" = [])), responses((status = 200, body = Device), (status = 404, body = airlift_protocol::ErrorBody)))]
pub async fn set_device_tags(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
    ApiJson(request): ApiJson<SetTagsRequest>,
) -> ApiResult<Json<Device>> {
    caller.require_operator()?;
    validate_tags(&request.tags)?;
    let before = find(&state, id).await?;
    let mut tags = request.tags;
    tags.sort();
    tags.dedup();
    state.store().set_device_tags(id, &tags).await?;
    state.caches().forget_device(id);
    audit(
        &state,
        &caller,
        "device.tags",
        id,
        serde_json::json!({"from": before.tags, "to": tags}),
    )
    .await?;
    Ok(Json(Device { tags, ..before }))
}

fn validate_tags(tags: &[String]) -> ApiResult<()> {
    let valid = |t: &String| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if tags.len() > 64 || !tags.iter().all(valid) {
        return Err(ApiError::bad_request(
            "tags: at most 64, each 1–64 characters of A–Z, a–z, 0–9, '-', '_', '.', ':'",
        ));
    }
    Ok(())
}

/// Ask a device to check in now. It hears this at once if it holds a push
/// connection (server-sent events on any instance, or MQTT); otherwise at
/// its next poll, as always.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/check-in", tag = "devices", params(("device_id" = String, Path)), security(("api_token" = [])), responses((status = 202, description = "Asked"), (status = 404, body = airlift_protocol::ErrorBody), (status = 409, description = "The device is not accepted", body = airlift_protocol::ErrorBody)))]
pub async fn request_check_in(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<axum::http::StatusCode> {
    caller.require_operator()?;
    let device = find(&state, id).await?;
    if device.status != DeviceStatus::Accepted {
        return Err(ApiError::Conflict(
            "not_accepted",
            format!(
                "device {id} is {}: only an accepted device checks in",
                device.status
            ),
        ));
    }
    state.store().request_check_in(id).await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}
