//! Device shadows in the management API: a device's shadow (its own
//! desired document, what it reported, the groups that reach it, the
//! effective document and the delta), and desired documents set for one
//! device, for a tag, for an attribute filter or for a target expression
//! (`?where=`, parsed as the device list's `where` is, and named by its
//! canonical text).
//!
//! `PUT` replaces a desired document, `PATCH` merges into it (RFC 7396 at
//! the top level: `null` removes a key), `DELETE` empties it. Every change
//! is audited (`shadow.desired`, with the change and the new version) and
//! nudges the devices concerned: one device through the store's change
//! feed (every instance), a group's devices on this instance's push
//! streams and through MQTT; the others hear at their next poll. The
//! merge rule is [`airlift_protocol::shadow`]'s.

use super::audit;
use super::devices::{check_filter_pairs, parse_where};
use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::MAX_TAG;
use airlift_protocol::push::NudgeReason;
use airlift_protocol::shadow::{
    DeviceShadow, Document, GroupShadow, ShadowGroup, VersionedDocument, MAX_GROUP_ATTRIBUTES_LEN,
    MAX_GROUP_EXPRESSION_LEN,
};
use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::{DesiredChange, DeviceFilter, PageRequest, ShadowLimits, ShadowWrite};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Devices nudged after a group's change, at most (pages of 1000).
const MAX_NUDGED: u32 = 200_000;

/// The limits shadow documents are held to on this server.
pub(crate) fn limits(state: &AppState) -> ShadowLimits {
    state.settings().shadow
}

/// The attribute filter of a group document.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttributesQuery {
    /// Inventory attributes, `key=value` pairs separated by commas, as in
    /// the device list; all must match. 1–16 pairs; names of 1–128 bytes,
    /// values up to 1024.
    #[param(
        pattern = r"^,*(?:[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,+){0,15}[^,=\x00]*[^,=\x00\s][^,=\x00]*=[^,\x00]*,*$"
    )]
    pub attributes: String,
}

/// The target expression of a group document.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExpressionQuery {
    /// A target expression (docs/targets.md), as in the device list's
    /// `where`, e.g. `tag:lab AND installed.rootfs < 2.4.0`. The group is
    /// named by the expression's canonical text, so spellings that parse
    /// alike (`a=1 and b=2`, `a = 1 AND b = 2`) are one group. At most
    /// 4096 bytes, 64 terms, and 2048 bytes written canonically.
    #[serde(rename = "where")]
    #[param(
        rename = "where",
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\x00]*$"
    )]
    pub where_expression: String,
}

/// A device's shadow: desired, reported, effective, delta.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{device_id}/shadow",
    tag = "shadows",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = DeviceShadow),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_device_shadow(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
) -> ApiResult<Json<DeviceShadow>> {
    state
        .store()
        .device_shadow(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))
}

