use super::audit;
use crate::auth::{hash_secret, new_api_secret, ApiCaller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use airlift_protocol::management::{ApiToken, CreateTokenRequest, CreatedToken, Page};
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::ApiTokenRecord;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

/// Who the calling token is: its id, name and role. Any role may ask.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "tokens",
    security(("api_token" = [])),
    responses(
        (status = 200, body = ApiToken),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn whoami(State(state): State<AppState>, caller: ApiCaller) -> ApiResult<Json<ApiToken>> {
    let tokens = state.store().list_api_tokens().await?;
    tokens
        .into_iter()
        .find(|t| t.id == caller.token_id)
        .map(Json)
        .ok_or_else(|| ApiError::Unauthorized("token revoked".into()))
}

/// Create an API token (admin only). The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateTokenRequest,
    security(("api_token" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedToken),
        (status = 400, description = "A body that is not a CreateTokenRequest in JSON, or holds a NUL character", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = airlift_protocol::ErrorBody),
        (status = 422, description = "A name that is empty or longer than 128 bytes", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.require_admin()?;
    if request.name.trim().is_empty() || request.name.len() > 128 {
        return Err(ApiError::invalid("name: must be 1–128 characters"));
    }
    let secret = new_api_secret()?;
    let token = ApiToken {
        id: TokenId::new(),
        name: request.name.trim().to_owned(),
        role: request.role,
        created_at: Utc::now(),
    };
    state
        .store()
        .insert_api_token(&ApiTokenRecord {
            token: token.clone(),
            secret_sha256: hash_secret(&secret),
        })
        .await?;
    audit(
        &state,
        &caller,
        "token.create",
        token.id,
        serde_json::json!({"name": token.name, "role": token.role}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

/// Paging for the token list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// 1-based page [default: 1].
    #[param(minimum = 1, maximum = 4294967295_u64, format = Int64)]
    pub page: Option<u32>,
    /// Items per page, 1–1000 [default: 100].
    #[param(minimum = 1, maximum = 1000)]
    pub per_page: Option<u32>,
}

/// List API tokens (admin only), without secrets, oldest first, a page at
/// a time.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(TokenQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, body = Page<ApiToken>),
        (status = 400, description = "A malformed or unknown query parameter, page 0, or per_page out of range", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> ApiResult<Json<Page<ApiToken>>> {
    caller.require_admin()?;
    let page = super::deployments::page_request(query.page, query.per_page)?;
    let (items, total) = state.store().list_api_tokens_page(page).await?;
    Ok(Json(Page {
        items,
        total,
        page: page.page,
        per_page: page.per_page,
    }))
}

/// Revoke an API token (admin only).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{token_id}",
    tag = "tokens",
    params(("token_id" = uuid::Uuid, Path, description = "The token's id")),
    security(("api_token" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "A malformed token id", body = airlift_protocol::ErrorBody),
        (status = 401, description = "No API token, or an unknown or revoked one", body = airlift_protocol::ErrorBody),
        (status = 403, description = "Not an admin token", body = airlift_protocol::ErrorBody),
        (status = 404, description = "No such token", body = airlift_protocol::ErrorBody),
        (status = 409, description = "The last admin token: create another admin token first", body = airlift_protocol::ErrorBody),
    )
)]
pub async fn delete_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let tokens = state.store().list_api_tokens().await?;
    let Some(target) = tokens.iter().find(|t| t.id == id) else {
        return Err(ApiError::NotFound(format!("no token {id}")));
    };
    let admins = tokens.iter().filter(|t| t.role == Role::Admin).count();
    if target.role == Role::Admin && admins == 1 {
        return Err(ApiError::Conflict(
            "last_admin",
            "this is the last admin token; create another admin token first, or nobody could manage the server".into(),
        ));
    }
    if !state.store().delete_api_token(id).await? {
        return Err(ApiError::NotFound(format!("no token {id}")));
    }
    audit(&state, &caller, "token.delete", id, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
