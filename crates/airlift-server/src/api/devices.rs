use super::audit;
use crate::auth::ApiCaller;
use crate::device_api::validate_identity;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::auth::{parse_public_key, public_key_pem};
use airlift_protocol::device::{MAX_DEVICE_TYPE, MAX_INVENTORY_NAME, MAX_INVENTORY_VALUE};
use airlift_protocol::management::{
    Device, DeviceDetail, Page, PreauthorizeRequest, SetTagsRequest, MAX_FILTER_PAIRS, MAX_TAG,
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// pending, accepted, rejected, preauthorized or decommissioned.
    status: Option<DeviceStatus>,
    /// Reported device type (at most 128 bytes).
    #[param(max_length = 128, pattern = r"^[^\x00]*$")]
    device_type: Option<String>,
    /// Carries this tag (at most 64 bytes).
    #[param(max_length = 64, pattern = r"^[^\x00]*$")]
    tag: Option<String>,
    /// Inventory attributes, `key=value` pairs separated by commas; all must
    /// match. At most 16 pairs; names of 1–128 bytes, values up to 1024.
    #[param(
        pattern = r"^,*(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,+){0,15}(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,*)?$"
    )]
    attributes: Option<String>,
    /// Installed software, `name=version` pairs separated by commas; all
    /// must match. At most 16 pairs; names of 1–128 bytes, values up to 1024.
    #[param(
        pattern = r"^,*(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,+){0,15}(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,*)?$"
    )]
    installed: Option<String>,
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
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
        // Checked as it grows, so a hostile list is refused before it is read whole.
        check_filter_pairs(field, &map)?;
    }
    Ok(map)
}

/// Refuses a filter on inventory maps that the database would take long to
/// answer: each pair is a join, and a few hundred of them kept PostgreSQL
/// busy for minutes. The sizes are those a device may report.
pub(crate) fn check_filter_pairs(field: &str, pairs: &BTreeMap<String, String>) -> ApiResult<()> {
    if pairs.len() > MAX_FILTER_PAIRS {
        return Err(ApiError::bad_request(format!(
            "{field}: at most {MAX_FILTER_PAIRS} pairs"
        )));
    }
    if let Some((key, _)) = pairs.iter().find(|(key, value)| {
        key.is_empty() || key.len() > MAX_INVENTORY_NAME || value.len() > MAX_INVENTORY_VALUE
    }) {
        let shown: String = key.chars().take(32).collect();
        return Err(ApiError::bad_request(format!(
            "{field}: {shown:?}: names are 1–{MAX_INVENTORY_NAME} bytes, values up to {MAX_INVENTORY_VALUE} bytes"
        )));
    }
    Ok(())
}

/// Refuses a single-valued filter longer than anything stored.
fn check_filter_text(field: &str, text: Option<&str>, max: usize) -> ApiResult<()> {
    match text {
        Some(text) if text.len() > max => Err(ApiError::bad_request(format!(
            "{field}: at most {max} bytes"
        ))),
        _ => Ok(()),
    }
}

/// List devices with filters and pagination, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    params(DeviceQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<Device>),
        (status = 400, description = "A malformed or unknown query parameter, a filter that is not key=value pairs or holds more than 16 of them, a value too long or with a NUL character, per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_devices(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<Page<Device>>> {
    check_filter_text("device_type", query.device_type.as_deref(), MAX_DEVICE_TYPE)?;
    check_filter_text("tag", query.tag.as_deref(), MAX_TAG)?;
    let filter = DeviceFilter {
        status: query.status,
        device_type: query.device_type,
        tag: query.tag,
        attributes: pairs("attributes", query.attributes.as_deref())?,
        installed: pairs("installed", query.installed.as_deref())?,
    };
    let page = PageRequest {
        page: query.page.unwrap_or(1),
        per_page: query.per_page.unwrap_or(100),
    };
    if page.page == 0 {
        return Err(ApiError::bad_request("page is 1-based: at least 1"));
    }
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
#[utoipa::path(
    get,
    path = "/api/v1/devices/{device_id}",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = DeviceDetail),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/accept",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Device),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The device is decommissioned: it stays retired", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn accept_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Accepted).await
}

/// Reject a device: its authentication is refused from now on.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/reject",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Device),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The device is decommissioned: it stays retired", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn reject_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Rejected).await
}

/// Decommission a device: retired for good; its key no longer works.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/decommission",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Device),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn decommission_device(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<Device>> {
    set_status(&state, &caller, id, DeviceStatus::Decommissioned).await
}

/// Pre-authorise a device by identity and public key: it is accepted on
/// first contact.
#[utoipa::path(
    post,
    path = "/api/v1/devices/preauthorize",
    tag = "devices",
    request_body = PreauthorizeRequest,
    security(("api_token" = [])),
    responses(
        (status = 201, body = Device),
        (status = 400, description = "A body that is not a PreauthorizeRequest in JSON, an empty or oversized identity, invalid tags, a public key that is not Ed25519 SPKI PEM, a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 409, description = "A device with this key exists", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
    )
)]
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
#[utoipa::path(
    put,
    path = "/api/v1/devices/{device_id}/tags",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    request_body = SetTagsRequest,
    security(("api_token" = [])),
    responses(
        (status = 200, body = Device),
        (status = 400, description = "A malformed device id; a body that is not a SetTagsRequest in JSON; more than 64 tags, or a tag that is not 1–64 characters of A–Z, a–z, 0–9, '-', '_', '.', ':'", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
    )
)]
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
            && t.len() <= MAX_TAG
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
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/check-in",
    tag = "devices",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 202, description = "Asked"),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The device is not accepted", body = airlift_protocol::ErrorBody),
    )
)]
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
