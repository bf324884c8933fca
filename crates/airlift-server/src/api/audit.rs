//! The audit log through the management API: who changed what, newest
//! first, filtered by actor and action, in pages like every list.

use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;
use airlift_protocol::management::{AuditEntry, Page};
use airlift_store::AuditFilter;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

/// Filters and paging for the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    page: Option<u32>,
    /// Entries per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    per_page: Option<u32>,
    /// Only entries with an id below this: pages counted from there stay
    /// put while new entries arrive (give the first page's first id).
    before: Option<i64>,
    /// Only changes by this actor: its whole text (`name (token id)`) or
    /// just the token's name (at most 256 bytes).
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    actor: Option<String>,
    /// Only this action (`deployment.create`), or a family of actions when
    /// it ends with a dot (`deployment.`); at most 256 bytes.
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    action: Option<String>,
    /// Only changes to this object: a deployment's, device's, package's or
    /// token's id (at most 256 bytes).
    #[param(max_length = 256, pattern = r"^[^\x00]*$")]
    object: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries before this time (RFC 3339).
    until: Option<chrono::DateTime<chrono::Utc>>,
}

impl AuditQuery {
    /// A query for the dashboard's audit page: the first `per_page`
    /// entries below `before`.
    pub fn new(
        per_page: u32,
        before: Option<i64>,
        actor: Option<String>,
        action: Option<String>,
    ) -> Self {
        Self {
            page: None,
            per_page: Some(per_page),
            before,
            actor,
            action,
            object: None,
            since: None,
            until: None,
        }
    }
}

/// Longest actor or action filter: longer than anything the server writes.
const MAX_FILTER: usize = 256;

/// The audit log, newest first, optionally only one actor's, one kind of
/// change, one object's, or a span of time, a page at a time (admin only).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 400, description = "A malformed or unknown query parameter, page 0, per_page out of range, an actor, action or object over 256 bytes or with a NUL character, or a since/until that is not an RFC 3339 time", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    caller.require_admin()?;
    let page = super::deployments::page_request(query.page, query.per_page)?;
    for (field, value) in [
        ("actor", &query.actor),
        ("action", &query.action),
        ("object", &query.object),
    ] {
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
        object: given(query.object),
        since: query.since,
        until: query.until,
    };
    let (items, total) = state
        .store()
        .list_audit_page(&filter, query.before, page)
        .await?;
    Ok(Json(Page {
        items,
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}
