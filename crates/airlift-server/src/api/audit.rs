//! The audit log through the management API: who changed what, newest
//! first, filtered by actor and action.

use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::AuditEntry;
use airlift_store::AuditFilter;
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
    /// Only changes by this actor: its whole text (`name (token id)`) or
    /// just the token's name (at most 256 bytes).
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    actor: Option<String>,
    /// Only this action (`deployment.create`), or a family of actions when
    /// it ends with a dot (`deployment.`); at most 256 bytes.
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    action: Option<String>,
}

impl AuditQuery {
    /// A query for the dashboard's audit page.
    pub fn new(
        limit: u32,
        before: Option<i64>,
        actor: Option<String>,
        action: Option<String>,
    ) -> Self {
        Self {
            limit: Some(limit),
            before,
            actor,
            action,
        }
    }
}

/// Longest actor or action filter: longer than anything the server writes.
const MAX_FILTER: usize = 256;

/// The audit log, newest first, optionally only one actor's or one kind of
/// change (admin only).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, description = "A malformed or unknown query parameter, a limit out of range, or an actor or action over 256 bytes or with a NUL character", body = airlift_protocol::ErrorBody),
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
    for (field, value) in [("actor", &query.actor), ("action", &query.action)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER) {
            return Err(ApiError::bad_request(format!(
                "{field}: at most {MAX_FILTER} bytes"
            )));
        }
    }
    // A blank filter is no filter (an emptied field of a form).
    let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let filter = AuditFilter {
        actor: given(query.actor),
        action: given(query.action),
    };
    Ok(Json(
        state
            .store()
            .list_audit(&filter, limit, query.before)
            .await?,
    ))
}
