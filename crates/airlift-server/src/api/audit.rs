use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::AuditEntry;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

/// Paging for the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries to return, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only entries with an id below this (for the next page).
    before: Option<i64>,
}

/// The audit log, newest first (admin only).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, description = "A malformed or unknown query parameter, or a limit out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    Ok(Json(state.store().list_audit(limit, query.before).await?))
}
