use super::audit;
use crate::auth::ApiCaller;
use crate::device_api::validate_identity;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::auth::{parse_public_key, public_key_pem};
use airlift_protocol::device::{
    MAX_DEVICE_TYPE, MAX_INVENTORY_NAME, MAX_INVENTORY_VALUE, MAX_STATUS_MESSAGE,
};
use airlift_protocol::management::{
    Device, DeviceDetail, Page, PreauthorizeRequest, SetTagsRequest, MAX_FILTER_PAIRS, MAX_TAG,
};
use airlift_protocol::state::{DeviceStatus, UpdateState};
use airlift_protocol::target_expr::TargetExpr;
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeviceFilter, DeviceSort, PageRequest, UpdateFilter};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Filters and paging for listing devices.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// pending, accepted, rejected, preauthorized or decommissioned.
    pub status: Option<DeviceStatus>,
    /// Reported device type (at most 128 bytes).
    #[param(max_length = 128, pattern = r"^[^\x00]*$")]
    pub device_type: Option<String>,
    /// Carries this tag (at most 64 bytes).
    #[param(max_length = 64, pattern = r"^[^\x00]*$")]
    pub tag: Option<String>,
    /// Inventory attributes, `key=value` pairs separated by commas; all must
    /// match. At most 16 pairs; names of 1–128 bytes, values up to 1024.
    #[param(
        pattern = r"^,*(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,+){0,15}(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,*)?$"
    )]
    pub attributes: Option<String>,
    /// Installed software, `name=version` pairs separated by commas; all
    /// must match. At most 16 pairs; names of 1–128 bytes, values up to 1024.
    #[param(
        pattern = r"^,*(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,+){0,15}(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,*)?$"
    )]
    pub installed: Option<String>,
    /// Identity text (attribute names and values) containing this, ignoring
    /// ASCII case, or a device id (at most 256 bytes).
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    pub search: Option<String>,
    /// `offline`: accepted devices not heard of (no check-in, or no first
    /// contact if they never checked in) for three poll intervals;
    /// `online`: accepted devices heard of within them. Implies
    /// `status=accepted`.
    #[param(inline)]
    pub connectivity: Option<Connectivity>,
    /// Devices with an update in this deployment (combines with
    /// `update_state` and `reason`: all hold for that update).
    #[param(value_type = Option<uuid::Uuid>)]
    pub deployment: Option<DeploymentId>,
    /// Devices with an update in one of these states, separated by commas
    /// (e.g. `failure,rolled_back,timed_out`).
    #[param(
        max_length = 256,
        pattern = r"^,*(?:(?:pending|incompatible|downloading|downloaded|installing|installed|rebooting|success|failure|rolled_back|already_installed|cancelled|timed_out),+)*(?:pending|incompatible|downloading|downloaded|installing|installed|rebooting|success|failure|rolled_back|already_installed|cancelled|timed_out)?,*$"
    )]
    pub update_state: Option<String>,
    /// Devices with an update whose last message (a failure's reason) is
    /// exactly this (at most 16 KiB).
    #[param(max_length = 16384, pattern = r"^[^\x00]*$")]
    pub reason: Option<String>,
    /// A target expression (docs/targets.md), e.g. `tag:lab AND
    /// installed.rootfs < 2.4.0`: AND, OR, NOT and parentheses over
    /// `tag:`, `attr.KEY =`, `device_type =`, `status =` and
    /// `installed.NAME <` terms, `*` and `?` wildcards. Combines with the
    /// other filters (all hold). At most 4096 bytes, 64 terms.
    #[serde(rename = "where")]
    #[param(
        rename = "where",
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\x00]*$"
    )]
    pub where_expression: Option<String>,
    /// Order: `created_at` (the default), `identity`, `device_type`,
    /// `status` or `last_check_in`; a leading `-` reverses it. Devices that
    /// never checked in come first by `last_check_in`; devices that
    /// reported no type come last by `device_type`.
    #[param(pattern = r"^-?(created_at|identity|device_type|status|last_check_in)$")]
    pub sort: Option<String>,
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    pub page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// Whether devices are heard from, as `GET /devices` filters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Heard of within [`OFFLINE_POLLS`] poll intervals.
    Online,
    /// Not heard of for [`OFFLINE_POLLS`] poll intervals.
    Offline,
}

/// Poll intervals without a word from an accepted device after which it
/// counts as offline.
pub const OFFLINE_POLLS: u32 = 3;