/// Replace (`PUT`), merge into (`PATCH`) or empty (`DELETE`) a device's own
/// desired document; its keys win over every group's.
#[utoipa::path(
    method(put, patch),
    path = "/api/v1/devices/{device_id}/shadow/desired",
    tag = "shadows",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    request_body(content = Object, description = "A JSON object: the desired document (PUT) or a merge patch whose null values remove keys (PATCH)"),
    security(("api_token" = [])),
    responses(
        (status = 200, body = VersionedDocument),
        (status = 400, description = "A malformed device id; a body that is not a JSON object", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The document would be over the size limit (64 KiB by default) or the top-level key limit (256); the message names the limit", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn change_device_desired(
    State(state): State<AppState>,
    method: Method,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeviceId>,
    body: Bytes,
) -> ApiResult<Json<VersionedDocument>> {
    caller.require_operator()?;
    let change = change_from(&state, &method, &body)?;
    let write = state
        .store()
        .change_device_desired(id, &change, &limits(&state), Utc::now())
        .await
        .map_err(|e| match e {
            airlift_store::StoreError::NotFound(_) => ApiError::NotFound(format!("no device {id}")),
            other => other.into(),
        })?;
    // The device may check in here before the change feed's event arrives.
    state.shadows().forget_device(id);
    let written = written(write)?;
    audited(&state, &caller, format!("device:{id}"), &change, &written).await?;
    Ok(Json(written))
}

/// Replace, merge into or delete a tag's desired document: one row for
/// every device carrying the tag.
#[utoipa::path(
    method(put, patch),
    path = "/api/v1/shadows/tags/{tag}",
    tag = "shadows",
    params(("tag" = String, Path, description = "The tag (1–64 characters)", min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")),
    request_body(content = Object, description = "A JSON object: the desired document (PUT) or a merge patch whose null values remove keys (PATCH)"),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "A tag that is not 1–64 characters; a body that is not a JSON object", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "DELETE: the tag has no desired document", body = airlift_protocol::ErrorBody),
        (status = 409, description = "A new group document over the limit on group documents (1000)", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The document would be over the size limit (64 KiB by default) or the top-level key limit (256); the message names the limit", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn change_tag_desired(
    State(state): State<AppState>,
    method: Method,
    caller: ApiCaller,
    ApiPath(tag): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<GroupShadow>> {
    change_group(state, method, caller, tag_group(tag)?, body).await
}

/// A tag's desired document.
#[utoipa::path(
    get,
    path = "/api/v1/shadows/tags/{tag}",
    tag = "shadows",
    params(("tag" = String, Path, description = "The tag (1–64 characters)", min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "A tag that is not 1–64 characters", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The tag has no desired document", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_tag_desired(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(tag): ApiPath<String>,
) -> ApiResult<Json<GroupShadow>> {
    get_group(&state, &tag_group(tag)?).await
}

/// Replace, merge into or delete an attribute filter's desired document.
#[utoipa::path(
    method(put, patch),
    path = "/api/v1/shadows/attributes",
    tag = "shadows",
    params(AttributesQuery),
    request_body(content = Object, description = "A JSON object: the desired document (PUT) or a merge patch whose null values remove keys (PATCH)"),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No attribute pair, more than 16, malformed, or over 2048 bytes written as JSON; a body that is not a JSON object", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "DELETE: the filter has no desired document", body = airlift_protocol::ErrorBody),
        (status = 409, description = "A new group document over the limit on group documents (1000)", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The document would be over the size limit (64 KiB by default) or the top-level key limit (256); the message names the limit", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn change_attributes_desired(
    State(state): State<AppState>,
    method: Method,
    caller: ApiCaller,
    ApiQuery(query): ApiQuery<AttributesQuery>,
    body: Bytes,
) -> ApiResult<Json<GroupShadow>> {
    let group = attributes_group(&query.attributes)?;
    change_group(state, method, caller, group, body).await
}

/// An attribute filter's desired document.
#[utoipa::path(
    get,
    path = "/api/v1/shadows/attributes",
    tag = "shadows",
    params(AttributesQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No attribute pair, more than 16, malformed, or over 2048 bytes written as JSON", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The filter has no desired document", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_attributes_desired(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<AttributesQuery>,
) -> ApiResult<Json<GroupShadow>> {
    get_group(&state, &attributes_group(&query.attributes)?).await
}

/// Replace or merge into the desired document of the devices a target
/// expression matches: one row, evaluated at each device's check-in
/// against what it reports then.
#[utoipa::path(
    method(put, patch),
    path = "/api/v1/shadows/expression",
    tag = "shadows",
    params(ExpressionQuery),
    request_body(content = Object, description = "A JSON object: the desired document (PUT) or a merge patch whose null values remove keys (PATCH)"),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No `where`, or one with a NUL character; a body that is not a JSON object", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 409, description = "A new group document over the limit on group documents (1000)", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The document would be over the size limit (64 KiB by default) or the top-level key limit (256); the message names the limit", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A `where` expression that does not parse or passes its bounds, or whose canonical text is over 2048 bytes (`invalid_target_expression`: the message names the column and what was expected, or the bound)", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn change_expression_desired(
    State(state): State<AppState>,
    method: Method,
    caller: ApiCaller,
    ApiQuery(query): ApiQuery<ExpressionQuery>,
    body: Bytes,
) -> ApiResult<Json<GroupShadow>> {
    let group = expression_group(&query.where_expression)?;
    change_group(state, method, caller, group, body).await
}

/// The desired document of the devices a target expression matches.
#[utoipa::path(
    get,
    path = "/api/v1/shadows/expression",
    tag = "shadows",
    params(ExpressionQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No `where`, or one with a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The expression has no desired document", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A `where` expression that does not parse or passes its bounds, or whose canonical text is over 2048 bytes (`invalid_target_expression`: the message names the column and what was expected, or the bound)", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_expression_desired(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<ExpressionQuery>,
) -> ApiResult<Json<GroupShadow>> {
    get_group(&state, &expression_group(&query.where_expression)?).await
}

/// Delete a device's own desired document (its groups' documents stay).
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{device_id}/shadow/desired",
    tag = "shadows",
    params(("device_id" = uuid::Uuid, Path, description = "The device's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = VersionedDocument),
        (status = 400, description = "A malformed device id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such device", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_device_desired(
    state: State<AppState>,
    caller: ApiCaller,
    id: ApiPath<DeviceId>,
) -> ApiResult<Json<VersionedDocument>> {
    change_device_desired(state, Method::DELETE, caller, id, Bytes::new()).await
}

/// Delete a tag's desired document.
#[utoipa::path(
    delete,
    path = "/api/v1/shadows/tags/{tag}",
    tag = "shadows",
    params(("tag" = String, Path, description = "The tag (1–64 characters)", min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "A tag that is not 1–64 characters", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The tag has no desired document", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_tag_desired(
    state: State<AppState>,
    caller: ApiCaller,
    tag: ApiPath<String>,
) -> ApiResult<Json<GroupShadow>> {
    change_tag_desired(state, Method::DELETE, caller, tag, Bytes::new()).await
}

/// Delete an attribute filter's desired document.
#[utoipa::path(
    delete,
    path = "/api/v1/shadows/attributes",
    tag = "shadows",
    params(AttributesQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No attribute pair, more than 16, malformed, or over 2048 bytes written as JSON", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The filter has no desired document", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_attributes_desired(
    state: State<AppState>,
    caller: ApiCaller,
    query: ApiQuery<AttributesQuery>,
) -> ApiResult<Json<GroupShadow>> {
    change_attributes_desired(state, Method::DELETE, caller, query, Bytes::new()).await
}

/// Delete the desired document of the devices a target expression matches.
#[utoipa::path(
    delete,
    path = "/api/v1/shadows/expression",
    tag = "shadows",
    params(ExpressionQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = GroupShadow),
        (status = 400, description = "No `where`, or one with a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "The expression has no desired document", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A `where` expression that does not parse or passes its bounds, or whose canonical text is over 2048 bytes (`invalid_target_expression`: the message names the column and what was expected, or the bound)", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_expression_desired(
    state: State<AppState>,
    caller: ApiCaller,
    query: ApiQuery<ExpressionQuery>,
) -> ApiResult<Json<GroupShadow>> {
    change_expression_desired(state, Method::DELETE, caller, query, Bytes::new()).await
}

fn tag_group(tag: String) -> ApiResult<ShadowGroup> {
    // Characters, as the schema counts them (a tag longer in bytes than a
    // device may carry is only a document no device takes).
    if tag.is_empty() || tag.chars().count() > MAX_TAG || tag.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "tag: 1–{MAX_TAG} characters"
        )));
    }
    Ok(ShadowGroup::Tag(tag))
}

fn attributes_group(text: &str) -> ApiResult<ShadowGroup> {
    let mut pairs = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ApiError::bad_request(format!("attributes: {pair:?} is not key=value"))
        })?;
        pairs.insert(key.trim().to_owned(), value.trim().to_owned());
        check_filter_pairs("attributes", &pairs)?;
    }
    if pairs.is_empty() || text.contains('\0') {
        return Err(ApiError::bad_request(
            "attributes: at least one key=value pair (a document for every device is a tag every device carries)",
        ));
    }
    let written = serde_json::to_string(&pairs).map_or(usize::MAX, |json| json.len());
    if written > MAX_GROUP_ATTRIBUTES_LEN {
        return Err(ApiError::bad_request(format!(
            "attributes: a configuration group's pairs are at most \
             {MAX_GROUP_ATTRIBUTES_LEN} bytes written as JSON; these are {written}"
        )));
    }
    Ok(ShadowGroup::Attributes(pairs))
}

/// The group of an expression, parsed as the device list's `where` is
/// (a `422 invalid_target_expression` naming the column if it does not
/// parse) and named by its canonical text, which must fit in an id.
fn expression_group(text: &str) -> ApiResult<ShadowGroup> {
    let group = ShadowGroup::expression(&parse_where(text)?);
    match &group {
        ShadowGroup::Expression(canonical) if canonical.len() > MAX_GROUP_EXPRESSION_LEN => {
            Err(ApiError::Unprocessable(
                "invalid_target_expression",
                format!(
                    "where: a configuration group's expression is at most \
                     {MAX_GROUP_EXPRESSION_LEN} bytes written canonically; this one is {}",
                    canonical.len()
                ),
            ))
        }
        _ => Ok(group),
    }
}

async fn get_group(state: &AppState, group: &ShadowGroup) -> ApiResult<Json<GroupShadow>> {
    state
        .store()
        .group_shadow(group)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("{group} has no desired document")))
}

async fn change_group(
    state: AppState,
    method: Method,
    caller: ApiCaller,
    group: ShadowGroup,
    body: Bytes,
) -> ApiResult<Json<GroupShadow>> {
    caller.require_operator()?;
    let store = state.store();
    let desired = if method == Method::DELETE {
        if !store.delete_group_desired(&group).await? {
            return Err(ApiError::NotFound(format!(
                "{group} has no desired document"
            )));
        }
        audited(
            &state,
            &caller,
            group.id(),
            &DesiredChange::Replace(Document::new()),
            &VersionedDocument::default(),
        )
        .await?;
        VersionedDocument::default()
    } else {
        let change = change_from(&state, &method, &body)?;
        let write = store
            .change_group_desired(&group, &change, &limits(&state), Utc::now())
            .await?;
        let written = written(write)?;
        audited(&state, &caller, group.id(), &change, &written).await?;
        written
    };
    // Its devices may check in here before the change feed's event arrives.
    state.shadows().forget_groups();
    tokio::spawn(nudge_group(state.clone(), group.clone()));
    Ok(Json(GroupShadow { group, desired }))
}

/// The change a request asks for, its body checked against the limits.
fn change_from(state: &AppState, method: &Method, body: &[u8]) -> ApiResult<DesiredChange> {
    if *method == Method::DELETE {
        return Ok(DesiredChange::Replace(Document::new()));
    }
    let limits = limits(state);
    if body.len() > limits.max_document_bytes {
        return Err(ApiError::TooLarge(format!(
            "the document is {} bytes; the limit is {} bytes",
            body.len(),
            limits.max_document_bytes
        )));
    }
    crate::extract::refuse_nul_in_json(body)?;
    let document = parse_document(body, limits.max_document_bytes)?;
    Ok(if *method == Method::PATCH {
        DesiredChange::Merge(document)
    } else {
        DesiredChange::Replace(document)
    })
}

/// A body that must be a JSON object, or a 400 saying what it must be.
pub(crate) fn parse_document(body: &[u8], limit: usize) -> ApiResult<Document> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(document)) => Ok(document),
        Ok(_) => Err(ApiError::BadRequest(
            "not_a_json_object",
            format!("the document must be a JSON object (`{{\"key\": value, …}}`) of at most {limit} bytes"),
        )),
        Err(error) => Err(ApiError::BadRequest(
            "not_json",
            format!("the document is not JSON ({error}); send a JSON object of at most {limit} bytes"),
        )),
    }
}

