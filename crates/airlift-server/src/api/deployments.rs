use super::audit;
use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::rollout::{self, DEVICE_TYPE_ATTRIBUTE};
use crate::state::AppState;
use airlift_protocol::management::{
    is_dynamic, CreateDeploymentRequest, Deployment, DeploymentDetail, Device, DeviceUpdate, Page,
    Target, MAX_TAG,
};
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{
    DeploymentDevicesFilter, DeploymentFilter, DeploymentRecord, DeviceFilter, PageRequest,
    RolloutState, UpdateCount,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Most devices named one by one in a target.
const MAX_TARGET_DEVICES: usize = 10_000;

/// Create a deployment of a package to a target. Devices the package does
/// not fit are marked `incompatible` and never offered it. A tag or
/// attributes deployment is dynamic unless `dynamic` is false: it takes in
/// devices that join the target later and stays active until it is ended
/// (`POST /deployments/{id}/end`) or `ends_at` passes.
#[utoipa::path(
    post,
    path = "/api/v1/deployments",
    tag = "deployments",
    request_body = CreateDeploymentRequest,
    security(("api_token" = [])),
    responses(
        (status = 201, description = "Created", body = Deployment),
        (status = 400, description = "A body that is not a CreateDeploymentRequest in JSON (unknown keys included), a NUL character, a target tag over 64 bytes, target attributes of more than 16 pairs or with names or values too long", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Devices of the target are still updating in another deployment", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 422, description = "Unknown package, empty target, unknown devices, a strategy that cannot be carried out, `dynamic` for a list of devices, an `ends_at` that is past or for a deployment that is not dynamic, a soft install without bounds, with `max_deferrals` outside 1–100 or a `deadline` that is past (the message names the field), a target expression that does not parse or passes its bounds (`invalid_target_expression`: the message names the column and what was expected), a package the current release keys (the newest trust root's, else `--trust`) do not sign — a root published since its upload revoked its key — (`package_not_trusted`: the message names the keys wanted and those the package carries; sign it again and upload it)", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn create_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(request): ApiJson<CreateDeploymentRequest>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    caller.require_operator()?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::invalid("name: must be 1–128 characters"));
    }
    validate_target(&request.target)?;
    let now = Utc::now();
    let dynamic = validate_dynamic(&request, now)?;
    let store = state.store();
    let cached = state
        .caches()
        .package(store, request.package_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(format!("package_id: no package {}", request.package_id))
        })?;
    let (package, manifest) = (&cached.record, &cached.manifest);
    refuse_untrusted_package(&state, package).await?;

    let devices = matching_devices(&state, &request.target).await?;
    if devices.is_empty() {
        return Err(ApiError::invalid(
            "target: matches no accepted device; check the tag or attributes, or accept the devices first",
        ));
    }
    super::rollouts::validate_strategy(&state, &request.strategy, &devices).await?;
    request
        .install
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    validate_soft_deadline(&request.install, now)?;
    super::rollouts::ensure_no_overlap(&state, &devices).await?;
    // Every device starts pending; those the package does not fit, or that
    // already run it, are then decided with the reason, which lands in the
    // device's history too.
    let decisions: Vec<(DeviceId, UpdateState, Option<String>)> = devices
        .iter()
        .filter_map(|device| {
            let view = rollout::DeviceView::from(device);
            let (state, reason) = rollout::initial_state(manifest, &view);
            if state == UpdateState::Incompatible {
                Some((device.id, state, reason))
            } else if rollout::runs_package(&package.provides, &view) {
                Some((device.id, UpdateState::AlreadyInstalled, None))
            } else {
                None
            }
        })
        .collect();
    let initial: Vec<(DeviceId, UpdateState)> = devices
        .iter()
        .map(|d| (d.id, UpdateState::Pending))
        .collect();

    let record = DeploymentRecord {
        id: DeploymentId::new(),
        name: request.name.trim().to_owned(),
        package_id: request.package_id,
        target: request.target,
        strategy: request.strategy,
        install: request.install,
        status: DeploymentStatus::Active,
        created_at: now,
        finished_at: None,
        rollout: RolloutState {
            phase_started_at: Some(now),
            ..RolloutState::default()
        },
        dynamic,
        ends_at: request.ends_at,
    };
    store.insert_deployment(&record, &initial).await?;
    for (device, state, reason) in &decisions {
        store
            .decide_update_state(record.id, *device, *state, reason.as_deref(), now)
            .await?;
    }
    store.finish_deployment_if_done(record.id, now).await?;
    state.caches().deployments_changed();
    audit(
        &state,
        &caller,
        "deployment.create",
        record.id,
        serde_json::json!({"name": record.name, "package_id": record.package_id, "devices": initial.len(), "dynamic": record.dynamic, "ends_at": record.ends_at}),
    )
    .await?;
    tracing::info!(deployment_id = %record.id, devices = initial.len(), dynamic = record.dynamic, "deployment created");
    let deployment = with_counts(&state, find(&state, record.id).await?).await?;
    Ok((StatusCode::CREATED, Json(deployment)))
}

fn validate_target(target: &Target) -> ApiResult<()> {
    match target {
        Target::Devices(ids) if ids.is_empty() => Err(ApiError::invalid(
            "target.devices: list at least one device id",
        )),
        Target::Devices(ids) if ids.len() > MAX_TARGET_DEVICES => Err(ApiError::invalid(format!(
            "target.devices: at most {MAX_TARGET_DEVICES} ids; use a tag for larger groups"
        ))),
        Target::Tag(tag) if tag.trim().is_empty() => {
            Err(ApiError::invalid("target.tag: must not be empty"))
        }
        Target::Attributes(attrs) if attrs.is_empty() => Err(ApiError::invalid(
            "target.attributes: give at least one attribute to match",
        )),
        Target::Attributes(attrs) => super::devices::check_filter_pairs("target.attributes", attrs),
        Target::Tag(tag) if tag.len() > MAX_TAG => Err(ApiError::bad_request(format!(
            "target.tag: at most {MAX_TAG} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Whether the deployment asked for is dynamic, after checking that its
/// `dynamic` and `ends_at` fit its target and the time.
fn validate_dynamic(
    request: &CreateDeploymentRequest,
    now: chrono::DateTime<Utc>,
) -> ApiResult<bool> {
    if matches!(request.target, Target::Devices(_)) && request.dynamic == Some(true) {
        return Err(ApiError::invalid(
            "dynamic: a list of devices cannot grow; target a tag or attributes for a dynamic deployment",
        ));
    }
    let dynamic = is_dynamic(&request.target, request.dynamic);
    match request.ends_at {
        Some(_) if !dynamic => Err(ApiError::invalid(
            "ends_at: only a dynamic deployment (a tag or attributes target, dynamic not false) has an end date",
        )),
        Some(ends_at) if ends_at <= now => Err(ApiError::invalid(format!(
            "ends_at: {} is not in the future (the server's time is {})",
            ends_at.to_rfc3339(),
            now.to_rfc3339()
        ))),
        _ => Ok(dynamic),
    }
}

/// Accepted devices the target selects now.
async fn matching_devices(state: &AppState, target: &Target) -> ApiResult<Vec<Device>> {
    let store = state.store();
    match target {
        Target::Devices(ids) => {
            let mut devices = Vec::with_capacity(ids.len());
            let mut unusable = Vec::new();
            for id in ids {
                match store.device(*id).await? {
                    Some(device) if device.status == DeviceStatus::Accepted => devices.push(device),
                    _ => unusable.push(id.to_string()),
                }
            }
            if !unusable.is_empty() {
                return Err(ApiError::invalid(format!(
                    "target.devices: not accepted or unknown: {}",
                    unusable.join(", ")
                )));
            }
            Ok(devices)
        }
        Target::Tag(tag) => {
            all_devices(
                state,
                DeviceFilter {
                    tag: Some(tag.clone()),
                    ..DeviceFilter::default()
                },
            )
            .await
        }
        Target::Expression(expression) => expression_devices(state, expression).await,
        Target::Attributes(attrs) => {
            let mut attributes = attrs.clone();
            let device_type = attributes.remove(DEVICE_TYPE_ATTRIBUTE);
            all_devices(
                state,
                DeviceFilter {
                    device_type,
                    attributes,
                    ..DeviceFilter::default()
                },
            )
            .await
        }
    }
}

/// `422 package_not_trusted` for a package the current release trust
/// does not sign — a root published since its upload revoked its key —,
/// naming the keys wanted and carried: every device that trusts that root
/// would refuse it. A server that trusts no key has nothing to check with.
async fn refuse_untrusted_package(
    state: &AppState,
    package: &airlift_store::PackageRecord,
) -> ApiResult<()> {
    let Some(trust) = super::packages::release_trust(state).await? else {
        return Ok(());
    };
    crate::release_trust::check(&package.head, &trust.keys).map_err(|refused| {
        let named = format!(
            "{} {} ({})",
            package.package.name, package.package.version, package.package.id
        );
        ApiError::Unprocessable(
            "package_not_trusted",
            format!("package_id: {}", refused.describe(&named, trust.source)),
        )
    })
}

/// Accepted devices a target expression selects now: compiled to SQL by
/// the store, the same test [`rollout::target_matches`] makes in memory
/// for devices that join later.
async fn expression_devices(
    state: &AppState,
    expression: &airlift_protocol::target_expr::TargetExpr,
) -> ApiResult<Vec<Device>> {
    let filter = DeviceFilter {
        expression: Some(expression.clone()),
        ..DeviceFilter::default()
    };
    all_devices(state, filter).await
}

async fn all_devices(state: &AppState, filter: DeviceFilter) -> ApiResult<Vec<Device>> {
    Ok(crate::rollout::engine::accepted(state.store(), filter).await?)
}

/// Filters and paging for listing deployments.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeploymentQuery {
    /// active, paused, aborted, cancelled or finished.
    pub status: Option<DeploymentStatus>,
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    pub page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// The page a list's `page` and `per_page` ask for (the same bounds on
/// every list of the API).
pub(crate) fn page_request(page: Option<u32>, per_page: Option<u32>) -> ApiResult<PageRequest> {
    let page = PageRequest {
        page: page.unwrap_or(1),
        per_page: per_page.unwrap_or(100),
    };
    if page.page == 0 {
        return Err(ApiError::bad_request("page is 1-based: at least 1"));
    }
    if !(1..=1000).contains(&page.per_page) {
        return Err(ApiError::bad_request("per_page must be between 1 and 1000"));
    }
    Ok(page)
}

/// List deployments, newest first, with counts per state, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/deployments",
    tag = "deployments",
    params(DeploymentQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<Deployment>),
        (status = 400, description = "A malformed or unknown query parameter, an unknown status, page 0, or per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_deployments(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiQuery(query): ApiQuery<DeploymentQuery>,
) -> ApiResult<Json<Page<Deployment>>> {
    let page = page_request(query.page, query.per_page)?;
    let filter = DeploymentFilter {
        status: query.status,
    };
    let store = state.store();
    let (records, total) = store.list_deployments_page(&filter, page).await?;
    // The whole page counted in one query, not one per deployment.
    let ids: Vec<DeploymentId> = records.iter().map(|r| r.id).collect();
    let mut tallies: BTreeMap<DeploymentId, Vec<UpdateCount>> = BTreeMap::new();
    for count in store.deployment_tallies(&ids).await? {
        tallies.entry(count.deployment).or_default().push(count);
    }
    let late = store.late_joiners(&ids).await?;
    let items = records
        .into_iter()
        .map(|record| {
            let counts = tallies.remove(&record.id).unwrap_or_default();
            let joined_late = late.get(&record.id).copied().unwrap_or(0);
            summarise(record, &counts, joined_late)
        })
        .collect();
    Ok(Json(Page {
        items,
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}

/// One deployment with its counts per state and phase, its rollback links
/// and deferrals, read with aggregate queries whatever the number of its
/// devices. Its devices' states are not embedded: read them a page at a
/// time from `GET /deployments/{id}/devices` (filter with `state`).
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{deployment_id}",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = DeploymentDetail),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn get_deployment(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<DeploymentDetail>> {
    let deployment = with_counts(&state, find(&state, id).await?).await?;
    let links = state.store().rollback_links(id).await?;
    let deferrals = deferral_summary(&state, &deployment).await?;
    Ok(Json(DeploymentDetail {
        deployment,
        rollback_of: links.rollback_of,
        rolled_back_by: links.rolled_back_by,
        deferrals,
    }))
}

/// A soft deployment's deadline must still be ahead: one already past
/// would be a forced deployment that says otherwise.
fn validate_soft_deadline(
    install: &airlift_protocol::install::InstallPolicy,
    now: chrono::DateTime<Utc>,
) -> ApiResult<()> {
    match install.soft.and_then(|soft| soft.deadline) {
        Some(deadline) if deadline <= now => Err(ApiError::invalid(format!(
            "install.soft.deadline: {} is past; give a time ahead, or leave the deployment forced",
            deadline.to_rfc3339()
        ))),
        _ => Ok(()),
    }
}

/// How much a soft deployment's devices deferred (one query); nothing for
/// a forced one.
async fn deferral_summary(
    state: &AppState,
    deployment: &Deployment,
) -> ApiResult<Option<airlift_protocol::soft::DeferralSummary>> {
    if deployment.install.soft.is_none() {
        return Ok(None);
    }
    let totals = state.store().deferral_totals(deployment.id).await?;
    Ok(Some(airlift_protocol::soft::DeferralSummary {
        deferrals: totals.deferrals,
        devices: totals.devices,
        most: totals.most,
    }))
}

/// Cancel a deployment: devices not yet done are not offered it any more,
/// and a device mid-download is told to stop.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/cancel",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not active", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn cancel_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    caller.require_operator()?;
    let record = find(&state, id).await?;
    let cancelled = state.store().cancel_deployment(id, Utc::now()).await?;
    state.caches().deployments_changed();
    if !cancelled {
        return Err(ApiError::Conflict(
            "not_active",
            format!(
                "deployment is {}, only an active deployment can be cancelled",
                record.status
            ),
        ));
    }
    audit(
        &state,
        &caller,
        "deployment.cancel",
        id,
        serde_json::json!({"name": record.name}),
    )
    .await?;
    Ok(Json(with_counts(&state, find(&state, id).await?).await?))
}

/// Release the install of a download-only deployment: its devices install
/// what they have downloaded at their next check-in (inside the install
/// window, if the deployment has one). Connected devices are told to check
/// in now.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/install",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not download-only, or not active or paused", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn release_install(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    caller.require_operator()?;
    let record = find(&state, id).await?;
    let released = state.store().release_install(id, Utc::now()).await?;
    state.caches().deployments_changed();
    if !released {
        let why = if record.install.download_only {
            format!(
                "the deployment is {}; only an active or paused one can be released",
                record.status
            )
        } else {
            "the deployment is not download-only: its devices install as soon as they have downloaded (inside its install window, if it has one)".to_owned()
        };
        return Err(ApiError::Conflict("not_held", why));
    }
    audit(
        &state,
        &caller,
        "deployment.install",
        id,
        serde_json::json!({"name": record.name}),
    )
    .await?;
    tracing::info!(deployment_id = %id, "install released");
    Ok(Json(with_counts(&state, find(&state, id).await?).await?))
}

/// End a dynamic deployment: it takes in no more devices that join its
/// target, and finishes once the devices it has are done (at once if they
/// are). Devices still updating go on.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{deployment_id}/end",
    tag = "deployments",
    params(("deployment_id" = uuid::Uuid, Path, description = "The deployment's id")),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Deployment),
        (status = 400, description = "A malformed deployment id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "A viewer token: an operator or admin token is needed", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
        (status = 409, description = "Not dynamic, not active or paused, or ended already", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn end_deployment(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
) -> ApiResult<Json<Deployment>> {
    caller.require_operator()?;
    let record = find(&state, id).await?;
    let now = Utc::now();
    let ended = state.store().end_deployment(id, now).await?;
    if !ended {
        let why = if !record.dynamic {
            "the deployment is not dynamic: it finishes by itself once its devices are done"
                .to_owned()
        } else if !record.takes_in_devices(now) {
            match record.ends_at {
                Some(ends_at)
                    if matches!(
                        record.status,
                        DeploymentStatus::Active | DeploymentStatus::Paused
                    ) =>
                {
                    format!("the deployment ended at {}", ends_at.to_rfc3339())
                }
                _ => format!("the deployment is {}", record.status),
            }
        } else {
            "the deployment changed meanwhile; look at it again".to_owned()
        };
        return Err(ApiError::Conflict("not_open", why));
    }
    state.store().finish_deployment_if_done(id, now).await?;
    state.caches().deployments_changed();
    audit(
        &state,
        &caller,
        "deployment.end",
        id,
        serde_json::json!({"name": record.name}),
    )
    .await?;
    tracing::info!(deployment_id = %id, "dynamic deployment ended");
    Ok(Json(with_counts(&state, find(&state, id).await?).await?))
}

/// Filters and paging for a deployment's devices.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeploymentDevicesQuery {
    /// Only devices in this state.
    pub state: Option<UpdateState>,
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    pub page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// A deployment's devices and their states, by device id, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{deployment_id}/devices",
    tag = "deployments",
    params(
        ("deployment_id" = uuid::Uuid, Path, description = "The deployment's id"),
        DeploymentDevicesQuery,
    ),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<DeviceUpdate>),
        (status = 400, description = "A malformed deployment id, a malformed or unknown query parameter, an unknown state, page 0, or per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such deployment", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_deployment_devices(
    State(state): State<AppState>,
    _caller: ApiCaller,
    ApiPath(id): ApiPath<DeploymentId>,
    ApiQuery(query): ApiQuery<DeploymentDevicesQuery>,
) -> ApiResult<Json<Page<DeviceUpdate>>> {
    let page = page_request(query.page, query.per_page)?;
    find(&state, id).await?;
    let filter = DeploymentDevicesFilter {
        states: query.state.into_iter().collect(),
        reason: None,
    };
    let store = state.store();
    let total = store.count_deployment_devices(id, &filter).await?;
    let items = store.deployment_devices_page(id, &filter, page).await?;
    Ok(Json(Page {
        items,
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}

pub(super) async fn find(state: &AppState, id: DeploymentId) -> ApiResult<DeploymentRecord> {
    state
        .store()
        .deployment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no deployment {id}")))
}

/// A deployment as the API shows it: counts per state and, for a phased
/// rollout, where each phase stands (two queries however many devices).
pub(crate) async fn with_counts(
    state: &AppState,
    record: DeploymentRecord,
) -> ApiResult<Deployment> {
    let counts = state.store().deployment_tallies(&[record.id]).await?;
    let late = state.store().late_joiners(&[record.id]).await?;
    let joined_late = late.get(&record.id).copied().unwrap_or(0);
    Ok(summarise(record, &counts, joined_late))
}

/// A deployment from its record, its devices counted by state and phase,
/// and how many of them joined late.
fn summarise(record: DeploymentRecord, counts: &[UpdateCount], joined_late: u64) -> Deployment {
    let mut by_state: BTreeMap<UpdateState, u64> = BTreeMap::new();
    for count in counts {
        *by_state.entry(count.state).or_default() += count.devices;
    }
    let rollout = super::rollouts::progress(&record, counts);
    Deployment {
        id: record.id,
        name: record.name,
        package_id: record.package_id,
        target: record.target,
        strategy: record.strategy,
        install: record.install,
        status: record.status,
        rollout,
        counts: by_state,
        created_at: record.created_at,
        finished_at: record.finished_at,
        dynamic: record.dynamic,
        ends_at: record.ends_at,
        joined_late,
    }
}