/// The time before which an accepted device last heard of is offline now.
pub fn offline_cutoff(state: &AppState) -> chrono::DateTime<Utc> {
    let silence = state.settings().poll_interval * OFFLINE_POLLS;
    Utc::now() - chrono::TimeDelta::from_std(silence).unwrap_or(chrono::TimeDelta::MAX)
}

/// `sort`: the order and whether it is reversed.
fn sort_of(text: Option<&str>) -> ApiResult<(DeviceSort, bool)> {
    let Some(text) = text else {
        return Ok((DeviceSort::CreatedAt, false));
    };
    let (descending, name) = match text.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, text),
    };
    let sort = match name {
        "created_at" => DeviceSort::CreatedAt,
        "identity" => DeviceSort::Identity,
        "device_type" => DeviceSort::DeviceType,
        "status" => DeviceSort::Status,
        "last_check_in" => DeviceSort::LastCheckIn,
        _ => {
            return Err(ApiError::bad_request(
                "sort: one of created_at, identity, device_type, status, last_check_in, \
                 each reversed by a leading '-'",
            ))
        }
    };
    Ok((sort, descending))
}

/// `deployment`, `update_state` and `reason`: the update a device must have.
fn update_filter(query: &DeviceQuery) -> ApiResult<Option<UpdateFilter>> {
    check_filter_text("reason", query.reason.as_deref(), MAX_STATUS_MESSAGE)?;
    let mut states = Vec::new();
    for word in query
        .update_state
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let state: UpdateState = word.parse().map_err(|_| {
            let shown: String = word.chars().take(32).collect();
            ApiError::bad_request(format!("update_state: {shown:?} is not an update state"))
        })?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    let filter = UpdateFilter {
        deployment: query.deployment,
        states,
        message: query.reason.clone(),
    };
    Ok((filter != UpdateFilter::default()).then_some(filter))
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

/// `where`: the target expression a device must match.
fn where_expression(text: Option<&str>) -> ApiResult<Option<TargetExpr>> {
    text.map(parse_where).transpose()
}

/// A `where` query parameter's target expression, or `422
/// invalid_target_expression` with its column (the shadows' expression
/// routes answer the same).
pub(crate) fn parse_where(text: &str) -> ApiResult<TargetExpr> {
    text.parse::<TargetExpr>()
        // Its grammar is content no schema states (docs/targets.md).
        .map_err(|e| ApiError::Unprocessable("invalid_target_expression", format!("where: {e}")))
}

/// List devices with filters and pagination, oldest first unless `sort`
/// says otherwise.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    params(DeviceQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<Device>),
        (status = 400, description = "A malformed or unknown query parameter, a filter that is not key=value pairs or holds more than 16 of them, a value too long or with a NUL character, a `where` over 4096 bytes, an unknown update state or sort order, per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A `where` expression that does not parse or passes its bounds (`invalid_target_expression`: the message names the column and what was expected)", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_devices(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> ApiResult<Json<Page<Device>>> {
    check_filter_text("device_type", query.device_type.as_deref(), MAX_DEVICE_TYPE)?;
    check_filter_text("tag", query.tag.as_deref(), MAX_TAG)?;
    check_filter_text("search", query.search.as_deref(), 256)?;
    let (sort, descending) = sort_of(query.sort.as_deref())?;
    let update = update_filter(&query)?;
    let mut filter = DeviceFilter {
        status: query.status,
        device_type: query.device_type,
        tag: query.tag,
        attributes: pairs("attributes", query.attributes.as_deref())?,
        installed: pairs("installed", query.installed.as_deref())?,
        search: query.search.filter(|s| !s.trim().is_empty()),
        update,
        expression: where_expression(query.where_expression.as_deref())?,
        sort,
        descending,
        ..DeviceFilter::default()
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
    if let Some(connectivity) = query.connectivity {
        // Only accepted devices are online or offline: with another status
        // the filters together match nothing, an empty page, not an error.
        if filter.status.is_some_and(|s| s != DeviceStatus::Accepted) {
            return Ok(Json(Page {
                items: Vec::new(),
                total: 0,
                page: page.page,
                per_page: page.per_page,
            }));
        }
        filter.status = Some(DeviceStatus::Accepted);
        let cutoff = offline_cutoff(&state);
        match connectivity {
            Connectivity::Offline => filter.silent_since = Some(cutoff),
            Connectivity::Online => filter.heard_since = Some(cutoff),
        }
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