fn written(write: ShadowWrite) -> ApiResult<VersionedDocument> {
    match write {
        ShadowWrite::Written(document) => Ok(document),
        ShadowWrite::TooLarge(why) => {
            Err(ApiError::TooLarge(format!("{why}; nothing was changed")))
        }
        ShadowWrite::TooManyGroups(max) => Err(ApiError::Conflict(
            "too_many_groups",
            format!("there are {max} group documents already, the limit: delete one first"),
        )),
    }
}

async fn audited(
    state: &AppState,
    caller: &ApiCaller,
    object: String,
    change: &DesiredChange,
    written: &VersionedDocument,
) -> ApiResult<()> {
    let (kind, document) = match change {
        DesiredChange::Replace(document) if document.is_empty() => ("delete", document),
        DesiredChange::Replace(document) => ("replace", document),
        DesiredChange::Merge(patch) => ("merge", patch),
    };
    audit(
        state,
        caller,
        "shadow.desired",
        object,
        serde_json::json!({"change": kind, "document": document, "version": written.version}),
    )
    .await
}

/// Nudges the accepted devices of a group that hold a connection here or
/// listen on MQTT; the others hear at their next poll.
async fn nudge_group(state: AppState, group: ShadowGroup) {
    let mqtt = state.mqtt();
    if state.push().connected() == 0 && mqtt.is_none() {
        return;
    }
    let mut filter = DeviceFilter {
        status: Some(DeviceStatus::Accepted),
        ..DeviceFilter::default()
    };
    match &group {
        ShadowGroup::Tag(tag) => filter.tag = Some(tag.clone()),
        ShadowGroup::Attributes(pairs) => filter.attributes = pairs.clone(),
        // The canonical text of an expression parsed on the way in.
        ShadowGroup::Expression(text) => match text.parse() {
            Ok(expression) => filter.expression = Some(expression),
            Err(error) => {
                tracing::warn!(%group, %error, "shadow: the group's expression does not parse; nudging no one");
                return;
            }
        },
    }
    let per_page = 1000;
    for page in 1..=MAX_NUDGED / per_page {
        let devices = match state
            .store()
            .list_devices(&filter, PageRequest { page, per_page })
            .await
        {
            Ok((devices, _)) => devices,
            Err(error) => {
                tracing::warn!(%group, %error, "shadow: listing the group's devices to nudge failed");
                return;
            }
        };
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        state.push().nudge(&ids, NudgeReason::Requested);
        if let Some(mqtt) = mqtt {
            mqtt.publish(&ids, NudgeReason::Requested);
        }
        if ids.len() < per_page as usize {
            return;
        }
    }
}
